"""kill -9 the daemon or its child 100 times at random points in its first start, import,
training (the child and the daemon), generation (the child and the daemon) and sync.

The same rig as `tests/test_crash_safety.py` (see `tests/crash_harness.py`), run longer: each
round kills a daemon during its first start on a fresh data directory (the next start there
must create the database, run and stop with exit 0 on SIGTERM), then drops one more file of a
synthetic extended export and kills `songnet run`, or its child, once in each other phase;
after every kill the database passes `PRAGMA integrity_check`,
holds exactly the plays of the files it says it imported (none lost, none doubled), a
promoted model loads, the fake Spotify API holds at most one playlist per configuration, and
no child outlives its daemon; after a child's kill the daemon logged one error line, carried
on and stopped with exit 0 on SIGTERM. A final undisturbed run must then converge: every
play once, a loadable model, one playlist with the last list.

    .venv/bin/python bench/crash_soak.py [--kills 100] [--seed 1] [--plays-per-file 800]

Prints each kill (phase, delay after the phase began) and a summary per phase.
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.crash_harness import PHASES, CrashRig, Kill, synthetic_files
from tests.fake_spotify import FakeSpotify, Fault


def report(number: int, kill: Kill) -> None:
    """One kill, printed once every check after it passed."""
    where = "inside the phase" if kill.inside else "after it ended"
    print(
        f"kill {number:3d}: round {kill.round:2d} {kill.phase:14s} +{kill.delay:.3f} s, "
        f"{where}; checks passed",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--plays-per-file", type=int, default=800)
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C, so the daemon being tested is not left behind.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    # Spare files: a training phase is left out of a round where nothing is left to train.
    rounds = math.ceil(args.kills / len(PHASES)) + 5
    root = Path(tempfile.mkdtemp(prefix="songnet-crash-"))
    started = time.monotonic()
    try:
        files, seed_track = synthetic_files(
            root / "source", n_files=rounds, plays_per_file=args.plays_per_file
        )
        with FakeSpotify() as fake:
            rig = CrashRig(root / "rig", fake, files, seed_track, random.Random(args.seed))
            rig.build_reference()
            fake.sign_in(fake.settings(rig.data_dir))
            # Spotify as slow as over the internet, so kills can land mid-sync.
            fake.inject(Fault.delayed(0.15), times=None)
            for round_no in range(rounds):
                left = args.kills - len(rig.kills)
                if left <= 0:
                    break
                rig.run_round(
                    round_no,
                    PHASES[: min(left, len(PHASES))],
                    on_kill=lambda kill: report(len(rig.kills), kill),
                )
            rig.finish()
        by_phase: dict[str, list[float]] = defaultdict(list)
        for kill in rig.kills:
            by_phase[kill.phase].append(kill.delay)
        print(
            f"\n{len(rig.kills)} kills in {time.monotonic() - started:.0f} s, every check passed after each:"
        )
        for phase in PHASES:
            delays = by_phase[phase] or [math.nan]
            inside = sum(k.inside for k in rig.kills if k.phase == phase)
            print(
                f"  {phase:14s} {len(delays):3d} kills, {inside} inside the phase; delay after it began: "
                f"median {statistics.median(delays):.3f} s, max {max(delays):.3f} s"
            )
        print(
            "final run: every dropped file imported once, plays exact, model loads, one playlist with the last list"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
