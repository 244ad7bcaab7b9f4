"""History sources: where plays come from, as one seam.

A `HistorySource` is anything that brings plays into the library: `bring_in(engine, ...)`
stores what it has that is new and says how that went (`Brought`), so that the daemon's jobs
handle "a source produced plays" once (`service.jobs.Jobs.bring_in`). Two kinds implement it:

- the export folder (`service.export_folder.ExportFolder`): Spotify's files, each imported
  once through the import ledger (by content hash), after the watcher saw it stable;
- pull sources (`PullSource` below; ListenBrainz, Last.fm), adapted by `service.pull.Pulled`:
  pages of plays newer than a watermark, each page stored with the new watermark in one
  transaction (`service.pull.pull_source`).

Adding a pull source: one module here that defines its `PlaySource` (registered with
`songnet_core.play_sources.register`), a class with `name`, `account`, `play_source` and
`pages`, and a `from_settings` function; its settings in `service.settings`; and one line in
`SOURCE_MODULES` below.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from songnet_core.exports import PlayFields, SkipReason
from songnet_core.play_sources import PlaySource

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from service.importer import FileResult


@dataclass
class Brought:
    """What one `bring_in` stored: a result per file imported or per pull (the import
    table's rows), the failures with what happened, and whether a stop request cut it short."""

    results: list[FileResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stopped: bool = False


class HistorySource(Protocol):
    label: str  # in logs and run records: the folder, or "listenbrainz:<user>"

    def bring_in(
        self, engine: Engine, *, clock: Callable[[], float], should_stop: Callable[[], bool]
    ) -> Brought:
        """Store the plays this source has that are not stored yet; never raises for a bad
        file or an unreachable service (that is a `Brought.errors` line)."""
        ...


@dataclass(frozen=True)
class Page:
    """Plays pulled in one request, and the watermark once they are stored."""

    rows: list[PlayFields]
    records: int  # listens the service returned, the skipped ones included
    skipped: dict[str, int]
    watermark: int  # epoch seconds: the next pull asks for what came after
    fetched: int  # records fetched so far in this pull (progress)
    total: int | None  # records this pull expects in all, if the service says


class PullSource(Protocol):
    """A service that hands out a user's plays after a watermark (ListenBrainz, Last.fm)."""

    name: str  # e.g. "listenbrainz"; the play source's name
    account: str  # the user whose history this is
    play_source: PlaySource

    def pages(self, watermark: int | None) -> Iterator[Page]:
        """Pages oldest first, each with the watermark that covers it and everything before."""
        ...


def count_skip(skipped: dict[str, int], reason: SkipReason) -> None:
    skipped[reason] = skipped.get(reason, 0) + 1


# The pull sources, in the order they are pulled. Each module has
# `from_settings(settings, *, sleep, account=None) -> PullSource | None` (None: not set up).
SOURCE_MODULES = ("service.sources.listenbrainz", "service.sources.lastfm")


@dataclass(frozen=True)
class SetupProblem:
    """A source the settings name but cannot use as they are (a user without its key)."""

    source: str
    error: str  # what to set
    hint: str


def configured_sources(
    settings: Any, *, sleep: Callable[[float], None], only: dict[str, str] | None = None
) -> list[PullSource]:
    """The pull sources the settings set up; with `only` ({name: account}), just those.
    Raises `SourceError` for one set up without what it needs (`setup_problems` says which)."""
    found, problems = _sources(settings, sleep=sleep, only=only)
    if problems:
        from service.sources.http_json import SourceRefused

        raise SourceRefused(problems[0].error)
    return found


def usable_sources(
    settings: Any, *, sleep: Callable[[float], None]
) -> tuple[list[PullSource], list[SetupProblem]]:
    """The pull sources the settings set up, and those they name but cannot use: the daemon
    pulls the first and reports the others without stopping the first."""
    return _sources(settings, sleep=sleep, only=None)


def setup_problems(settings: Any) -> list[SetupProblem]:
    """What the settings miss for the sources they name (`songnet status` prints each)."""
    return _sources(settings, sleep=lambda _s: None, only=None)[1]


def _sources(
    settings: Any, *, sleep: Callable[[float], None], only: dict[str, str] | None
) -> tuple[list[PullSource], list[SetupProblem]]:
    from service.sources.http_json import SourceError

    found: list[PullSource] = []
    problems: list[SetupProblem] = []
    for module_name in SOURCE_MODULES:
        module = importlib.import_module(module_name)
        name = module.SOURCE.name
        if only is not None and name not in only:
            continue
        try:
            source = module.from_settings(
                settings, sleep=sleep, account=None if only is None else only[name]
            )
        except SourceError as exc:
            problems.append(SetupProblem(name, str(exc), exc.hint))
            continue
        if source is not None:
            found.append(source)
    return found, problems


def any_configured(settings: Any) -> bool:
    """Whether the settings name a pull source (one missing its key counts: the pull job
    reports what is missing, once per start)."""
    found, problems = _sources(settings, sleep=lambda _s: None, only=None)
    return bool(found or problems)
