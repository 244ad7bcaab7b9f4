"""Training hyper-parameters swept on validation: each variant against the shipped config.

For every corpus export and every variant below (one change from `TrainConfig`'s defaults at a
time), the whole protocol runs on the validation split (`evaluate_listens(on_validation=True)`:
the test part is never read; the last share of the training sessions plays its role), as
`songnet eval` would train and rank with that config. Per run: HR@10 and MRR@10 of songnet
(the full ranker) and of the LSTM alone, the best baseline's HR@10, the fit's epochs and
seconds. Results are written after every run, so a sweep cut short keeps what it measured.

The choice rule, one for every listener: the variant with the best macro songnet HR@10 over
the exports ships if it beats the shipped config's by at least `--margin` (2 %) and loses more
than 10 % on no export; otherwise the shipped config stays. The figures per history size
(exports above and below 20k plays) are printed beside, to see whether a rule by size would
choose differently.

    .venv/bin/python scripts/training_sweep.py [--variants base lr=0.01 ...] [--only account-d ...]
        [--out docs/experiments/training_sweep_validation.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
CORPUS = REPO.parent / "shared" / "corpus"
LARGE_PLAYS = 20_000

# One change at a time from TrainConfig's defaults; "base" is the shipped config.
VARIANTS: dict[str, dict[str, Any]] = {
    "base": {},
    "lr=0.01": {"lr": 1e-2},
    "lr=0.001": {"lr": 1e-3},
    "dim=128,hidden=256": {"dim": 128, "hidden": 256},
    "dim=32,hidden=64": {"dim": 32, "hidden": 64},
    "dropout=0.1": {"dropout": 0.1},
    "dropout=0.4": {"dropout": 0.4},
    "weight_decay=0.1": {"weight_decay": 0.1},
    "memory=256": {"memory": 256},
    "memory=4096": {"memory": 4096},
}


def run_one(listens: list[Any], overrides: dict[str, Any], seed: int) -> dict[str, Any]:
    from songnet_core.evaluate import evaluate_listens, evaluation_train_config

    t = time.monotonic()
    cfg = evaluation_train_config(seed=seed, **overrides)
    report = evaluate_listens(listens, train_config=cfg, tz="UTC", seed=seed, n_boot=200, on_validation=True).to_json()
    training = report["model_training"]
    return {
        "songnet_hr@10": report["songnet"]["hr@10"], "songnet_mrr@10": report["songnet"]["mrr@10"],
        "model_hr@10": report["model"]["hr@10"], "model_mrr@10": report["model"]["mrr@10"],
        "best_baseline": report["best_baseline"]["name"], "best_baseline_hr@10": report["best_baseline"]["hr@10"],
        "steps": report["test_steps"], "fit_epochs": training["fit_epochs"], "best_epoch": training["best_epoch"],
        "seconds": round(time.monotonic() - t, 1),
    }  # fmt: skip


def macro(per: dict[str, dict[str, Any]], key: str, among: list[str]) -> float:
    """Mean of `key` over the exports `among` (NaN for none)."""
    return statistics.mean(per[n][key] for n in among) if among else float("nan")


def summary(results: dict[str, dict[str, dict[str, Any]]], plays: dict[str, int], margin: float) -> dict[str, Any]:
    """Macro figures per variant (over the exports every variant ran on) and the choice."""
    names = sorted(set.intersection(*(set(r) for r in results.values()))) if results else []
    large = [n for n in names if plays[n] >= LARGE_PLAYS]
    small = [n for n in names if plays[n] < LARGE_PLAYS]
    rows = {}
    for variant, per in results.items():
        rows[variant] = {
            "songnet_hr@10": macro(per, "songnet_hr@10", names), "model_hr@10": macro(per, "model_hr@10", names),
            "songnet_mrr@10": macro(per, "songnet_mrr@10", names),
            "songnet_hr@10_large": macro(per, "songnet_hr@10", large), "songnet_hr@10_small": macro(per, "songnet_hr@10", small),
            "model_hr@10_large": macro(per, "model_hr@10", large),
            "seconds": sum(per[n]["seconds"] for n in names),
        }  # fmt: skip
    chosen = "base"
    if "base" in rows and names:
        base = results["base"]
        fair = [
            v for v in rows
            if v != "base" and rows[v]["songnet_hr@10"] >= (1 + margin) * rows["base"]["songnet_hr@10"]
            and all(results[v][n]["songnet_hr@10"] >= 0.9 * base[n]["songnet_hr@10"] for n in names)
        ]  # fmt: skip
        if fair:
            chosen = max(fair, key=lambda v: rows[v]["songnet_hr@10"])
    return {"exports": names, "macro": rows, "chosen": chosen, "margin": margin}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--only", nargs="*", help="export names (default: every folder in the corpus)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--margin", type=float, default=0.02, help="macro gain over base a variant needs to ship")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "experiments" / "training_sweep_validation.json")
    args = ap.parse_args()
    from service.export_reading import export_folder_files, read_exports
    from service.logging import configure_logging

    configure_logging("console", "warning")
    if not CORPUS.is_dir():
        sys.exit(f"corpus not found at {CORPUS}")
    names = args.only or sorted(p.name for p in CORPUS.iterdir() if p.is_dir())
    listens = {n: read_exports(export_folder_files(CORPUS / n)).listens for n in names}
    plays = {n: len(v) for n, v in listens.items()}
    sys.path.insert(0, str(REPO / "scripts"))
    from evaluation_report import commit

    results: dict[str, dict[str, dict[str, Any]]] = {}
    started = time.monotonic()
    for variant in args.variants:
        results[variant] = {}
        for n in names:
            results[variant][n] = r = run_one(listens[n], VARIANTS[variant], args.seed)
            print(f"{variant} {n}: songnet {r['songnet_hr@10']:.3f}, model {r['model_hr@10']:.3f}, "
                  f"best baseline {r['best_baseline_hr@10']:.3f}, {r['fit_epochs']:.0f} epochs, {r['seconds']:.0f} s",
                  file=sys.stderr, flush=True)  # fmt: skip
            out = {
                "run": {"commit": commit(), "seed": args.seed, "seconds": round(time.monotonic() - started, 1)},
                "variants": {v: VARIANTS[v] for v in results}, "plays": plays, "results": results,
                "summary": summary(results, plays, args.margin),
            }  # fmt: skip
            args.out.write_text(json.dumps(out, indent=1) + "\n")
    s = summary(results, plays, args.margin)
    print(f"{'variant':<20} {'songnet':>8} {'model':>8} {'s. MRR':>8} {'large':>8} {'small':>8} {'model L':>8} {'seconds':>8}")
    for v, m in s["macro"].items():
        print(f"{v:<20} {m['songnet_hr@10']:>8.4f} {m['model_hr@10']:>8.4f} {m['songnet_mrr@10']:>8.4f} "
              f"{m['songnet_hr@10_large']:>8.4f} {m['songnet_hr@10_small']:>8.4f} {m['model_hr@10_large']:>8.4f} {m['seconds']:>8.0f}")  # fmt: skip
    print(f"chosen: {s['chosen']} (macro songnet validation HR@10 ≥ {1 + args.margin:.2f}x base, no export below 0.9x); wrote {args.out}")


if __name__ == "__main__":
    main()
