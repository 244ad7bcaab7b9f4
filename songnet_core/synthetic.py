"""A seeded synthetic listener and the Spotify exports its history would produce.

For demos, tests and benchmarks where real exports cannot go. The listener is built to give
a sequence model something real to learn beyond popularity:

- a catalogue of artists in clusters (a language and a mood: "german chill", "spanish
  dance", …), each artist with albums of tracks in order, popularity skewed within clusters;
- a listener with favourite clusters, a Markov chain over clusters (stay, or move to a
  few favoured successors: the per-listener transitions songnet is meant to learn), a daily
  rhythm (session start times by hour and weekday, and clusters by time of day), favourite
  tracks (played more, skipped less);
- sessions of plays: album-order runs, shuffle sessions, repeats, skips (short `ms_played`,
  `skipped`, `reason_end` "fwdbtn"), sessions ending on "endplay" or "logout".

`generate_plays(config)` gives the music plays (`history.Play`, sorted by end time). The
writers turn them into export files exactly as Spotify formats them (2-space indented JSON,
UTF-8, fields in Spotify's order): `write_extended_export` adds podcast episodes,
audiobook chapters, records without a track and a video file around the music, and
`write_account_export` writes the account-data format (end time truncated to the minute).
An account export of `account_period(plays)` and an extended export of all plays overlap the
way a listener's two real exports do. The same config and seed give byte-identical files.

One guarantee the writers rely on: no two plays of the same track end within
`MIN_SAME_TRACK_GAP_S` of each other, so a play and its account-data record (end time up to
59 s earlier) always pair up one to one.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import json
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from songnet_core.history import Play, normalise, track_key

MIN_SAME_TRACK_GAP_S = 120
ACCOUNT_RECORDS_PER_FILE = 10_000
EXTENDED_RECORDS_PER_FILE = 15_000

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True, slots=True)
class SyntheticConfig:
    """What to generate. Every figure is a mean; the seed fixes everything."""

    n_plays: int = 20_000
    n_artists: int = 300
    tracks_per_artist: int = 12
    n_clusters: int = 12
    start: date = date(2022, 1, 1)
    plays_per_day: float = 40.0
    seed: int = 0
    utc_offset_hours: int = 1  # the listener's local time, for their daily rhythm
    session_plays: float = 12.0  # mean plays per session
    skip_rate: float = 0.2  # share of plays skipped
    repeat_rate: float = 0.03  # chance the next play is the same track again
    album_run_rate: float = 0.08  # share of sessions that play an album in order
    shuffle_rate: float = 0.35  # share of sessions in shuffle mode
    cluster_stay: float = 0.75  # chance the next play stays in the current cluster
    same_artist_rate: float = 0.3  # chance the next play stays with the current artist
    uri_alias_rate: float = 0.08  # share of tracks with a second URI (relinked releases)

    def __post_init__(self) -> None:
        if self.n_plays < 0:
            raise ValueError("n_plays must be >= 0")
        if self.n_clusters < 1 or self.n_artists < self.n_clusters:
            raise ValueError("need at least one cluster and at least one artist per cluster")
        if self.tracks_per_artist < 1 or self.plays_per_day <= 0 or self.session_plays < 1:
            raise ValueError("tracks_per_artist, plays_per_day and session_plays must be positive")
        for name in ("skip_rate", "repeat_rate", "album_run_rate", "shuffle_rate", "cluster_stay",
                     "same_artist_rate", "uri_alias_rate"):  # fmt: skip
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1]")


@dataclass(frozen=True, slots=True)
class SyntheticTrack:
    artist: str
    title: str
    album: str
    album_position: int
    duration_ms: int
    uri: str
    alias_uri: str | None
    cluster: int
    affinity: float  # how much this listener likes it, in [0, 1]

    @property
    def key(self) -> str:
        return track_key(self.artist, self.title)


@dataclass(frozen=True, slots=True)
class SyntheticArtist:
    name: str
    cluster: int
    albums: tuple[tuple[int, ...], ...]  # track indices, in album order
    track_cum_weights: tuple[float, ...]
    tracks: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class SyntheticListener:
    """The catalogue and the listener's habits; `generate_plays` samples from it."""

    clusters: tuple[str, ...]  # e.g. "german chill"
    tracks: tuple[SyntheticTrack, ...]
    artists: tuple[SyntheticArtist, ...]
    cluster_artists: tuple[tuple[int, ...], ...]
    cluster_artist_cum_weights: tuple[tuple[float, ...], ...]
    track_artist: tuple[int, ...]  # track index -> artist index
    transitions: tuple[tuple[float, ...], ...]  # P(next cluster | cluster), rows sum to 1
    favoured_successors: tuple[tuple[int, ...], ...]
    start_cluster_by_bucket: tuple[tuple[float, ...], ...]  # 4 six-hour buckets -> weights
    weekday_hours: tuple[float, ...]  # 24 weights of session start hours, local time
    weekend_hours: tuple[float, ...]
    transition_cum_weights: tuple[tuple[float, ...], ...]  # the same, for sampling
    start_cluster_cum_weights: tuple[tuple[float, ...], ...]

    def cluster_of_track(self) -> dict[str, int]:
        """Track key -> cluster: the latent structure, for tests and evaluation."""
        return {t.key: t.cluster for t in self.tracks}


