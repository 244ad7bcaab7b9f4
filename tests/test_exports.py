"""Recognising and parsing Spotify exports, and reading them from folders, files and zips."""

from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path

import pytest

from songnet_core.exports import (
    EARLIEST_PLAY_TS,
    ExportError,
    ExportFile,
    NotHistory,
    ParsedExport,
    SkippedSource,
    UnreadableSource,
    ZipLimits,
    find_sources,
    parse_export,
)
from songnet_core.history import Play
from tests import export_records as rec
from tests.conftest import CORPUS_NAMES, corpus_source

T0 = 1_700_000_000  # 2023-11-14T22:13:20Z
NOW = 1_800_000_000  # 2027-01-15: the import's time, later than every play below


def parsed(records: object, name: str = "data.json") -> ParsedExport:
    result = parse_export(rec.dumps(records), name, now=NOW)
    assert isinstance(result, ParsedExport)
    return result


# --- the two formats ----------------------------------------------------------------------


def test_account_record_becomes_a_play_with_utc_minute_end() -> None:
    result = parsed(
        [
            {
                "endTime": "2024-07-09 10:09",
                "artistName": "Shaggy",
                "trackName": "Angel",
                "msPlayed": 21734,
            }
        ]
    )
    assert result.format == "account"
    assert result.records == 1
    assert result.skipped == {}
    assert result.plays() == [Play(1720519740, 21734, "Shaggy", "Angel", "account")]


def test_extended_record_keeps_uri_album_skip_reasons_and_shuffle() -> None:
    record = rec.extended(
        T0, "Röyksopp", "Eple", 61_000, uri="spotify:track:abc", album="Melody A.M.",
        skipped=True, shuffle=True, reason_start="clickrow", reason_end="fwdbtn",
    )  # fmt: skip
    result = parsed([record], "Streaming_History_Audio_2023.json")
    assert result.format == "extended"
    assert result.plays() == [
        Play(
            T0,
            61_000,
            "Röyksopp",
            "Eple",
            "extended",
            "Melody A.M.",
            "spotify:track:abc",
            True,
            "clickrow",
            "fwdbtn",
            True,
        )
    ]


def test_identifying_fields_are_never_kept() -> None:
    result = parsed(
        [rec.extended(T0, "A", "B"), rec.extended(T0 + 300, "C", "D", with_uri_field=False)]
    )
    kept = {value for row in result.rows for value in row}
    assert len(result.rows) == 2
    assert not kept & set(rec.IDENTIFYING.values())


def test_oldest_extended_schema_without_track_uri_is_recognised() -> None:
    # endsong files of ~2019 (like corpus extended-c) have no spotify_track_uri field at all.
    result = parsed(
        [rec.extended(T0, "A", "B", with_uri_field=False, skipped=None)], "endsong_0.json"
    )
    assert result.format == "extended"
    assert result.plays()[0].uri is None
    assert result.plays()[0].skipped is None


def test_format_is_recognised_by_content_not_by_name() -> None:
    assert parsed([rec.account(T0, "A", "B")], "my-history.json").format == "account"
    assert parsed([rec.extended(T0, "A", "B")], "StreamingHistory0.json").format == "extended"


def test_non_music_records_are_counted_by_reason() -> None:
    records = [
        rec.extended(T0, "A", "Song"),
        rec.episode(T0 + 100),
        rec.audiobook(T0 + 200),
        rec.extended(T0 + 300, None, None),  # no track (an old podcast or a local file)
        rec.extended(T0 + 400, "A", None),
        rec.extended(T0 + 500, None, "Song"),
        {"ts": "not a time", "ms_played": 1},
        {"ts": rec.iso(T0), "ms_played": -5},
        {"ts": rec.iso(T0), "ms_played": "12"},
        {"ms_played": 10},
        ["not", "a", "record"],
        None,
        rec.extended(T0 + 600, "A", "Song 2"),
    ]
    result = parsed(records, "Streaming_History_Audio_2023.json")
    assert result.records == len(records)
    assert [p.title for p in result.plays()] == ["Song", "Song 2"]
    assert result.skipped == {
        "episode": 1,
        "audiobook": 1,
        "no_track": 3,
        "invalid_record": 5,
        "implausible_duration": 1,
    }
    assert result.records == len(result.rows) + sum(result.skipped.values())


