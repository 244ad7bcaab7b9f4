"""History sources: where plays come from, as one seam.

A `HistorySource` hands out pages of plays newer than a watermark; `service.pull` stores each
page with the source's new watermark in one transaction. The export folder is the other kind
of source (files, with the import ledger instead of a watermark: `service.importer`).

Adding a source: one module here that defines its `PlaySource` (registered with
`songnet_core.play_sources.register`), a class with `name`, `account`, `play_source` and
`pages`, and a `from_settings` function; its settings in `service.settings`; and one line in
`SOURCE_MODULES` below.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from songnet_core.exports import PlayFields, SkipReason
from songnet_core.play_sources import PlaySource


@dataclass(frozen=True)
class Page:
    """Plays pulled in one request, and the watermark once they are stored."""

    rows: list[PlayFields]
    records: int  # listens the service returned, the skipped ones included
    skipped: dict[str, int]
    watermark: int  # epoch seconds: the next pull asks for what came after
    fetched: int  # records fetched so far in this pull (progress)
    total: int | None  # records this pull expects in all, if the service says


class HistorySource(Protocol):
    name: str  # e.g. "listenbrainz"; the play source's name
    account: str  # the user whose history this is
    play_source: PlaySource

    def pages(self, watermark: int | None) -> Iterator[Page]:
        """Pages oldest first, each with the watermark that covers it and everything before."""
        ...


def count_skip(skipped: dict[str, int], reason: SkipReason) -> None:
    skipped[reason] = skipped.get(reason, 0) + 1


# The pull sources, in the order they are pulled. Each module has
# `from_settings(settings, *, sleep, account=None) -> HistorySource | None` (None: not set up).
SOURCE_MODULES = ("service.sources.listenbrainz", "service.sources.lastfm")


@dataclass(frozen=True)
class SetupProblem:
    """A source the settings name but cannot use as they are (a user without its key)."""

    source: str
    error: str  # what to set
    hint: str


def configured_sources(
    settings: Any, *, sleep: Callable[[float], None], only: dict[str, str] | None = None
) -> list[HistorySource]:
    """The pull sources the settings set up; with `only` ({name: account}), just those.
    Raises `SourceError` for one set up without what it needs (`setup_problems` says which)."""
    found, problems = _sources(settings, sleep=sleep, only=only)
    if problems:
        from service.sources.http_json import SourceRefused

        raise SourceRefused(problems[0].error)
    return found


def usable_sources(
    settings: Any, *, sleep: Callable[[float], None]
) -> tuple[list[HistorySource], list[SetupProblem]]:
    """The pull sources the settings set up, and those they name but cannot use: the daemon
    pulls the first and reports the others without stopping the first."""
    return _sources(settings, sleep=sleep, only=None)


def setup_problems(settings: Any) -> list[SetupProblem]:
    """What the settings miss for the sources they name (`songnet status` prints each)."""
    return _sources(settings, sleep=lambda _s: None, only=None)[1]


def _sources(
    settings: Any, *, sleep: Callable[[float], None], only: dict[str, str] | None
) -> tuple[list[HistorySource], list[SetupProblem]]:
    from service.sources.http_json import SourceError

    found: list[HistorySource] = []
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
