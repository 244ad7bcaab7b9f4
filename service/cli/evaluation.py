"""`songnet eval PATH…`: the evaluation protocol on exports, model against the baselines.

The exports are imported into a temporary database (the data directory is not touched), the
model is trained on the training part with a validation split carved from it, and every scorer
ranks the test sessions (`songnet_core.evaluate`). Figures come with 95 % bootstrap
intervals over test sessions.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import structlog
import typer
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from service.cli.app import app, err_console, out_console, settings

if TYPE_CHECKING:
    from songnet_core.train import TrainProgress

log = structlog.get_logger(__name__)

SCORERS = ("songnet", "model", "fusion", "pop", "markov", "sknn", "repeat")


class _Bar:
    """One bar per epoch with the running loss and the validation HR@10."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: TaskID | None = None
        self.key: tuple[str, int] | None = None

    def __call__(self, p: TrainProgress) -> None:
        if (p.phase, p.epoch) != self.key:
            self.key = (p.phase, p.epoch)
            self.task = self.progress.add_task(f"{p.phase} epoch {p.epoch}/{p.max_epochs}", total=p.steps, loss=p.loss, val="…")
        assert self.task is not None
        best = "…" if p.best_val_hr10 is None else f"{p.best_val_hr10:.3f}"
        val = best if p.val_hr10 is None else f"{p.val_hr10:.3f} (best {best})"
        self.progress.update(self.task, completed=p.step, loss=p.loss, val=val)


class _Steps:
    """One bar per ranking phase (fitting the weights on validation, ranking the test steps)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, TaskID] = {}

    def __call__(self, phase: str, done: int, total: int) -> None:
        if phase not in self.tasks:
            self.tasks[phase] = self.progress.add_task(phase, total=total, loss=float("nan"), val="")
        self.progress.update(self.tasks[phase], completed=done)


def _clock(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class _Lines:
    """Progress as plain lines where no live bar can be drawn (stderr is a pipe or a log
    file): each phase's first and last update and, between them, one line every `every`
    seconds, with steps done / total, the time spent and an estimate of the time left."""

    def __init__(self, write: Callable[[str], None], *, every: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.write, self.every, self.clock = write, every, clock
        self.phases: dict[str, tuple[float, int, float]] = {}  # phase -> (first seen, steps done then, last line)

    def __call__(self, phase: str, done: int, total: int, extra: str = "") -> None:
        now = self.clock()
        if phase not in self.phases:
            self.phases[phase] = (now, done, now)
            self.write(f"eval: {phase}: {done}/{total}{extra}")
            return
        start, done0, last = self.phases[phase]
        if done < total and now - last < self.every:
            return
        self.phases[phase] = (start, done0, now)
        spent = now - start
        if done >= total:
            eta = "done"
        elif done > done0:
            eta = "ETA " + _clock(spent * (total - done) / (done - done0))
        else:
            eta = "ETA …"
        self.write(f"eval: {phase}: {done}/{total}, {_clock(spent)} spent, {eta}{extra}")

    def training(self, p: TrainProgress) -> None:
        val = "" if p.val_hr10 is None else f", val HR@10 {p.val_hr10:.3f}"
        self(f"training ({p.phase}) epoch {p.epoch}/{p.max_epochs}", p.step, p.steps, f", loss {p.loss:.3f}{val}")


def _table(report: dict[str, Any]) -> Table:
    table = Table(title=f"{report['test_steps']} test steps in {report['test_sessions']} sessions")
    table.add_column("scorer")
    for m in ("hr@10", "mrr@10", "ndcg@10"):
        table.add_column(m, justify="right")
    for name in SCORERS:
        if name in report:
            row = report[name]
            table.add_row(name, *(f"{row[m]:.3f} [{row[m + '_ci'][0]:.3f}, {row[m + '_ci'][1]:.3f}]" for m in ("hr@10", "mrr@10", "ndcg@10")))
    if "ratio" in report:
        r, best = report["ratio"], report["best_baseline"]["name"]
        table.caption = (
            f"songnet / best baseline ({best}): HR@10 {r['hr@10']:.2f} (difference {r['hr@10_difference']:+.3f}"
            f" [{r['hr@10_difference_ci'][0]:+.3f}, {r['hr@10_difference_ci'][1]:+.3f}]), MRR@10 {r['mrr@10']:.2f}"
            f" (difference {r['mrr@10_difference']:+.3f} [{r['mrr@10_difference_ci'][0]:+.3f}, {r['mrr@10_difference_ci'][1]:+.3f}])"
        )
    return table


@app.command("eval")
def evaluate(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="Export folders, files or zips.", exists=True)],
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON on stdout.")] = False,
    epochs: Annotated[int | None, typer.Option("--epochs", min=1, help="Most training epochs (early stopping may end sooner).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Training seed.")] = 0,
    no_model: Annotated[bool, typer.Option("--no-model", help="Baselines only.")] = False,
    bootstrap: Annotated[int, typer.Option("--bootstrap", min=10, help="Bootstrap resamples.")] = 1000,
) -> None:
    """Train on the older 80 % of the sessions in PATH… and rank the newest 20 %: songnet vs baselines."""
    from dataclasses import replace

    from service.export_reading import read_exports
    from songnet_core.evaluate import evaluate_listens, evaluation_train_config

    s = settings(ctx)
    tz = s.timezone or "UTC"
    read = read_exports(paths)
    results, listens = read.files, read.listens
    # A file that is not an export (a README or SOURCE.json beside the exports) fails its
    # import; the evaluation goes on with the plays of the files that did import.
    for r in results:
        if r.status == "failed":
            err_console.print(f"skipped {r.path}: {r.error}", markup=False, highlight=False, soft_wrap=True)
            log.warning("eval: file left out of the evaluation", path=r.path, error=r.error)
    if not listens:
        err_console.print("no music plays found in the given paths", markup=False)
        log.error("eval: nothing to evaluate; pass Spotify export folders, files or zips", paths=[str(p) for p in paths])
        raise typer.Exit(1)
    cfg = evaluation_train_config(seed=seed)
    if epochs is not None:
        cfg = replace(cfg, max_epochs=epochs)
    columns = (
        TextColumn("{task.description}"), BarColumn(), TextColumn("loss {task.fields[loss]:.3f}"),
        TextColumn("val HR@10 {task.fields[val]}"), TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
        TextColumn("ETA"), TimeRemainingColumn(),
    )  # fmt: skip
    try:
        if err_console.is_terminal:  # live bars, one per epoch and ranking phase
            with Progress(*columns, console=err_console, transient=as_json) as progress:
                report = evaluate_listens(
                    listens, train_config=cfg, tz=tz, n_boot=bootstrap, seed=seed,
                    with_model=not no_model, progress=_Bar(progress), step_progress=_Steps(progress),
                )  # fmt: skip
        else:  # a pipe or a file: a line per phase every 10 s
            lines = _Lines(lambda line: err_console.print(line, markup=False, highlight=False, soft_wrap=True))
            report = evaluate_listens(
                listens, train_config=cfg, tz=tz, n_boot=bootstrap, seed=seed,
                with_model=not no_model, progress=lines.training, step_progress=lines,
            )  # fmt: skip
    except ValueError as exc:
        err_console.print(f"cannot evaluate: {exc}", markup=False)
        log.error("eval: history too small for the protocol; it needs more listening sessions", error=str(exc))
        raise typer.Exit(1) from None
    out = report.to_json()
    log.info("eval done", test_steps=out["test_steps"], **{n: out[n]["hr@10"] for n in SCORERS if n in out})
    if as_json:
        print(json.dumps(out))
    else:
        out_console.print(_table(out))
