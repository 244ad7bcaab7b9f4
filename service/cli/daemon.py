"""Commands of the long-running service: `run`, `status`, `health`."""

from __future__ import annotations

import faulthandler
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import structlog
import typer
from rich.table import Table
from sqlalchemy import Engine

from service.cli.app import app, err_console, settings
from service.daemon import STOP_SECONDS, Daemon, StopEvent, install_stop_signals
from service.db import DatabaseError, database_path, open_database
from service.lock import daemon_lock
from service.settings import Settings
from service.sinks import playlists_dir
from service.status import check_health, collect_status
from service.watch import candidate_files

log = structlog.get_logger(__name__)

DEMO_FOLDER = "songnet-demo-export"
DEMO_PLAYS = 6_000
DEMO_EPOCHS = 3  # a first playlist within minutes; the real daemon trains to convergence
DEMO_COVERAGE = 1.0
# The shutdown ends within STOP_SECONDS of a stop request and the process exits 0. Should even
# the exit hang, the watchdog prints every thread's stack to stderr (what hung, for the bug
# report) and exits with 1 this long after the request.
STOP_WATCHDOG_SECONDS = STOP_SECONDS + 5


@app.command()
def run(
    ctx: typer.Context,
    once: Annotated[
        bool,
        typer.Option(
            "--once", help="One full cycle (import, train if needed, generate, write), then exit."
        ),
    ] = False,
    demo: Annotated[
        bool,
        typer.Option("--demo", help="First put a synthetic export into an empty export folder."),
    ] = False,
) -> None:
    """Run songnet: import exports dropped into the export folder, retrain, write weekly playlists."""
    s = settings(ctx)
    # Before the database is opened (created, upgraded): a stop request during the start-up
    # ends the process the same way, exit 0, not by SIGTERM's default action.
    stop = StopEvent()
    install_stop_signals(stop)
    lock = daemon_lock(s.data_dir, "songnet run --once" if once else "songnet run")
    if not lock.try_acquire():
        from service.lock import read_holder

        holder = read_holder(lock.path) or "another process"
        typer.echo(
            f"error: songnet is already running on {s.data_dir} ({holder}); "
            "one daemon per data directory: stop that one first, or use another --data-dir",
            err=True,
        )
        raise typer.Exit(1)
    try:
        if demo:
            put_demo_export(s.export_dir)
            s = demo_settings(s, once=once)
        try:
            engine = open_database(s.data_dir)
        except DatabaseError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        daemon = Daemon(s, engine, stop=stop)
        if once:
            code = daemon.run_once()
            engine.dispose()
            if code in (0, 3):
                err_console.print(
                    f"playlists written to {playlists_dir(s.data_dir)}", highlight=False
                )
            raise typer.Exit(code)
        _arm_stop_watchdog(daemon.stop)
        clean = daemon.run_forever(install_signal_handlers=False)
    finally:
        lock.release()
    log.debug("exiting", clean=clean)
    # A step still running (clean=False) is cut off; every write is a transaction, so that is
    # safe. Exiting here, not through the interpreter's exit, also means that no thread left
    # behind (a worker, a library's pool) can hold the process up.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _arm_stop_watchdog(stop: threading.Event, seconds: float = STOP_WATCHDOG_SECONDS) -> None:
    def arm() -> None:
        stop.wait()
        out = sys.stderr if _has_fileno(sys.stderr) else sys.__stderr__
        if out is not None and _has_fileno(out):
            faulthandler.dump_traceback_later(seconds, exit=True, file=out)

    threading.Thread(target=arm, name="songnet-stop-watchdog", daemon=True).start()


def _has_fileno(stream: Any) -> bool:
    try:
        stream.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    return True


def demo_settings(s: Settings, *, once: bool) -> Settings:
    """A short training; with --once no settling wait (the demo export was written whole)."""
    quick: dict[str, Any] = {"watch_stable_seconds": 0.0} if once else {}
    if s.train_max_epochs is None:
        quick["train_max_epochs"] = DEMO_EPOCHS
    if s.train_epoch_coverage is None:
        quick["train_epoch_coverage"] = DEMO_COVERAGE
    return s.model_copy(update=quick)


def put_demo_export(export_dir: Path, *, n_plays: int = DEMO_PLAYS, seed: int = 7) -> Path | None:
    """A synthetic extended export in `export_dir`, if that holds no export yet."""
    if candidate_files(export_dir):
        log.info("export folder not empty; --demo adds nothing", export_dir=str(export_dir))
        return None
    from songnet_core.synthetic import SyntheticConfig, generate_plays, write_extended_export

    target = export_dir / DEMO_FOLDER
    staging = export_dir / f".{DEMO_FOLDER}.tmp"  # hidden: the watch ignores it until renamed
    plays = generate_plays(SyntheticConfig(n_plays=n_plays, seed=seed))
    write_extended_export(plays, staging, seed=seed)
    staging.rename(target)
    log.info("demo export written", folder=str(target), plays=len(plays))
    return target


@app.command()
def status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The daemon's state: last imports, the model, next runs, each playlist's last sync."""
    s = settings(ctx)
    engine = _open_existing_database(s, "error")
    report = collect_status(engine, s, now=time.time())
    engine.dispose()
    if as_json:
        print(json.dumps(report, indent=2))
        return
    _print_status(report, s)


@app.command()
def health(ctx: typer.Context) -> None:
    """Exit 0 when the daemon's heartbeat is fresh and no job is stuck, 1 otherwise."""
    s = settings(ctx)
    engine = _open_existing_database(s, "unhealthy")
    result = check_health(engine, s, now=time.time())
    engine.dispose()
    typer.echo(("healthy: " if result.ok else "unhealthy: ") + result.reason, err=True)
    raise typer.Exit(0 if result.ok else 1)


