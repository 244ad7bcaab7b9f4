"""Pulling a history source into the library: the use case the daemon and the CLI share.

`pull_source` asks the source for the pages after the stored watermark and stores each page
with the new watermark in one transaction (`importer.import_pulled`): a kill between pages
loses nothing and the next pull starts after the last stored page; a repeated page is made
one by the dedup rule. A failure is recorded in `source_state` (`songnet status` shows it)
and logged with what to do; the source is pulled again at the next poll.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import structlog
from sqlalchemy import Engine
from sqlmodel import Session, select

from service import tables
from service.importer import FileResult, import_pulled
from service.sources import Brought, Page, PullSource
from service.sources.http_json import SourceError, SourceRefused
from songnet_core.exports import EARLIEST_PLAY_TS, FUTURE_TOLERANCE_S, ParsedExport

log = structlog.get_logger(__name__)

# (records fetched so far, records expected or None, label of the source)
PullProgress = Callable[[int, int | None, str], None]


@dataclass
class PullOutcome:
    source: str
    account: str
    pages: list[FileResult] = field(default_factory=list)
    error: str | None = None
    refused: bool = False
    watermark: int | None = None

    @property
    def label(self) -> str:
        return f"{self.source}:{self.account}"

    @property
    def imported(self) -> int:
        return sum(p.imported for p in self.pages)

    def summary(self) -> FileResult:
        """The whole pull as one row of the import table (`songnet import`)."""
        skipped: dict[str, int] = {}
        for page in self.pages:
            for reason, n in page.skipped.items():
                skipped[reason] = skipped.get(reason, 0) + n
        return FileResult(
            self.label,
            self.source,
            sum(p.records for p in self.pages),
            self.imported,
            sum(p.duplicates for p in self.pages),
            skipped,
            "failed" if self.error else "imported",
            self.error,
        )


def stored_state(engine: Engine, source: str, account: str) -> tables.SourceState | None:
    with Session(engine) as session:
        return session.get(tables.SourceState, (source, account))


def pull_source(
    engine: Engine,
    source: PullSource,
    *,
    clock: Callable[[], float] = time.time,
    on_progress: PullProgress | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> PullOutcome:
    """Store every play `source` has after its watermark; never raises a `SourceError`."""
    outcome = PullOutcome(source.name, source.account)
    started = int(clock())
    _ensure_state(engine, source.name, source.account, started)
    state = stored_state(engine, source.name, source.account)
    outcome.watermark = state.watermark if state is not None else None
    log.info("pull started", source=outcome.label, watermark=outcome.watermark)
    try:
        for page in source.pages(outcome.watermark):
            page = _plausible(page, latest=int(clock()) + FUTURE_TOLERANCE_S)
            parsed = ParsedExport(source.name, page.records, page.rows, page.skipped)

            def record(
                cur: sqlite3.Cursor, imported: int, duplicates: int, page: Page = page
            ) -> None:
                cur.execute(
                    "UPDATE source_state SET watermark = max(coalesce(watermark, 0), ?),"
                    " records = records + ?, imported = imported + ?, duplicates = duplicates + ?,"
                    " skipped = skipped + ? WHERE source = ? AND account = ?",
                    (
                        page.watermark,
                        page.records,
                        imported,
                        duplicates,
                        sum(page.skipped.values()),
                        source.name,
                        source.account,
                    ),
                )

            result = import_pulled(
                engine, source.play_source, outcome.label, parsed, record, clock=clock
            )
            outcome.pages.append(result)
            outcome.watermark = max(outcome.watermark or 0, page.watermark)
            if on_progress is not None:
                on_progress(page.fetched, page.total, outcome.label)
            if should_stop():
                break
    except SourceError as exc:
        outcome.error = str(exc)
        outcome.refused = isinstance(exc, SourceRefused)
        log.error(
            "pull failed",
            source=outcome.label,
            error=outcome.error,
            pages_stored=len(outcome.pages),
            hint=exc.hint,
        )
    _finish_state(engine, outcome, started)
    if outcome.error is None:
        total = outcome.summary()
        log.info(
            "pull finished",
            source=outcome.label,
            records=total.records,
            imported=total.imported,
            duplicates=total.duplicates,
            watermark=outcome.watermark,
        )
    return outcome


class Pulled:
    """A pull source as a `HistorySource`: `bring_in` is one `pull_source`."""

    def __init__(self, source: PullSource) -> None:
        self.source = source
        self.label = f"{source.name}:{source.account}"

    def bring_in(
        self, engine: Engine, *, clock: Callable[[], float], should_stop: Callable[[], bool]
    ) -> Brought:
        outcome = pull_source(engine, self.source, clock=clock, should_stop=should_stop)
        return Brought(
            results=[outcome.summary()],
            errors=[] if outcome.error is None else [f"{outcome.label}: {outcome.error}"],
            stopped=should_stop(),
        )


def _plausible(page: Page, latest: int) -> Page:
    """The page without plays that cannot be real (the export's rule), and a watermark that
    a listen stamped in the future cannot push past what can have been played."""
    rows = [r for r in page.rows if EARLIEST_PLAY_TS <= r[0] <= latest]
    skipped = dict(page.skipped)
    if len(rows) < len(page.rows):
        skipped["implausible_time"] = (
            skipped.get("implausible_time", 0) + len(page.rows) - len(rows)
        )
    return replace(page, rows=rows, skipped=skipped, watermark=min(page.watermark, latest))


def _ensure_state(engine: Engine, source: str, account: str, now: int) -> None:
    with Session(engine) as session:
        row = session.get(tables.SourceState, (source, account))
        if row is None:
            row = tables.SourceState(source=source, account=account)
        row.last_pull_at = now
        session.add(row)
        session.commit()


def _finish_state(engine: Engine, outcome: PullOutcome, started: int) -> None:
    with Session(engine) as session:
        row = session.get(tables.SourceState, (outcome.source, outcome.account))
        assert row is not None
        row.last_error = outcome.error
        row.refused = outcome.refused
        if outcome.error is None:
            row.last_ok_at = started
        session.add(row)
        session.commit()


def source_states(engine: Engine) -> list[tables.SourceState]:
    with Session(engine) as session:
        return list(session.exec(select(tables.SourceState)).all())