# --- names ------------------------------------------------------------------------------

_WORDS: dict[str, tuple[str, ...]] = {
    "english": ("midnight", "river", "neon", "heart", "summer", "ghost", "golden", "fire",
                "city", "light", "rain", "echo", "wild", "blue", "silver", "dream", "shadow",
                "ocean", "velvet", "paper", "stone", "electric", "honey", "wolf", "satellite",
                "static", "gravity", "lonely", "highway", "sugar", "cherry", "thunder"),
    "german": ("nacht", "licht", "herz", "stadt", "sommer", "regen", "wald", "himmel", "traum",
               "zeit", "feuer", "wind", "meer", "liebe", "sterne", "schatten", "morgen", "blau",
               "gold", "still", "weit", "kalt", "wellen", "spiegel", "brücke", "glück",
               "schnee", "mond", "straße", "knöcheltief"),
    "spanish": ("noche", "corazón", "luna", "fuego", "calle", "sol", "mar", "cielo", "amor",
                "sueño", "vida", "baile", "ritmo", "camino", "tiempo", "flor", "lluvia",
                "estrella", "besos", "loco", "fiesta", "alma", "viento", "niña", "canción",
                "playa", "oro", "sombra", "libre", "siempre"),
    "french": ("nuit", "cœur", "ville", "été", "pluie", "rêve", "étoile", "lumière", "mer",
               "amour", "danse", "temps", "soleil", "ciel", "ombre", "vent", "fleur",
               "chanson", "minuit", "douce", "vie", "liberté", "hiver", "route", "lune",
               "éclat", "silence", "printemps", "feu", "parfum"),
    "japanese": ("yoru", "hikari", "sora", "yume", "hana", "kaze", "umi", "tsuki", "koi",
                 "natsu", "ame", "hoshi", "sakura", "kokoro", "machi", "mirai", "namida",
                 "kimi", "tokyo", "aoi", "夜", "光", "空", "夢", "花", "風", "海", "月"),
    "portuguese": ("saudade", "noite", "coração", "mar", "sol", "lua", "amor", "vida",
                   "samba", "praia", "céu", "sonho", "tempo", "flor", "chuva", "estrela",
                   "cidade", "brisa", "beijo", "caminho", "alegria", "luz", "sertão", "rio",
                   "verão", "canção", "menina", "fogo", "onda", "raiz"),
    "swedish": ("natt", "ljus", "hjärta", "stad", "sommar", "regn", "skog", "himmel", "dröm",
                "tid", "eld", "vind", "hav", "kärlek", "stjärnor", "skugga", "morgon", "blå",
                "guld", "tyst", "långt", "kall", "vågor", "spegel", "snö", "måne", "väg",
                "vinter", "hem", "ö"),
    "korean": ("bam", "sarang", "haneul", "kkum", "byeol", "baram", "bada", "bom", "gyeoul",
               "nunmul", "maeum", "gil", "bit", "seoul", "yeoreum", "achim", "geurim", "norae",
               "sesang", "naeil", "밤", "사랑", "하늘", "꿈", "별"),
}  # fmt: skip
_SYLLABLES: dict[str, tuple[str, ...]] = {
    "english": ("ja", "son", "mi", "ley", "ro", "ber", "ta", "lor", "an", "ne", "kel", "vin"),
    "german": ("hei", "ner", "ka", "rin", "wolf", "gang", "lo", "tte", "fried", "mann", "ul", "ri"),
    "spanish": ("ro", "sa", "li", "a", "mi", "guel", "ca", "mi", "la", "jo", "sé", "to"),
    "french": ("ma", "rie", "lou", "is", "é", "lo", "die", "cé", "line", "an", "toi", "ne"),
    "japanese": ("ha", "ru", "ki", "yu", "mi", "ta", "ka", "shi", "na", "ko", "ri", "to"),
    "portuguese": ("jo", "ão", "ma", "ri", "a", "lu", "ís", "ca", "e", "ta", "no", "ra"),
    "swedish": ("bjö", "rn", "as", "trid", "li", "nn", "ea", "kar", "in", "ol", "of", "sa"),
    "korean": ("min", "ji", "seo", "yeon", "ha", "jun", "woo", "eun", "so", "hee", "tae", "yun"),
}  # fmt: skip
_MOODS = ("chill", "dance", "rock", "acoustic", "hip hop", "ambient", "pop", "jazz")
_BAND_NOUNS = ("Collective", "Club", "Trio", "Orchestra", "Kids", "Machine", "Society", "Sound")
_PLATFORMS = ("android", "ios", "windows", "osx", "web_player", "linux", "cast_to_device")
_COUNTRIES = ("DE", "SE", "FR", "ES", "US", "GB", "JP", "BR", "KR", "NL")
_SHOWS = ("Morning Briefing", "The Long Read", "Nerd Hour", "Küchengespräche",
          "History Unboxed", "Two Friends Talking", "Sleep Stories")  # fmt: skip
