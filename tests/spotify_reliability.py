"""The reliability run: many syncs against the fake Spotify while a share of requests fail.

Shared by `tests/test_spotify_reliability.py` and `bench/sync_reliability.py`. Each run syncs
a freshly drawn list to one configured playlist while the fake fails a seeded-random share of
Web API requests transiently (429 with a short Retry-After, 500/502/503 before or after taking
effect, dropped connections before or after, answers delayed past the timeout); every tenth
run starts with an expired access token, and now and then the listener deletes the playlist.
After every run the fake must hold exactly the generated list in exactly one playlist for the
configuration. Waits are recorded by a `RecordingSleeper`, never slept.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.db import open_database
from service.settings import PlaylistConfig
from service.spotify.sync import marker_for, sync_playlists
from tests.fake_spotify import FakeSpotify, Fault, make_client

CONFIG = PlaylistConfig(name="Weekly Mix", id="weekly")

TRANSIENT_FAULTS = [
    Fault.rate_limited(1),
    Fault.rate_limited(3),
    Fault.server_error(500),
    Fault.server_error(502),
    Fault.server_error(503),
    Fault.server_error(502, after=True),
    Fault.dropped(),
    Fault.lost_response(),
    Fault.delayed(0.12),
]


@dataclass(frozen=True)
class Track:
    track_id: int | None
    artist: str
    title: str
    uri: str | None
    reason: str = "reliability run"
    is_seed: bool = False


@dataclass(frozen=True)
class Generated:
    config_id: str
    name: str
    tracks: list[Track]
    model_version: int | None = 1
    ranker: str = "model"


@dataclass
class ReliabilityReport:
    runs: int = 0
    tracks_per_run: int = 0
    fault_rate: float = 0.0
    written: int = 0
    failed: int = 0
    deferred: int = 0
    wrong_results: list[str] = field(default_factory=list)  # runs whose end state was not the list
    requests: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    refreshes: int = 0
    creates: int = 0
    deletions_by_listener: int = 0
    sleeps: list[float] = field(default_factory=list)
    cap_seconds: float = 0.0
    seconds: float = 0.0
    run_seconds: list[float] = field(default_factory=list)
    huge_retry_after_deferred: bool = False
    huge_retry_after_seconds: float = 0.0
    huge_retry_after_sleeps: list[float] = field(default_factory=list)

    @property
    def faults_injected(self) -> int:
        return sum(self.faults.values())

    @property
    def max_sleep(self) -> float:
        return max(self.sleeps, default=0.0)

    def figures(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "tracks_per_run": self.tracks_per_run,
            "written": self.written,
            "failed": self.failed,
            "deferred": self.deferred,
            "wrong_end_states": len(self.wrong_results),
            "requests": self.requests,
            "faults_injected": self.faults_injected,
            "fault_share": round(self.faults_injected / max(self.requests, 1), 3),
            "faults_by_kind": dict(sorted(self.faults.items())),
            "retries": self.retries,
            "token_refreshes": self.refreshes,
            "playlists_created": self.creates,
            "deleted_by_listener": self.deletions_by_listener,
            "waits": len(self.sleeps),
            "max_wait_s": round(self.max_sleep, 3),
            "cap_s": self.cap_seconds,
            "simulated_wait_s": round(sum(self.sleeps), 1),
            "wall_s": round(self.seconds, 2),
            "median_run_ms": round(1000 * statistics.median(self.run_seconds), 1)
            if self.run_seconds
            else None,
            "huge_retry_after_deferred": self.huge_retry_after_deferred,
            "huge_retry_after_wall_s": round(self.huge_retry_after_seconds, 3),
            "huge_retry_after_waits": len(self.huge_retry_after_sleeps),
        }


def run_reliability(
    *,
    runs: int = 100,
    tracks: int = 120,
    fault_rate: float = 0.45,
    seed: int = 2026,
    max_attempts: int = 12,
    cap_seconds: float = 30.0,
    timeout_seconds: float = 0.05,
    data_dir: Path | None = None,
) -> ReliabilityReport:
    rng = random.Random(seed)
    report = ReliabilityReport(
        runs=runs, tracks_per_run=tracks, fault_rate=fault_rate, cap_seconds=cap_seconds
    )
    with tempfile.TemporaryDirectory() as tmp, FakeSpotify() as fake:
        root = data_dir or Path(tmp)
        engine = open_database(root)
        catalogue = [fake.add_track(f"Song {i}", f"Artist {i % 40}") for i in range(tracks * 4)]
        client, sleeper = make_client(
            fake,
            root,
            engine=engine,
            seed=seed,
            playlists=[CONFIG],
            spotify_max_attempts=max_attempts,
            spotify_retry_cap_seconds=cap_seconds,
            spotify_timeout_seconds=timeout_seconds,
        )
        settings = fake.settings(root, playlists=[CONFIG])
        fake.random_faults(fault_rate, TRANSIENT_FAULTS, seed=seed, path=r"^/v1/")
        started = time.perf_counter()
        for run in range(runs):
            if run % 10 == 9:
                fake.expire_access_tokens()
            if run % 25 == 24:
                existing = [
                    p for p in fake.followed_playlists() if marker_for(CONFIG.id) in p.description
                ]
                for p in existing:
                    fake.user_deletes_playlist(p.id)
                    report.deletions_by_listener += 1
            picked = rng.sample(catalogue, tracks)
            generated = Generated(
                CONFIG.id,
                CONFIG.name,
                [
                    Track(None, t.artists[0], t.name, t.uri, is_seed=i < 3)
                    for i, t in enumerate(picked)
                ],
            )
            t0 = time.perf_counter()
            outcome = sync_playlists(engine, settings, [generated], client=client).outcomes[0]
            report.run_seconds.append(time.perf_counter() - t0)
            if outcome.status == "written":
                report.written += 1
            elif outcome.status == "deferred":
                report.deferred += 1
            else:
                report.failed += 1
            ours = [p for p in fake.followed_playlists() if marker_for(CONFIG.id) in p.description]
            wanted = [t.uri for t in picked]
            if len(ours) != 1 or ours[0].items != wanted:
                report.wrong_results.append(
                    f"run {run}: {len(ours)} playlists, items {'match' if ours and ours[0].items == wanted else 'differ'} ({outcome.status}: {outcome.error})"
                )
        report.seconds = time.perf_counter() - started
        report.sleeps = list(sleeper.sleeps)
        report.requests = len(fake.requests)
        report.faults = Counter(fake.faults_injected)
        report.retries = client.stats.retries
        report.refreshes = client.stats.refreshes
        report.creates = sum(
            1 for r in fake.requests if r.method == "POST" and r.path.endswith("/me/playlists")
        )

        # A huge Retry-After: the run defers at once instead of blocking.
        fake.clear_faults()
        fake.inject(Fault.rate_limited(20_000), times=None)
        before = len(sleeper.sleeps)
        t0 = time.perf_counter()
        outcome = sync_playlists(engine, settings, [generated], client=client).outcomes[0]
        report.huge_retry_after_seconds = time.perf_counter() - t0
        report.huge_retry_after_sleeps = sleeper.sleeps[before:]
        report.huge_retry_after_deferred = (
            outcome.status == "deferred" and (outcome.deferred_until or 0) >= time.time() + 19_000
        )
        engine.dispose()
    return report

