"""Commands about the feature cache: `features import-csv`, `features recompute`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import structlog
import typer
from rich.progress import Progress, SpinnerColumn, TextColumn
from rich.table import Table

from service.cli.app import app, err_console, settings
from service.db import DatabaseError, open_database
from service.features import AudioCsvError, import_audio_features_csv, recompute_features
from service.lock import cli_write_lock

log = structlog.get_logger(__name__)

features_app = typer.Typer(help="The per-track feature cache (history figures, optional audio features).")
app.add_typer(features_app, name="features")


@features_app.command("import-csv")
def import_csv(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="A Kaggle-style CSV of audio features keyed by track id or URI.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON on stdout.")] = False,
) -> None:
    """Store audio features (danceability, energy, valence, …) from a CSV you have.

    Rows without a usable track id or audio value are counted and left out; the command
    fails (exit 1) only when the file as a whole cannot be read.
    """
    s = settings(ctx)
    try:
        engine = open_database(s.data_dir)
    except DatabaseError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    with cli_write_lock(s.data_dir, "import audio features", s.lock_wait_seconds):
        try:
            with Progress(SpinnerColumn(), TextColumn("{task.description}"), console=err_console, transient=True) as bar:
                task = bar.add_task(f"reading {path.name}", total=None)
                report = import_audio_features_csv(
                    engine, path, progress=lambda n: bar.update(task, description=f"reading {path.name}: {n:,} rows")
                )
        except AudioCsvError as exc:
            log.error("audio features CSV not imported; fix the file and run the command again", path=str(path), error=str(exc))
            if as_json:
                print(json.dumps({"path": str(path), "error": str(exc)}))
            else:
                typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        finally:
            engine.dispose()
    if as_json:
        print(json.dumps(report.to_json()))
        return
    table = Table(title=f"audio features from {path.name}")
    table.add_column("rows", justify="right")
    table.add_column("stored", justify="right")
    table.add_column("duplicates", justify="right")
    table.add_column("left out", justify="left")
    table.add_column("library tracks with audio features", justify="right")
    left_out = ", ".join(f"{reason}: {n}" for reason, n in report.bad_rows.items()) or "0"
    table.add_row(str(report.rows), str(report.stored), str(report.duplicates), left_out, str(report.matched_tracks))
    err_console.print(table)


@features_app.command("recompute")
def recompute(ctx: typer.Context) -> None:
    """Recompute the per-track features from every stored play (import does this itself)."""
    s = settings(ctx)
    try:
        engine = open_database(s.data_dir)
    except DatabaseError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    with cli_write_lock(s.data_dir, "recompute features", s.lock_wait_seconds):
        n = recompute_features(engine, tz=s.zone)
    engine.dispose()
    err_console.print(f"features recomputed for {n:,} tracks")
