"""kill -9 the daemon or its child at random points in its first start, import, training,
generation and sync; check what is left.

Used by `tests/test_crash_safety.py` (a few rounds) and `bench/crash_soak.py` (100 kills).
One data directory lives through every kill. Each round drops one more export file into
the watched folder, then starts `songnet run` once per phase and kills (SIGKILL) the daemon,
or its training or generation child, at a random moment after the phase began:

- first-start: a daemon starting on a fresh data directory of its own (Python's imports,
  creating the database, the first jobs), at a random moment after its launch; the next
  start there must create the database and run, and stop with exit 0 on SIGTERM;
- import: the daemon, after "job started" of the import job (the new file being stored);
- train: the daemon, after "job started" of a training (its child is training);
- train-child: the training child only; the daemon must log the failure, carry on and stop
  cleanly on SIGTERM;
- generate: the daemon, after "job started" of a weekly run (its child is generating);
- generate-child: the generation child only, as for train-child;
- sync: the daemon, after a playlist file was written (the Spotify sync to the fake API follows).

A child must never outlive its daemon: after each kill of a daemon, its children are gone.

After every kill: `PRAGMA integrity_check` passes; the plays stored are exactly those of the
files the ledger says were imported (nothing lost, nothing doubled: compared with each file
imported alone into a fresh database); a promoted model, if any, loads; the fake Spotify holds
at most one playlist per configuration. At the end one daemon runs undisturbed until a weekly
sync succeeds, and then everything is there: every play once, a loadable model, and in Spotify
exactly one playlist holding exactly the last generated list.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from service.db import SCHEMA_VERSION, open_database
from service.importer import import_paths
from service.model_store import load_promoted, promoted_checkpoint
from tests.daemon_process import DaemonProcess, songnet_env, wait_gone
from tests.fake_spotify import FakeSpotify

PLAYLIST = "Crash test"
# A child kill comes first: the training it cut short leaves the plays for the next one.
PHASES = ("first-start", "import", "train-child", "train", "generate-child", "generate", "sync")
# The phase whose kill hits a daemon starting on a fresh data directory (its own, not the rig's).
FIRST_START = "first-start"
# The phases whose kill hits the daemon's child, not the daemon.
CHILD_PHASES = {"train-child": "train", "generate-child": "generate"}
# How long after a phase's first log line a kill may come (s) until lengths have been seen.
WINDOWS = {
    FIRST_START: 1.0,
    "import": 0.4,
    "train": 8.0,
    "train-child": 4.0,
    "generate": 5.0,
    "generate-child": 3.0,
    "sync": 0.2,
}

PlayKey = tuple[str, int, int, str]


@dataclass
class Kill:
    phase: str
    delay: float  # seconds after the phase began
    round: int
    inside: bool  # the phase had not finished when the kill came


@dataclass
class CrashRig:
    root: Path
    fake: FakeSpotify
    files: list[Path]  # export files to drop, one per round (outside the watched folder)
    seed_track: str
    rng: random.Random
    reference: dict[str, Counter[PlayKey]] = field(default_factory=dict)
    kills: list[Kill] = field(default_factory=list)
    phase_timeout: float = 300.0
    # How long after a phase began a kill may come (s); learnt from the phases seen to finish.
    windows: dict[str, float] = field(default_factory=lambda: dict(WINDOWS))
    seen: dict[str, list[float]] = field(default_factory=lambda: {p: [] for p in PHASES})

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def export_dir(self) -> Path:
        return self.root / "exports"

    def env(self, phase: str = "sync") -> dict[str, str]:
        # Weekly runs every few seconds only where the sync is the target: elsewhere a
        # catch-up at each start would only delay the import or the training.
        weekly = phase in ("sync", "generate", "generate-child", "final")
        schedule = "*/4 * * * * *" if weekly else "0 0 1 1 *"
        # Training at start-up only where it is the target (or at the end): a model exists
        # after the first rounds, so the other phases come without a training first.
        threshold = "1" if phase in ("train", "train-child", "final") else "1000000000"
        env = songnet_env(
            self.data_dir,
            self.export_dir,
            schedule=schedule,
            watch_interval_seconds="0.5",
            watch_stable_seconds="0",
            heartbeat_interval_seconds="1",
            retrain_debounce_seconds="0",
            retrain_min_new_plays=threshold,
            retrain_lead_minutes="0",
            train_max_epochs="1",
            train_epoch_coverage="0.3",
            train_min_steps="1",
            spotify_timeout_seconds="5",
            playlists=[{"name": PLAYLIST, "seeds": [self.seed_track], "length": 25}],
        )
        env.update(self.fake.env())
        return env

    # -- the expected plays -----------------------------------------------------------------

    def build_reference(self) -> None:
        """Each file imported alone into a fresh database: the plays it must contribute."""
        for path in self.files:
            scratch = self.root / "reference" / path.name
            engine = open_database(scratch)
            try:
                import_paths(engine, [path])
            finally:
                engine.dispose()
            self.reference[path.name] = stored_plays(scratch)

    # -- one round --------------------------------------------------------------------------

    def drop(self, path: Path) -> None:
        self.export_dir.mkdir(parents=True, exist_ok=True)
        staging = self.export_dir / f".{path.name}.part"
        shutil.copy(path, staging)
        staging.rename(self.export_dir / path.name)  # appears whole

    def kill_first_start(self, round_no: int) -> Kill:
        """kill -9 a daemon during its first start on a fresh data directory; the next start
        there creates the database and runs."""
        fresh = self.root / FIRST_START / str(round_no)
        env = songnet_env(fresh / "data", fresh / "exports", heartbeat_interval_seconds="1")
        delay = self.rng.uniform(0, self.windows[FIRST_START])
        launched = time.monotonic()
        daemon = DaemonProcess(["run"], env)
        try:
            time.sleep(max(0.0, launched + delay - time.monotonic()))
            daemon.kill9()
            inside = not daemon.named("daemon started")
        finally:
            daemon.stop()
        launched = time.monotonic()
        again = DaemonProcess(["run"], env)
        try:
            again.wait_event("daemon started", self.phase_timeout)
            self.seen[FIRST_START].append(time.monotonic() - launched)
            code, took = again.stop_by_signal(signal.SIGTERM)
            assert code == 0 and took < 10, f"stop after a first start: exit {code} in {took:.1f} s"
        finally:
            again.stop()
        after = f"kill in {FIRST_START}, round {round_no}"
        assert integrity(fresh / "data") == "ok", after
        con = sqlite3.connect(fresh / "data" / "songnet.db")
        try:
            (version,) = con.execute("SELECT version FROM schema_info").fetchone()
            (plays,) = con.execute("SELECT count(*) FROM play").fetchone()
        finally:
            con.close()
        assert (version, plays) == (SCHEMA_VERSION, 0), after
        kill = Kill(FIRST_START, round(delay, 3), round_no, inside)
        self.kills.append(kill)
        return kill

    def kill_during(self, phase: str, round_no: int) -> Kill:
        daemon = DaemonProcess(["run"], self.env(phase))
        try:
            began = daemon.wait_for(
                lambda e: _begins(phase, e) or e.get("level") == "error", self.phase_timeout
            )
            # Nothing but the kills may go wrong here: an error line fails at once.
            assert began.get("level") != "error", f"the daemon logged an error:\n{daemon.tail()}"
            mark = daemon.events.index(began)
            delay = self.rng.uniform(0, self.windows[phase])
            time.sleep(delay)
            if phase in CHILD_PHASES:
                inside = self._kill_child(daemon, phase, mark)
            else:
                children = daemon.children()
                daemon.kill9()
                inside = not any(_ends(phase, e) for e in daemon.events[mark:])
                for pid in children:  # PR_SET_PDEATHSIG, or the child's watch on its parent
                    assert wait_gone(pid, 5), f"kill in {phase}: child {pid} outlived the daemon"
        finally:
            daemon.stop()
        self._learn(daemon.events)
        kill = Kill(phase, round(delay, 3), round_no, inside)
        self.kills.append(kill)
        return kill

    def _kill_child(self, daemon: DaemonProcess, phase: str, mark: int) -> bool:
        """kill -9 the daemon's child; the daemon logs one error line for it, carries on and
        stops cleanly. Whether the child was still at work when it was killed."""
        job = CHILD_PHASES[phase]
        children = daemon.children()
        deadline = time.monotonic() + self.phase_timeout
        # The job's first line comes before its child starts: a kill that early waits for it.
        while not children and not any(_ends(job, e) for e in daemon.events[mark:]):
            assert time.monotonic() < deadline, f"no child in {phase}:\n{daemon.tail()}"
            time.sleep(0.02)
            children = daemon.children()
        inside = bool(children) and not any(_ends(phase, e) for e in daemon.events[mark:])
        for pid in children:
            with contextlib.suppress(ProcessLookupError):  # it ended just now
                os.kill(pid, signal.SIGKILL)
        finished = daemon.wait_for(lambda e: _ends(job, e), self.phase_timeout, start=mark)
        if inside:
            assert finished.get("outcome") == "failed", finished
            errors = [e for e in daemon.events[mark:] if e.get("level") == "error"]
            assert len(errors) == 1 and "killed by SIGKILL" in errors[0]["error"], errors
        assert daemon.proc.poll() is None, f"the daemon died with its child:\n{daemon.tail()}"
        code, took = daemon.stop_by_signal(signal.SIGTERM)
        assert code == 0 and took < 10, f"stop after a child kill: exit {code} in {took:.1f} s"
        return inside

    def _learn(self, events: list[dict[str, Any]]) -> None:
        """Phase lengths from this life's log, so the next kills land inside the phases."""
        start: dict[str, datetime] = {}
        for event in events:
            for phase in PHASES:
                if _begins(phase, event):
                    start[phase] = _when(event)
                elif _ends(phase, event) and phase in start and event.get("outcome", "ok") == "ok":
                    self.seen[phase].append((_when(event) - start.pop(phase)).total_seconds())
        for phase, lengths in self.seen.items():
            if lengths:
                # A child kill should find the child at work: a kill after it is no test.
                factor = 0.8 if phase in CHILD_PHASES else 1.2
                self.windows[phase] = factor * statistics.median(lengths[-5:])

    def run_round(
        self,
        round_no: int,
        phases: tuple[str, ...] = PHASES,
        on_kill: Callable[[Kill], None] | None = None,
    ) -> list[Kill]:
        """Kills in `phases` of round `round_no`: a training phase is left out when an earlier
        kill came after its training had finished (every file imported, every play trained on)."""
        self.drop(self.files[round_no])
        kills = []
        for phase in phases:
            if CHILD_PHASES.get(phase, phase) == "train" and self._nothing_to_train():
                continue
            if phase == FIRST_START:  # on a directory of its own, checked there
                kills.append(self.kill_first_start(round_no))
            else:
                kills.append(self.kill_during(phase, round_no))
                self.check(after=f"kill in {phase}, round {round_no}")
            if on_kill is not None:  # checked: a soak cut short still counts it
                on_kill(kills[-1])
        return kills

    def _nothing_to_train(self) -> bool:
        dropped = {p.name for p in self.export_dir.glob("*.json")}
        return untrained_plays(self.data_dir) == 0 and dropped <= set(imported_files(self.data_dir))

    # -- checks -----------------------------------------------------------------------------

    def check(self, *, after: str) -> None:
        assert integrity(self.data_dir) == "ok", after
        imported = imported_files(self.data_dir)
        expected: Counter[PlayKey] = Counter()
        for name in imported:
            expected += self.reference[name]
        got = stored_plays(self.data_dir)
        assert got == expected, (
            f"{after}: plays lost {sum((expected - got).values())}, doubled {sum((got - expected).values())}"
        )
        engine = open_database(self.data_dir)
        try:
            if promoted_checkpoint(engine) is not None:
                assert load_promoted(engine) is not None, (
                    f"{after}: the promoted model does not load"
                )
        finally:
            engine.dispose()
        assert len(self.fake.playlists_named(PLAYLIST)) <= 1, (
            f"{after}: a second playlist in Spotify"
        )

    def finish(self) -> None:
        """One undisturbed daemon until every dropped file is imported and a weekly sync after
        that is written; then everything must be there."""
        dropped = {p.name for p in self.files if (self.export_dir / p.name).exists()}
        daemon = DaemonProcess(["run"], self.env("final"))
        try:
            deadline = time.monotonic() + self.phase_timeout
            while set(imported_files(self.data_dir)) != dropped:
                assert time.monotonic() < deadline, (
                    f"dropped files never imported:\n{daemon.tail()}"
                )
                assert daemon.proc.poll() is None, daemon.tail()
                time.sleep(0.2)
            daemon.wait_for(
                lambda e: (
                    e.get("event") == "job finished"
                    and e.get("job") in ("weekly", "first-playlists")
                    and e.get("outcome") == "ok"
                    and e.get("synced") == 1
                ),
                self.phase_timeout,
                start=len(daemon.events),
            )
            daemon.signal()
            try:
                code = daemon.wait(15)
            except subprocess.TimeoutExpired:
                raise AssertionError(
                    f"the daemon did not stop within 15 s of SIGTERM:\n{daemon.tail(60)}"
                ) from None
            assert code == 0, daemon.tail(60)
        finally:
            daemon.stop()
        self.check(after="the final run")
        engine = open_database(self.data_dir)
        try:
            assert load_promoted(engine) is not None
        finally:
            engine.dispose()
        (playlist,) = self.fake.playlists_named(PLAYLIST)
        generated = last_generated_uris(self.data_dir)
        assert playlist.items == generated and generated


