"""Commands about the local library: `info`, `stats`, and `demo` (a synthetic listener)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import structlog
import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from sqlalchemy import Engine, func
from sqlmodel import Session, select

from service import tables
from service.cli.app import app, err_console, out_console, settings
from service.cli.importing import print_results
from service.db import DatabaseError, database_path, open_database
from service.demo import DEFAULT_PLAYS, DemoError, DemoExport, ensure_demo_export
from service.importer import FileResult, import_paths
from service.library import library_stats
from service.lock import cli_write_lock
from service.settings import Settings

log = structlog.get_logger(__name__)


def _open(s: Settings) -> Engine:
    try:
        return open_database(s.data_dir)
    except DatabaseError as exc:
        log.error("cannot open the database", error=str(exc))
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


@app.command()
def info(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Where songnet keeps its data, and the database's schema version and size."""
    s = settings(ctx)
    engine = _open(s)
    with Session(engine) as session:
        plays = session.exec(select(func.count()).select_from(tables.PlayRow)).one()
        version = session.exec(select(tables.SchemaInfo.version)).one()
    path = database_path(s.data_dir)
    result = {"data_dir": str(s.data_dir), "database": str(path), "schema_version": version, "plays": plays}
    if as_json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            out_console.print(f"{k}: {v}", highlight=False)


def _stats_of(engine: Engine, s: Settings, top: int) -> dict[str, Any]:
    return library_stats(engine, top=top, min_ms=s.min_play_ms, gap_s=round(s.session_gap_minutes * 60))


def print_stats(stats: dict[str, Any]) -> None:
    """The stats as tables for people (stdout)."""
    if not stats["plays"]:
        out_console.print("No plays stored yet: import your Spotify export with `songnet import PATH`.")
        return
    summary = Table(title="Your library", show_header=False, title_justify="left")
    summary.add_column(style="bold")
    summary.add_column(justify="right")
    secs = stats["min_ms"] // 1000
    for label, value in [
        ("plays", f"{stats['plays']:,}"),
        ("tracks", f"{stats['tracks']:,}"),
        ("artists", f"{stats['artists']:,}"),
        (f"sessions (plays ≥ {secs} s, {stats['gap_s'] // 60} min gaps)", f"{stats['sessions']:,}"),
        ("first play (UTC)", stats["first_play"]),
        ("last play (UTC)", stats["last_play"]),
        ("hours listened", f"{stats['listening_hours']:,}"),
        ("skipped (flagged by Spotify)", f"{stats['skipped']:,}"),
        (f"short plays (< {secs} s)", f"{stats['short_plays']:,}"),
        ("from extended history / account data", f"{stats['sources']['extended']:,} / {stats['sources']['account']:,}"),
    ]:
        summary.add_row(label, value)
    out_console.print(summary)
    artists = Table(title=f"Top artists (plays ≥ {secs} s)", title_justify="left")
    artists.add_column("#", justify="right")
    artists.add_column("artist")
    artists.add_column("plays", justify="right")
    for n, row in enumerate(stats["top_artists"], 1):
        artists.add_row(str(n), row["artist"], f"{row['plays']:,}")
    out_console.print(artists)
    tracks = Table(title=f"Top tracks (plays ≥ {secs} s)", title_justify="left")
    tracks.add_column("#", justify="right")
    tracks.add_column("track")
    tracks.add_column("artist")
    tracks.add_column("plays", justify="right")
    for n, row in enumerate(stats["top_tracks"], 1):
        tracks.add_row(str(n), row["title"], row["artist"], f"{row['plays']:,}")
    out_console.print(tracks)


@app.command()
def stats(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
    top: Annotated[int, typer.Option("--top", min=0, help="How many top artists and tracks.")] = 10,
) -> None:
    """What your library holds: plays, tracks, artists, sessions, dates, top artists and tracks."""
    s = settings(ctx)
    result = _stats_of(_open(s), s, top)
    if as_json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        print_stats(result)


@app.command()
def demo(
    ctx: typer.Context,
    plays: Annotated[int, typer.Option("--plays", min=1, max=2_000_000, help="Plays of the synthetic listener.")] = DEFAULT_PLAYS,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the synthetic listener.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """Write a synthetic listener's two overlapping exports, import them, and print the stats.

    The exports go to DATA_DIR/demo-export/ (once); importing again changes nothing.
    """
    s = settings(ctx)
    engine = _open(s)
    try:
        with cli_write_lock(s.data_dir, "demo", s.lock_wait_seconds):
            export = _demo_export(s, plays, seed, quiet=as_json)
            results = _import_with_progress(engine, export.files)
        failed = [r for r in results if r.status == "failed"]
        result = _stats_of(engine, s, 10)
    finally:
        engine.dispose()
    if as_json:
        print(json.dumps({"export": str(export.folder), "files": [r.to_json() for r in results], "stats": result}, ensure_ascii=False))
    else:
        print_results(results)
        print_stats(result)
    if failed:
        for r in failed:
            typer.echo(f"error: {r.path}: {r.error}", err=True)
        raise typer.Exit(1)


def _demo_export(s: Settings, plays: int, seed: int, *, quiet: bool) -> DemoExport:
    try:
        with err_console.status(f"Writing a synthetic export of {plays:,} plays…"):
            export = ensure_demo_export(s.data_dir, plays=plays, seed=seed)
    except DemoError as exc:
        log.error("demo export unusable", error=str(exc))
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except OSError as exc:
        log.error("cannot write the demo export", error=str(exc), data_dir=str(s.data_dir))
        typer.echo(f"error: cannot write the demo export into {s.data_dir}: {exc}", err=True)
        raise typer.Exit(1) from None
    if not quiet:
        verb = "Wrote" if export.created else "Found"
        err_console.print(f"{verb} the demo export in {export.folder}", highlight=False)
    return export


def _import_with_progress(engine: Engine, files: list[Path]) -> list[FileResult]:
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task("Importing", total=None)

        def on_progress(done: int, total: int, label: str) -> None:
            name = label.rsplit("/", 1)[-1]
            progress.update(task, completed=done, total=total or None, description=f"Importing {name}")

        return import_paths(engine, files, on_progress=on_progress)
