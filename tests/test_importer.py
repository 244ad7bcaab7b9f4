"""The import pipeline against a real SQLite database: ledger, dedup, accounting, failures."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from service.db import database_path, open_database
from service.importer import FileResult, import_paths
from songnet_core.play_sources import ACCOUNT, MATCH_TOLERANCE_S
from tests import export_records as rec

T0 = 1_700_000_000
TRACKS = [
    ("Artist One", "First Song"),
    ("Artist One", "Second Song"),
    ("Beyoncé", "Halo"),
    ("Band", "Tune"),
]


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = open_database(tmp_path / "data")
    yield engine
    # The importer writes with foreign keys unchecked (for speed): every reference it wrote
    # must hold all the same.
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA foreign_key_check")).all() == []
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    engine.dispose()


def query(engine: Engine, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(text(sql), params)]


def stored_plays(engine: Engine) -> list[tuple[Any, ...]]:
    """Every play by content (no ids), sorted: what must not change when nothing should."""
    return query(
        engine,
        "SELECT t.key, p.end_ts, p.ms_played, p.source, p.skipped, p.reason_start, p.reason_end,"
        " p.shuffle, p.account_end_ts, p.account_ms_played FROM play p JOIN track t ON t.id = p.track_id"
        " ORDER BY p.end_ts, t.key, p.ms_played, p.source",
    )


def snapshot(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    return {
        "plays": stored_plays(engine),
        "tracks": query(
            engine, "SELECT id, key, artist_id, title, album, uri FROM track ORDER BY id"
        ),
        "artists": query(engine, "SELECT id, key, name FROM artist ORDER BY id"),
        "uris": query(engine, "SELECT uri, track_id FROM track_uri ORDER BY uri"),
    }


def only(results: list[FileResult]) -> FileResult:
    assert len(results) == 1, results
    return results[0]


def assert_balanced(results: list[FileResult]) -> None:
    for r in results:
        assert r.records == r.imported + r.duplicates + sum(r.skipped.values()), r


# --- one file -----------------------------------------------------------------------------------


def test_extended_file_is_stored_with_tracks_artists_and_aliases(
    engine: Engine, tmp_path: Path
) -> None:
    records = [
        *rec.session(T0, TRACKS),
        rec.episode(T0 + 5000),
        rec.extended(T0 + 6000, None, None),
    ]
    path = rec.write(tmp_path / "Streaming_History_Audio_2023.json", records)
    result = only(import_paths(engine, [path]))
    assert result == FileResult(
        str(path), "extended", 6, 4, 0, {"episode": 1, "no_track": 1}, "imported", None
    )
    assert query(engine, "SELECT count(*) FROM play")[0][0] == 4
    assert query(engine, "SELECT name FROM artist ORDER BY id") == [
        ("Artist One",),
        ("Beyoncé",),
        ("Band",),
    ]
    tracks = query(engine, "SELECT title, album, uri FROM track ORDER BY id")
    assert [t[0] for t in tracks] == [t for _, t in TRACKS]
    assert all(album == "An Album" and uri.startswith("spotify:track:") for _, album, uri in tracks)
    assert query(engine, "SELECT count(*) FROM track_uri")[0][0] == 4
    ledger = query(
        engine,
        "SELECT path, format, status, records, imported, duplicates, skipped_json FROM imported_file",
    )
    assert ledger == [
        (str(path), "extended", "imported", 6, 4, 0, json.dumps({"episode": 1, "no_track": 1}))
    ]


def test_plays_that_cannot_be_real_are_skipped_and_the_rest_of_the_file_imported(
    engine: Engine, tmp_path: Path
) -> None:
    now = T0 + 3600  # the import's clock: a play half a day later is kept, two days later not
    records = [
        rec.account(T0, "Artist One", "First Song"),
        {"endTime": "2999-01-01 00:00", "artistName": "Band", "trackName": "Tune", "msPlayed": 10},
        rec.account(now + 12 * 3600, "Artist One", "Second Song"),
        rec.account(now + 48 * 3600, "Band", "Tune"),
        {"endTime": "2005-12-31 23:59", "artistName": "Band", "trackName": "Tune", "msPlayed": 10},
        rec.account(T0 + 600, "Band", "Tune", ms=25 * 3600 * 1000),
        rec.account(T0 + 900, "Beyoncé", "Halo"),
    ]
    path = rec.write(tmp_path / "StreamingHistory_music_0.json", records)
    result = only(import_paths(engine, [path], clock=lambda: now))
    skipped = {"implausible_time": 3, "implausible_duration": 1}
    assert result == FileResult(str(path), "account", 7, 3, 0, skipped, "imported", None)
    assert query(
        engine, "SELECT t.title FROM play p JOIN track t ON t.id = p.track_id ORDER BY p.end_ts"
    ) == [
        ("First Song",),
        ("Halo",),
        ("Second Song",),
    ]
    assert query(engine, "SELECT skipped_json FROM imported_file") == [(json.dumps(skipped),)]


def test_importing_the_same_content_again_changes_nothing(engine: Engine, tmp_path: Path) -> None:
    path = rec.write(
        tmp_path / "Streaming_History_Audio_2023.json",
        [*rec.session(T0, TRACKS), rec.episode(T0 + 9000)],
    )
    first = only(import_paths(engine, [path]))
    before = snapshot(engine)
    copy = tmp_path / "elsewhere" / "renamed.json"
    copy.parent.mkdir()
    copy.write_bytes(path.read_bytes())
    again = import_paths(engine, [path, copy])
    assert [r.status for r in again] == ["already-imported", "already-imported"]
    for r in again:
        assert (r.format, r.records, r.imported, r.skipped) == (
            "extended",
            first.records,
            0,
            first.skipped,
        )
    assert_balanced(again)
    assert snapshot(engine) == before
    assert query(engine, "SELECT count(*) FROM imported_file")[0][0] == 1


def test_within_one_format_only_identical_records_are_duplicates(
    engine: Engine, tmp_path: Path
) -> None:
    a = rec.extended(T0, "A", "Song", 100_000)
    near = rec.extended(T0 + 20, "A", "Song", 20_000)  # same track 20 s later: a second, real play
    first = rec.write(tmp_path / "one" / "endsong_0.json", [a, a, near])
    second = rec.write(
        tmp_path / "two" / "endsong_0.json", [a, rec.extended(T0 + 999, "A", "Song")]
    )
    r1, r2 = import_paths(engine, [first, second])
    assert (r1.imported, r1.duplicates) == (2, 1)
    assert (r2.imported, r2.duplicates) == (1, 1)
    assert len(stored_plays(engine)) == 3


def test_names_are_matched_case_accent_and_space_insensitively(
    engine: Engine, tmp_path: Path
) -> None:
    path = rec.write(tmp_path / "StreamingHistory0.json", [
        rec.account(T0, "Beyoncé", "Halo"),
        rec.account(T0 + 600, "BEYONCE", "halo "),
        rec.account(T0 + 1200, "beyoncé", "Halo  (Live)"),
    ])  # fmt: skip
    assert only(import_paths(engine, [path])).imported == 3
    assert query(engine, "SELECT count(*) FROM artist")[0][0] == 1
    assert query(engine, "SELECT title FROM track ORDER BY id") == [("Halo",), ("Halo  (Live)",)]


def test_a_track_keeps_every_uri_as_an_alias_and_the_first_as_its_uri(
    engine: Engine, tmp_path: Path
) -> None:
    records = [
        rec.extended(T0, "A", "Song", uri="spotify:track:first"),
        rec.extended(T0 + 300, "a", "SONG", uri="spotify:track:relinked"),
        rec.extended(T0 + 600, "A", "Song", uri="spotify:track:first"),
    ]
    import_paths(engine, [rec.write(tmp_path / "endsong_0.json", records)])
    assert query(engine, "SELECT uri FROM track") == [("spotify:track:first",)]
    assert query(engine, "SELECT uri FROM track_uri ORDER BY uri") == [
        ("spotify:track:first",),
        ("spotify:track:relinked",),
    ]


# --- across formats -----------------------------------------------------------------------------


def overlapping_exports(tmp_path: Path) -> tuple[Path, Path, list[dict[str, Any]]]:
    """An extended export and the account-data export Spotify wrote for the same plays."""
    plays = rec.session(T0 + 7, TRACKS * 3)
    plays[1]["skipped"] = True
    plays[1]["reason_end"] = "fwdbtn"
    # Two quick plays of one track within one minute: they must pair one to one.
    plays += [
        rec.extended(T0 + 5000, "Band", "Tune", 4_000),
        rec.extended(T0 + 5030, "Band", "Tune", 9_000),
    ]
    extended = rec.write(
        tmp_path / "ext" / "Streaming_History_Audio_2023.json", [*plays, rec.episode(T0 + 9000)]
    )
    account = rec.write(
        tmp_path / "acc" / "StreamingHistory_music_0.json",
        [rec.account_from_extended(p) for p in plays],
    )
    return account, extended, plays


def test_account_then_extended_stores_each_play_once_as_the_richer_record(
    engine: Engine, tmp_path: Path
) -> None:
    account, extended, plays = overlapping_exports(tmp_path)
    r_acc = only(import_paths(engine, [account]))
    assert (r_acc.imported, r_acc.duplicates) == (len(plays), 0)
    r_ext = only(import_paths(engine, [extended]))
    assert (r_ext.format, r_ext.imported, r_ext.duplicates, r_ext.skipped) == (
        "extended",
        0,
        len(plays),
        {"episode": 1},
    )
    stored = stored_plays(engine)
    assert len(stored) == len(plays)
    assert {row[3] for row in stored} == {"extended"}
    # The account record each play absorbed is remembered; the skip and reasons are kept.
    minute = ACCOUNT.resolution_s
    assert all(row[8] is not None and row[1] - minute < row[8] <= row[1] for row in stored)
    assert sum(bool(row[4]) for row in stored) == 1
    assert query(engine, "SELECT count(*) FROM track WHERE uri IS NULL")[0][0] == 0


def test_extended_then_account_gives_the_same_library(tmp_path: Path) -> None:
    account, extended, plays = overlapping_exports(tmp_path)
    one = open_database(tmp_path / "one")
    two = open_database(tmp_path / "two")
    import_paths(one, [account])
    import_paths(one, [extended])
    r_ext = only(import_paths(two, [extended]))
    r_acc = only(import_paths(two, [account]))
    assert (r_ext.imported, r_acc.imported, r_acc.duplicates) == (len(plays), 0, len(plays))
    assert stored_plays(one) == stored_plays(two)


def test_a_later_account_export_of_the_same_listening_adds_nothing(
    engine: Engine, tmp_path: Path
) -> None:
    account, extended, plays = overlapping_exports(tmp_path)
    import_paths(engine, [account, extended])
    # The same year downloaded again months later: other bytes, the same records plus new ones.
    later = [rec.account_from_extended(p) for p in plays] + [
        rec.account(T0 + 90_000, "New", "Song")
    ]
    again = only(
        import_paths(
            engine, [rec.write(tmp_path / "later" / "StreamingHistory_music_0.json", later)]
        )
    )
    assert (again.status, again.imported, again.duplicates) == ("imported", 1, len(plays))
    assert len(stored_plays(engine)) == len(plays) + 1


def test_plays_outside_the_window_or_of_other_tracks_are_kept_apart(
    engine: Engine, tmp_path: Path
) -> None:
    ext = rec.extended(T0 + 30, "A", "Song")  # 200 s, started at T0 - 170
    accounts = [
        # Started (at the latest: its minute's end) more than the tolerance before.
        rec.account(T0 + 30 - 60 - MATCH_TOLERANCE_S - 1, "A", "Song"),
        rec.account(T0 + 30, "A", "Other Song"),
    ]
    import_paths(engine, [rec.write(tmp_path / "StreamingHistory0.json", accounts)])
    result = only(import_paths(engine, [rec.write(tmp_path / "endsong_0.json", [ext])]))
    assert (result.imported, result.duplicates) == (1, 0)
    assert len(stored_plays(engine)) == 3


@pytest.mark.parametrize("account_first", [True, False])
def test_one_listening_in_both_exports_is_one_play_with_ms_played_a_little_off(
    tmp_path: Path, account_first: bool
) -> None:
    ends = [T0 + 7, T0 + 1000, T0 + 5000, T0 + 9000]
    played = [(200_000, 200_000), (200_000, 197_600), (180_000, 183_900), (4_076_413, 4_076_413)]
    extended = [
        rec.extended(end, "A", "Song", ms) for end, (ms, _) in zip(ends, played, strict=True)
    ]
    # The account export's end: the same end truncated to the minute; the last play is 68 min.
    account = [rec.account(end, "A", "Song", ms) for end, (_, ms) in zip(ends, played, strict=True)]
    engine = open_database(tmp_path / "data")
    files = [
        rec.write(tmp_path / "acc" / "StreamingHistory_music_0.json", account),
        rec.write(tmp_path / "ext" / "Streaming_History_Audio_2023.json", extended),
    ]
    first, second = import_paths(engine, files if account_first else files[::-1])
    assert (first.imported, second.imported, second.duplicates) == (4, 0, 4)
    assert [(row[1], row[2], row[3], row[9]) for row in stored_plays(engine)] == [
        (end, ext_ms, "extended", acc_ms)
        for end, (ext_ms, acc_ms) in zip(ends, played, strict=True)
    ]


def test_the_same_track_again_right_after_keeps_its_own_account_record(
    engine: Engine, tmp_path: Path
) -> None:
    # Played 67 s, then again 214 s. The account record of the first (ms_played 5 s off) starts
    # nearer the second's start, but its minute is long over when the second ends.
    minute = T0 // 60 * 60 + 600
    extended = [
        rec.extended(minute, "A", "Song", 67_000),
        rec.extended(minute + 214, "A", "Song", 214_000),
    ]
    account = [rec.account(minute, "A", "Song", 62_000), rec.account(minute + 214, "A", "Song")]
    import_paths(engine, [rec.write(tmp_path / "endsong_0.json", extended)])
    result = only(import_paths(engine, [rec.write(tmp_path / "StreamingHistory0.json", account)]))
    assert (result.imported, result.duplicates) == (0, 2)
    assert [(row[1], row[8], row[9]) for row in stored_plays(engine)] == [
        (minute, minute, 62_000),
        (minute + 214, minute + 180, 200_000),
    ]


def test_account_only_tracks_get_their_uri_when_the_extended_export_arrives(
    engine: Engine, tmp_path: Path
) -> None:
    import_paths(
        engine, [rec.write(tmp_path / "StreamingHistory0.json", [rec.account(T0, "A", "Song")])]
    )
    assert query(engine, "SELECT uri FROM track") == [(None,)]
    ext = rec.extended(T0 + 86_400, "A", "Song", uri="spotify:track:late", album="Late Album")
    import_paths(engine, [rec.write(tmp_path / "endsong_0.json", [ext])])
    assert query(engine, "SELECT uri, album FROM track") == [("spotify:track:late", "Late Album")]


# --- failures -------------------------------------------------------------------------------------


def test_a_failure_mid_file_leaves_the_database_as_before_that_file(
    engine: Engine, tmp_path: Path
) -> None:
    good = rec.write(tmp_path / "a" / "endsong_0.json", rec.session(T0, TRACKS[:2]))
    import_paths(engine, [good])
    before = snapshot(engine)
    doomed_ts = T0 + 50_000 + 5 * 185
    # The disk-full-like fault arrives after the file's artists, tracks and first plays are written.
    with sqlite3.connect(database_path(tmp_path / "data")) as conn:
        conn.execute(
            f"CREATE TRIGGER fault BEFORE INSERT ON play WHEN NEW.end_ts = {doomed_ts}"
            " BEGIN SELECT RAISE(ABORT, 'simulated fault'); END"
        )
    bad = rec.write(
        tmp_path / "b" / "endsong_1.json",
        rec.session(T0 + 50_000, [(f"New {i}", f"Song {i}") for i in range(10)]),
    )
    result = only(import_paths(engine, [bad]))
    assert result.status == "failed"
    assert result.error is not None and "simulated fault" in result.error
    assert (result.records, result.imported) == (0, 0)
    assert snapshot(engine) == before
    ledger = query(engine, "SELECT status, error FROM imported_file WHERE path = :p", p=str(bad))
    assert ledger == [("failed", result.error)]
    # Fixed, the same file imports (a failed file may be retried).
    with sqlite3.connect(database_path(tmp_path / "data")) as conn:
        conn.execute("DROP TRIGGER fault")
    retried = only(import_paths(engine, [bad]))
    assert (retried.status, retried.imported) == ("imported", 10)
    assert query(engine, "SELECT status FROM imported_file ORDER BY id") == [
        ("imported",),
        ("imported",),
    ]


def test_bad_files_fail_one_by_one_and_are_recorded(engine: Engine, tmp_path: Path) -> None:
    folder = tmp_path / "drop"
    good = rec.write(folder / "StreamingHistory0.json", [rec.account(T0, "A", "Song")])
    (folder / "StreamingHistory1.json").write_bytes(
        rec.dumps([rec.account(T0, "A", "B")] * 5)[:-25]
    )
    (folder / "StreamingHistory2.json").write_bytes(b"")
    (folder / "StreamingHistory3.json").write_bytes('[{"artistName": "Björk"}]'.encode("latin-1"))
    rec.write(folder / "package.json", {"name": "not-an-export"})
    rec.write(folder / "Userdata.json", {"username": "x"})
    results = {Path(r.path).name: r for r in import_paths(engine, [folder])}
    assert results[good.name].status == "imported"
    assert {name: r.status for name, r in results.items()} == {
        "StreamingHistory0.json": "imported",
        "StreamingHistory1.json": "failed",
        "StreamingHistory2.json": "failed",
        "StreamingHistory3.json": "failed",
        "package.json": "failed",
        "Userdata.json": "ignored",
    }
    assert "truncated" in str(results["StreamingHistory1.json"].error)
    assert "empty file" in str(results["StreamingHistory2.json"].error)
    assert "not UTF-8" in str(results["StreamingHistory3.json"].error)
    assert "not a Spotify streaming history" in str(results["package.json"].error)
    assert "not listening history" in str(results["Userdata.json"].error)
    assert_balanced(list(results.values()))
    ledger = dict(query(engine, "SELECT path, status FROM imported_file"))
    assert {Path(p).name: s for p, s in ledger.items()} == {
        name: r.status for name, r in results.items()
    }
    # Offered again: what imported or was ignored is already there; what failed is tried again.
    again = {Path(r.path).name: r.status for r in import_paths(engine, [folder])}
    assert again["StreamingHistory0.json"] == again["Userdata.json"] == "already-imported"
    assert again["StreamingHistory1.json"] == "failed"


def test_a_missing_path_fails_and_is_resolved_once_the_file_exists(
    engine: Engine, tmp_path: Path
) -> None:
    path = tmp_path / "StreamingHistory0.json"
    assert only(import_paths(engine, [path])).status == "failed"
    assert query(engine, "SELECT status FROM imported_file") == [("failed",)]
    rec.write(path, [rec.account(T0, "A", "Song")])
    assert only(import_paths(engine, [path])).status == "imported"
    assert query(engine, "SELECT status FROM imported_file") == [("imported",)]


def test_a_file_that_changes_while_read_fails_and_imports_once_complete(
    engine: Engine, tmp_path: Path
) -> None:
    path = rec.write(
        tmp_path / "StreamingHistory0.json",
        [rec.account(T0 + i * 60, "A", f"Song {i}") for i in range(30)],
    )

    calls: list[int] = []

    def still_copying(done: int, _total: int, _label: str) -> None:
        calls.append(done)
        if len(calls) == 1:  # called during the read: the copy is still going on
            with path.open("ab") as fh:
                fh.write(b"\n")

    result = only(import_paths(engine, [path], on_progress=still_copying))
    assert result.status == "failed"
    assert "changed while it was read" in str(result.error)
    assert query(engine, "SELECT count(*) FROM play")[0][0] == 0
    assert only(import_paths(engine, [path])).imported == 30


def test_progress_reaches_the_total_bytes(engine: Engine, tmp_path: Path) -> None:
    paths = [
        rec.write(tmp_path / f"StreamingHistory{i}.json", [rec.account(T0 + i, "A", f"S{i}")])
        for i in range(3)
    ]
    seen: list[tuple[int, int]] = []
    import_paths(
        engine, [tmp_path], on_progress=lambda done, total, _label: seen.append((done, total))
    )
    total = sum(p.stat().st_size for p in paths)
    assert seen[-1] == (total, total)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_a_writer_between_files_does_not_confuse_the_track_maps(
    engine: Engine, tmp_path: Path
) -> None:
    """Another connection commits between two files: the importer reloads what it knows."""
    rec.write(tmp_path / "a" / "StreamingHistory0.json", [rec.account(T0, "A", "Song")])
    second = rec.write(
        tmp_path / "a" / "StreamingHistory1.json", [rec.account(T0 + 9_000, "B", "Other")]
    )
    meanwhile = rec.write(
        tmp_path / "b" / "endsong_0.json",
        [rec.extended(T0 + 20_000, "B", "Other"), rec.extended(T0 + 30_000, "C", "Third")],
    )
    other_engine = open_database(tmp_path / "data")
    done: list[str] = []

    def on_progress(_done: int, _total: int, label: str) -> None:
        if label == str(second) and not done:  # while the second file is read, before it is stored
            done.append(only(import_paths(other_engine, [meanwhile])).status)

    results = import_paths(engine, [tmp_path / "a"], on_progress=on_progress)
    assert done == ["imported"]
    assert [r.status for r in results] == ["imported", "imported"]
    assert query(engine, "SELECT count(*) FROM track")[0][0] == 3
    assert len(stored_plays(engine)) == 4


def test_one_session_reads_the_track_maps_again_only_when_the_library_changed(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service import importer, kv

    loads: list[int] = []
    load = importer._Library.load

    def counted(cur: sqlite3.Cursor) -> importer._Library:
        loads.append(1)
        return load(cur)

    monkeypatch.setattr(importer._Library, "load", staticmethod(counted))
    files = [
        rec.write(tmp_path / f"StreamingHistory{i}.json", [rec.account(T0 + i * 9_000, *track)])
        for i, track in enumerate(TRACKS)
    ]
    other = open_database(tmp_path / "data")
    with importer.import_session(engine) as session:
        session.import_paths([files[0]])
        # The daemon records each handled file between files: no library change.
        kv.set_json(other, kv.WATCHED_FILES, {"x": [1, 2]})
        session.import_paths([files[1]])
        assert len(loads) == 1
        # Another import adds a track: the maps are read again, ids do not collide.
        assert only(import_paths(other, [files[2]])).status == "imported"
        assert [r.status for r in session.import_paths([files[2], files[3]])] == [
            "already-imported",
            "imported",
        ]
        assert len(loads) == 3  # the other import's own, and this session's second
    other.dispose()
    titles = query(engine, "SELECT t.title FROM play p JOIN track t ON t.id = p.track_id")
    assert sorted(t for (t,) in titles) == sorted(t for _, t in TRACKS)


def test_kill_9_mid_import_loses_and_doubles_nothing(tmp_path: Path) -> None:
    """A real crash: the importing process is killed; every file is all in or all out."""
    import os
    import signal
    import subprocess
    import sys
    import time

    folder = tmp_path / "export"
    folder.mkdir()
    n_files, per_file = 6, 3_000
    for f in range(n_files):
        records = [
            rec.account(
                T0 + (f * per_file + i) * 200, f"Artist {i % 97}", f"Song {i % 1013}", 1000 + i
            )
            for i in range(per_file)
        ]
        (folder / f"StreamingHistory{f}.json").write_text(json.dumps(records))
    data_dir = tmp_path / "data"
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import sys; from pathlib import Path; from service.db import open_database;"
         "from service.importer import import_paths; from service.logging import configure_logging;"
         "configure_logging('json', 'info'); import_paths(open_database(Path(sys.argv[1])), [Path(sys.argv[2])])",
         str(data_dir), str(folder)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    assert child.stdout is not None
    for line in child.stdout:  # wait for the first file to be committed, then kill mid-way
        if '"import file"' in line:
            break
    time.sleep(0.3)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    engine = open_database(data_dir)
    assert query(engine, "PRAGMA integrity_check") == [("ok",)]
    done = query(engine, "SELECT id, imported FROM imported_file WHERE status = 'imported'")
    assert 1 <= len(done) <= n_files
    for file_id, imported in done:
        assert (
            query(engine, f"SELECT count(*) FROM play WHERE file_id = {file_id}")[0][0]
            == imported
            == per_file
        )
    assert query(engine, "SELECT count(*) FROM play")[0][0] == per_file * len(done)
    results = import_paths(engine, [folder])
    assert sum(r.status == "already-imported" for r in results) == len(done)
    assert query(engine, "SELECT count(*) FROM play")[0][0] == n_files * per_file
