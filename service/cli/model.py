"""`songnet train`: train a model on the stored history and promote it if it is not worse."""

from __future__ import annotations

import json
import math
import signal
import threading
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import structlog
import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from service.cli.app import app, err_console, settings
from service.db import DatabaseError, open_database
from service.lock import cli_write_lock

if TYPE_CHECKING:
    from service.training import TrainOutcome
    from songnet_core.train import TrainProgress

log = structlog.get_logger(__name__)


class _StopOnInterrupt:
    """The first Ctrl-C (or SIGTERM) asks training to stop at the next batch; nothing is stored."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopOnInterrupt:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.event.is_set():  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.event.set()
        err_console.print("stopping at the next batch; the promoted model stays (Ctrl-C again to abort)")

    def __exit__(self, *_exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class _TrainingBar:
    """One rich progress bar per epoch: loss so far and the latest validation HR@10."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: TaskID | None = None
        self.key: tuple[str, int] | None = None

    def __call__(self, p: TrainProgress) -> None:
        key = (p.phase, p.epoch)
        val = "…" if p.best_val_hr10 is None else f"{p.best_val_hr10:.3f}"
        label = f"{p.phase} epoch {p.epoch}/{p.max_epochs}"
        if key != self.key:
            if self.task is not None:
                self.progress.update(self.task, visible=True)
            self.task = self.progress.add_task(label, total=p.steps, loss=p.loss, val=val)
            self.key = key
        assert self.task is not None
        if p.val_hr10 is not None:
            val = f"{p.val_hr10:.3f} (best {p.best_val_hr10:.3f})" if p.best_val_hr10 is not None else f"{p.val_hr10:.3f}"
        self.progress.update(self.task, completed=p.step, loss=p.loss, val=val)


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}"


def outcome_json(outcome: TrainOutcome) -> dict[str, Any]:
    return {
        "stopped": outcome.stopped,
        "promoted": outcome.promoted,
        "model_version": outcome.model_version,
        "reason": outcome.reason,
        "plays": outcome.plays,
        "epochs": outcome.epochs,
        "val_hr@10": outcome.metrics.get("val_hr@10"),
        "promoted_model_hr@10_same_steps": outcome.current_hr10,
        "new_model_hr@10_same_steps": outcome.new_hr10_same_steps,
        "compared_steps": outcome.compared_steps,
        "pruned": outcome.pruned,
        "metrics": {k: v for k, v in outcome.metrics.items() if isinstance(v, int | float) and math.isfinite(v)},
    }


@app.command()
def train(
    ctx: typer.Context,
    epochs: Annotated[int | None, typer.Option("--epochs", min=1, help="Most epochs to train (early stopping may end sooner).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the outcome as JSON on stdout.")] = False,
) -> None:
    """Train a model on your listening history; promote it if it is not worse than the current one."""
    from service.training import TrainingError, default_train_config, train_and_maybe_promote

    s = settings(ctx)
    try:
        engine = open_database(s.data_dir)
    except DatabaseError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    config = default_train_config(s, max_epochs=epochs)
    columns = (
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}"), TextColumn("val HR@10 {task.fields[val]}"), TimeElapsedColumn(),
    )  # fmt: skip
    try:
        with (
            cli_write_lock(s.data_dir, "train", s.lock_wait_seconds),
            _StopOnInterrupt() as stop,
            Progress(*columns, console=err_console) as progress,
        ):
            outcome = train_and_maybe_promote(
                engine, s, progress=_TrainingBar(progress), should_stop=stop.event.is_set, config=config
            )
    except TrainingError as exc:
        log.error("training not started", error=str(exc))
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        engine.dispose()
    if as_json:
        print(json.dumps(outcome_json(outcome)))
    else:
        _print_outcome(outcome)
    if outcome.stopped:
        raise typer.Exit(1)


def _print_outcome(outcome: TrainOutcome) -> None:
    if outcome.stopped:
        err_console.print("training stopped; nothing stored, the promoted model stays")
        return
    m = outcome.metrics
    table = Table(title="training", show_header=False)
    table.add_column("what")
    table.add_column("value", overflow="fold")
    rows = [
        ("model version", str(outcome.model_version)),
        ("promoted", "yes" if outcome.promoted else "no"),
        ("why", outcome.reason),
        ("validation HR@10", _fmt(m.get("val_hr@10"))),
        ("promoted model, same steps", _fmt(outcome.current_hr10)),
        ("this model, same steps", _fmt(outcome.new_hr10_same_steps)),
        ("steps compared", str(outcome.compared_steps) if outcome.current_hr10 is not None else "—"),
        ("epochs (best)", f"{outcome.epochs} ({int(m.get('best_epoch', 0))})"),
        ("plays", f"{outcome.plays:,}"),
        ("tracks in vocabulary", f"{int(m.get('classes', 0)):,}"),
        ("training time", f"{m.get('train_seconds', 0.0):.1f} s"),
        ("tokens/s", f"{m.get('tokens_per_second', 0.0):,.0f}"),
    ]
    for k, v in rows:
        table.add_row(k, v)
    err_console.print(table)
