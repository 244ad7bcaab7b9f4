"""The early-stopping rule, by hand and as training runs it."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from songnet_core.early_stopping import EarlyStopping, replay
from songnet_core.train import train
from tests.test_train import TINY, data

REPO = Path(__file__).resolve().parent.parent

CURVE = [0.10, 0.20, 0.19, 0.20, 0.21, 0.20, 0.20, 0.20]


def test_any_rise_is_an_improvement_by_default() -> None:
    # Epoch 4 ties the best (no improvement), epoch 5 beats it; three flat epochs end the fit.
    assert replay(CURVE, patience=3) == (8, 5)
    assert replay(CURVE, patience=1) == (3, 2)


def test_a_minimum_gain_ignores_small_rises() -> None:
    # 0.21 is not 10 % above 0.20: the best stays epoch 2 and the fit ends at epoch 5.
    assert replay(CURVE, patience=3, min_gain=0.10) == (5, 2)
    assert replay(CURVE, patience=3, min_gain=0.04) == (8, 5)


def test_a_curve_that_ends_before_the_rule_stops_is_unknown_unless_it_hit_the_epoch_cap() -> None:
    assert replay(CURVE, patience=4) is None
    assert replay(CURVE, patience=4, max_epochs=8) == (8, 5)


def test_epochs_without_a_figure_are_each_the_best_and_never_stop_the_fit() -> None:
    rule = EarlyStopping(patience=1)
    assert all(rule.observe(e, math.nan) for e in range(1, 6))
    assert not rule.done and rule.best_epoch == 5 and rule.best == -1.0


@given(st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=30), st.integers(1, 5), st.sampled_from([0.0, 0.01, 0.05]))
def test_the_best_epoch_holds_the_best_figure_up_to_the_stop(curve: list[float], patience: int, min_gain: float) -> None:
    got = replay(curve, patience, min_gain, max_epochs=len(curve))
    assert got is not None
    run, best = got
    assert 1 <= best <= run <= len(curve)
    seen, kept = curve[:run], curve[best - 1]
    # No epoch up to the stop beats the kept one by more than the minimum gain; with none,
    # the kept epoch is the first to reach the highest figure.
    assert all(v <= kept * (1.0 + min_gain) for v in seen)
    if min_gain == 0.0:
        assert best == 1 + seen.index(max(seen))
    # A larger minimum gain never runs longer.
    longer = replay(curve, patience, 0.0, max_epochs=len(curve))
    assert longer is not None and run <= longer[0]


@pytest.mark.parametrize("patience, min_gain", [(1, 0.0), (2, 0.0), (2, 0.5)])
def test_replaying_a_fits_curve_gives_what_training_did(patience: int, min_gain: float) -> None:
    cfg = dataclasses.replace(TINY, lr=0.05, max_epochs=8, patience=patience, min_gain=min_gain)
    result = train(cfg, data())
    curve = [h["val_hr@10"] for h in result.history]
    assert replay(curve, patience, min_gain, max_epochs=cfg.max_epochs) == (len(curve), int(result.metrics["best_epoch"]))
    assert result.metrics["val_hr@10"] == curve[int(result.metrics["best_epoch"]) - 1]


def _report(curves: dict[str, list[float]]) -> dict[str, object]:
    exports = {
        name: {
            "config": {"patience": 3, "min_gain": 0.0, "max_epochs": 30},
            "training_curve": [{"epoch": i + 1, "loss": 1.0, "val_hr@10": v, "seconds": 10.0 * (i + 1)} for i, v in enumerate(val)],
        }
        for name, val in curves.items()
    }  # fmt: skip
    return {"run": {"commit": "abc"}, "exports": exports}


def test_the_sweep_chooses_the_fewest_epochs_that_keep_the_validation_figure(tmp_path: Path) -> None:
    # a rises by under 1 % after epoch 3 (0.6 %, 0.1 %, 0.3 %); b stops gaining after epoch 2.
    # Both curves end where the shipped rule (patience 3, any rise) stopped.
    report = _report({"a": [0.10, 0.15, 0.200, 0.2012, 0.2014, 0.202, 0.19, 0.19, 0.19], "b": [0.30, 0.40, 0.39, 0.39, 0.39]})
    path, out = tmp_path / "evaluation.json", tmp_path / "sweep.json"
    path.write_text(json.dumps(report))
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "early_stopping_sweep.py"), "--report", str(path), "--out", str(out),
         "--curve", "bench=0.1,0.2,0.2"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["exports"] == ["a", "b"]
    rows = {(r["patience"], r["min_gain"]): r for r in result["rows"]}
    assert rows[3, 0.0]["fit_epochs"] == 9 + 5 and rows[3, 0.0]["min_kept_share"] == 1.0 and rows[3, 0.0]["seconds_saved"] == 0.0
    # Patience 1: any rise keeps a going to epoch 7 (7 + 3 epochs); a 0.5 % gain stops it at
    # epoch 5 (0.2014 is not 0.5 % above 0.2012); a 1 % gain at epoch 4, keeping 0.200 of
    # 0.202 (99.0 %): the fewest epochs that keep 99 %, and larger gains do no better.
    assert [rows[1, g]["exports"]["a"]["epochs"] for g in (0.0, 0.005, 0.01, 0.05)] == [7, 5, 4, 4]
    assert result["chosen"] == {"patience": 1, "min_gain": 0.01}
    assert rows[1, 0.01]["exports"]["a"] == {"epochs": 4, "best_epoch": 3, "kept_share": 0.9901, "seconds_saved": 50.0, "refit_epochs_saved": 3}
    # Keeping 99.5 % rules that out: a 0.5 % gain keeps 0.2012 (99.6 %) in 5 + 3 epochs.
    strict = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "early_stopping_sweep.py"), "--report", str(path), "--keep", "0.995", "--out", str(out)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert strict.returncode == 0, strict.stderr
    assert json.loads(out.read_text())["chosen"] == {"patience": 1, "min_gain": 0.005}
    assert result["further_curves"]["bench"]["1/0.0"] == [3, 2]


def test_the_sweep_refuses_a_report_cut_short_or_without_curves(tmp_path: Path) -> None:
    path = tmp_path / "evaluation.json"
    for report, says in (({"run": {"incomplete": "1 of 8 exports"}, "exports": {}}, "cut short"), ({"run": {}, "exports": {"a": {}}}, "no training curves")):
        path.write_text(json.dumps(report))
        done = subprocess.run([sys.executable, str(REPO / "scripts" / "early_stopping_sweep.py"), "--report", str(path)], capture_output=True, text=True, check=False)
        assert done.returncode != 0 and says in done.stderr
