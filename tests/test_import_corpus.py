"""Import every real export of the corpus; every record accounted for, nothing doubled."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from service.db import open_database
from service.importer import FileResult, import_paths
from tests import export_records as rec
from tests.conftest import CORPUS_NAMES, corpus_source

pytestmark = pytest.mark.corpus


def query(engine: Engine, sql: str) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(text(sql))]


def library(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    return {
        "plays": query(
            engine,
            "SELECT t.key, p.end_ts, p.ms_played, p.source, p.skipped, p.reason_start, p.reason_end, p.shuffle,"
            " p.account_end_ts, p.account_ms_played FROM play p JOIN track t ON t.id = p.track_id"
            " ORDER BY p.end_ts, t.key, p.ms_played, p.source",
        ),
        "tracks": query(engine, "SELECT id, key, title, album, uri FROM track ORDER BY id"),
        "artists": query(engine, "SELECT id, key, name FROM artist ORDER BY id"),
        "uris": query(engine, "SELECT uri, track_id FROM track_uri ORDER BY uri"),
        "ledger": query(
            engine, "SELECT sha256, status, records, imported FROM imported_file ORDER BY id"
        ),
    }


@pytest.mark.parametrize("name", CORPUS_NAMES)
def test_corpus_export_imports_with_every_record_accounted_for(
    name: str, corpus: Path, tmp_path: Path
) -> None:
    counts = corpus_source(name)
    engine = open_database(tmp_path / "data")
    paths = [corpus / name / file for file in counts]
    results = import_paths(engine, paths)
    by_file = {Path(r.path).name: r for r in results}
    assert set(by_file) == set(counts)
    fmt = name.split("-")[0]
    for file, records in counts.items():
        r = by_file[file]
        assert r.status == "imported", (file, r.error)
        assert r.format == fmt
        assert r.records == records
        assert r.records == r.imported + r.duplicates + sum(r.skipped.values())
        if file.startswith("Streaming_History_Video_"):
            assert r.skipped == {"video": records}
    imported = sum(r.imported for r in results)
    assert imported > 0
    assert query(engine, "SELECT count(*) FROM play")[0][0] == imported
    assert query(engine, "SELECT count(DISTINCT source) FROM play") == [(1,)]
    if fmt == "extended" and name != "extended-c":  # extended-c is the schema without URIs
        assert query(engine, "SELECT count(*) FROM track WHERE uri IS NULL")[0][0] == 0

    before = library(engine)
    again = import_paths(engine, paths)
    assert {r.status for r in again} == {"already-imported"}
    assert [(r.records, r.imported) for r in again] == [(r.records, 0) for r in results]
    assert library(engine) == before


def test_corpus_export_zipped_as_spotify_ships_it_imports_the_same(
    corpus: Path, tmp_path: Path
) -> None:
    name = "extended-b"
    counts = corpus_source(name)
    members = {
        f"Spotify Extended Streaming History/{file}": (corpus / name / file).read_bytes()
        for file in counts
    }
    members["Spotify Extended Streaming History/ReadMeFirst_ExtendedStreamingHistory.pdf"] = (
        b"%PDF-1.4"
    )
    archive = rec.spotify_zip(tmp_path / "my_spotify_data.zip", members)
    from_zip = import_paths(open_database(tmp_path / "zip"), [archive])
    from_folder = import_paths(
        open_database(tmp_path / "folder"), [corpus / name / file for file in counts]
    )

    def shape(results: list[FileResult]) -> dict[str, tuple[Any, ...]]:
        return {
            r.path.rsplit("/", 1)[-1]: (
                r.format,
                r.records,
                r.imported,
                r.duplicates,
                r.skipped,
                r.status,
            )
            for r in results
        }

    zipped = shape(from_zip)
    assert zipped.pop("ReadMeFirst_ExtendedStreamingHistory.pdf")[-1] == "ignored"
    assert zipped == shape(from_folder)
    assert all(
        r.path.startswith(f"{archive}!Spotify Extended Streaming History/") for r in from_zip
    )


def extended_from_account(
    records: list[dict[str, Any]], seed: int, ms_jitter: int = 0
) -> list[dict[str, Any]]:
    """The extended records Spotify would have written for the same plays as these account ones:
    ending within the account record's minute, `ms_played` off by up to `ms_jitter` ms."""
    rng = random.Random(seed)
    out = []
    for r in records:
        minute = int(
            datetime.strptime(r["endTime"], "%Y-%m-%d %H:%M").replace(tzinfo=UTC).timestamp()
        )
        ts = minute + rng.randrange(60)
        ms = max(0, r["msPlayed"] + rng.randint(-ms_jitter, ms_jitter))
        if r["trackName"] == "Unknown Track":  # the extended format has no names for these
            out.append(rec.extended(ts, None, None, ms))
            continue
        out.append(rec.extended(
            ts, r["artistName"], r["trackName"], ms,
            skipped=ms < 30_000, shuffle=rng.random() < 0.5,
        ))  # fmt: skip
    return out


# ms_played as the account record says, and a few seconds off (the two exports are written
# apart; the dedup rule must not depend on them agreeing to the millisecond).
@pytest.mark.parametrize("ms_jitter", [0, 5_000])
def test_real_account_export_then_extended_export_of_the_same_plays_doubles_nothing(
    corpus: Path, tmp_path: Path, ms_jitter: int
) -> None:
    [account_file] = corpus_source("account-d")
    account = corpus / "account-d" / account_file
    records = json.loads(account.read_bytes())
    extended = rec.write(
        tmp_path / "ext" / "Streaming_History_Audio_2024-2025.json",
        extended_from_account(records, seed=4, ms_jitter=ms_jitter),
    )

    first = open_database(tmp_path / "account-first")
    [r_acc] = import_paths(first, [account])
    [r_ext] = import_paths(first, [extended])
    music = r_acc.imported
    assert (r_ext.imported, r_ext.duplicates, r_ext.skipped) == (0, music, r_acc.skipped)
    assert query(
        first,
        "SELECT count(*), sum(source = 'extended'), sum(account_end_ts IS NOT NULL) FROM play",
    ) == [(music, music, music)]

    second = open_database(tmp_path / "extended-first")
    [e2] = import_paths(second, [extended])
    [a2] = import_paths(second, [account])
    assert (e2.imported, a2.imported, a2.duplicates) == (music, 0, music)
    plays_first, plays_second = library(first)["plays"], library(second)["plays"]
    if not ms_jitter:
        assert plays_first == plays_second
    else:
        # Two short plays of one track within a minute, a few seconds apart in ms_played in
        # each export, cannot be told apart: which of the two account records each remembers
        # may differ with the order; the plays and the records remembered may not.
        assert [p[:8] for p in plays_first] == [p[:8] for p in plays_second]
        assert sorted((p[0], *p[8:]) for p in plays_first) == sorted(
            (p[0], *p[8:]) for p in plays_second
        )
