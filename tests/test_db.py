from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from service import db
from service.importer import import_paths
from tests.conftest import REPO
from tests.crash_harness import integrity, stored_plays, synthetic_files
from tests.daemon_process import SONGNET, run_songnet, songnet_env


def test_fresh_database_is_wal_with_foreign_keys(tmp_path: Path) -> None:
    engine = db.open_database(tmp_path)
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("SELECT version FROM schema_info")).scalar() == db.SCHEMA_VERSION
    engine.dispose()
    # Opening again is a no-op.
    db.open_database(tmp_path).dispose()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    db.open_database(tmp_path).dispose()
    con = sqlite3.connect(db.database_path(tmp_path))
    con.execute("UPDATE schema_info SET version = ?", (db.SCHEMA_VERSION + 5,))
    con.commit()
    con.close()
    with pytest.raises(db.DatabaseError, match="newer than this songnet"):
        db.open_database(tmp_path)


def test_older_schema_is_backed_up_and_upgraded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db.open_database(tmp_path).dispose()
    calls: list[int] = []

    def step(conn: object) -> None:
        calls.append(1)

    monkeypatch.setattr(db, "SCHEMA_VERSION", db.SCHEMA_VERSION + 1)
    monkeypatch.setitem(db._UPGRADES, db.SCHEMA_VERSION - 1, step)
    engine = db.open_database(tmp_path)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version FROM schema_info")).scalar() == db.SCHEMA_VERSION
    assert calls == [1]
    backup = tmp_path / f"songnet.db.v{db.SCHEMA_VERSION - 1}.bak"
    assert backup.exists()
    con = sqlite3.connect(backup)
    assert con.execute("SELECT version FROM schema_info").fetchone()[0] == db.SCHEMA_VERSION - 1
    con.close()


def test_foreign_file_is_refused(tmp_path: Path) -> None:
    con = sqlite3.connect(tmp_path / "songnet.db")
    con.execute("CREATE TABLE other (x)")
    con.commit()
    con.close()
    with pytest.raises(db.DatabaseError, match="no songnet schema version"):
        db.open_database(tmp_path)


def test_concurrent_first_opens_create_the_schema_once(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = "import sys; from pathlib import Path; from service import db; db.open_database(Path(sys.argv[1])).dispose()"
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stderr=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, errors
    con = sqlite3.connect(db.database_path(tmp_path))
    assert con.execute("SELECT COUNT(*) FROM schema_info").fetchone()[0] == 1
    con.close()


# --- kill -9 during creation and upgrade (real processes) -------------------------------------

CREATE_STEPS = ("create:begun", "create:tables", "create:stamped", "create:committed")
UPGRADE_STEPS = (
    "upgrade:backup",
    f"upgrade:step-{db.SCHEMA_VERSION}",
    "upgrade:tables",
    "upgrade:stamped",
    "upgrade:committed",
)

# Opens the database of argv[1] with one more schema version than this songnet's (a step that
# adds a column and fills it in), then imports argv[2]: the upgrade at a restart.
UPGRADE_AND_IMPORT = """
import sys
from pathlib import Path
from sqlalchemy import text
from service import db
from service.importer import import_paths

def step(conn):
    conn.execute(text("ALTER TABLE play ADD COLUMN note TEXT"))
    conn.execute(text("UPDATE play SET note = 'upgraded'"))

db._UPGRADES[db.SCHEMA_VERSION] = step
db.SCHEMA_VERSION += 1
engine = db.open_database(Path(sys.argv[1]))
results = import_paths(engine, [Path(sys.argv[2])])
assert [r.status for r in results] == ["imported"], results
engine.dispose()
"""


@pytest.fixture(scope="module")
def export_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], dict[str, Any]]:
    """Two small extended-history files, and the plays each stores imported alone."""
    root = tmp_path_factory.mktemp("exports")
    files, _ = synthetic_files(root, n_files=2, plays_per_file=300)
    reference = {}
    for path in files:
        scratch = root / "reference" / path.name
        engine = db.open_database(scratch)
        import_paths(engine, [path])
        engine.dispose()
        reference[path.name] = stored_plays(scratch)
        assert reference[path.name]
    return files, reference