def test_extended_files_parse_the_same_by_either_decoding() -> None:
    # The typed decode (the field name in the first 64 KiB) and the general one (whitespace
    # pushes it out; a NaN makes the standard library parse) must agree record by record.
    records = [
        rec.extended(T0, "A", "Song", skipped=None, shuffle=1),
        rec.extended(T0 + 100, "B", "Other", uri="not-a-uri", album=""),
        rec.episode(T0 + 200),
        rec.audiobook(T0 + 300),
        rec.extended(T0 + 400, None, None),
        {"ts": rec.iso(T0), "ms_played": 10**30},
        {"ts": 5, "ms_played": 1},
        {"ms_played": 10},
        {"ts": rec.iso(T0 + 500), "ms_played": 1000, "master_metadata_track_name": ["x"],
         "master_metadata_album_artist_name": "A"},
        [1, 2],
        "text",
        3.5,
        None,
        rec.extended(T0 + 600, "A", "Song 2", reason_start=None, reason_end=7),
    ]  # fmt: skip
    name = "Streaming_History_Audio_2023.json"
    typed = parse_export(rec.dumps(records), name, now=NOW)
    general = parse_export(b" " * 70_000 + rec.dumps(records), name, now=NOW)
    with_nan = parse_export(rec.dumps(records)[:-1] + b', {"ms_played": NaN}]', name, now=NOW)
    with_bom = parse_export(b"\xef\xbb\xbf" + rec.dumps(records), name, now=NOW)
    assert isinstance(typed, ParsedExport)
    assert typed == general == with_bom
    assert isinstance(with_nan, ParsedExport)
    assert with_nan.rows == typed.rows
    assert with_nan.skipped["invalid_record"] == typed.skipped["invalid_record"] + 1
    assert [p.title for p in typed.plays()] == ["Song", "Other", "Song 2"]
    assert typed.plays()[0].shuffle is True and typed.plays()[0].skipped is None
    assert typed.plays()[1].uri is None and typed.plays()[1].album is None
    assert typed.skipped == {
        "episode": 1,
        "audiobook": 1,
        "no_track": 1,
        "invalid_record": 7,
        "implausible_duration": 1,
    }


def test_video_files_are_skipped_whole_though_their_records_look_like_audio() -> None:
    records = [rec.extended(T0, "A", "Music Video"), rec.episode(T0 + 100)]
    result = parsed(records, "Streaming_History_Video_2024.json")
    assert result.format == "extended"
    assert result.rows == []
    assert result.skipped == {"video": 2}


def test_account_unknown_tracks_podcasts_and_bad_records() -> None:
    records = [
        rec.account(T0, "Artist", "Song"),
        {
            "endTime": "2024-01-02 22:03",
            "artistName": "Unknown Artist",
            "trackName": "Unknown Track",
            "msPlayed": 15211,
        },
        {"endTime": "2024-01-02 22:04", "artistName": "", "trackName": "", "msPlayed": 10},
        {
            "endTime": "2024-01-02 22:05",
            "podcastName": "A Show",
            "episodeName": "Ep. 3",
            "msPlayed": 1000,
        },
        {"endTime": "2024-13-45 99:99", "artistName": "A", "trackName": "B", "msPlayed": 10},
        {"endTime": "2024-01-02 22:06", "artistName": "A", "trackName": "B", "msPlayed": None},
        {"endTime": "2024-01-02 22:07", "artistName": 5, "trackName": "B", "msPlayed": 10},
    ]
    result = parsed(records, "StreamingHistory0.json")
    assert [(p.artist, p.title) for p in result.plays()] == [("Artist", "Song")]
    assert result.skipped == {"no_track": 2, "episode": 1, "invalid_record": 3}


