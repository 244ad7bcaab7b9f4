"""songnet's configuration: every setting from `SONGNET_*` environment variables or `.env`.

One class, `Settings`; each area of the service reads its fields from it. `load_settings`
turns pydantic's validation errors into one `SettingsError` that lists every problem, which
the CLI prints before exiting with status 2.
"""

from __future__ import annotations

import json
import re
import tomllib
import unicodedata
from datetime import tzinfo
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class SettingsError(Exception):
    """The configuration is invalid; the message lists every problem, one per line."""


def slugify(name: str) -> str:
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")
    return slug or "playlist"


class PlaylistConfig(BaseModel):
    """One configured playlist: seeds chosen by the listener, continued by the model."""

    name: str = Field(min_length=1, max_length=100)
    seeds: list[str] = Field(default_factory=list)
    length: int = Field(default=30, ge=1, le=500)
    id: str = ""
    temperature: float = Field(default=1.0, gt=0.0, le=5.0)
    exclude_recent_days: int = Field(default=0, ge=0)
    public: bool = False

    @model_validator(mode="after")
    def _default_id(self) -> PlaylistConfig:
        if not self.id:
            self.id = slugify(self.name)
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SONGNET_",
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,  # `SONGNET_X=` (as in the env example) means the default
        extra="ignore",
    )

    # Storage
    data_dir: Path = Path("./data")
    export_dir: Path = Path("./exports")

    # Logging
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    # Schedule (standard 5-field cron; 0 and 7 are Sunday) and the listener's zone
    schedule: str = "0 6 * * 1"
    timezone: str = ""  # empty: the system's zone

    # Playlists: a JSON list here, or a JSON/TOML file holding the same list
    playlists: list[PlaylistConfig] = Field(default_factory=list)
    playlists_file: Path | None = None

    # Sessions and training
    min_play_ms: int = Field(default=30_000, ge=0)
    session_gap_minutes: float = Field(default=30.0, gt=0)
    retrain_min_new_plays: int = Field(default=500, ge=1)
    # Unset: the model's own defaults (`songnet_core.train.TrainConfig`); tests and the demo
    # make training quick with a few short epochs.
    train_max_epochs: int | None = Field(default=None, ge=1)
    train_epoch_coverage: float | None = Field(default=None, gt=0)
    train_min_steps: int | None = Field(default=None, ge=1)
    train_time_budget_seconds: float | None = Field(default=None, gt=0)
    # The daemon trains in a child process; this caps that process's memory. Unset: no cap.
    train_memory_mb: int | None = Field(default=None, ge=256)

    # Spotify
    spotify_client_id: str | None = None
    spotify_client_secret: str | None = None
    spotify_redirect_uri: str = "http://127.0.0.1:8888/callback"
    spotify_api_url: str = "https://api.spotify.com/v1/"
    spotify_accounts_url: str = "https://accounts.spotify.com/"
    spotify_retry_cap_seconds: float = Field(default=60.0, gt=0)
    spotify_timeout_seconds: float = Field(default=15.0, gt=0)
    spotify_max_attempts: int = Field(default=8, ge=1)  # per request, the first one included
    spotify_retry_budget_seconds: float = Field(default=300.0, gt=0)  # per request, waits included
    spotify_resolve_miss_retry_days: float = Field(default=30.0, ge=0)  # search again after a miss

    # History sources pulled on a schedule (see README, "Keep your history flowing")
    listenbrainz_user: str | None = None
    listenbrainz_token: str | None = None  # optional: a user token reads private listens too
    listenbrainz_url: str = "https://api.listenbrainz.org"
    lastfm_user: str | None = None
    lastfm_api_key: str | None = None
    lastfm_url: str = "https://ws.audioscrobbler.com/2.0/"
    source_poll: float = Field(default=3600.0, gt=0)  # seconds between pulls of each source

    # Daemon (`songnet run`)
    watch_interval_seconds: float = Field(default=30.0, gt=0)
    watch_stable_seconds: float = Field(default=10.0, ge=0)  # unchanged this long before import
    retrain_debounce_seconds: float = Field(default=60.0, ge=0)  # files dropped together train once
    retrain_lead_minutes: int = Field(default=60, ge=0)  # periodic retrain before each run; 0: off
    heartbeat_interval_seconds: float = Field(default=30.0, gt=0)
    job_stuck_minutes: float = Field(default=360.0, gt=0)  # `health` fails past this
    lock_wait_seconds: float = Field(default=30.0, ge=0)  # CLI writers wait this long for the daemon

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        if value:
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("schedule")
    @classmethod
    def _valid_schedule(cls, value: str) -> str:
        from service.cron import CronError, validate_crontab

        try:
            return validate_crontab(value)
        except CronError as exc:
            raise ValueError(f"not a valid cron schedule: {exc}") from None

    @model_validator(mode="after")
    def _load_playlists_file(self) -> Settings:
        if self.playlists_file is not None:
            if self.playlists:
                raise ValueError("set SONGNET_PLAYLISTS or SONGNET_PLAYLISTS_FILE, not both")
            self.playlists = _read_playlists_file(self.playlists_file)
        ids = [p.id for p in self.playlists]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"playlist ids must be unique; repeated: {', '.join(dupes)}")
        return self

    @property
    def zone(self) -> tzinfo:
        """The listener's time zone: `timezone`, or the system's (UTC in containers)."""
        if self.timezone:
            return ZoneInfo(self.timezone)
        import tzlocal

        return tzlocal.get_localzone()

    @property
    def spotify_configured(self) -> bool:
        return bool(self.spotify_client_id and self.spotify_client_secret)


def _read_playlists_file(path: Path) -> list[PlaylistConfig]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read playlists file {path}: {exc.strerror}") from exc
    data: Any
    try:
        if path.suffix.lower() == ".toml":
            data = tomllib.loads(raw.decode("utf-8")).get("playlists", [])
        else:
            data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"playlists file {path} is not valid JSON/TOML: {exc}") from exc
    if not isinstance(data, list):
        raise ValueError(f"playlists file {path} must hold a list of playlists")
    return [PlaylistConfig.model_validate(item) for item in data]


def format_validation_error(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(part) for part in err["loc"])
        where = f"SONGNET_{loc.split('.')[0].upper()}" + (f" ({loc})" if "." in loc else "") if loc else "settings"
        lines.append(f"  - {where}: {err['msg']}")
    return "invalid settings:\n" + "\n".join(lines)


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment and `.env`, with `overrides` (e.g. CLI options) on top."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise SettingsError(format_validation_error(exc)) from None
