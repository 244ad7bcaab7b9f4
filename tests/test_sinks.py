"""The file sink: `.m3u8` and `.json` per playlist, written whole or not at all."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from service.sinks import playlist_paths, search_uri, write_playlist_files


@dataclass(frozen=True)
class Track:
    track_id: int
    artist: str
    title: str
    uri: str | None
    reason: str
    is_seed: bool = False


@dataclass(frozen=True)
class Generated:
    config_id: str
    name: str
    tracks: list[Track] = field(default_factory=list)
    model_version: int | None = 3
    ranker: str = "model"


def sample() -> Generated:
    return Generated(
        "sunday-mix",
        "Sunday Mix: Ça va?",
        [
            Track(1, "Nina Simone", "Feeling Good", "spotify:track:abc", "your seed", is_seed=True),
            Track(
                2, "Sigur Rós", "Hoppípolla", None, "often follows Feeling Good in your sessions"
            ),
            Track(3, "AC/DC", "T.N.T.\n(live)", "spotify:track:def", "same artist as seed X"),
        ],
    )


def test_files_hold_every_track_with_reasons(tmp_path: Path) -> None:
    written = write_playlist_files(tmp_path, sample(), generated_at=1_772_000_000)
    assert written.m3u8 == tmp_path / "playlists" / "sunday-mix-ca-va.m3u8"
    assert written == playlist_paths(tmp_path, "Sunday Mix: Ça va?")
    lines = written.m3u8.read_text(encoding="utf-8").splitlines()
    assert lines[:2] == ["#EXTM3U", "#PLAYLIST:Sunday Mix: Ça va?"]
    assert lines[2:] == [
        "#EXTINF:-1,Nina Simone - Feeling Good",
        "spotify:track:abc",
        "#EXTINF:-1,Sigur Rós - Hoppípolla",
        search_uri("Sigur Rós", "Hoppípolla"),
        "#EXTINF:-1,AC/DC - T.N.T. (live)",
        "spotify:track:def",
    ]
    assert (
        search_uri("Sigur Rós", "Hoppípolla") == "spotify:search:Sigur%20R%C3%B3s%20Hopp%C3%ADpolla"
    )
    doc = json.loads(written.json.read_text(encoding="utf-8"))
    assert doc["id"] == "sunday-mix" and doc["model_version"] == 3
    assert doc["generated_at"].startswith("2026-02-25")
    assert [(t["position"], t["seed"], t["reason"]) for t in doc["tracks"]] == [
        (1, True, "your seed"),
        (2, False, "often follows Feeling Good in your sessions"),
        (3, False, "same artist as seed X"),
    ]


def test_rewrite_replaces_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    first = write_playlist_files(tmp_path, sample(), generated_at=1)
    shorter = Generated("sunday-mix", "Sunday Mix: Ça va?", sample().tracks[:1])
    write_playlist_files(tmp_path, shorter, generated_at=2)
    assert len(json.loads(first.json.read_text())["tracks"]) == 1
    assert sorted(p.name for p in (tmp_path / "playlists").iterdir()) == [
        "sunday-mix-ca-va.json",
        "sunday-mix-ca-va.m3u8",
    ]


def test_a_failed_write_keeps_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written = write_playlist_files(tmp_path, sample(), generated_at=1)
    before = written.m3u8.read_text()

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("service.sinks.os.fsync", broken_fsync)
    with pytest.raises(OSError, match="No space"):
        write_playlist_files(
            tmp_path, Generated("sunday-mix", "Sunday Mix: Ça va?", []), generated_at=2
        )
    assert written.m3u8.read_text() == before
    assert sorted(p.name for p in (tmp_path / "playlists").iterdir()) == [
        "sunday-mix-ca-va.json",
        "sunday-mix-ca-va.m3u8",
    ]
