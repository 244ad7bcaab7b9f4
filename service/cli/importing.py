"""`songnet import PATH…`: import Spotify exports (folders, files, zips) into the library;
`--listenbrainz USER` / `--lastfm USER` backfill from those services (one row per source).
`songnet pull`: pull every source the settings set up, once (the daemon's pull step by hand).

A progress bar and the result table go to stderr; with `--json` stdout holds exactly one
object, `{"files": [...]}`, one entry per file or source (see `service.importer.FileResult`).
Exit 0 when every file imported, was already there or was ignored; 1 when any file or pull
failed; 2 for a usage or configuration error (`pull`: a source the settings name cannot be
used as set up, or none is named; the usable ones are pulled all the same).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated

import structlog
import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text
from sqlalchemy import Engine

from service.cli.app import app, err_console, settings
from service.db import DatabaseError, open_database
from service.features import recompute_features
from service.importer import FileResult, import_paths, summarise
from service.lock import cli_write_lock
from service.pull import pull_source
from service.settings import Settings
from service.sources import PullSource, configured_sources, usable_sources
from service.sources.http_json import SourceError
from songnet_core.exports import ZipLimits

log = structlog.get_logger(__name__)


@app.command("import")
def import_command(
    ctx: typer.Context,
    paths: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Export folders, files or the zip as Spotify sends it.", show_default=False
        ),
    ] = None,
    listenbrainz: Annotated[
        str | None,
        typer.Option(
            "--listenbrainz",
            metavar="USER",
            help="Pull USER's ListenBrainz listens (after the stored watermark).",
            show_default=False,
        ),
    ] = None,
    lastfm: Annotated[
        str | None,
        typer.Option(
            "--lastfm",
            metavar="USER",
            help="Pull USER's Last.fm scrobbles (needs SONGNET_LASTFM_API_KEY).",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help='Print {"files": [...]} on stdout, nothing else.')
    ] = False,
    max_unzipped_mb: Annotated[
        int | None,
        typer.Option(
            "--max-unzipped-mb",
            min=1,
            help="Refuse zips that unpack to more than this (default 8192 MiB).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Import Spotify streaming-history exports, or pull ListenBrainz / Last.fm history;
    every record is accounted for per file or source."""
    s = settings(ctx)
    paths = paths or []
    only = {
        name: user for name, user in (("listenbrainz", listenbrainz), ("lastfm", lastfm)) if user
    }
    if not paths and not only:
        typer.echo("error: give export paths, --listenbrainz USER or --lastfm USER", err=True)
        raise typer.Exit(2)
    try:
        sources = configured_sources(s, sleep=time.sleep, only=only) if only else []
    except SourceError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    limits = ZipLimits()
    if max_unzipped_mb is not None:
        cap = max_unzipped_mb << 20
        limits = ZipLimits(max_member_bytes=cap, max_total_bytes=cap)
    results = _bring_in(s, "import", paths, limits, sources)
    _report(results, as_json)
    if any(r.status == "failed" for r in results):
        raise typer.Exit(1)


# What `songnet pull` says when the settings name no history source.
NO_SOURCE = (
    "no history source is set up: set SONGNET_LISTENBRAINZ_USER, or SONGNET_LASTFM_USER with"
    " SONGNET_LASTFM_API_KEY (README: Keep your history flowing)"
)


@app.command("pull")
def pull_command(
    ctx: typer.Context,
    as_json: Annotated[
        bool, typer.Option("--json", help='Print {"files": [...]} on stdout, nothing else.')
    ] = False,
) -> None:
    """Pull every history source the settings set up (ListenBrainz, Last.fm) once, from where
    its last pull stopped: what the daemon does every SONGNET_SOURCE_POLL, by hand."""
    s = settings(ctx)
    sources, problems = usable_sources(s, sleep=time.sleep)
    for problem in problems:
        typer.echo(f"error: {problem.source} cannot be pulled: {problem.error}", err=True)
    if not sources:
        typer.echo(f"error: {NO_SOURCE}" if not problems else "error: nothing was pulled", err=True)
        raise typer.Exit(2)
    results = _bring_in(s, "pull", [], ZipLimits(), sources)
    _report(results, as_json)
    if any(r.status == "failed" for r in results):
        raise typer.Exit(1)
    if problems:
        raise typer.Exit(2)