@pytest.mark.parametrize(
    ("end_ts", "ms", "reason"),
    [
        (EARLIEST_PLAY_TS - 60, 200_000, "implausible_time"),  # 2005: before Spotify
        (NOW + 24 * 3600 + 60, 200_000, "implausible_time"),  # over a day after the import
        (NOW - 3600, -1, "implausible_duration"),
        (NOW - 3600, 24 * 3600 * 1000 + 1, "implausible_duration"),
    ],
)
def test_implausible_plays_are_skipped_with_their_reason(end_ts: int, ms: int, reason: str) -> None:
    for make, name in (
        (rec.extended, "Streaming_History_Audio_2024.json"),
        (rec.account, "StreamingHistory0.json"),
    ):
        records = [
            make(T0, "A", "Good"),
            make(end_ts, "A", "Bad", ms),
            make(T0 + 600, "A", "Good 2"),
        ]
        result = parsed(records, name)
        assert [p.title for p in result.plays()] == ["Good", "Good 2"], name
        assert result.skipped == {reason: 1}, name
        assert result.records == len(result.rows) + sum(result.skipped.values())


def test_the_edges_of_the_plausible_are_plays() -> None:
    # The first second of 2006, a day after the import, no time at all and a whole day.
    edges = [(EARLIEST_PLAY_TS, 0), (NOW + 24 * 3600, 24 * 3600 * 1000)]
    records = [rec.extended(ts, "A", f"Song {i}", ms) for i, (ts, ms) in enumerate(edges)]
    result = parsed(records, "Streaming_History_Audio_2024.json")
    assert [(p.end_ts, p.ms_played) for p in result.plays()] == edges
    assert result.skipped == {}


def test_the_year_2999_is_in_the_future_of_any_import() -> None:
    record = {"endTime": "2999-01-01 00:00", "artistName": "A", "trackName": "B", "msPlayed": 10}
    result = parsed([record, rec.account(T0, "A", "B")], "StreamingHistory0.json")
    assert result.skipped == {"implausible_time": 1}
    assert len(result.rows) == 1


def test_account_podcast_history_is_all_episodes() -> None:
    records = [
        {"endTime": "2024-01-02 22:05", "podcastName": "S", "episodeName": f"E{i}", "msPlayed": 10}
        for i in range(3)
    ]
    result = parsed(records, "StreamingHistory_podcast_0.json")
    assert (result.format, result.rows, result.skipped) == ("account", [], {"episode": 3})


def test_utf8_bom_is_accepted() -> None:
    result = parse_export(
        b"\xef\xbb\xbf" + rec.dumps([rec.account(T0, "A", "B")]),
        "StreamingHistory0.json",
        now=NOW,
    )
    assert isinstance(result, ParsedExport) and len(result.rows) == 1


def test_empty_history_lists_are_recognised_by_name() -> None:
    assert parsed([], "StreamingHistory_music_3.json").format == "account"
    assert parsed([], "Streaming_History_Audio_2024_2.json").format == "extended"
    with pytest.raises(ExportError, match="empty JSON list"):
        parse_export(b"[]", "notes.json", now=NOW)


