"""Reliability of the Spotify sync under a bad API day, measured against the fake Web API.

    .venv/bin/python bench/sync_reliability.py [--runs 100] [--tracks 120] [--fault-rate 0.45]
                                               [--seeds 2026 7 42] [--attempts 12] [--cap 30]

For each seed: `--runs` syncs of a freshly drawn `--tracks`-track playlist to one configured
playlist while the fake fails that share of Web API requests transiently (429 with a short
Retry-After, 500/502/503 before or after taking effect, dropped connections before or after,
answers delayed past a 50 ms timeout); every tenth run starts with an expired access token and
every 25th with the listener having deleted the playlist. After each run the fake must hold
exactly the generated list in exactly one playlist. Then one more sync meets a Retry-After of
20,000 s and must defer at once. Waits are recorded, never slept (simulated_wait_s is what a
real run would have waited).

Prints one JSON object per seed, then a summary line with the medians over seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from service.logging import configure_logging  # noqa: E402
from tests.spotify_reliability import run_reliability  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--tracks", type=int, default=120)
    parser.add_argument("--fault-rate", type=float, default=0.45)
    parser.add_argument("--seeds", type=int, nargs="+", default=[2026, 7, 42])
    parser.add_argument(
        "--attempts", type=int, default=12, help="SONGNET_SPOTIFY_MAX_ATTEMPTS for the run"
    )
    parser.add_argument(
        "--cap", type=float, default=30.0, help="SONGNET_SPOTIFY_RETRY_CAP_SECONDS for the run"
    )
    args = parser.parse_args()
    configure_logging("json", "error")
    reports = []
    for seed in args.seeds:
        report = run_reliability(
            runs=args.runs,
            tracks=args.tracks,
            fault_rate=args.fault_rate,
            seed=seed,
            max_attempts=args.attempts,
            cap_seconds=args.cap,
        )
        reports.append(report)
        print(json.dumps({"seed": seed, **report.figures()}), flush=True)
        for wrong in report.wrong_results:
            print(f"  {wrong}", flush=True)
    ok = all(
        r.written == r.runs
        and not r.wrong_results
        and r.max_sleep <= args.cap
        and r.huge_retry_after_deferred
        and not r.huge_retry_after_sleeps
        for r in reports
    )
    summary = {
        "seeds": len(reports),
        "runs": sum(r.runs for r in reports),
        "written": sum(r.written for r in reports),
        "wrong_end_states": sum(len(r.wrong_results) for r in reports),
        "median_fault_share": round(
            statistics.median(r.faults_injected / max(r.requests, 1) for r in reports), 3
        ),
        "median_requests": statistics.median(r.requests for r in reports),
        "median_faults": statistics.median(r.faults_injected for r in reports),
        "median_retries": statistics.median(r.retries for r in reports),
        "max_wait_s": round(max(r.max_sleep for r in reports), 3),
        "median_wall_s": round(statistics.median(r.seconds for r in reports), 2),
        "median_run_ms": round(
            1000 * statistics.median(s for r in reports for s in r.run_seconds), 1
        ),
        "all_ok": ok,
    }
    print(json.dumps({"summary": summary}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