def _bring_in(
    s: Settings,
    command: str,
    paths: list[Path],
    limits: ZipLimits,
    sources: list[PullSource],
) -> list[FileResult]:
    """Import `paths`, then pull `sources`, under the write lock; the feature cache after."""
    try:
        engine = open_database(s.data_dir)
    except DatabaseError as exc:
        log.error("cannot open the database", error=str(exc))
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    try:
        with cli_write_lock(s.data_dir, command, s.lock_wait_seconds):
            results = _import_with_progress(engine, paths, limits) if paths else []
            results += [_pull_with_progress(engine, source) for source in sources]
            if any(r.imported for r in results):
                # The feature cache describes the whole history; new plays change it.
                recompute_features(engine, tz=s.zone)
    finally:
        engine.dispose()
    return results


def _report(results: list[FileResult], as_json: bool) -> None:
    if as_json:
        print(json.dumps({"files": [r.to_json() for r in results]}, ensure_ascii=False))
    else:
        print_results(results)


def _import_with_progress(engine: Engine, paths: list[Path], limits: ZipLimits) -> list[FileResult]:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task("Importing", total=None)

        def on_progress(done: int, total: int, label: str) -> None:
            name = label.rsplit("/", 1)[-1]
            progress.update(
                task, completed=done, total=total or None, description=f"Importing {name}"
            )

        return import_paths(engine, paths, on_progress=on_progress, limits=limits)


def _pull_with_progress(engine: Engine, source: PullSource) -> FileResult:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task(f"Pulling {source.name}:{source.account}", total=None)

        def on_progress(done: int, total: int | None, label: str) -> None:
            progress.update(task, completed=done, total=total)

        return pull_source(engine, source, on_progress=on_progress).summary()


def print_results(results: list[FileResult]) -> None:
    """The per-file table, each file's error or reason below it, and a totals line (stderr)."""
    base = _common_folder([r.path for r in results])
    table = Table(title=f"Import of {base}" if base else "Import", title_justify="left")
    table.add_column("file", overflow="fold", ratio=1)
    table.add_column("format", no_wrap=True)
    for name in ("records", "imported", "duplicates"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("skipped", overflow="fold")
    table.add_column("status", no_wrap=True)
    style = {"failed": "red", "ignored": "dim", "already-imported": "cyan", "imported": "green"}
    notes: list[tuple[str, FileResult]] = []
    for r in results:
        name = _shorten(r.path, base)
        skipped = ", ".join(f"{reason} {n:,}" for reason, n in sorted(r.skipped.items()))
        # Text, not markup: a file name may hold "[...]".
        table.add_row(
            Text(name),
            r.format or "",
            f"{r.records:,}",
            f"{r.imported:,}",
            f"{r.duplicates:,}",
            skipped,
            Text(r.status, style=style.get(r.status, "")),
        )
        if r.error:
            notes.append((name, r))
    err_console.print(table)
    for name, r in notes:
        line = Text(f"{r.status}: ", style=style.get(r.status, ""))
        line.append(f"{name}: {r.error}", style="")
        err_console.print(line)
    totals = summarise(results)
    err_console.print(
        f"{totals['files']} files: {totals['imported']:,} plays imported, "
        f"{totals['duplicates']:,} duplicates, {totals['skipped']:,} records skipped, "
        f"{totals['failed']} failed",
        highlight=False,
    )


def _common_folder(paths: list[str]) -> str:
    folders = [p.split("!", 1)[0].rsplit("/", 1)[0] for p in paths if "/" in p.split("!", 1)[0]]
    if len(folders) != len(paths) or not folders:
        return ""
    try:
        return os.path.commonpath(folders)
    except ValueError:
        return ""


def _shorten(path: str, base: str) -> str:
    if base and path.startswith(base + "/"):
        return path[len(base) + 1 :]
    return path