@pytest.mark.parametrize(
    ("name", "doc"),
    [
        ("Userdata.json", {"username": "x", "email": "y"}),
        ("Playlist1.json", {"playlists": []}),
        ("SearchQueries.json", [{"platform": "x", "searchTime": "t", "searchQuery": "q"}]),
        ("YourLibrary.json", {"tracks": []}),
        ("Read_Me_First.json", []),
    ],
)
def test_companion_files_of_an_export_are_not_history(name: str, doc: object) -> None:
    result = parse_export(rec.dumps(doc), name, now=NOW)
    assert isinstance(result, NotHistory)
    assert "not listening history" in result.reason


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty file"),
        (b"  \n ", "only whitespace"),
        (b'[{"endTime": "2024-01-01 10:00", "artistName": "Bj\xf6rk"}]', "not UTF-8"),
        (rec.dumps([rec.account(T0, "A", "B")] * 3)[:-40], "truncated JSON"),
        (b'[{"endTime": 1,, }]', "invalid JSON at line 1"),
        (b'{"files": [1, 2]}', "not a Spotify streaming history"),
        (b'[{"name": "x"}]', "not a Spotify streaming history"),
        (b"[1, 2, 3]", "not a Spotify streaming history"),
        (b"42", "not a Spotify streaming history"),
    ],
)
def test_bad_input_gives_one_clear_error(data: bytes, message: str) -> None:
    with pytest.raises(ExportError, match=message):
        parse_export(data, "something.json", now=NOW)


# --- finding and reading sources ------------------------------------------------------------


def test_folders_are_walked_recursively_and_non_json_files_skipped(tmp_path: Path) -> None:
    rec.write(tmp_path / "a" / "StreamingHistory0.json", [rec.account(T0, "A", "B")])
    rec.write(
        tmp_path / "a" / "b" / "Streaming_History_Audio_2023.json", [rec.extended(T0, "A", "B")]
    )
    (tmp_path / "ReadMeFirst.pdf").write_bytes(b"%PDF-1.4")
    (tmp_path / ".DS_Store").write_bytes(b"\0")
    found = find_sources([tmp_path])
    files = {Path(s.label).name for s in found if isinstance(s, ExportFile)}
    skipped = {Path(s.label).name: s.reason for s in found if isinstance(s, SkippedSource)}
    assert files == {"StreamingHistory0.json", "Streaming_History_Audio_2023.json"}
    assert skipped == {"ReadMeFirst.pdf": "not a JSON file", ".DS_Store": "hidden file"}


def test_missing_path_is_reported(tmp_path: Path) -> None:
    assert find_sources([tmp_path / "nope"]) == [
        UnreadableSource(str(tmp_path / "nope"), "no such file or folder")
    ]


def test_zip_members_are_labelled_zip_bang_member(tmp_path: Path) -> None:
    history = rec.dumps([rec.extended(T0, "A", "B")])
    archive = rec.spotify_zip(tmp_path / "my_spotify_data.zip", {
        "Spotify Extended Streaming History/Streaming_History_Audio_2023.json": history,
        "Spotify Extended Streaming History/ReadMeFirst_ExtendedStreamingHistory.pdf": b"%PDF",
        "__MACOSX/Spotify Extended Streaming History/._Streaming_History_Audio_2023.json": b"\0\5",
    })  # fmt: skip
    found = find_sources([archive])
    member = "Spotify Extended Streaming History/Streaming_History_Audio_2023.json"
    files = [s for s in found if isinstance(s, ExportFile)]
    assert [f.label for f in files] == [f"{archive}!{member}"]
    assert files[0].name == "Streaming_History_Audio_2023.json"
    assert files[0].read() == history
    assert sum(isinstance(s, SkippedSource) for s in found) == 2


def test_corrupt_zip_is_unreadable(tmp_path: Path) -> None:
    good = rec.spotify_zip(
        tmp_path / "good.zip", {"Spotify Account Data/StreamingHistory0.json": b"[]" * 1000}
    )
    broken = tmp_path / "broken.zip"
    broken.write_bytes(
        good.read_bytes()[:-30]
    )  # the central directory cut off, as in a partial download
    [source] = find_sources([broken])
    assert isinstance(source, UnreadableSource)
    assert "corrupt zip" in source.error


