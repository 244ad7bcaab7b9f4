"""The training sweep's choice rule (scripts/training_sweep.py), on made-up results."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

from training_sweep import summary

PLAYS = {"big": 50_000, "small": 3_000}


def run(big: float, small: float) -> dict[str, dict[str, Any]]:
    row = {"model_hr@10": 0.1, "songnet_mrr@10": 0.05, "seconds": 1.0}
    return {"big": {**row, "songnet_hr@10": big}, "small": {**row, "songnet_hr@10": small}}


def test_a_variant_ships_only_with_the_margin_and_no_export_far_behind() -> None:
    results = {
        "base": run(0.30, 0.10),
        "slightly": run(0.301, 0.101),  # +0.7 %: under the 2 % margin
        "lopsided": run(0.36, 0.089),  # +11 % macro, but the small export at 0.89x
        "better": run(0.31, 0.11),  # +5 %
    }
    s = summary(results, PLAYS, margin=0.02)
    assert s["chosen"] == "better"
    assert s["macro"]["better"]["songnet_hr@10_large"] == 0.31 and s["macro"]["better"]["songnet_hr@10_small"] == 0.11
    del results["better"]
    assert summary(results, PLAYS, margin=0.02)["chosen"] == "base"


def test_only_exports_every_variant_ran_on_are_compared() -> None:
    results = {"base": run(0.30, 0.10), "cut": {"big": run(0.40, 0.0)["big"]}}
    s = summary(results, PLAYS, margin=0.02)
    assert s["exports"] == ["big"] and s["chosen"] == "cut"
