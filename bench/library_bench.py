"""Synthetic exports and reading the library back, at scale.

    .venv/bin/python bench/library_bench.py [--plays 500000] [--repeat 3] [--workdir DIR]

1. `generate_plays` of `--plays` plays, and `write_extended_export` of them (2-space indented
   JSON as Spotify writes it, with podcasts, audiobooks and videos), `--repeat` times each,
   with the bytes written and the peak RSS of this process after writing;
2. imports that export once (cached in the work folder with its database), then times
   `load_listens`, `load_tracks` and `library_stats` `--repeat` times each.

Prints each run, then one JSON line of medians (wall seconds, and CPU seconds under "cpu_s").
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from service.db import open_database  # noqa: E402
from service.importer import import_paths  # noqa: E402
from service.library import library_stats, load_listens, load_tracks  # noqa: E402
from songnet_core.synthetic import SyntheticConfig, generate_plays, write_extended_export  # noqa: E402

CPU: dict[str, float] = {}  # label -> median CPU seconds of this process


def timed(label: str, fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Median wall seconds of `repeat` runs, and the last result. The median CPU seconds go to
    `CPU`: on a shared machine they say more than the wall clock."""
    times, cpu, result = [], [], None
    for n in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = fn()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        print(f"{label} run {n + 1}: {times[-1]:.2f} s wall, {cpu[-1]:.2f} s CPU", flush=True)
    CPU[label] = round(statistics.median(cpu), 2)
    return statistics.median(times), result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plays", type=int, default=500_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "songnet-library-bench")
    args = parser.parse_args()
    # ~150 plays a day: 500k plays span about nine years, as a heavy listener's export does.
    # From 2014: 500k plays at 150 a day end before today (later plays would be implausible).
    config = SyntheticConfig(n_plays=args.plays, seed=2024, plays_per_day=150.0, start=date(2014, 1, 1))
    work = args.workdir / f"{args.plays}"
    figures: dict[str, Any] = {"plays": args.plays}

    gen_s, plays = timed("generate_plays", lambda: generate_plays(config), args.repeat)
    export = work / "export"

    def write() -> list[Path]:
        shutil.rmtree(export, ignore_errors=True)
        return write_extended_export(plays, export, seed=2024)

    write_s, paths = timed("write_extended_export", write, args.repeat)
    figures |= {
        "generate_s": round(gen_s, 2),
        "write_s": round(write_s, 2),
        "export_mb": round(sum(p.stat().st_size for p in paths) / 1e6, 1),
        "files": len(paths),
        "peak_rss_mb_after_writing": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }

    data = work / "data"
    if not (data / "songnet.db").exists():
        print("importing once (not timed here; see bench/import_bench.py)…", flush=True)
        engine = open_database(data)
        results = import_paths(engine, paths)
        assert all(r.status == "imported" for r in results), [r for r in results if r.status != "imported"]
    engine = open_database(data)
    listens_s, listens = timed("load_listens", lambda: load_listens(engine), args.repeat)
    assert len(listens) == args.plays, len(listens)
    del listens
    tracks_s, tracks = timed("load_tracks", lambda: load_tracks(engine), args.repeat)
    stats_s, stats = timed("library_stats", lambda: library_stats(engine), args.repeat)
    figures |= {
        "load_listens_s": round(listens_s, 2),
        "load_tracks_s": round(tracks_s, 3),
        "tracks": len(tracks),
        "library_stats_s": round(stats_s, 2),
        "sessions": stats["sessions"],
    }
    figures["cpu_s"] = CPU
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
