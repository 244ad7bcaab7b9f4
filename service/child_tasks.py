"""The daemon's torch work as child-process tasks: training, and generating the playlists.

Each task has two halves. `*_task` runs in the child (`service/child_process.py` calls it):
it opens the database, does the work with `service.training` / `service.playlists`, and
returns plain JSON data. `*_in_child` is what the daemon calls: it runs the task in a child
and turns the JSON back into `TrainOutcome` / `GeneratedPlaylist`. Neither half imports
torch at module level; only the child's work does.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import Any

import structlog

from service.child_process import ChildJobStoppedError, run_in_child
from service.db import database_path, make_engine
from service.playlists import GeneratedPlaylist, GeneratedTrack
from service.settings import PlaylistConfig, Settings
from service.training import TrainOutcome

log = structlog.get_logger(__name__)

# `songnet_core.train.TrainConfig.time_budget_s`, the budget when none is set (a test checks
# that they agree; importing it here would load torch into the daemon).
DEFAULT_TRAIN_BUDGET_SECONDS = 540.0
# The training child's deadline: its budget covers the epochs; loading the plays, the refit
# and storing the model come on top. A child still running after this is hung and killed.
TRAIN_DEADLINE_FACTOR = 2.0
TRAIN_DEADLINE_EXTRA_SECONDS = 900.0
# Generating every configured playlist takes seconds to a minute; past this it is hung.
GENERATE_DEADLINE_SECONDS = 1800.0


def train_deadline_seconds(settings: Settings) -> float:
    """How long a training child may run before the watchdog kills it."""
    budget = settings.train_time_budget_seconds or DEFAULT_TRAIN_BUDGET_SECONDS
    return TRAIN_DEADLINE_FACTOR * budget + TRAIN_DEADLINE_EXTRA_SECONDS


# -- training ----------------------------------------------------------------------------------


def train_task(
    settings: Settings, payload: dict[str, Any], should_stop: Callable[[], bool]
) -> dict[str, Any]:
    from service.training import train_and_maybe_promote

    # The daemon opened (created, upgraded) the database; the child only uses it.
    engine = make_engine(database_path(settings.data_dir))
    try:
        outcome = train_and_maybe_promote(engine, settings, should_stop=should_stop)
    finally:
        engine.dispose()
    return dataclasses.asdict(outcome)


def train_in_child(settings: Settings, *, stop: threading.Event) -> TrainOutcome:
    """`train_and_maybe_promote` in a child process (`ChildJobError` when it fails or dies)."""
    try:
        data = run_in_child(
            "train",
            settings,
            {},
            stop=stop,
            memory_mb=settings.train_memory_mb,
            what="training",
            deadline_seconds=train_deadline_seconds(settings),
        )
    except ChildJobStoppedError:
        return TrainOutcome(stopped=True, reason="stopped")
    return TrainOutcome(**data)


# -- generation --------------------------------------------------------------------------------


@dataclasses.dataclass
class GenerationResults:
    """Each playlist's generated list, or why it could not be generated."""

    playlists: list[tuple[PlaylistConfig, GeneratedPlaylist | str]]
    stopped: bool


def generate_task(
    settings: Settings, payload: dict[str, Any], should_stop: Callable[[], bool]
) -> dict[str, Any]:
    from service.playlists import PlaylistGenerator, default_playlist_config

    engine = make_engine(database_path(settings.data_dir))
    try:
        configs = [PlaylistConfig.model_validate(c) for c in payload["configs"]] or [
            default_playlist_config(engine, settings)
        ]
        try:
            generator: PlaylistGenerator | None = PlaylistGenerator.from_promoted(engine, settings)
            error = ""
        except Exception as exc:  # every playlist fails alike; the daemon records it on each
            generator, error = None, str(exc)
        results: list[dict[str, Any]] = []
        for config in configs:
            if should_stop():
                return {"playlists": results, "stopped": True}
            entry: dict[str, Any] = {"config": config.model_dump(mode="json")}
            if generator is None:
                entry["error"] = error
            else:
                try:
                    entry["playlist"] = dataclasses.asdict(
                        generator.generate(config, now=payload["now"])
                    )
                except Exception as exc:
                    log.debug("playlist not generated", playlist=config.name, exc_info=True)
                    entry["error"] = str(exc)
            results.append(entry)
        return {"playlists": results, "stopped": False}
    finally:
        engine.dispose()


def generate_in_child(
    settings: Settings, configs: list[PlaylistConfig], *, now: int, stop: threading.Event
) -> GenerationResults:
    """The configured playlists (the default one when none is configured), generated in a
    child process from the promoted model (`ChildJobError` when the child fails or dies)."""
    payload = {"configs": [c.model_dump(mode="json") for c in configs], "now": now}
    try:
        data = run_in_child(
            "generate",
            settings,
            payload,
            stop=stop,
            what="playlist generation",
            deadline_seconds=GENERATE_DEADLINE_SECONDS,
        )
    except ChildJobStoppedError:
        return GenerationResults([], stopped=True)
    playlists: list[tuple[PlaylistConfig, GeneratedPlaylist | str]] = []
    for entry in data["playlists"]:
        config = PlaylistConfig.model_validate(entry["config"])
        if "playlist" in entry:
            raw = entry["playlist"]
            tracks = [GeneratedTrack(**t) for t in raw.pop("tracks")]
            playlists.append((config, GeneratedPlaylist(tracks=tracks, **raw)))
        else:
            playlists.append((config, str(entry.get("error", "unknown error"))))
    return GenerationResults(playlists, stopped=bool(data["stopped"]))
