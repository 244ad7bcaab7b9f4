"""What `songnet status` and `songnet health` report, read from the database alone.

The daemon writes a heartbeat into table `kv` every `heartbeat_interval_seconds` (from its own
thread, so a long training still beats) with the job it is running and the next run time of
each job. `health` passes while that heartbeat is fresh and no job has run for longer than
`job_stuck_minutes`; `status` puts it together with the import ledger, the models, the
weekly runs and each playlist's last sync.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any

from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from service import kv, playlist_store, tables
from service.cron import parse_crontab
from service.settings import Settings
from service.sinks import FileSink
from service.sources import setup_problems


@dataclass(frozen=True)
class Health:
    ok: bool
    reason: str


def stale_after_seconds(settings: Settings) -> float:
    """A heartbeat older than this means the daemon is gone or hung."""
    return 3 * settings.heartbeat_interval_seconds + 10


def check_health(engine: Engine, settings: Settings, *, now: float) -> Health:
    beat = kv.get_json(engine, kv.HEARTBEAT)
    if not isinstance(beat, dict) or "at" not in beat:
        return Health(False, "no heartbeat: the daemon has not run on this data directory")
    if beat.get("stopped"):
        return Health(False, f"the daemon stopped at {_iso(beat['at'], settings.zone)}")
    age = now - float(beat["at"])
    if age > stale_after_seconds(settings):
        return Health(
            False,
            f"heartbeat is {age:.0f} s old (limit {stale_after_seconds(settings):.0f} s): daemon down or hung",
        )
    job, since = beat.get("job"), beat.get("job_since")
    if job and since is not None:
        running = now - float(since)
        if running > settings.job_stuck_minutes * 60:
            return Health(
                False,
                f"job {job!r} has run for {running / 60:.0f} min (limit {settings.job_stuck_minutes:g}): stuck",
            )
    doing = f", running {job}" if job else ""
    return Health(True, f"heartbeat {age:.0f} s ago (pid {beat.get('pid')}){doing}")


def collect_status(
    engine: Engine, settings: Settings, *, now: float, recent: int = 5
) -> dict[str, Any]:
    """Everything `songnet status --json` prints."""
    zone = settings.zone
    health = check_health(engine, settings, now=now)
    beat = kv.get_json(engine, kv.HEARTBEAT) or {}
    state = kv.get_json(engine, kv.DAEMON) or {}
    with Session(engine) as session:
        plays = session.exec(select(func.count()).select_from(tables.PlayRow)).one()
        imports = session.exec(
            select(tables.ImportedFile)
            .order_by(
                col(tables.ImportedFile.imported_at).desc(), col(tables.ImportedFile.id).desc()
            )
            .limit(recent)
        ).all()
        models = session.exec(
            select(tables.ModelVersion).order_by(col(tables.ModelVersion.id).desc()).limit(recent)
        ).all()
        runs = session.exec(
            select(tables.RunRecord).order_by(col(tables.RunRecord.id).desc()).limit(recent * 2)
        ).all()
        playlists = session.exec(
            select(tables.PlaylistState).order_by(col(tables.PlaylistState.config_id))
        ).all()
    sinks: dict[str, list[tables.PlaylistSinkState]] = {}
    for row in playlist_store.sink_states(engine):
        sinks.setdefault(row.config_id, []).append(row)
    promoted = next((m for m in models if m.promoted), None)
    if promoted is None:
        with Session(engine) as session:
            promoted = session.exec(
                select(tables.ModelVersion).where(col(tables.ModelVersion.promoted))
            ).first()
    jobs = beat.get("jobs") if health.ok else None
    configured = {p.id for p in settings.playlists}
    return {
        "daemon": {
            "running": health.ok,
            "health": health.reason,
            "pid": beat.get("pid") if health.ok else None,
            "started_at": _iso(state.get("started_at"), zone),
            "stopped_at": _iso(state.get("stopped_at"), zone),
            "heartbeat_at": _iso(beat.get("at"), zone),
            "current_job": beat.get("job") if health.ok else None,
        },
        "schedule": {
            "cron": settings.schedule,
            "timezone": str(zone),
            "next_weekly_run": _iso(_next_fire(settings, zone, now), zone),
        },
        "jobs": {k: _iso(v, zone) for k, v in sorted((jobs or {}).items())},
        "plays": int(plays),
        "imports": [
            {
                "path": f.path,
                "status": f.status,
                "format": f.format,
                "records": f.records,
                "imported": f.imported,
                "duplicates": f.duplicates,
                "at": _iso(f.imported_at, zone),
                "error": f.error,
            }
            for f in imports
        ],
        "model": None if promoted is None else _model(promoted, zone),
        # Without a promoted model: why, what makes one, and what the playlists use meanwhile.
        "no_model": _no_model(engine, settings, int(plays), runs) if promoted is None else None,
        "latest_candidate": _model(models[0], zone) if models and not models[0].promoted else None,
        "runs": [
            {
                "job": r.job,
                "started_at": _iso(r.started_at, zone),
                "finished_at": _iso(r.finished_at, zone),
                "outcome": r.outcome
                or ("running" if beat.get("job") == r.job and health.ok else "unfinished"),
                "detail": _loads(r.detail_json),
            }
            for r in runs
        ],
        "playlists": [
            {
                "id": p.config_id,
                "name": p.name,
                "configured": p.config_id in configured
                or (not settings.playlists and not p.removed_from_config),
                "removed_from_config": p.removed_from_config,
                "tracks": len(_loads(p.tracks_json) or []),
                "last_generated_at": _iso(p.last_generated_at, zone),
                **_sinks_of(p, sinks.get(p.config_id, []), zone),
            }
            for p in playlists
        ],
        "spotify": {"configured": settings.spotify_configured, "sign_in": _sign_in_problem(engine)},
        "sources": [_source(row, zone) for row in _source_states(engine)],
        # Sources the settings name but cannot use: no pull happens until they are fixed.
        "source_problems": [
            {"source": p.source, "error": p.error, "hint": p.hint} for p in setup_problems(settings)
        ],
    }


def _sinks_of(
    playlist: tables.PlaylistState, rows: list[tables.PlaylistSinkState], zone: tzinfo
) -> dict[str, Any]:
    """Each sink's side of a playlist, and the summary `status` prints: synced = the last
    write to a remote sink (any but the files), the earliest deferral, the first error."""
    remote = [r for r in rows if r.sink != FileSink.name]
    written = [r.last_written_at for r in remote if r.last_written_at is not None]
    waits = [r.deferred_until for r in rows if r.deferred_until is not None]
    errors = [f"{r.sink}: {r.last_error}" for r in rows if r.last_error]
    spotify = next((r for r in rows if r.sink == "spotify"), None)
    return {
        "last_synced_at": _iso(max(written), zone) if written else None,
        "spotify_id": None if spotify is None else spotify.remote_id,
        "deferred_until": _iso(min(waits), zone) if waits else None,
        "last_error": playlist.last_error or (errors[0] if errors else None),
        "sinks": [
            {
                "sink": r.sink,
                "remote_id": r.remote_id,
                "status": r.last_status,
                "last_written_at": _iso(r.last_written_at, zone),
                "deferred_until": _iso(r.deferred_until, zone),
                "error": r.last_error,
            }
            for r in rows
        ],
    }


def _source_states(engine: Engine) -> list[tables.SourceState]:
    with Session(engine) as session:
        return list(
            session.exec(
                select(tables.SourceState).order_by(
                    col(tables.SourceState.source), col(tables.SourceState.account)
                )
            ).all()
        )


def _source(row: tables.SourceState, zone: tzinfo) -> dict[str, Any]:
    return {
        "source": row.source,
        "account": row.account,
        "last_pull_at": _iso(row.last_pull_at, zone),
        "last_ok_at": _iso(row.last_ok_at, zone),
        "watermark": _iso(row.watermark, zone),
        "records": row.records,
        "imported": row.imported,
        "duplicates": row.duplicates,
        "skipped": row.skipped,
        "error": row.last_error,
        # A missing account or a revoked token: pulling again cannot help, the listener can.
        "needs_attention": row.refused,
    }


def _model(row: tables.ModelVersion, zone: tzinfo) -> dict[str, Any]:
    metrics = _loads(row.metrics_json)
    m = metrics if isinstance(metrics, dict) else {}
    return {
        "version": row.id,
        "created_at": _iso(row.created_at, zone),
        "promoted": row.promoted,
        "plays_trained": row.plays_trained,
        "metrics": metrics,
        "note": row.note,
        "budget_stopped": budget_note(m),
    }


def _no_model(
    engine: Engine, settings: Settings, plays: int, runs: Sequence[tables.RunRecord]
) -> dict[str, Any]:
    """Why there is no promoted model, what makes one, and what the playlists use meanwhile."""
    from service.training import MIN_TRAIN_SESSIONS, listening_sessions, too_small_note

    sessions = listening_sessions(engine, settings) if plays else 0
    out: dict[str, Any] = {
        "sessions": sessions,
        "sessions_needed": MIN_TRAIN_SESSIONS,
        "playlists": "rules" if sessions else None,
    }
    if not plays:
        out["reason"] = (
            f"no plays yet: put your Spotify export into {settings.export_dir} (or `songnet import PATH`)"
        )
    elif sessions < MIN_TRAIN_SESSIONS:
        out["reason"] = f"too small to train: {too_small_note(sessions, settings)}"
    else:
        trainings = [r for r in runs if r.job == "train" and r.outcome is not None]
        last = trainings[0] if trainings else None
        if last is not None and last.outcome == "failed":
            error = (_loads(last.detail_json) or {}).get("error") or "see the log"
            why = f"the last training failed ({error}); it is tried again at the next import or scheduled run"
        else:
            why = "no training has finished yet: the daemon trains after an import (or run `songnet train`)"
        out["reason"] = (
            f"{sessions} listening sessions, enough to train ({MIN_TRAIN_SESSIONS} needed), but {why}. "
            "Playlists use your simple rules until a model is promoted"
        )
    return out


def budget_note(metrics: dict[str, Any]) -> str | None:
    """What to say when the training time budget cut the fit short (None when it did not)."""
    if not metrics.get("budget_stopped"):
        return None
    epochs = metrics.get("fit_epochs")
    ran = f" after {int(epochs)} epoch{'s' if epochs != 1 else ''}" if isinstance(epochs, int | float) else ""
    refit = "" if metrics.get("refit") else ", without the refit on the newest sessions"
    return (
        f"training was cut short by its time budget{ran}{refit}, before validation stopped improving; "
        "raise SONGNET_TRAIN_TIME_BUDGET_SECONDS to train to the end"
    )


def _next_fire(settings: Settings, zone: tzinfo, now: float) -> float | None:
    upcoming = (
        parse_crontab(settings.schedule)
        .trigger(zone)
        .get_next_fire_time(None, datetime.fromtimestamp(now, zone))
    )
    return None if upcoming is None else upcoming.timestamp()


def _sign_in_problem(engine: Engine) -> str | None:
    try:
        from service.spotify.auth import sign_in_required
    except ImportError:
        return None
    return sign_in_required(engine)


def _loads(text: str | None) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _iso(ts: float | int | None, zone: tzinfo) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(float(ts), zone).isoformat(timespec="seconds")
