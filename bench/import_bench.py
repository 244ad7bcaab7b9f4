"""Import benchmark: songnet's import of a synthetic 500k-play extended export against a floor.

    .venv/bin/python bench/import_bench.py [--plays 500000] [--repeat 3] [--workdir DIR]

Builds (once, cached in the work folder) a synthetic extended streaming history of `--plays`
music plays of a heavy listener (120 a day from 2014, so 500k end before today), written as
Spotify writes it (2-space indented JSON, ~15k records per file, with podcasts, audiobooks
and a video file around the music; 36 files, ~380 MiB). Then, `--repeat` times each:

- floor: `json.load` of each file plus one `sqlite3` `executemany` of its plays into a bare
  table, all in one transaction, in a fresh database;
- import: what the daemon does when the files appear in its export folder, in a subprocess
  whose peak RSS (`ru_maxrss`) is read at the end: its import job (`Jobs.import_files`: the
  loose files one by one in one import session, the job recorded and locked, each file marked
  handled in the database as the daemon's watcher does) with, at its end, the recompute of
  the feature cache (`recompute_features`, also timed apart);
- re-import: the same job over the same files again (nothing to import, no recompute).

Prints each run, then the medians, the ratio import / floor (wall time, and process CPU time,
which a busy machine disturbs less), and the goals (import <= 2x floor, peak RSS <= 1 GiB,
re-import <= 2 s).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from songnet_core.synthetic import SyntheticConfig, generate_plays, write_extended_export  # noqa: E402

GOAL_RATIO = 2.0
GOAL_RSS_BYTES = 1 << 30
GOAL_REIMPORT_S = 2.0

_CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from typing import Any
sys.path.insert(0, sys.argv[3])
from service import features, kv
from service.db import open_database
from service.jobs import Jobs
from service.logging import configure_logging
from service.settings import load_settings

configure_logging("json", "warning")
data_dir, export = Path(sys.argv[1]), Path(sys.argv[2])
files = sorted(export.glob("*.json"))  # the loose files, as the export watcher hands them over
settings = load_settings(data_dir=data_dir, export_dir=export, timezone="Europe/Berlin")
engine = open_database(data_dir)
jobs = Jobs(settings, engine)
recompute_s = []
recompute = features.recompute_features

def timed_recompute(*args, **kwargs):
    t = time.perf_counter()
    try:
        return recompute(*args, **kwargs)
    finally:
        recompute_s.append(time.perf_counter() - t)

features.recompute_features = timed_recompute
handled = {}

def mark_handled(path):
    # As the daemon does after each file: the watcher's state, stored in the database.
    st = path.stat()
    handled[str(path)] = [st.st_size, st.st_mtime_ns]
    kv.set_json(engine, kv.WATCHED_FILES, handled)

t0, c0 = time.perf_counter(), time.process_time()
first = jobs.import_files(files, on_file_done=mark_handled)
t1, c1 = time.perf_counter(), time.process_time()
again = jobs.import_files(files, on_file_done=mark_handled)
t2 = time.perf_counter()
print(json.dumps({
    "import_s": t1 - t0,
    "import_cpu_s": c1 - c0,
    "features_s": sum(recompute_s),
    "recomputes": len(recompute_s),
    "reimport_s": t2 - t1,
    "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    "imported": first.counts.get("imported", 0),
    "tracks": first.counts.get("features", 0),
    "outcomes": [first.outcome, again.outcome],
    "already": again.counts.get("already", 0),
    "torch_loaded": "torch" in sys.modules,
}))
"""


# A heavy listener: 500k plays in about 11 years, ending before today (a play after the
# import's day would be implausible and skipped).
START = date(2014, 1, 1)
PLAYS_PER_DAY = 120.0


def build_export(workdir: Path, n_plays: int) -> list[Path]:
    folder = workdir / f"export-{n_plays}-{START.isoformat()}-{PLAYS_PER_DAY:g}"
    marker = folder / ".complete"
    if marker.exists():
        return sorted(p for p in folder.glob("*.json"))
    shutil.rmtree(folder, ignore_errors=True)
    t0 = time.perf_counter()
    config = SyntheticConfig(
        n_plays=n_plays,
        n_artists=3000,
        tracks_per_artist=12,
        seed=500,
        start=START,
        plays_per_day=PLAYS_PER_DAY,
    )
    plays = generate_plays(config)
    paths = write_extended_export(plays, folder, seed=500)
    marker.write_text("ok")
    size = sum(p.stat().st_size for p in paths)
    print(
        f"built {len(paths)} files, {size / 2**20:.0f} MiB, {len(plays)} plays in {time.perf_counter() - t0:.1f} s"
    )
    return sorted(paths)


