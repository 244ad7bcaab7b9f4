"""Looking after the data directory: `backup` (an online copy of the database)."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Annotated

import structlog
import typer

from service.cli.app import app, err_console, settings
from service.db import backup_database, database_path

log = structlog.get_logger(__name__)


class BackupError(Exception):
    """The backup could not be made; the message says why and what to do."""


def backup_target(dest: Path, now: float) -> Path:
    """`dest` itself, or a time-stamped file inside `dest` when that is a folder."""
    if dest.is_dir():
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
        return dest / f"songnet-{stamp}.db"
    return dest


def make_backup(data_dir: Path, dest: Path, *, now: float | None = None) -> Path:
    """A consistent copy of `data_dir`'s database at `dest`, checked; safe while songnet runs.

    SQLite's online backup copies the last committed state even while the daemon writes. The
    copy is written beside the target and renamed into place once `PRAGMA integrity_check`
    passes, so an interrupted backup never leaves a half-written file under the target's name.
    """
    source = database_path(data_dir)
    if not source.is_file():
        raise BackupError(f"no database at {source}; is the data directory ({data_dir}) right?")
    target = backup_target(dest, time.time() if now is None else now)
    if target.exists():
        raise BackupError(
            f"{target} exists; choose another name or a folder (songnet never overwrites a backup)"
        )
    partial = target.with_name(f".{target.name}.partial")
    try:
        backup_database(source, partial)
        check = sqlite3.connect(partial)
        try:
            verdict = check.execute("PRAGMA integrity_check").fetchone()[0]
            # A standalone file: the copy must not need a -wal file beside it.
            check.execute("PRAGMA journal_mode=DELETE")
        finally:
            check.close()
        if verdict != "ok":
            raise BackupError(
                f"the copy failed its integrity check ({verdict}); the database may be damaged"
            )
        partial.rename(target)
    except sqlite3.Error as exc:
        raise BackupError(f"backup of {source} failed: {exc}") from exc
    except OSError as exc:
        raise BackupError(f"cannot write {target}: {exc.strerror or exc}") from exc
    finally:
        # Its folder may not exist (it could not be made): then nothing was written.
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
    return target


@app.command()
def backup(
    ctx: typer.Context,
    dest: Annotated[
        Path,
        typer.Argument(help="File to write, or a folder (songnet-YYYYMMDD-HHMMSS.db goes inside)."),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Copy the database to DEST while songnet keeps running (SQLite's online backup)."""
    s = settings(ctx)
    try:
        target = make_backup(s.data_dir, dest)
    except BackupError as exc:
        log.error(
            "backup failed",
            error=str(exc),
            action="fix the cause above and run songnet backup again",
        )
        err_console.print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(1) from None
    size = target.stat().st_size
    log.info("backup written", path=str(target), bytes=size)
    if as_json:
        print(json.dumps({"backup": str(target), "bytes": size}))
    else:
        err_console.print(
            f"backup written to {target} ({size} bytes)", markup=False, highlight=False
        )
