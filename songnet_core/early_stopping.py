"""When the fit stops: early stopping on validation HR@10, one epoch at a time.

An epoch improves when its validation figure beats the best so far by more than `min_gain` of
it (relative; 0: any rise). The fit stops after `patience` epochs in a row without an
improvement and keeps the best epoch. An epoch without a figure (NaN: no validation steps, a
tiny history) counts as the best so far, so such a fit runs its every epoch and keeps the
last. `replay` runs the same rule over a recorded curve (`eval --json`'s `training_curve`),
which is how another rule is judged without training again (scripts/early_stopping_sweep.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class EarlyStopping:
    patience: int
    min_gain: float = 0.0
    best: float = -1.0  # best validation figure so far (-1: none yet)
    best_epoch: int = 0
    since_best: int = 0

    def observe(self, epoch: int, value: float) -> bool:
        """Records `epoch`'s validation figure; True when it is the new best."""
        if math.isnan(value) or self.best < 0 or value > self.best * (1.0 + self.min_gain):
            if not math.isnan(value):
                self.best = value
            self.best_epoch, self.since_best = epoch, 0
            return True
        self.since_best += 1
        return False

    @property
    def done(self) -> bool:
        return self.since_best >= self.patience


def replay(curve: Sequence[float], patience: int, min_gain: float = 0.0, max_epochs: int | None = None) -> tuple[int, int] | None:
    """(epochs run, best epoch) of the rule over a curve of validation figures, epoch 1 first,
    the fit ending at `max_epochs` at the latest; None when the curve ends before the rule
    would stop (it was recorded under a rule that stopped sooner: what came next is unknown)."""
    rule = EarlyStopping(patience, min_gain)
    for epoch, value in enumerate(curve, start=1):
        rule.observe(epoch, value)
        if rule.done or epoch == max_epochs:
            return epoch, rule.best_epoch
    return None


__all__ = ["EarlyStopping", "replay"]