def _killed_at(step: str, args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = songnet_env(tmp_path / "data", tmp_path / "exports")
    env[db.CRASH_AT_ENV] = step
    return subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("step", CREATE_STEPS)
def test_kill_during_creation_leaves_a_database_the_next_start_uses(
    step: str, tmp_path: Path, export_files: tuple[list[Path], dict[str, Any]]
) -> None:
    files, reference = export_files
    data_dir = tmp_path / "data"
    killed = _killed_at(step, [*SONGNET, "import", str(files[0])], tmp_path)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    con = sqlite3.connect(db.database_path(data_dir))
    tables = {n for (n,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    con.close()
    # All or nothing: the whole schema with its version, or no table at all.
    assert tables == (set(db.SQLModel.metadata.tables) if step == "create:committed" else set())

    again = run_songnet(["import", str(files[0])], songnet_env(data_dir, tmp_path / "exports"))
    assert again.returncode == 0, again.stderr
    assert integrity(data_dir) == "ok"
    assert stored_plays(data_dir) == reference[files[0].name]
    con = sqlite3.connect(db.database_path(data_dir))
    assert con.execute("SELECT id, version FROM schema_info").fetchall() == [(1, db.SCHEMA_VERSION)]
    con.close()


@pytest.mark.parametrize("step", UPGRADE_STEPS)
def test_kill_during_an_upgrade_leaves_a_database_the_next_start_upgrades(
    step: str, tmp_path: Path, export_files: tuple[list[Path], dict[str, Any]]
) -> None:
    files, reference = export_files
    data_dir = tmp_path / "data"
    engine = db.open_database(data_dir)
    import_paths(engine, [files[0]])
    engine.dispose()
    upgrade = [sys.executable, "-c", UPGRADE_AND_IMPORT, str(data_dir), str(files[1])]

    killed = _killed_at(step, upgrade, tmp_path)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert integrity(data_dir) == "ok"
    assert stored_plays(data_dir) == reference[files[0].name]

    again = subprocess.run(upgrade, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert integrity(data_dir) == "ok"
    assert stored_plays(data_dir) == reference[files[0].name] + reference[files[1].name]
    con = sqlite3.connect(db.database_path(data_dir))
    try:
        version = con.execute("SELECT version FROM schema_info").fetchall()
        assert version == [(db.SCHEMA_VERSION + 1,)]
        # The step ran exactly once, over the plays that were there before it.
        notes = Counter(n for (n,) in con.execute("SELECT note FROM play"))
        assert notes == {
            "upgraded": sum(reference[files[0].name].values()),
            None: sum(reference[files[1].name].values()),
        }
    finally:
        con.close()
    backup = sqlite3.connect(data_dir / f"songnet.db.v{db.SCHEMA_VERSION}.bak")
    try:
        version = backup.execute("SELECT version FROM schema_info").fetchall()
        assert version == [(db.SCHEMA_VERSION,)]
        assert backup.execute("SELECT COUNT(*) FROM play").fetchone()[0] == sum(
            reference[files[0].name].values()
        )
    finally:
        backup.close()


def test_tables_without_a_version_from_an_interrupted_creation_are_created_again(
    tmp_path: Path,
) -> None:
    # What songnets before the one-transaction creation left after a kill: every table, empty,
    # and no version row.
    engine = db.open_database(tmp_path)
    engine.dispose()
    con = sqlite3.connect(db.database_path(tmp_path))
    con.execute("DELETE FROM schema_info")
    con.execute("DROP TABLE run_record")
    con.commit()
    con.close()
    engine = db.open_database(tmp_path)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version FROM schema_info")).scalar() == db.SCHEMA_VERSION
        assert conn.execute(text("SELECT COUNT(*) FROM run_record")).scalar() == 0
    engine.dispose()


def test_tables_without_a_version_but_with_rows_are_never_touched(tmp_path: Path) -> None:
    engine = db.open_database(tmp_path)
    engine.dispose()
    con = sqlite3.connect(db.database_path(tmp_path))
    con.execute("DELETE FROM schema_info")
    con.execute("INSERT INTO artist (id, key, name) VALUES (1, 'a', 'A')")
    con.commit()
    con.close()
    with pytest.raises(db.DatabaseError, match="rows in artist"):
        db.open_database(tmp_path)
    con = sqlite3.connect(db.database_path(tmp_path))
    assert con.execute("SELECT name FROM artist").fetchall() == [("A",)]
    con.close()


# --- the real 2 -> 3 step: Spotify's playlist columns become per-sink rows ---------------------

SCHEMA_2_PLAYLISTS = [
    # config_id, name, spotify_id, last_generated_at, last_synced_at, last_error, deferred_until
    ("weekly", "Weekly Mix", "sp-weekly", 1_700_000_000, 1_700_000_100, None, None),
    ("focus", "Focus", "sp-focus", 1_700_000_000, 1_699_000_000, "rate limited", 1_700_003_600),
    ("broken", "Broken", None, None, None, "generation failed: no seed matches", None),
]
SINK_ROWS_AFTER = [
    # config_id, sink, remote_id, deferred_until, last_status, last_error, last_written_at
    ("focus", "spotify", "sp-focus", 1_700_003_600, "deferred", "rate limited", 1_699_000_000),
    ("weekly", "spotify", "sp-weekly", None, "written", None, 1_700_000_100),
]
OPEN_DATABASE = (
    "import sys; from pathlib import Path; from service import db; "
    "db.open_database(Path(sys.argv[1])).dispose()"
)


def _schema_2_database(data_dir: Path, export: Path) -> None:
    """A schema-2 database with plays and playlists, as songnet 2 left it: today's tables less
    `playlist_sink_state`, and `playlist_state` with its Spotify columns."""
    engine = db.open_database(data_dir)
    import_paths(engine, [export])
    engine.dispose()
    con = sqlite3.connect(db.database_path(data_dir))
    with con:
        con.execute("DROP TABLE playlist_sink_state")
        for column in ("spotify_id VARCHAR", "deferred_until INTEGER", "last_synced_at INTEGER"):
            con.execute(f"ALTER TABLE playlist_state ADD COLUMN {column}")
        con.executemany(
            "INSERT INTO playlist_state (config_id, name, spotify_id, last_generated_at,"
            " last_synced_at, last_error, deferred_until, tracks_json, removed_from_config)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, '[]', 0)",
            SCHEMA_2_PLAYLISTS,
        )
        con.execute("UPDATE schema_info SET version = 2")
    con.close()


def _rows(data_dir: Path, query: str) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(db.database_path(data_dir))
    try:
        return con.execute(query).fetchall()
    finally:
        con.close()


@pytest.mark.parametrize(
    "step",
    [
        None,
        "upgrade:backup",
        "upgrade:step-2",
        "upgrade:tables",
        "upgrade:stamped",
        "upgrade:committed",
    ],
)
def test_schema_2_upgrade_moves_spotify_state_into_sink_rows_even_when_killed(
    step: str | None, tmp_path: Path, export_files: tuple[list[Path], dict[str, Any]]
) -> None:
    assert db.SCHEMA_VERSION == 3  # this test is the 2 -> 3 step's
    files, reference = export_files
    data_dir = tmp_path / "data"
    _schema_2_database(data_dir, files[0])
    opening = [sys.executable, "-c", OPEN_DATABASE, str(data_dir)]
    if step is not None:
        killed = _killed_at(step, opening, tmp_path)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        assert integrity(data_dir) == "ok"
        if step != "upgrade:committed":  # all or nothing: still schema 2, every value there
            assert _rows(data_dir, "SELECT version FROM schema_info") == [(2,)]
            assert (
                _rows(
                    data_dir,
                    "SELECT config_id, name, spotify_id, last_generated_at, last_synced_at,"
                    " last_error, deferred_until FROM playlist_state ORDER BY rowid",
                )
                == SCHEMA_2_PLAYLISTS
            )
    again = subprocess.run(opening, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert integrity(data_dir) == "ok"
    assert _rows(data_dir, "SELECT version FROM schema_info") == [(3,)]
    assert (
        _rows(
            data_dir,
            "SELECT config_id, sink, remote_id, deferred_until, last_status, last_error,"
            " last_written_at FROM playlist_sink_state ORDER BY config_id, sink",
        )
        == SINK_ROWS_AFTER
    )
    # Every playlist kept; a deferral's error moved to its sink, a generation error stayed.
    assert _rows(
        data_dir,
        "SELECT config_id, name, last_generated_at, last_error FROM playlist_state ORDER BY rowid",
    ) == [
        ("weekly", "Weekly Mix", 1_700_000_000, None),
        ("focus", "Focus", 1_700_000_000, None),
        ("broken", "Broken", None, "generation failed: no seed matches"),
    ]
    columns = {c for (_, c, *_) in _rows(data_dir, "PRAGMA table_info(playlist_state)")}
    assert columns == set(db.tables.PlaylistState.__table__.columns.keys())  # type: ignore[attr-defined]
    assert stored_plays(data_dir) == reference[files[0].name]