def _open_existing_database(s: Settings, prefix: str) -> Engine:
    """The database for a read-only command; exit 1 with `prefix` when it is missing (it is
    never created: a mistyped --data-dir would leave one) or unusable."""
    if not database_path(s.data_dir).exists():
        typer.echo(
            f"{prefix}: no songnet database in {s.data_dir}: start the daemon (`songnet run`) there, "
            "or point SONGNET_DATA_DIR / --data-dir at the right folder",
            err=True,
        )
        raise typer.Exit(1)
    try:
        return open_database(s.data_dir)
    except DatabaseError as exc:
        typer.echo(f"{prefix}: {exc}", err=True)
        raise typer.Exit(1) from None


def _short(iso: str | None) -> str:
    """ "2026-03-09T06:00:00+01:00" as "2026-03-09 06:00" (the zone is printed once)."""
    return "-" if not iso else iso[:16].replace("T", " ")


def _print_status(report: dict[str, Any], s: Settings) -> None:
    con = err_console
    d = report["daemon"]
    con.print(f"[bold]daemon[/]: {'running' if d['running'] else 'not running'} — {d['health']}")
    sched = report["schedule"]
    con.print(
        f"schedule: {sched['cron']} in {sched['timezone']}; next weekly run {_short(sched['next_weekly_run'])}",
        highlight=False,
    )
    con.print(f"plays stored: {report['plays']:,}", highlight=False)
    model = report["model"]
    if model is None:
        why = (report.get("no_model") or {}).get("reason")
        con.print(f"model: none yet — {why}" if why else "model: none yet", highlight=False, markup=False)
    else:
        m = model["metrics"] or {}
        hr = m.get("val_hr@10")
        quality = (
            f"validation HR@10 {hr:.3f} over {int(m.get('val_steps', 0))} steps"
            if isinstance(hr, float)
            else ""
        )
        con.print(
            f"model: version {model['version']}, trained {_short(model['created_at'])} "
            f"on {model['plays_trained']:,} plays; {quality}",
            highlight=False,
        )
        if model.get("budget_stopped"):
            con.print(f"  {model['budget_stopped']}", highlight=False, markup=False)
    candidate = report["latest_candidate"]
    if candidate is not None:
        con.print(
            f"newest model not promoted: version {candidate['version']} ({candidate['note'] or 'not better'})",
            highlight=False,
        )
        if candidate.get("budget_stopped"):
            con.print(f"  {candidate['budget_stopped']}", highlight=False, markup=False)
    if report["jobs"]:
        table = Table("job", "next run", title="jobs")
        for job, at in report["jobs"].items():
            table.add_row(job, _short(at))
        con.print(table)
    trainings = [r for r in report["runs"] if r["job"] == "train"]
    if trainings and trainings[0]["outcome"] == "failed":
        last = trainings[0]
        con.print(
            f"last training failed at {_short(last['started_at'])}: "
            f"{(last['detail'] or {}).get('error') or 'see the log'}; the model above stays in use",
            highlight=False,
            markup=False,
        )
    weekly = [r for r in report["runs"] if r["job"] in ("weekly", "first-playlists", "once")]
    if weekly:
        last = weekly[0]
        con.print(
            f"last playlist run: {last['job']} at {_short(last['started_at'])}, {last['outcome']}",
            highlight=False,
        )
    if report["imports"]:
        table = Table(
            "file", "status", "imported", "duplicates", "at", "error", title="last imports"
        )
        for f in report["imports"]:
            table.add_row(
                Path(f["path"]).name,
                f["status"],
                str(f["imported"]),
                str(f["duplicates"]),
                _short(f["at"]),
                f["error"] or "",
            )
        con.print(table)
    if report["playlists"]:
        table = Table("playlist", "generated", "synced", "state", title="playlists")
        for p in report["playlists"]:
            state = p["last_error"] or (
                "deferred until " + _short(p["deferred_until"]) if p["deferred_until"] else "ok"
            )
            if p["removed_from_config"]:
                state = "removed from the configuration; left alone in Spotify"
            table.add_row(
                p["name"], _short(p["last_generated_at"]), _short(p["last_synced_at"]), state
            )
        con.print(table)
    for src in report["sources"]:
        line = (
            f"source {src['source']}:{src['account']}: last pull {_short(src['last_pull_at'])}, "
            f"history up to {_short(src['watermark'])}; {src['imported']:,} plays imported, "
            f"{src['duplicates']:,} duplicates, {src['skipped']:,} skipped"
        )
        if src["needs_attention"]:
            line = f"source {src['source']}:{src['account']}: needs you: {src['error']}"
        elif src["error"]:
            line += f"; last pull failed ({src['error']}), retried at the next poll"
        con.print(line, highlight=False, markup=False)
    for problem in report["source_problems"]:
        con.print(
            f"source {problem['source']}: not pulled: {problem['error']}",
            highlight=False,
            markup=False,
        )
    spotify = report["spotify"]
    if not spotify["configured"]:
        con.print(
            f"spotify: sync off (no client id/secret); playlists are files in {playlists_dir(s.data_dir)}",
            highlight=False,
        )
    elif spotify["sign_in"]:
        con.print(f"spotify: {spotify['sign_in']}", highlight=False)
