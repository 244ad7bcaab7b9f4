"""`deploy/songnet.env.example`, generated from the `Settings` class.

Every field of `Settings` needs a line in `DOCS` (a test checks it, and that the file in
`deploy/` is what this renders), so the example can never fall behind the settings. Defaults
come from the class itself. Regenerate with:

    .venv/bin/python -m service.env_example > deploy/songnet.env.example
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic_core import PydanticUndefined

from service.settings import Settings

HEADER = """\
# songnet's settings, one environment variable each (SONGNET_<FIELD>). Copy this file to
# `.env` in the directory songnet runs in, or pass it as an env_file (Docker compose) or
# EnvironmentFile (systemd). Everything is optional: the value shown is the default.
# Invalid values stop songnet with exit code 2 and a list of every problem.
"""

# Section title, then (field, what it is) in the order the file lists them.
DOCS: list[tuple[str, list[tuple[str, str]]]] = [
    (
        "Storage",
        [
            ("data_dir", "Database, models, playlist files and the Spotify token live here."),
            (
                "export_dir",
                "Drop your Spotify export here (the zip, or its JSON files); `songnet run` imports it.",
            ),
        ],
    ),
    (
        "Schedule",
        [
            (
                "schedule",
                "When the weekly playlists are made: a standard 5-field cron expression (minute hour\n"
                "day-of-month month day-of-week; 0 and 7 are Sunday; names like mon-fri work).",
            ),
            (
                "timezone",
                "The listener's time zone (IANA name, e.g. Europe/Berlin); empty: the system's (UTC in containers).",
            ),
        ],
    ),
    (
        "Playlists",
        [
            (
                "playlists",
                'A JSON list; each entry has "name", "seeds" ("Artist - Title" or a track URI) and "length",\n'
                'optionally "id", "temperature", "exclude_recent_days", "public". Empty: one playlist\n'
                "seeded with your most played tracks of recent weeks. Example:\n"
                'SONGNET_PLAYLISTS=[{"name": "Monday mix", "seeds": ["Nina Simone - Feeling Good"], "length": 30}]',
            ),
            ("playlists_file", "Or a JSON/TOML file holding the same list (not both)."),
        ],
    ),
    (
        "Listening sessions and training",
        [
            (
                "min_play_ms",
                "Plays shorter than this (ms) are left out of sessions (skips are still stored).",
            ),
            ("session_gap_minutes", "A pause longer than this starts a new listening session."),
            (
                "retrain_min_new_plays",
                "Retrain once imports added at least this many plays since the last model.",
            ),
            ("train_max_epochs", "Most passes over the history per training; empty: the model's default."),
            (
                "train_epoch_coverage",
                "How many times one pass covers each play; empty: the model's default. Lower is faster.",
            ),
            ("train_min_steps", "Fewest batches in one pass (small histories); empty: the model's default."),
            (
                "train_time_budget_seconds",
                "Wall-clock budget of one training (fewer passes past it); empty: the model's default (540).",
            ),
            (
                "train_memory_mb",
                "Most memory (MB) the daemon's training process may use (its data segment); a training\n"
                "that needs more fails with an error naming this setting and the model in use stays. Empty: no cap.",
            ),
        ],
    ),
    (
        "Spotify (without a client id and secret, playlists are written as files only)",
        [
            (
                "spotify_client_id",
                "Your app's client id (developer dashboard; see docs/spotify-app.md).",
            ),
            ("spotify_client_secret", "Your app's client secret; never logged."),
            (
                "spotify_redirect_uri",
                "Must match the app's redirect URI exactly (a loopback IP, not localhost).",
            ),
            ("spotify_api_url", "Web API base URL (tests and proxies change it)."),
            ("spotify_accounts_url", "Accounts service base URL (tests and proxies change it)."),
            (
                "spotify_retry_cap_seconds",
                "Longest wait songnet sleeps for a Retry-After; longer ones reschedule the sync.",
            ),
            ("spotify_timeout_seconds", "Timeout of each request to Spotify."),
            ("spotify_max_attempts", "Attempts per request, the first one included."),
            ("spotify_retry_budget_seconds", "Most time one request may take, waits included."),
            (
                "spotify_resolve_miss_retry_days",
                "A track search found nothing: search again after this many days.",
            ),
        ],
    ),
    (
        "History sources: ListenBrainz and Last.fm, pulled on a schedule",
        [
            ("listenbrainz_user", "Your ListenBrainz user name; empty: not pulled."),
            ("listenbrainz_token", "Optional user token (reads private listens too); never logged."),
            ("listenbrainz_url", "API root (a self-hosted ListenBrainz, or tests)."),
            ("lastfm_user", "Your Last.fm user name; empty: not pulled."),
            ("lastfm_api_key", "A Last.fm API key (needed with lastfm_user); never logged."),
            ("lastfm_url", "API root (tests and proxies change it)."),
            ("source_poll", "Seconds between pulls of each source."),
        ],
    ),
    (
        "The daemon (`songnet run`)",
        [
            ("watch_interval_seconds", "How often the export folder is looked at."),
            (
                "watch_stable_seconds",
                "A file is imported once its size and time stayed unchanged this long.",
            ),
            (
                "retrain_debounce_seconds",
                "Wait this long after an import before training, so files dropped together train once.",
            ),
            (
                "retrain_lead_minutes",
                "Retrain this long before each weekly run if plays arrived since; 0: never.",
            ),
            (
                "heartbeat_interval_seconds",
                "How often the daemon proves it is alive (`songnet health`).",
            ),
            ("job_stuck_minutes", "`songnet health` fails when one job has run longer than this."),
            (
                "lock_wait_seconds",
                "`songnet import/train/sync` wait this long for the daemon's step, then refuse.",
            ),
        ],
    ),
    (
        "Logs",
        [
            ("log_format", "auto (JSON lines unless on a terminal), json or console."),
            ("log_level", "debug, info, warning or error."),
        ],
    ),
]


def documented_fields() -> list[str]:
    return [name for _, fields in DOCS for name, _ in fields]


def env_value(value: Any) -> str:
    """How a default is written in an env file."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list | dict):
        return json.dumps(value)
    if isinstance(value, Path):
        return str(value) if value.is_absolute() else f"./{value}"
    return str(value)


def _default(name: str) -> Any:
    info = Settings.model_fields[name]
    if info.default is PydanticUndefined and info.default_factory is not None:
        return info.default_factory()  # type: ignore[call-arg]
    return info.default


def render_env_example() -> str:
    missing = sorted(set(Settings.model_fields) - set(documented_fields()))
    if missing:
        raise ValueError(
            f"settings without documentation in service/env_example.py: {', '.join(missing)}"
        )
    parts = [HEADER]
    for title, fields in DOCS:
        parts.append(f"\n# -- {title} --\n")
        for name, doc in fields:
            parts.append("\n")
            parts.extend(f"# {line}\n" for line in doc.splitlines())
            parts.append(f"# SONGNET_{name.upper()}={env_value(_default(name))}\n")
    return "".join(parts)


if __name__ == "__main__":
    print(render_env_example(), end="")
