"""Scoring Spotify search results against a track known only by artist and title.

Titles are compared after normalisation (case, accents, punctuation) with the decorations
that do not change the recording stripped ("- Remastered 2011", "(feat. X)", "[Radio Edit]").
Decorations that do change it (live, remix, acoustic, instrumental, karaoke, demo, …) are
kept apart: a result that is such a variant when the wanted title is not (or the other way
round) is penalised hard, so "Song" does not resolve to "Song - Live at Wembley" while a live
original exists, yet "Song (Live)" still finds the live take.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Any

from songnet_core.history import normalise

# Accept a result at or above this score (1.0 is a perfect title and artist match).
MIN_SCORE = 0.72

_VARIANT_WORDS = (
    "live", "remix", "mix", "acoustic", "instrumental", "karaoke", "demo", "cover",
    "unplugged", "rehearsal", "a cappella", "acapella", "sped up", "slowed", "reverb",
)  # fmt: skip
_VARIANT = re.compile(r"\b(" + "|".join(re.escape(w) for w in _VARIANT_WORDS) + r")\b")
# Bracketed or dash-separated decorations: "(…)", "[…]", " - …".
_DECORATION = re.compile(r"\s*[\(\[][^\)\]]*[\)\]]|\s+-\s+.*$")
# Decorations that name an edit of the same recording, not another recording.
_NOT_A_VARIANT = re.compile(r"\b(original|radio|album|single|extended|club)\s+(mix|edit|version)\b")
_FEAT = re.compile(r"\b(feat|ft|featuring)\b\.?.*$")
_PUNCT = re.compile(r"[^\w\s]")
_ARTIST_SPLIT = re.compile(r"\s*(?:,|&|\band\b|\bx\b|\bfeat\.?|\bft\.?|\bwith\b)\s*")


def _clean(text: str) -> str:
    return " ".join(_PUNCT.sub(" ", text).split())


def base_title(title: str) -> str:
    """The title without decorations: "Song (feat. X) - Remastered 2011" -> "song"."""
    t = normalise(title)
    t = _DECORATION.sub("", t)
    t = _FEAT.sub("", t)
    cleaned = _clean(t)
    return cleaned or _clean(normalise(title))


def variant_of(title: str) -> frozenset[str]:
    """The recording-changing words in a title's decorations: "Song - Live at X" -> {"live"}.

    Only decorations count, so "Live Forever" is no live take and "Live Forever - Live" is.
    """
    decorations = " ".join(m.group(0) for m in _DECORATION.finditer(normalise(title)))
    decorations = _NOT_A_VARIANT.sub(" ", decorations)
    return frozenset(m.group(1) for m in _VARIANT.finditer(decorations))


def artist_names(artist: str) -> set[str]:
    return {_clean(a) for a in _ARTIST_SPLIT.split(normalise(artist)) if _clean(a)}


def _similarity(a: str, b: str) -> float:
    if a == b:
        return 1.0
    return SequenceMatcher(None, a, b).ratio()


@dataclass(frozen=True)
class Match:
    uri: str
    score: float
    title: str
    artists: tuple[str, ...]


def score(want_artist: str, want_title: str, result: dict[str, Any]) -> float:
    """How well a search result (a Spotify track object) matches; 0..1."""
    title = str(result.get("name") or "")
    artists = [str(a.get("name") or "") for a in result.get("artists") or [] if isinstance(a, dict)]
    if not title or not artists:
        return 0.0
    title_sim = _similarity(base_title(want_title), base_title(title))
    wanted = artist_names(want_artist)
    theirs = set().union(*(artist_names(a) for a in artists)) | {
        _clean(normalise(a)) for a in artists
    }
    if wanted & theirs or _clean(normalise(want_artist)) in theirs:
        artist_sim = 1.0
    else:
        artist_sim = max(
            (_similarity(w, t) for w in wanted | {_clean(normalise(want_artist))} for t in theirs),
            default=0.0,
        )
    s = 0.6 * title_sim + 0.4 * artist_sim
    wanted_variant, their_variant = variant_of(want_title), variant_of(title)
    if wanted_variant != their_variant:
        # A different kind of recording: a miss unless nothing better exists, and then still
        # below the threshold when the variant was not asked for.
        s -= 0.3 if not wanted_variant else 0.15
    return max(0.0, s)


def best_match(want_artist: str, want_title: str, results: list[dict[str, Any]]) -> Match | None:
    """The best-scoring result at or above `MIN_SCORE`; on a tie the earlier (Spotify's order)."""
    best: Match | None = None
    for result in results:
        uri = result.get("uri")
        if not isinstance(uri, str) or not uri.startswith("spotify:track:"):
            continue
        s = score(want_artist, want_title, result)
        if s >= MIN_SCORE and (best is None or s > best.score):
            best = Match(
                uri=uri,
                score=round(s, 4),
                title=str(result.get("name")),
                artists=tuple(str(a.get("name")) for a in result.get("artists") or []),
            )
    return best