_BOOKS = ("The Quiet Harbour", "Atlas of Small Things", "Der lange Sommer")
_SESSION_STARTS = ("clickrow", "playbtn", "appload", "remote", "clickrow", "playbtn")
_SESSION_ENDS = ("endplay", "logout", "unexpected-exit-while-paused", "unexpected-exit")


def _title(words: Sequence[str], rng: random.Random, n_max: int = 3) -> str:
    picked = [rng.choice(words) for _ in range(rng.randint(1, n_max))]
    text = " ".join(picked)
    return text[:1].upper() + text[1:] if rng.random() < 0.8 else text.title()


def _person(syllables: Sequence[str], rng: random.Random) -> str:
    def name() -> str:
        return "".join(rng.choice(syllables) for _ in range(rng.randint(2, 3))).capitalize()

    return name() if rng.random() < 0.3 else f"{name()} {name()}"


def _artist_name(language: str, rng: random.Random) -> str:
    words, syllables = _WORDS[language], _SYLLABLES[language]
    form = rng.random()
    if form < 0.45:
        return _person(syllables, rng)
    if form < 0.6:
        return f"The {rng.choice(words).title()}s"
    if form < 0.7:
        return f"{_person(syllables, rng)} & the {rng.choice(_BAND_NOUNS)}"
    if form < 0.8:
        return f"DJ {_person(syllables, rng).split()[0]}"
    return f"{rng.choice(words).title()} {rng.choice(_BAND_NOUNS)}"


def _uri(rng: random.Random, kind: str = "track") -> str:
    return f"spotify:{kind}:" + "".join(rng.choice(_BASE62) for _ in range(22))


def _cumulative(weights: Sequence[float]) -> tuple[float, ...]:
    return tuple(itertools.accumulate(weights))


def _pick(rng: random.Random, cum_weights: Sequence[float]) -> int:
    return bisect.bisect_right(cum_weights, rng.random() * cum_weights[-1])


# --- the listener -----------------------------------------------------------------------

def build_listener(config: SyntheticConfig) -> SyntheticListener:
    """The catalogue and habits for `config.seed` (deterministic)."""
    rng = random.Random(f"songnet-synthetic:{config.seed}:listener")
    languages = list(_WORDS)
    rng.shuffle(languages)
    clusters = tuple(f"{languages[c % len(languages)]} {_MOODS[(c * 3 + c // len(languages)) % len(_MOODS)]}"
                     for c in range(config.n_clusters))  # fmt: skip

    # Artists: every cluster gets at least one, the rest by uneven cluster sizes.
    size_weights = _cumulative([rng.uniform(0.5, 2.0) for _ in clusters])
    artist_cluster = list(range(config.n_clusters)) + [
        _pick(rng, size_weights) for _ in range(config.n_artists - config.n_clusters)
    ]
    seen_artists: set[str] = set()
    tracks: list[SyntheticTrack] = []
    artists: list[SyntheticArtist] = []
    for cluster in artist_cluster:
        language = clusters[cluster].split()[0]
        name = _artist_name(language, rng)
        while normalise(name) in seen_artists or not normalise(name):
            name = f"{name} {rng.choice(_BAND_NOUNS)}"
        seen_artists.add(normalise(name))
        words = _WORDS[language]
        n_albums = min(config.tracks_per_artist, rng.choice((1, 1, 2, 2, 3)))
        seen_titles: set[str] = set()
        albums: list[tuple[int, ...]] = []
        album_sizes = _split(config.tracks_per_artist, n_albums, rng)
        mood = clusters[cluster].split(maxsplit=1)[1]
        base_s = 360.0 if mood == "ambient" else 160.0 if mood == "hip hop" else 215.0
        for size in album_sizes:
            album_name = _title(words, rng, 2)
            indices = []
            for position in range(1, size + 1):
                title = _title(words, rng)
                if rng.random() < 0.05:
                    title += f" (feat. {_person(_SYLLABLES[language], rng)})"
                while normalise(title) in seen_titles:
                    title += " " + rng.choice(("II", "Reprise", "Interlude", "Pt. 2", "Live"))
                seen_titles.add(normalise(title))
                duration = min(600.0, max(75.0, rng.lognormvariate(math.log(base_s), 0.25)))
                indices.append(len(tracks))
                tracks.append(
                    SyntheticTrack(
                        artist=name,
                        title=title,
                        album=album_name,
                        album_position=position,
                        duration_ms=int(duration * 1000),
                        uri=_uri(rng),
                        alias_uri=_uri(rng) if rng.random() < config.uri_alias_rate else None,
                        cluster=cluster,
                        affinity=rng.random() ** 0.7,
                    )
                )
            albums.append(tuple(indices))
        own = tuple(i for album in albums for i in album)
        # Popularity within the artist: a few hits, weighted by how much the listener likes them.
        ranks = list(range(1, len(own) + 1))
        rng.shuffle(ranks)
        weights = [(0.25 + tracks[i].affinity) / r**0.8 for i, r in zip(own, ranks, strict=True)]
        artists.append(SyntheticArtist(name, cluster, tuple(albums), _cumulative(weights), own))

    cluster_artists = tuple(
        tuple(a for a, artist in enumerate(artists) if artist.cluster == c) for c in range(config.n_clusters)
    )
    cluster_artist_cum_weights = tuple(
        _cumulative([1.0 / (rank + 1) ** 0.9 for rank in range(len(members))]) for members in cluster_artists
    )

    # The listener's taste: favourite clusters, and from each cluster a few favoured next ones.
    preference = [rng.gammavariate(0.8, 1.0) + 0.02 for _ in clusters]
    transitions: list[tuple[float, ...]] = []
    favoured: list[tuple[int, ...]] = []
    k = config.n_clusters
    for c in range(k):
        others = [o for o in range(k) if o != c]
        successors = tuple(rng.sample(others, min(len(others), rng.choice((1, 2, 2, 3)))))
        favoured.append(successors)
        if not others:
            transitions.append((1.0,))
            continue
        move = 1.0 - config.cluster_stay
        row = [0.0] * k
        row[c] = config.cluster_stay
        fav_share = [rng.uniform(1.0, 3.0) for _ in successors]
        for s, w in zip(successors, fav_share, strict=True):
            row[s] += move * 0.8 * w / sum(fav_share)
        pref_others = sum(preference[o] for o in others)
        for o in others:
            row[o] += move * 0.2 * preference[o] / pref_others
        transitions.append(tuple(row))

    # Clusters by time of day (night, morning, afternoon, evening): each cluster has a best bucket.
    best_bucket = [rng.randrange(4) for _ in clusters]
    start_by_bucket = tuple(
        tuple(preference[c] * (3.0 if best_bucket[c] == b else 0.5) for c in range(k)) for b in range(4)
    )
    weekday = _hour_profile([(7.5, 1.0, 0.8), (12.5, 1.0, 0.5), (18.5, 2.0, 1.2), (22.0, 1.5, 0.6)], rng)
    weekend = _hour_profile([(11.0, 2.0, 1.0), (16.0, 2.5, 0.8), (22.5, 2.0, 1.0), (1.0, 1.5, 0.4)], rng)
    return SyntheticListener(
        clusters=clusters,
        tracks=tuple(tracks),
        artists=tuple(artists),
        cluster_artists=cluster_artists,
        cluster_artist_cum_weights=cluster_artist_cum_weights,
        track_artist=tuple(a for a, artist in enumerate(artists) for _ in artist.tracks),
        transitions=tuple(transitions),
        favoured_successors=tuple(favoured),
        start_cluster_by_bucket=start_by_bucket,
        weekday_hours=weekday,
        weekend_hours=weekend,
        transition_cum_weights=tuple(_cumulative(row) for row in transitions),
        start_cluster_cum_weights=tuple(_cumulative(row) for row in start_by_bucket),
    )