PUBLISH_JOBS = ("weekly", "first-playlists")


def _begins(phase: str, event: dict[str, Any]) -> bool:
    phase = CHILD_PHASES.get(phase, phase)
    if phase == "sync":  # the file sink wrote the playlist; the Spotify sync comes next
        return event.get("event") == "playlist written" and "m3u8" in event
    jobs = PUBLISH_JOBS if phase == "generate" else (phase,)
    return event.get("event") == "job started" and event.get("job") in jobs


def _ends(phase: str, event: dict[str, Any]) -> bool:
    phase = CHILD_PHASES.get(phase, phase)
    if phase == "generate":  # the child's lists are back once the first file is written
        return (event.get("event") == "playlist written" and "m3u8" in event) or (
            event.get("event") == "job finished" and event.get("job") in PUBLISH_JOBS
        )
    jobs = PUBLISH_JOBS if phase == "sync" else (phase,)
    return event.get("event") == "job finished" and event.get("job") in jobs


def _when(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(event["timestamp"]))


def stored_plays(data_dir: Path) -> Counter[PlayKey]:
    con = sqlite3.connect(data_dir / "songnet.db")
    try:
        rows = con.execute(
            "SELECT t.key, p.end_ts, p.ms_played, p.source FROM play p JOIN track t ON t.id = p.track_id"
        ).fetchall()
    finally:
        con.close()
    return Counter((str(k), int(e), int(m), str(s)) for k, e, m, s in rows)


