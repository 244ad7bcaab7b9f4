"""`songnet import PATH… [--json]` run for real: output shape, exit codes, zips, bad files."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from typer.testing import CliRunner

from service.cli import app
from tests import export_records as rec
from tests.conftest import REPO

T0 = 1_700_000_000
FIELDS = {"path", "format", "records", "imported", "duplicates", "skipped", "status", "error"}
ACCOUNT = "Spotify Account Data"
EXTENDED = "Spotify Extended Streaming History"


@pytest.fixture(autouse=True)
def _logging_back_to_defaults() -> Iterator[None]:
    # The CLI points structlog at CliRunner's stderr, which is closed once the run ends.
    yield
    structlog.reset_defaults()


def songnet(data_dir: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["--data-dir", str(data_dir), *args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def import_json(data_dir: Path, *args: Path | str) -> tuple[int, list[dict[str, Any]]]:
    code, out, _err = songnet(data_dir, "import", *map(str, args), "--json")
    doc = json.loads(out)  # stdout holds exactly one JSON object
    assert set(doc) == {"files"}
    for entry in doc["files"]:
        assert set(entry) == FIELDS
        assert entry["status"] in {"imported", "already-imported", "ignored", "failed"}
        assert entry["records"] == entry["imported"] + entry["duplicates"] + sum(
            entry["skipped"].values()
        )
    return code, doc["files"]


def by_name(files: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f["path"].rsplit("/", 1)[-1]: f for f in files}


def spotify_download(tmp_path: Path) -> Path:
    """Both exports zipped the way Spotify sends them, with their companion files."""
    plays = rec.session(T0, [("A", f"Song {i}") for i in range(6)])
    return rec.spotify_zip(tmp_path / "my_spotify_data.zip", {
        f"{ACCOUNT}/StreamingHistory_music_0.json": rec.dumps([rec.account_from_extended(p) for p in plays[:4]]),
        f"{ACCOUNT}/Userdata.json": rec.dumps({"username": "x", "country": "SE"}),
        f"{ACCOUNT}/Playlist1.json": rec.dumps({"playlists": []}),
        f"{ACCOUNT}/Read_Me_First.pdf": b"%PDF-1.4",
        f"{EXTENDED}/Streaming_History_Audio_2023.json": rec.dumps([*plays, rec.episode(T0 + 9000)]),
        f"{EXTENDED}/Streaming_History_Video_2023.json": rec.dumps([rec.extended(T0 + 9999, "A", "Video")]),
    })  # fmt: skip


def test_the_zip_as_spotify_sends_it_imports_and_reimports(tmp_path: Path) -> None:
    archive = spotify_download(tmp_path)
    code, files = import_json(tmp_path / "data", archive)
    assert code == 0
    assert all(f["path"].startswith(f"{archive}!Spotify ") for f in files)
    got = {
        name: (f["format"], f["status"], f["imported"], f["duplicates"], f["skipped"])
        for name, f in by_name(files).items()
    }
    assert got == {
        "StreamingHistory_music_0.json": ("account", "imported", 4, 0, {}),
        "Userdata.json": (None, "ignored", 0, 0, {}),
        "Playlist1.json": (None, "ignored", 0, 0, {}),
        "Read_Me_First.pdf": (None, "ignored", 0, 0, {}),
        # The four account plays are enriched by their extended records: duplicates.
        "Streaming_History_Audio_2023.json": ("extended", "imported", 2, 4, {"episode": 1}),
        "Streaming_History_Video_2023.json": ("extended", "imported", 0, 0, {"video": 1}),
    }
    assert all(f["error"] for f in files if f["status"] == "ignored")

    code, again = import_json(tmp_path / "data", archive)
    assert code == 0
    assert {f["status"] for f in again} <= {"already-imported", "ignored"}
    assert sum(f["imported"] for f in again) == 0
    code, out, _ = songnet(tmp_path / "data", "info", "--json")
    assert json.loads(out)["plays"] == 6
    # The feature cache was rebuilt after the import: one row per stored track.
    con = sqlite3.connect(tmp_path / "data" / "songnet.db")
    try:
        tracks, featured = con.execute(
            "SELECT (SELECT COUNT(*) FROM track), (SELECT COUNT(*) FROM track_features)"
        ).fetchone()
    finally:
        con.close()
    assert featured == tracks > 0


def test_bad_files_fail_each_with_a_reason_and_exit_1(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    rec.write(drop / "StreamingHistory0.json", [rec.account(T0, "A", "Song")])
    (drop / "StreamingHistory1.json").write_bytes(rec.dumps([rec.account(T0, "A", "B")] * 4)[:-30])
    (drop / "StreamingHistory2.json").write_bytes(b"")
    (drop / "StreamingHistory3.json").write_bytes(
        '[{"endTime": "2024-01-01 10:00", "artistName": "Mötley"}]'.encode("cp1252")
    )
    rec.write(drop / "settings.json", {"theme": "dark"})
    rec.write(drop / "Userdata.json", {"username": "x"})
    good_zip = rec.spotify_zip(
        tmp_path / "good.zip", {f"{ACCOUNT}/StreamingHistory0.json": b"[]" * 500}
    )
    (drop / "broken.zip").write_bytes(good_zip.read_bytes()[:-40])
    with (
        zipfile.ZipFile(drop / "bomb.zip", "w", compression=zipfile.ZIP_DEFLATED) as z,
        z.open(f"{ACCOUNT}/StreamingHistory9.json", "w") as member,
    ):
        for _ in range(12):
            member.write(b"\n" * (1 << 20))
    code, files = import_json(tmp_path / "data", drop)
    assert code == 1
    got = {name: (f["status"], f["error"]) for name, f in by_name(files).items()}
    assert got["StreamingHistory0.json"] == ("imported", None)
    assert got["Userdata.json"][0] == "ignored"
    expected_failures = {
        "StreamingHistory1.json": "truncated JSON",
        "StreamingHistory2.json": "empty file",
        "StreamingHistory3.json": "not UTF-8",
        "settings.json": "not a Spotify streaming history",
        "broken.zip": "corrupt zip",
        "bomb.zip!Spotify Account Data/StreamingHistory9.json": "zip bomb",
    }
    for name, message in expected_failures.items():
        status, error = got[name.rsplit("/", 1)[-1]]
        assert status == "failed", name
        assert message in error, (name, error)
    # Nothing lost: the good file's play is there, and the failures are in the ledger.
    _, out, _ = songnet(tmp_path / "data", "info", "--json")
    assert json.loads(out)["plays"] == 1


def test_the_unzipped_size_cap_is_an_option(tmp_path: Path) -> None:
    data = rec.dumps([rec.account(T0 + i * 60, "A", f"Song {i}") for i in range(12_000)])
    archive = rec.spotify_zip(tmp_path / "export.zip", {f"{ACCOUNT}/StreamingHistory0.json": data})
    assert len(data) > 1 << 20
    code, files = import_json(tmp_path / "data", archive, "--max-unzipped-mb", "1")
    assert code == 1
    assert files[0]["status"] == "failed" and "over the limit" in files[0]["error"]
    code, files = import_json(tmp_path / "data", archive)
    assert code == 0 and files[0]["imported"] == 12_000


def test_ignored_files_alone_exit_0(tmp_path: Path) -> None:
    userdata = rec.write(tmp_path / "Userdata.json", {"username": "x"})
    code, files = import_json(tmp_path / "data", userdata)
    assert code == 0
    assert [f["status"] for f in files] == ["ignored"]


def test_a_missing_path_fails(tmp_path: Path) -> None:
    code, files = import_json(tmp_path / "data", tmp_path / "nowhere")
    assert code == 1
    assert files == [{
        "path": str(tmp_path / "nowhere"), "format": None, "records": 0, "imported": 0,
        "duplicates": 0, "skipped": {}, "status": "failed", "error": "no such file or folder",
    }]  # fmt: skip


def test_without_json_the_table_goes_to_stderr_and_stdout_stays_empty(tmp_path: Path) -> None:
    archive = spotify_download(tmp_path)
    code, out, err = songnet(tmp_path / "data", "import", str(archive))
    assert code == 0
    assert out == ""
    assert "Streaming_History_Audio_2023.json" in err
    assert "imported" in err and "plays imported" in err


@pytest.mark.slow
def test_the_installed_command_prints_only_json_on_stdout(tmp_path: Path) -> None:
    path = rec.write(tmp_path / "endsong_0.json", rec.session(T0, [("A", "B"), ("C", "D")]))
    proc = subprocess.run(
        [sys.executable, "-c", "from service.cli import main; main()",
         "--data-dir", str(tmp_path / "data"), "--log-level", "info", "import", str(path), "--json"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert [(f["status"], f["imported"]) for f in doc["files"]] == [("imported", 2)]
    assert "import file" in proc.stderr  # the log line per file, on stderr
