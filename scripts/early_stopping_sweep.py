"""Early-stopping rules judged on recorded validation curves, without training again.

Every export's fit in an evaluation report (`training_curve` in docs/evaluation.json, written
by scripts/evaluation_report.py) is replayed under each rule of the grid (patience, minimum
relative gain; `songnet_core/early_stopping.py`, the rule training runs). The curves were
recorded under the shipped rule, so only rules that stop no later than it can be replayed: a
patience above the shipped one is left out unless the fit ran to its epoch cap. Per rule:
epochs run and the kept epoch's validation HR@10 on each export, as a share of what the
shipped rule kept, and the epochs and seconds saved.

The choice rule, one for every listener: the fewest fit epochs in all among the rules that
keep, on every export, at least `--keep` (0.99) of the validation HR@10 the shipped rule kept.
Validation only: the test part is not read. A rule chosen here ships only with an evaluation
report regenerated under it.

    .venv/bin/python scripts/early_stopping_sweep.py [--report docs/evaluation.json]
        [--curve NAME=0.10,0.12,...] [--out docs/experiments/early_stopping_validation.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from songnet_core.early_stopping import replay  # noqa: E402

PATIENCE = (1, 2, 3)
MIN_GAIN = (0.0, 0.005, 0.01, 0.02, 0.05)


def curves_of(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per export: its validation curve, seconds per epoch, the fit's rule and epoch cap."""
    out = {}
    for name, r in report["exports"].items():
        curve = r.get("training_curve")
        if not curve:
            continue
        cfg = r.get("config", {})
        out[name] = {
            "val": [e["val_hr@10"] for e in curve],
            "seconds": [e["seconds"] for e in curve],
            "patience": int(cfg.get("patience", 3)),
            "min_gain": float(cfg.get("min_gain", 0.0)),
            "max_epochs": int(cfg.get("max_epochs", 30)),
        }
    return out


def sweep(curves: dict[str, dict[str, Any]], keep: float) -> dict[str, Any]:
    shipped = {}
    for name, c in curves.items():
        got = replay(c["val"], c["patience"], c["min_gain"], c["max_epochs"])
        if got is not None:  # a fit the budget cut short is no reference
            shipped[name] = got
    rows = []
    for patience in PATIENCE:
        for gain in MIN_GAIN:
            per: dict[str, Any] = {}
            for name, (ship_run, ship_best) in shipped.items():
                c = curves[name]
                got = replay(c["val"], patience, gain, c["max_epochs"])
                if got is None:
                    break
                run, best = got
                per[name] = {
                    "epochs": run, "best_epoch": best,
                    "kept_share": round(c["val"][best - 1] / max(c["val"][ship_best - 1], 1e-9), 4),
                    "seconds_saved": round(c["seconds"][ship_run - 1] - c["seconds"][run - 1], 1),
                    "refit_epochs_saved": ship_best - best,
                }  # fmt: skip
            if len(per) < len(shipped):
                continue
            rows.append({
                "patience": patience, "min_gain": gain,
                "fit_epochs": sum(p["epochs"] for p in per.values()),
                "min_kept_share": min(p["kept_share"] for p in per.values()),
                "seconds_saved": round(sum(p["seconds_saved"] for p in per.values()), 1),
                "exports": per,
            })  # fmt: skip
    eligible = [r for r in rows if r["min_kept_share"] >= keep]
    chosen = min(eligible, key=lambda r: (r["fit_epochs"], -r["min_kept_share"])) if eligible else None
    return {
        "keep": keep, "exports": sorted(shipped), "rows": rows,
        "chosen": None if chosen is None else {"patience": chosen["patience"], "min_gain": chosen["min_gain"]},
    }  # fmt: skip


def parse_curve(text: str) -> tuple[str, dict[str, Any]]:
    name, _, values = text.partition("=")
    val = [float(v) for v in values.split(",") if v]
    if not name or not val:
        raise argparse.ArgumentTypeError(f"--curve wants NAME=v1,v2,... (got {text!r})")
    # A curve from a bench's log: shipped rule, no seconds; it informs, it does not choose.
    return name, {"val": val, "seconds": [0.0] * len(val), "patience": 3, "min_gain": 0.0, "max_epochs": 30}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--report", type=Path, default=REPO / "docs" / "evaluation.json")
    ap.add_argument("--curve", type=parse_curve, action="append", default=[], help="NAME=v1,v2,... a further curve, shown only")
    ap.add_argument("--keep", type=float, default=0.99, help="share of the shipped rule's validation HR@10 every export keeps")
    ap.add_argument("--out", type=Path, default=None, help="write the results here as JSON")
    args = ap.parse_args()
    report = json.loads(args.report.read_text())
    if "incomplete" in report.get("run", {}):
        sys.exit(f"{args.report} is from a run cut short ({report['run']['incomplete']})")
    curves = curves_of(report)
    if not curves:
        sys.exit(f"{args.report} holds no training curves (reports before a6083bc do not): regenerate it")
    result = sweep(curves, args.keep)
    result["report_commit"] = report.get("run", {}).get("commit")
    print(f"curves: {', '.join(result['exports'])} (report at {result['report_commit']})")
    print(f"{'patience':>8} {'min gain':>8} {'fit epochs':>10} {'min kept':>8} {'s saved':>8}")
    for r in result["rows"]:
        print(f"{r['patience']:>8} {r['min_gain']:>8} {r['fit_epochs']:>10} {r['min_kept_share']:>8.3f} {r['seconds_saved']:>8.0f}")
    print(f"chosen (fewest epochs keeping ≥ {args.keep:.0%} everywhere): {result['chosen']}")
    extra = {}
    for name, c in args.curve:
        extra[name] = {f"{p}/{g}": replay(c["val"], p, g, c["max_epochs"]) for p in PATIENCE for g in MIN_GAIN}
        print(f"{name}: (epochs run, best epoch) per patience/min gain, None where the curve ends first:")
        print("  " + ", ".join(f"{k} {v}" for k, v in extra[name].items()))
    result["further_curves"] = extra
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
