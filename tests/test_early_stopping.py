"""The early-stopping rule, by hand and as training runs it."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from songnet_core.early_stopping import EarlyStopping, replay
from songnet_core.train import train
from tests.test_train import TINY, data

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
