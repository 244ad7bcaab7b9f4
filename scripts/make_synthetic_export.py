#!/usr/bin/env python3
"""Write a synthetic listener's Spotify exports, for demos and benchmarks.

    .venv/bin/python scripts/make_synthetic_export.py --plays 500000 --out /tmp/export-500k

writes `OUT/Spotify Extended Streaming History/` (every play, with podcasts, audiobooks and
videos around them) and/or `OUT/Spotify Account Data/` (the year before a request made up to
two months before the last play), as Spotify lays them out. The same arguments give the same bytes.
Prints a JSON summary on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date
from pathlib import Path

from songnet_core import synthetic


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder to write into (must be empty or absent)")
    parser.add_argument("--plays", type=int, default=20_000, help="music plays (default 20000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--format", choices=("both", "extended", "account"), default="both")
    parser.add_argument("--start", type=date.fromisoformat, default=None,
                        help="first day (YYYY-MM-DD; default 2022-01-01, or 2014-01-01 above 100k plays so that they end before today)")  # fmt: skip
    parser.add_argument("--plays-per-day", type=float, default=None,
                        help="mean plays a day (default: 40, or enough to fit 500k plays in ~9 years)")  # fmt: skip
    parser.add_argument("--records-per-file", type=int, default=synthetic.EXTENDED_RECORDS_PER_FILE)
    parser.add_argument("--no-extras", action="store_true", help="music only: no podcasts, audiobooks, videos")
    parser.add_argument("--account-days", type=int, default=365)
    parser.add_argument("--account-lag-days", type=int, default=None,
                        help="days between the account-data request and the last play "
                        "(default: a quarter of the span, at most 60)")  # fmt: skip
    args = parser.parse_args(argv)

    if args.out.exists() and any(args.out.iterdir()):
        print(f"error: {args.out} is not empty; name a new folder (files of an earlier run would mix in)", file=sys.stderr)
        return 2
    per_day = args.plays_per_day or (40.0 if args.plays <= 100_000 else 150.0)
    try:
        config = synthetic.SyntheticConfig(n_plays=args.plays, seed=args.seed, start=args.start or (date(2022, 1, 1) if args.plays <= 100_000 else date(2014, 1, 1)), plays_per_day=per_day)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    print(f"generating {args.plays:,} plays (seed {args.seed})…", file=sys.stderr)
    plays = synthetic.generate_plays(config)
    generated = time.perf_counter()
    formats = ["account", "extended"] if args.format == "both" else [args.format]
    print(f"writing {' and '.join(formats)} export into {args.out}…", file=sys.stderr)
    written = synthetic.write_exports(
        plays, args.out, formats=formats, seed=args.seed, extras=not args.no_extras,
        records_per_file=args.records_per_file, account_days=args.account_days,
        account_lag_days=args.account_lag_days,
    )  # fmt: skip
    done = time.perf_counter()
    files = [p for paths in written.values() for p in paths]
    summary = {
        "plays": len(plays),
        "seed": args.seed,
        "first_play": plays[0].end_ts if plays else None,
        "last_play": plays[-1].end_ts if plays else None,
        "files": {fmt: [str(p) for p in paths] for fmt, paths in written.items()},
        "bytes": sum(p.stat().st_size for p in files),
        "generate_s": round(generated - started, 2),
        "write_s": round(done - generated, 2),
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