def test_damaged_zip_member_fails_on_read(tmp_path: Path) -> None:
    data = rec.dumps([rec.extended(T0 + i, "A", f"B{i}") for i in range(200)])
    archive = rec.spotify_zip(
        tmp_path / "x.zip", {"Spotify Extended Streaming History/endsong_0.json": data}
    )
    raw = bytearray(archive.read_bytes())
    raw[200:260] = bytes(60)  # damage the deflate stream, keep the directory
    archive.write_bytes(bytes(raw))
    [source] = find_sources([archive])
    assert isinstance(source, ExportFile)
    with pytest.raises(ExportError, match="corrupt zip member"):
        source.read()


def test_zip_bomb_is_refused_by_ratio_before_memory_fills(tmp_path: Path) -> None:
    archive = tmp_path / "bomb.zip"
    with (
        zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as z,
        z.open("Spotify Account Data/StreamingHistory0.json", "w") as member,
    ):
        for _ in range(16):
            member.write(b" " * (1 << 20))  # 16 MiB of spaces deflate ~1000:1
    [source] = find_sources([archive])
    assert isinstance(source, ExportFile)
    with pytest.raises(ExportError, match="zip bomb"):
        source.read(ZipLimits(max_ratio=200, ratio_floor_bytes=4 << 20))


def test_zip_over_the_total_cap_is_not_unpacked(tmp_path: Path) -> None:
    data = rec.dumps([rec.account(T0 + i * 60, "A", f"B{i}") for i in range(2000)])
    archive = rec.spotify_zip(
        tmp_path / "big.zip",
        {f"Spotify Account Data/StreamingHistory{i}.json": data for i in range(3)},
    )
    [source] = find_sources([archive], ZipLimits(max_total_bytes=2 * len(data)))
    assert isinstance(source, UnreadableSource)
    assert "over the limit" in source.error


def test_member_over_the_size_cap_fails_even_if_its_header_lies(tmp_path: Path) -> None:
    data = rec.dumps([rec.account(T0 + i * 60, "A", f"B{i}") for i in range(3000)])
    archive = rec.spotify_zip(
        tmp_path / "x.zip", {"Spotify Account Data/StreamingHistory0.json": data}
    )
    [source] = find_sources([archive])
    assert isinstance(source, ExportFile)
    # A member that declares less than it holds: the reader counts what really comes out.
    lying = ExportFile(source.label, source.path, 100, source.member, source.compressed_size)
    with pytest.raises(ExportError):
        lying.read(ZipLimits(max_member_bytes=len(data) // 2))
    with pytest.raises(ExportError, match="zip bomb"):
        source.read(ZipLimits(max_member_bytes=len(data) // 2))


def test_a_file_still_being_written_is_refused(tmp_path: Path) -> None:
    path = rec.write(
        tmp_path / "StreamingHistory0.json",
        [rec.account(T0 + i * 60, "A", f"B{i}") for i in range(14_000)],
    )
    [source] = find_sources([path])
    assert isinstance(source, ExportFile)
    assert source.size > 1 << 20  # read in several chunks

    def writer_appends(_done: int) -> None:
        with path.open("ab") as fh:
            fh.write(b" ")

    with pytest.raises(ExportError, match="changed while it was read"):
        source.read(on_chunk=writer_appends)
    assert json.loads(source.read()) is not None  # once complete it reads fine


# --- the real corpus ----------------------------------------------------------------------


@pytest.mark.corpus
@pytest.mark.parametrize("name", CORPUS_NAMES)
def test_every_corpus_record_is_accounted_for(name: str) -> None:
    counts = corpus_source(name)
    folder = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus" / name
    for file, records in counts.items():
        result = parse_export((folder / file).read_bytes(), file, now=time.time())
        assert isinstance(result, ParsedExport), file
        assert result.format == name.split("-")[0]
        assert result.records == records
        assert len(result.rows) + sum(result.skipped.values()) == records
        if file.startswith("Streaming_History_Video_"):
            assert result.skipped == {"video": records}
        else:
            assert len(result.rows) > 0.8 * records
