"""A short reason a person can read for each track of a generated playlist.

Reasons come from the listener's own history, not from the model's internals: which track it
follows in their sessions, which seed shares its artist or its sessions, when they play it.
The strongest applicable reason wins; every track gets one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from songnet_core.features import TrackFeatures
from songnet_core.generate import GenerationContext
from songnet_core.history import TrackInfo
from songnet_core.transitions import TransitionCounts

SEED_REASON = "your seed"
# A transition or shared session seen at least this often is "often".
OFTEN = 2
# How many playlist tracks back a transition may come from.
LOOKBACK = 3


class Explainer:
    def __init__(
        self,
        transitions: TransitionCounts,
        tracks: Mapping[int, TrackInfo],
        features: Mapping[int, TrackFeatures] | None = None,
    ) -> None:
        self.transitions = transitions
        self.tracks = tracks
        self.features = features or {}

    def explain(self, playlist: Sequence[int], n_seeds: int, context: GenerationContext) -> list[str]:
        """One reason per track of `playlist`, whose first `n_seeds` tracks are the seeds."""
        seeds = list(playlist[:n_seeds])
        return [
            SEED_REASON if i < n_seeds else self._reason(t, playlist[:i], seeds, context)
            for i, t in enumerate(playlist)
        ]

    def _reason(self, track: int, before: Sequence[int], seeds: Sequence[int], context: GenerationContext) -> str:
        tc = self.transitions
        recent = list(reversed(before[-LOOKBACK:]))
        for prev in recent:
            n = tc.count(prev, track)
            if n >= OFTEN:
                return f"often follows {self._name(prev)} in your sessions ({n}×)"
        info = self.tracks.get(track)
        if info is not None:
            for seed in seeds:
                seed_info = self.tracks.get(seed)
                if seed_info is not None and seed_info.artist_id == info.artist_id:
                    return f"same artist as seed {self._name(seed)}"
        best_seed, shared = None, 0
        for seed in seeds:
            n = tc.shared_sessions(seed, track)
            if n > shared:
                best_seed, shared = seed, n
        if best_seed is not None and shared >= OFTEN:
            return f"in {shared} of your sessions with seed {self._name(best_seed)}"
        for prev in recent:
            if tc.count(prev, track) == 1:
                return f"followed {self._name(prev)} once in your sessions"
        around = self._plays_around(track, context.hour)
        if around >= 3:
            return f"you played it {around} times around this hour"
        plays = self._plays(track)
        if plays > 1:
            return f"you played it {plays} times"
        if plays == 1:
            return "you played it once; the model thinks it fits here"
        return "the model thinks it fits here"

    def _plays(self, track: int) -> int:
        f = self.features.get(track)
        return f.play_count if f is not None else self.transitions.play_count(track)

    def _plays_around(self, track: int, hour: int) -> int:
        """Plays whose local hour is within one hour of `hour`."""
        f = self.features.get(track)
        if f is None or len(f.hour_profile) != 24:
            return 0
        share = sum(f.hour_profile[(hour + d) % 24] for d in (-1, 0, 1))
        return round(share * f.play_count)

    def _name(self, track: int) -> str:
        info = self.tracks.get(track)
        return f'"{info.title}"' if info is not None else f"track {track}"