def _split(total: int, parts: int, rng: random.Random) -> list[int]:
    cuts = sorted(rng.sample(range(1, total), parts - 1)) if parts > 1 else []
    return [b - a for a, b in itertools.pairwise([0, *cuts, total])]


def _hour_profile(peaks: Sequence[tuple[float, float, float]], rng: random.Random) -> tuple[float, ...]:
    """24 weights: a floor plus Gaussian peaks (hour, width, height) jittered per listener."""
    weights = []
    for hour in range(24):
        w = 0.03
        for centre, width, height in peaks:
            d = min(abs(hour + 0.5 - centre), 24 - abs(hour + 0.5 - centre))
            w += height * rng.uniform(0.8, 1.2) * math.exp(-0.5 * (d / width) ** 2)
        weights.append(w)
    return tuple(weights)


# --- the history ------------------------------------------------------------------------

@dataclass(slots=True)
class _Clock:
    """Where the history stands: seconds since the epoch (float), and who played what when."""

    now: float
    last_end_of: dict[int, float] = field(default_factory=dict)


def generate_plays(config: SyntheticConfig) -> list[Play]:
    """`config.n_plays` music plays of the listener, sorted by end time."""
    listener = build_listener(config)
    rng = random.Random(f"songnet-synthetic:{config.seed}:history")
    plays: list[Play] = []
    offset = timedelta(hours=config.utc_offset_hours)
    day = datetime(config.start.year, config.start.month, config.start.day, tzinfo=UTC) - offset
    clock = _Clock(now=day.timestamp())
    weekday_cum = _cumulative(listener.weekday_hours)
    weekend_cum = _cumulative(listener.weekend_hours)
    sessions_per_day = config.plays_per_day / config.session_plays
    while len(plays) < config.n_plays:
        weekend = (day + offset).weekday() >= 5
        away = rng.random() < 0.03  # days without listening
        n_sessions = 0 if away else _poisson(rng, sessions_per_day * (1.15 if weekend else 0.95))
        hours_cum = weekend_cum if weekend else weekday_cum
        starts = sorted(day.timestamp() + (_pick(rng, hours_cum) + rng.random()) * 3600 for _ in range(n_sessions))
        for start in starts:
            clock.now = max(clock.now + rng.uniform(300, 900), start)
            hour = int(((clock.now / 3600) + config.utc_offset_hours) % 24)
            length = max(1, round(rng.lognormvariate(math.log(config.session_plays) - 0.245, 0.7)))
            _session(listener, config, rng, clock, hour // 6, min(length, config.n_plays - len(plays)), plays)
            if len(plays) >= config.n_plays:
                break
        day += timedelta(days=1)
    return plays


def _poisson(rng: random.Random, mean: float) -> int:
    limit, n, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        n += 1
        product *= rng.random()
    return n


def _session(
    listener: SyntheticListener,
    config: SyntheticConfig,
    rng: random.Random,
    clock: _Clock,
    bucket: int,
    length: int,
    out: list[Play],
) -> None:
    shuffle = rng.random() < config.shuffle_rate
    cluster = _pick(rng, listener.start_cluster_cum_weights[bucket])
    queue: list[int] = []  # album-order run still to play
    if rng.random() < config.album_run_rate:
        shuffle = False
        artist = listener.artists[_artist_in(listener, cluster, rng)]
        album = rng.choice(artist.albums)
        queue = list(album[rng.randrange(max(1, len(album) // 3)):])
    reason_start = rng.choice(_SESSION_STARTS)
    current: int | None = None
    for n in range(length):
        last = n == length - 1
        if queue:
            track_index = queue.pop(0)
        elif current is not None and rng.random() < config.repeat_rate:
            track_index = current
            reason_start = rng.choice(("trackdone", "backbtn"))
        else:
            track_index = _next_track(listener, config, rng, clock, cluster, current)
        track = listener.tracks[track_index]
        cluster = track.cluster
        repeat = track_index == current
        skip_p = min(0.95, config.skip_rate * 2.7 * (1.0 - track.affinity) * (1.3 if shuffle else 1.0))
        if queue or repeat:
            skip_p *= 0.3  # album runs and deliberate repeats are rarely skipped
        if not repeat and rng.random() < skip_p:
            ms = int(rng.uniform(300, 28_000)) if rng.random() < 0.85 else int(track.duration_ms * rng.uniform(0.15, 0.6))
            reason_end, skipped = ("fwdbtn" if rng.random() < 0.9 else "backbtn"), True
        elif last and rng.random() < 0.35:
            ms = int(track.duration_ms * rng.uniform(0.05, 0.95))
            reason_end, skipped = rng.choice(_SESSION_ENDS), False
        else:
            ms = max(0, track.duration_ms - rng.randint(0, 400))
            reason_end, skipped = "trackdone", False
        # Never two plays of one track within the pairing window (see the module's note).
        earliest = clock.last_end_of.get(track_index, -math.inf) + MIN_SAME_TRACK_GAP_S
        end = max(clock.now + rng.uniform(0.0, 2.0) + ms / 1000, earliest)
        uri = track.alias_uri if track.alias_uri and rng.random() < 0.3 else track.uri
        out.append(
            Play(
                end_ts=int(end),
                ms_played=ms,
                artist=track.artist,
                title=track.title,
                source="extended",
                album=track.album,
                uri=uri,
                skipped=skipped,
                reason_start=reason_start,
                reason_end=reason_end,
                shuffle=shuffle,
            )
        )
        clock.now = end
        clock.last_end_of[track_index] = end
        current = track_index
        reason_start = reason_end if reason_end in ("trackdone", "fwdbtn", "backbtn") else "clickrow"


def _artist_in(listener: SyntheticListener, cluster: int, rng: random.Random) -> int:
    members = listener.cluster_artists[cluster]
    return members[_pick(rng, listener.cluster_artist_cum_weights[cluster])]


def _next_track(
    listener: SyntheticListener,
    config: SyntheticConfig,
    rng: random.Random,
    clock: _Clock,
    cluster: int,
    current: int | None,
) -> int:
    next_cluster = _pick(rng, listener.transition_cum_weights[cluster])
    choice = 0
    for _attempt in range(8):
        if current is not None and next_cluster == cluster and rng.random() < config.same_artist_rate:
            artist = listener.artists[listener.track_artist[current]]
        else:
            artist = listener.artists[_artist_in(listener, next_cluster, rng)]
        choice = artist.tracks[_pick(rng, artist.track_cum_weights)]
        recent = clock.now - clock.last_end_of.get(choice, -math.inf) < MIN_SAME_TRACK_GAP_S * 5
        if choice != current and not recent:
            break
    return choice


def account_period(plays: Sequence[Play], *, days: int = 365, end_ts: int | None = None) -> list[Play]:
    """The plays an account-data export requested at `end_ts` would hold: its last `days` days."""
    if not plays:
        return []
    end = max(p.end_ts for p in plays) if end_ts is None else end_ts
    return [p for p in plays if end - days * 86_400 < p.end_ts <= end]


# --- writing exports --------------------------------------------------------------------

_ENCODE = json.JSONEncoder(ensure_ascii=False)


def _json(value: object) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    return _ENCODE.encode(value)


@functools.lru_cache(maxsize=1 << 16)
def _json_str(value: str) -> str:
    return _ENCODE.encode(value)


def _json_opt(value: str | None) -> str:
    return "null" if value is None else _json_str(value)


def _play_record(play: Play, device: _Device) -> str:
    """A music play's record; the same text `_record(_extended_fields(...))` gives, faster."""
    return _PLAY_TEMPLATE % (
        _iso(play.end_ts),
        _json_str(device.platform),
        play.ms_played,
        _json_str(device.country),
        _json_str(play.title),
        _json_str(play.artist),
        _json_opt(play.album),
        _json_opt(play.uri),
        _json_opt(play.reason_start),
        _json_opt(play.reason_end),
        _json(play.shuffle),
        _json(play.skipped),
        _json(device.offline),
        _json((play.end_ts - play.ms_played // 1000) * 1000 if device.offline else None),
        _json(device.incognito),
    )


def _record(fields: Sequence[tuple[str, object]]) -> str:
    """One record exactly as `json.dump(records, indent=2, ensure_ascii=False)` writes it."""
    return "  {\n" + ",\n".join(f'    "{k}": {_json(v)}' for k, v in fields) + "\n  }"


def _write_json_list(path: Path, records: Sequence[str]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as fh:
        if not records:
            fh.write("[]")
            return
        fh.write("[\n")
        for i, rec in enumerate(records):
            if i:
                fh.write(",\n")
            fh.write(rec)
        fh.write("\n]")


_EPOCH = date(1970, 1, 1)


@functools.lru_cache(maxsize=4096)
def _day(days: int) -> str:
    return (_EPOCH + timedelta(days=days)).isoformat()


def _iso(ts: int) -> str:
    """`ts` as Spotify writes `ts` ("2023-09-25T12:26:38Z"); strftime is the slow part of writing."""
    days, rest = divmod(ts, 86_400)
    hours, rest = divmod(rest, 3600)
    return f"{_day(days)}T{hours:02d}:{rest // 60:02d}:{rest % 60:02d}Z"


def _account_time(ts: int) -> str:
    """`ts` as account data writes `endTime`: UTC, truncated to the minute."""
    days, rest = divmod(ts, 86_400)
    hours, rest = divmod(rest, 3600)
    return f"{_day(days)} {hours:02d}:{rest // 60:02d}"


def _extended_fields(
    ts: int,
    ms: int,
    device: _Device,
    *,
    track: tuple[str | None, str | None, str | None, str | None] = (None, None, None, None),
    episode: tuple[str | None, str | None, str | None] = (None, None, None),
    audiobook: tuple[str | None, str | None, str | None, str | None] = (None, None, None, None),
    reasons: tuple[str | None, str | None] = ("clickrow", "endplay"),
    shuffle: bool | None = False,
    skipped: bool | None = False,
) -> list[tuple[str, object]]:
    return [
        ("ts", _iso(ts)),
        ("platform", device.platform),
        ("ms_played", ms),
        ("conn_country", device.country),
        ("ip_addr", None),
        ("master_metadata_track_name", track[0]),
        ("master_metadata_album_artist_name", track[1]),
        ("master_metadata_album_album_name", track[2]),
        ("spotify_track_uri", track[3]),
        ("episode_name", episode[0]),
        ("episode_show_name", episode[1]),
        ("spotify_episode_uri", episode[2]),
        ("audiobook_title", audiobook[0]),
        ("audiobook_uri", audiobook[1]),
        ("audiobook_chapter_uri", audiobook[2]),
        ("audiobook_chapter_title", audiobook[3]),
        ("reason_start", reasons[0]),
        ("reason_end", reasons[1]),
        ("shuffle", shuffle),
        ("skipped", skipped),
        ("offline", device.offline),
        ("offline_timestamp", (ts - ms // 1000) * 1000 if device.offline else None),
        ("incognito_mode", device.incognito),
    ]


_PLAY_FIELDS = (
    "ts", "platform", "ms_played", "conn_country", "ip_addr", "master_metadata_track_name",
    "master_metadata_album_artist_name", "master_metadata_album_album_name", "spotify_track_uri",
    "episode_name", "episode_show_name", "spotify_episode_uri", "audiobook_title", "audiobook_uri",
    "audiobook_chapter_uri", "audiobook_chapter_title", "reason_start", "reason_end", "shuffle",
    "skipped", "offline", "offline_timestamp", "incognito_mode",
)  # fmt: skip
_NULL_IN_PLAYS = {"ip_addr", "episode_name", "episode_show_name", "spotify_episode_uri",
                  "audiobook_title", "audiobook_uri", "audiobook_chapter_uri", "audiobook_chapter_title"}  # fmt: skip
_PLAY_TEMPLATE = "  {\n" + ",\n".join(
    f'    "{name}": ' + ("null" if name in _NULL_IN_PLAYS else '"%s"' if name == "ts" else "%s")
    for name in _PLAY_FIELDS
) + "\n  }"


@dataclass(slots=True)
class _Device:
    platform: str
    country: str
    offline: bool = False
    incognito: bool = False


@dataclass(frozen=True, slots=True)
class _Extra:
    """A non-music record: what it is, and the fields that say so."""

    kind: str  # "episode" | "audiobook" | "no_track" | "video"
    ts: int
    fields: list[tuple[str, object]]


def _extras_between(
    prev_end: int, next_start: int, rng: random.Random, device: _Device, catalogue: _ExtraCatalogue
) -> Iterator[_Extra]:
    """Podcasts, audiobooks, trackless records and videos in a pause between two music plays."""
    gap = next_start - prev_end
    if gap < 120:
        return
    roll = rng.random()
    room_ms = (gap - 60) * 1000
    if gap > 1800 and roll < 0.35:
        show, episodes = rng.choice(catalogue.shows)
        name, uri = rng.choice(episodes)
        ms = min(room_ms, int(rng.uniform(60, 3000) * 1000)) if rng.random() < 0.7 else int(rng.uniform(0, 20_000))
        yield _Extra("episode", prev_end + 30 + ms // 1000, _extended_fields(
            prev_end + 30 + ms // 1000, ms, device, episode=(name, show, uri),
            reasons=("clickrow", "endplay" if ms < 20_000 else "trackdone"), skipped=ms < 20_000))
    elif gap > 1800 and roll < 0.40:
        title, book_uri, chapters = rng.choice(catalogue.books)
        chapter_title, chapter_uri = rng.choice(chapters)
        ms = min(room_ms, int(rng.uniform(300, 2400) * 1000))
        yield _Extra("audiobook", prev_end + 30 + ms // 1000, _extended_fields(
            prev_end + 30 + ms // 1000, ms, device, audiobook=(title, book_uri, chapter_uri, chapter_title),
            reasons=("clickrow", "endplay")))
    elif roll < 0.42:
        ms = int(rng.uniform(200, 5000))
        yield _Extra("no_track", prev_end + 5 + ms // 1000, _extended_fields(
            prev_end + 5 + ms // 1000, ms, device, reasons=("fwdbtn", "fwdbtn"), skipped=None))
    elif gap > 900 and roll < 0.43:
        video = rng.choice(catalogue.video_tracks)
        ms = min(room_ms, int(rng.uniform(5, 240) * 1000))
        if rng.random() < 0.4:
            show, episodes = rng.choice(catalogue.shows)
            name, uri = rng.choice(episodes)
            fields = _extended_fields(prev_end + 30 + ms // 1000, ms, device, episode=(name, show, uri),
                                      reasons=("clickrow", "endplay"), skipped=True)
        else:
            fields = _extended_fields(prev_end + 30 + ms // 1000, ms, device, track=video,
                                      reasons=("clickrow", "endplay"), skipped=ms < 30_000)
        yield _Extra("video", prev_end + 30 + ms // 1000, fields)


@dataclass(frozen=True, slots=True)
class _ExtraCatalogue:
    shows: list[tuple[str, list[tuple[str, str]]]]
    books: list[tuple[str, str, list[tuple[str, str]]]]
    video_tracks: list[tuple[str, str, str | None, str | None]]  # title, artist, album, uri


def _extra_catalogue(rng: random.Random, plays: Sequence[Play]) -> _ExtraCatalogue:
    shows = [
        (show, [(f"Ep. {n}: {_title(_WORDS['english'], rng)}", _uri(rng, "episode")) for n in range(1, 41)])
        for show in _SHOWS
    ]
    books = [
        (book, _uri(rng, "show"), [(f"Chapter {n}", _uri(rng, "episode")) for n in range(1, 31)])
        for book in _BOOKS
    ]
    sample = [plays[rng.randrange(len(plays))] for _ in range(min(len(plays), 20))]
    return _ExtraCatalogue(shows, books, [(p.title, p.artist, p.album, p.uri) for p in sample])


def _year_label(first_ts: int, last_ts: int) -> str:
    a, b = datetime.fromtimestamp(first_ts, UTC).year, datetime.fromtimestamp(last_ts, UTC).year
    return str(a) if a == b else f"{a}-{b}"


def write_extended_export(
    plays: Sequence[Play],
    folder: Path,
    *,
    records_per_file: int = EXTENDED_RECORDS_PER_FILE,
    extras: bool = True,
    seed: int = 0,
) -> list[Path]:
    """Write `plays` as an extended streaming history into `folder`; the files written.

    Audio files are `Streaming_History_Audio_<years>_<N>.json` of up to `records_per_file`
    records, in time order (without `_N` when one file is enough). With `extras`, podcast
    episodes, audiobook chapters and records without a track sit in the pauses between
    plays, and a `Streaming_History_Video_<years>.json` holds music and podcast videos.
    Written file by file: memory stays at one file's records.
    """
    if records_per_file < 1:
        raise ValueError("records_per_file must be >= 1")
    folder.mkdir(parents=True, exist_ok=True)
    ordered = sorted(plays, key=lambda p: p.end_ts)
    rng = random.Random(f"songnet-synthetic:{seed}:extended")
    catalogue = _extra_catalogue(rng, ordered) if extras and ordered else None
    home = rng.choice(_COUNTRIES)
    devices = rng.sample(_PLATFORMS, 3)
    device = _Device(devices[0], home)

    audio_chunks: list[tuple[int, int, Path]] = []  # first ts, last ts, temporary path
    videos: list[tuple[int, str]] = []
    chunk: list[str] = []
    chunk_first = chunk_last = 0

    def flush() -> None:
        nonlocal chunk
        tmp = folder / f".audio-{len(audio_chunks)}.part"
        _write_json_list(tmp, chunk)
        audio_chunks.append((chunk_first, chunk_last, tmp))
        chunk = []

    def add(ts: int, rec: str) -> None:
        nonlocal chunk_first, chunk_last
        if not chunk:
            chunk_first = ts
        chunk.append(rec)
        chunk_last = ts
        if len(chunk) >= records_per_file:
            flush()

    prev_end: int | None = None
    for play in ordered:
        start = play.end_ts - play.ms_played // 1000
        if prev_end is not None and play.end_ts - prev_end > 1800:
            # A new sitting: maybe another device, a trip abroad, offline or private listening.
            if rng.random() < 0.3:
                device.platform = rng.choice(devices)
            device.country = home if rng.random() < 0.97 else rng.choice(_COUNTRIES)
            device.offline = rng.random() < 0.03
            device.incognito = rng.random() < 0.01
        if catalogue is not None and prev_end is not None:
            for extra in _extras_between(prev_end, start, rng, device, catalogue):
                if extra.kind == "video":
                    videos.append((extra.ts, _record(extra.fields)))
                else:
                    add(extra.ts, _record(extra.fields))
        add(play.end_ts, _play_record(play, device))
        prev_end = play.end_ts
    if chunk:
        flush()

    paths: list[Path] = []
    numbered = len(audio_chunks) > 1
    for n, (first, last, tmp) in enumerate(audio_chunks):
        suffix = f"_{n}" if numbered else ""
        path = folder / f"Streaming_History_Audio_{_year_label(first, last)}{suffix}.json"
        tmp.replace(path)
        paths.append(path)
    if videos:
        path = folder / f"Streaming_History_Video_{_year_label(videos[0][0], videos[-1][0])}.json"
        _write_json_list(path, [rec for _, rec in videos])
        paths.append(path)
    return paths


def write_account_export(
    plays: Sequence[Play], folder: Path, *, records_per_file: int = ACCOUNT_RECORDS_PER_FILE
) -> list[Path]:
    """Write `plays` as an account-data export (`StreamingHistory_music_<N>.json`) into `folder`."""
    if records_per_file < 1:
        raise ValueError("records_per_file must be >= 1")
    folder.mkdir(parents=True, exist_ok=True)
    ordered = sorted(plays, key=lambda p: p.end_ts)
    paths = []
    for n, first in enumerate(range(0, len(ordered), records_per_file)):
        records = [
            _record([
                ("endTime", _account_time(p.end_ts)),
                ("artistName", p.artist),
                ("trackName", p.title),
                ("msPlayed", p.ms_played),
            ])
            for p in ordered[first:first + records_per_file]
        ]  # fmt: skip
        path = folder / f"StreamingHistory_music_{n}.json"
        _write_json_list(path, records)
        paths.append(path)
    return paths


ACCOUNT_FOLDER = "Spotify Account Data"
EXTENDED_FOLDER = "Spotify Extended Streaming History"


def write_exports(
    plays: Sequence[Play],
    folder: Path,
    *,
    formats: Sequence[str] = ("account", "extended"),
    seed: int = 0,
    extras: bool = True,
    records_per_file: int = EXTENDED_RECORDS_PER_FILE,
    account_days: int = 365,
    account_lag_days: int | None = None,
) -> dict[str, list[Path]]:
    """Both exports a listener would download, laid out as Spotify's zips unpack.

    The extended history holds every play (in `Spotify Extended Streaming History/`); the
    account data (in `Spotify Account Data/`) the `account_days` before a request made
    `account_lag_days` before the last play (default: a quarter of the history's span, at
    most 60 days), so the two overlap on part of the history.
    Returns the files written by format ("account", "extended").
    """
    unknown = set(formats) - {"account", "extended"}
    if unknown:
        raise ValueError(f"unknown export format(s): {', '.join(sorted(unknown))}")
    written: dict[str, list[Path]] = {}
    if "account" in formats:
        end = None
        if plays:
            first, last = min(p.end_ts for p in plays), max(p.end_ts for p in plays)
            lag_s = min(60 * 86_400, (last - first) // 4) if account_lag_days is None else account_lag_days * 86_400
            end = last - lag_s
        period = account_period(plays, days=account_days, end_ts=end)
        written["account"] = write_account_export(period, folder / ACCOUNT_FOLDER)
    if "extended" in formats:
        written["extended"] = write_extended_export(
            plays, folder / EXTENDED_FOLDER, records_per_file=records_per_file, extras=extras, seed=seed
        )
    return written