def untrained_plays(data_dir: Path) -> int:
    """Plays stored since the newest model's data (what a start-up retrain trains on)."""
    con = sqlite3.connect(data_dir / "songnet.db")
    try:
        (count,) = con.execute(
            "SELECT count(*) FROM play WHERE id > "
            "(SELECT coalesce(max(watermark_play_id), 0) FROM model_version)"
        ).fetchone()
    finally:
        con.close()
    return int(count)


def imported_files(data_dir: Path) -> list[str]:
    con = sqlite3.connect(data_dir / "songnet.db")
    try:
        rows = con.execute("SELECT path FROM imported_file WHERE status = 'imported'").fetchall()
    finally:
        con.close()
    return [Path(p).name for (p,) in rows]


def integrity(data_dir: Path) -> str:
    con = sqlite3.connect(data_dir / "songnet.db")
    try:
        return str(con.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        con.close()


def last_generated_uris(data_dir: Path) -> list[str]:
    con = sqlite3.connect(data_dir / "songnet.db")
    try:
        (tracks,) = con.execute(
            "SELECT tracks_json FROM playlist_state WHERE name = ?", (PLAYLIST,)
        ).fetchone()
    finally:
        con.close()
    return [t["uri"] for t in json.loads(tracks) if t["uri"]]


def synthetic_files(
    folder: Path, n_files: int, plays_per_file: int, seed: int = 11
) -> tuple[list[Path], str]:
    """An extended export of `n_files` audio files (no video file, no podcasts), and the
    "Artist - Title" of the most played track of the first file (the playlist's seed, known
    from the first round on)."""
    from songnet_core.synthetic import SyntheticConfig, generate_plays, write_extended_export

    plays = generate_plays(
        SyntheticConfig(n_plays=n_files * plays_per_file, seed=seed, n_artists=120)
    )
    written = write_extended_export(
        plays, folder, records_per_file=plays_per_file, extras=False, seed=seed
    )
    audio = sorted(p for p in written if "Audio" in p.name)
    first = json.loads(audio[0].read_text(encoding="utf-8"))
    counts = Counter(
        (r["master_metadata_album_artist_name"], r["master_metadata_track_name"]) for r in first
    )
    (artist, title), _ = counts.most_common(1)[0]
    return audio, f"{artist} - {title}"