def floor(paths: list[Path], db: Path) -> tuple[float, float, int]:
    """json.load of each file + executemany of its plays into a bare table, one transaction."""
    db.unlink(missing_ok=True)
    t0, c0 = time.perf_counter(), time.process_time()
    conn = sqlite3.connect(db)
    conn.execute(
        "CREATE TABLE play (ts TEXT, ms_played INTEGER, artist TEXT, title TEXT, album TEXT,"
        " uri TEXT, reason_start TEXT, reason_end TEXT, shuffle INTEGER, skipped INTEGER)"
    )
    n = 0
    with conn:
        for path in paths:
            with path.open(encoding="utf-8") as fh:
                records = json.load(fh)
            rows = [
                (
                    r["ts"], r["ms_played"], r["master_metadata_album_artist_name"],
                    r["master_metadata_track_name"], r["master_metadata_album_album_name"],
                    r["spotify_track_uri"], r["reason_start"], r["reason_end"], r["shuffle"], r["skipped"],
                )
                for r in records
                if r["master_metadata_track_name"]
            ]  # fmt: skip
            conn.executemany("INSERT INTO play VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            n += len(rows)
    conn.close()
    return time.perf_counter() - t0, time.process_time() - c0, n


def songnet_import(export: Path, data_dir: Path) -> dict[str, Any]:
    shutil.rmtree(data_dir, ignore_errors=True)
    # Run in the data directory's parent: no stray `.env` changes the settings.
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(data_dir), str(export), str(REPO)],
        capture_output=True,
        text=True,
        cwd=data_dir.parent,
    )
    if out.returncode != 0:
        sys.exit(f"songnet import failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--plays", type=int, default=500_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "songnet-import-bench"
    )
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    paths = build_export(args.workdir, args.plays)
    export = paths[0].parent
    size = sum(p.stat().st_size for p in paths)
    print(f"export: {len(paths)} files, {size / 2**20:.0f} MiB in {export}")

    floors: list[float] = []
    floor_cpus: list[float] = []
    imports: list[float] = []
    import_cpus: list[float] = []
    features_s: list[float] = []
    reimports: list[float] = []
    rss: list[float] = []
    for i in range(args.repeat):
        f_s, f_cpu, f_n = floor(paths, args.workdir / "floor.db")
        run = songnet_import(export, args.workdir / "data")
        floors.append(f_s)
        floor_cpus.append(f_cpu)
        imports.append(run["import_s"])
        features_s.append(run["features_s"])
        import_cpus.append(run["import_cpu_s"])
        reimports.append(run["reimport_s"])
        rss.append(run["peak_rss_bytes"])
        print(
            f"run {i + 1}: floor {f_s:.2f} s (cpu {f_cpu:.2f} s, {f_n} plays) | "
            f"import {run['import_s']:.2f} s (cpu {run['import_cpu_s']:.2f} s, of it features "
            f"{run['features_s']:.2f} s x{run['recomputes']}; {run['imported']} plays, "
            f"{run['tracks']} tracks, {run['outcomes'][0]}) | "
            f"re-import {run['reimport_s']:.2f} s ({run['already']} already imported, "
            f"{run['outcomes'][1]}) | torch loaded: {run['torch_loaded']} | "
            f"peak RSS {run['peak_rss_bytes'] / 2**20:.0f} MiB"
        )
    floor_s = statistics.median(floors)
    import_s = statistics.median(imports)
    reimport_s = statistics.median(reimports)
    peak = max(rss)
    ratio = import_s / floor_s
    print()
    print(f"median floor     {floor_s:7.2f} s")
    print(f"median features  {statistics.median(features_s):7.2f} s   (inside the import below)")
    print(
        f"median import    {import_s:7.2f} s   ratio {ratio:.2f}x   (goal <= {GOAL_RATIO:.1f}x: {'met' if ratio <= GOAL_RATIO else 'MISSED'})"
    )
    cpu_ratio = statistics.median(import_cpus) / statistics.median(floor_cpus)
    print(
        f"median cpu       floor {statistics.median(floor_cpus):.2f} s, import "
        f"{statistics.median(import_cpus):.2f} s   ratio {cpu_ratio:.2f}x (process CPU time: "
        "less sensitive to a busy machine than wall time)"
    )
    print(
        f"median re-import {reimport_s:7.2f} s   (goal <= {GOAL_REIMPORT_S:.0f} s: {'met' if reimport_s <= GOAL_REIMPORT_S else 'MISSED'})"
    )
    print(
        f"peak RSS (max)   {peak / 2**20:7.0f} MiB (goal <= 1024 MiB: {'met' if peak <= GOAL_RSS_BYTES else 'MISSED'})"
    )


if __name__ == "__main__":
    main()
