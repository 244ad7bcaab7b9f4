"""The synthetic listener: determinism, the files as Spotify writes them, and the structure in
the plays that a sequence model is meant to find."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import UTC, date, datetime
from functools import cache
from itertools import pairwise
from pathlib import Path

import pytest

from songnet_core import synthetic
from songnet_core.history import Play
from songnet_core.sessions import split_sessions
from songnet_core.synthetic import SyntheticConfig

EXTENDED_FIELDS = [
    "ts", "platform", "ms_played", "conn_country", "ip_addr", "master_metadata_track_name",
    "master_metadata_album_artist_name", "master_metadata_album_album_name", "spotify_track_uri",
    "episode_name", "episode_show_name", "spotify_episode_uri", "audiobook_title", "audiobook_uri",
    "audiobook_chapter_uri", "audiobook_chapter_title", "reason_start", "reason_end", "shuffle",
    "skipped", "offline", "offline_timestamp", "incognito_mode",
]  # fmt: skip
ACCOUNT_FIELDS = ["endTime", "artistName", "trackName", "msPlayed"]
CONFIG = SyntheticConfig(n_plays=8000, seed=7)


@cache
def plays_of(config: SyntheticConfig) -> tuple[Play, ...]:
    return tuple(synthetic.generate_plays(config))


def test_generates_exactly_n_plays_sorted_by_end_time() -> None:
    plays = plays_of(CONFIG)
    assert len(plays) == CONFIG.n_plays
    assert [p.end_ts for p in plays] == sorted(p.end_ts for p in plays)
    assert plays[0].end_ts >= datetime(2021, 12, 31, 23, tzinfo=UTC).timestamp()
    assert all(p.source == "extended" and p.uri and p.uri.startswith("spotify:track:") for p in plays)
    assert synthetic.generate_plays(SyntheticConfig(n_plays=0)) == []


def test_same_seed_same_plays_other_seed_other_plays() -> None:
    small = SyntheticConfig(n_plays=500, seed=3)
    assert synthetic.generate_plays(small) == synthetic.generate_plays(small)
    other = synthetic.generate_plays(SyntheticConfig(n_plays=500, seed=4))
    assert [p.key for p in other] != [p.key for p in synthetic.generate_plays(small)]


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    plays = plays_of(CONFIG)

    def write(folder: Path, seed: int) -> dict[str, bytes]:
        paths = synthetic.write_extended_export(plays, folder / "ext", records_per_file=3000, seed=seed)
        paths += synthetic.write_account_export(plays, folder / "acc")
        return {p.relative_to(folder).as_posix(): p.read_bytes() for p in paths}

    first, second, other = write(tmp_path / "a", 1), write(tmp_path / "b", 1), write(tmp_path / "c", 2)
    assert first == second
    assert first.keys() == other.keys() and first != other
    # No temporary files are left behind.
    assert sorted(p.name for p in (tmp_path / "a" / "ext").iterdir()) == sorted(
        Path(k).name for k in first if k.startswith("ext/")
    )


def test_extended_files_are_written_as_spotify_writes_them(tmp_path: Path) -> None:
    plays = plays_of(CONFIG)
    paths = synthetic.write_extended_export(plays, tmp_path, records_per_file=3000, seed=1)
    audio = [p for p in paths if p.name.startswith("Streaming_History_Audio_")]
    video = [p for p in paths if p.name.startswith("Streaming_History_Video_")]
    assert [p.name for p in audio] == [
        p.name for p in sorted(audio, key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    ]
    assert all(re.fullmatch(r"Streaming_History_Audio_\d{4}(-\d{4})?_\d+\.json", p.name) for p in audio)
    assert len(video) == 1 and re.fullmatch(r"Streaming_History_Video_\d{4}(-\d{4})?\.json", video[0].name)

    music: list[dict[str, object]] = []
    kinds: Counter[str] = Counter()
    for path in audio:
        text = path.read_text(encoding="utf-8")
        records = json.loads(text)
        # 2-space indentation, UTF-8 unescaped, no trailing newline: json.dump's own layout.
        assert text == json.dumps(records, indent=2, ensure_ascii=False)
        assert 0 < len(records) <= 3000
        years = {r["ts"][:4] for r in records}
        assert path.name.split("_")[3] in (min(years), f"{min(years)}-{max(years)}")
        for r in records:
            assert list(r) == EXTENDED_FIELDS
            assert r["ip_addr"] is None
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", r["ts"])
            if r["master_metadata_track_name"]:
                kinds["music"] += 1
                music.append(r)
            elif r["episode_name"]:
                kinds["episode"] += 1
                assert str(r["spotify_episode_uri"]).startswith("spotify:episode:")
            elif r["audiobook_title"]:
                kinds["audiobook"] += 1
                assert r["audiobook_chapter_title"] and r["audiobook_uri"]
            else:
                kinds["no_track"] += 1
        all_ts = [r["ts"] for r in records]
        assert all_ts == sorted(all_ts)
    assert kinds["music"] == len(plays)
    assert kinds["episode"] > 0 and kinds["audiobook"] > 0 and kinds["no_track"] > 0
    # The music records are the plays, field for field.
    for play, rec in zip(plays, music, strict=True):
        assert rec["ts"] == datetime.fromtimestamp(play.end_ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        assert (rec["ms_played"], rec["master_metadata_track_name"], rec["master_metadata_album_artist_name"]) == (
            play.ms_played, play.title, play.artist)  # fmt: skip
        assert (rec["spotify_track_uri"], rec["skipped"], rec["reason_end"], rec["shuffle"]) == (
            play.uri, play.skipped, play.reason_end, play.shuffle)  # fmt: skip
    videos = json.loads(video[0].read_text(encoding="utf-8"))
    assert videos and all(list(r) == EXTENDED_FIELDS for r in videos)


def test_without_extras_only_music_is_written(tmp_path: Path) -> None:
    plays = plays_of(CONFIG)[:500]
    paths = synthetic.write_extended_export(plays, tmp_path, extras=False)
    assert [p.name for p in paths] == ["Streaming_History_Audio_2022.json"]
    records = json.loads(paths[0].read_text(encoding="utf-8"))
    assert len(records) == 500 and all(r["master_metadata_track_name"] for r in records)


def test_account_export_truncates_end_times_to_the_minute(tmp_path: Path) -> None:
    plays = plays_of(CONFIG)
    paths = synthetic.write_account_export(plays, tmp_path, records_per_file=3000)
    assert [p.name for p in paths] == [f"StreamingHistory_music_{n}.json" for n in range(3)]
    records = []
    for path in paths:
        text = path.read_text(encoding="utf-8")
        assert text == json.dumps(json.loads(text), indent=2, ensure_ascii=False)
        records += json.loads(text)
    assert [len(json.loads(p.read_text())) for p in paths] == [3000, 3000, 2000]
    for play, rec in zip(plays, records, strict=True):
        assert list(rec) == ACCOUNT_FIELDS
        minute = datetime.fromtimestamp(play.end_ts - play.end_ts % 60, UTC).strftime("%Y-%m-%d %H:%M")
        assert rec == {"endTime": minute, "artistName": play.artist, "trackName": play.title,
                       "msPlayed": play.ms_played}  # fmt: skip
    assert synthetic.write_account_export([], tmp_path / "empty") == []
    # Spotify's own page size.
    assert synthetic.ACCOUNT_RECORDS_PER_FILE == 10_000


def test_account_period_is_the_last_days_before_the_request() -> None:
    plays = list(plays_of(CONFIG))
    end = plays[-1].end_ts - 30 * 86_400
    period = synthetic.account_period(plays, days=90, end_ts=end)
    assert period == [p for p in plays if end - 90 * 86_400 < p.end_ts <= end]
    assert 0 < len(period) < len(plays)
    assert synthetic.account_period(plays)[-1] == plays[-1]
    assert synthetic.account_period([]) == []


def test_plays_of_one_track_never_end_within_the_pairing_window() -> None:
    last: dict[str, int] = {}
    for p in plays_of(CONFIG):
        assert p.end_ts - last.get(p.key, -(10**9)) >= synthetic.MIN_SAME_TRACK_GAP_S
        last[p.key] = p.end_ts


def test_listening_looks_like_listening() -> None:
    plays = plays_of(CONFIG)
    listener = synthetic.build_listener(CONFIG)
    by_key = {t.key: t for t in listener.tracks}
    # Skips: flagged, short, ended with the forward button; about the configured share.
    skipped = [p for p in plays if p.skipped]
    assert 0.15 < len(skipped) / len(plays) < 0.25
    assert Counter(p.reason_end for p in skipped).most_common(1)[0][0] == "fwdbtn"
    assert sum(p.ms_played < 30_000 for p in skipped) / len(skipped) > 0.7
    done = [p for p in plays if p.reason_end == "trackdone"]
    assert all(by_key[p.key].duration_ms - 400 <= p.ms_played <= by_key[p.key].duration_ms for p in done)
    # Repeats, album-order runs, shuffle sessions, popularity skew.
    pairs = list(pairwise(plays))
    assert sum(a.key == b.key for a, b in pairs) > 0.005 * len(plays)
    in_order = sum(
        a.album == b.album and a.artist == b.artist
        and by_key[b.key].album_position == by_key[a.key].album_position + 1
        for a, b in pairs
    )  # fmt: skip
    assert in_order > 0.02 * len(plays)
    assert 0.2 < sum(bool(p.shuffle) for p in plays) / len(plays) < 0.5
    counts = Counter(p.key for p in plays).most_common()
    assert counts[0][1] > 10 * counts[len(counts) // 2][1]
    # Several URIs for some tracks.
    uris = defaultdict(set)
    for p in plays:
        uris[p.key].add(p.uri)
    assert any(len(u) == 2 for u in uris.values())
    # Time-of-day habits (local time): evenings are busy, small hours quiet.
    hours = Counter((p.end_ts // 3600 + CONFIG.utc_offset_hours) % 24 for p in plays)
    assert sum(hours[h] for h in range(18, 22)) > 4 * sum(hours[h] for h in range(3, 7))


def test_clusters_follow_the_listeners_transitions() -> None:
    """Next cluster given the current one is far better predicted than by popularity alone."""
    listener = synthetic.build_listener(CONFIG)
    cluster_of = listener.cluster_of_track()
    sessions = split_sessions(plays_of(CONFIG))
    steps = [(cluster_of[a.key], cluster_of[b.key]) for s in sessions for a, b in pairwise(s)]
    moves = [(a, b) for a, b in steps if a != b]
    assert len(moves) > 500
    # Most moves between clusters go to the listener's favoured successors...
    favoured = sum(b in listener.favoured_successors[a] for a, b in moves) / len(moves)
    assert favoured > 0.6
    # ... so a first-order model learnt on the first half beats popularity on the second.
    half = len(moves) // 2
    marginal = Counter(b for _, b in moves[:half]).most_common(1)[0][0]
    table: dict[int, Counter[int]] = defaultdict(Counter)
    for a, b in moves[:half]:
        table[a][b] += 1
    test = moves[half:]
    by_popularity = sum(b == marginal for _, b in test) / len(test)
    by_transition = sum(bool(table[a]) and table[a].most_common(1)[0][0] == b for a, b in test) / len(test)
    assert by_transition > by_popularity + 0.2
    # Rows of the transition matrix are distributions.
    assert all(abs(sum(row) - 1.0) < 1e-9 for row in listener.transitions)


def test_invalid_configs_are_refused() -> None:
    with pytest.raises(ValueError, match="n_plays"):
        SyntheticConfig(n_plays=-1)
    with pytest.raises(ValueError, match="cluster"):
        SyntheticConfig(n_artists=3, n_clusters=5)
    with pytest.raises(ValueError, match="skip_rate"):
        SyntheticConfig(skip_rate=1.5)
    with pytest.raises(ValueError, match="records_per_file"):
        synthetic.write_extended_export([], Path("unused"), records_per_file=0)


def test_tiny_catalogues_work(tmp_path: Path) -> None:
    config = SyntheticConfig(n_plays=300, n_artists=1, tracks_per_artist=2, n_clusters=1,
                             start=date(2020, 2, 28), seed=11)  # fmt: skip
    plays = synthetic.generate_plays(config)
    assert len(plays) == 300 and len({p.key for p in plays}) == 2
    assert synthetic.write_extended_export(plays, tmp_path, extras=True)


def test_write_exports_lays_out_two_overlapping_exports(tmp_path: Path) -> None:
    plays = list(plays_of(CONFIG))
    written = synthetic.write_exports(plays, tmp_path, seed=2, account_days=200, account_lag_days=30)
    assert {p.parent.name for p in written["account"]} == {"Spotify Account Data"}
    assert {p.parent.name for p in written["extended"]} == {"Spotify Extended Streaming History"}
    account = [r for p in written["account"] for r in json.loads(p.read_text(encoding="utf-8"))]
    last = plays[-1].end_ts - 30 * 86_400
    period = [p for p in plays if last - 200 * 86_400 < p.end_ts <= last]
    assert [(r["artistName"], r["trackName"], r["msPlayed"]) for r in account] == [
        (p.artist, p.title, p.ms_played) for p in period
    ]
    # Part of the history is in both exports, part only in the extended one.
    assert 0 < len(account) < len(plays)
    only_extended = synthetic.write_exports(plays, tmp_path / "x", formats=["extended"], extras=False)
    assert list(only_extended) == ["extended"]
    with pytest.raises(ValueError, match="unknown export format"):
        synthetic.write_exports(plays, tmp_path / "y", formats=["csv"])


def test_the_script_writes_exports_and_refuses_to_mix_runs(tmp_path: Path) -> None:
    script = Path(__file__).resolve().parent.parent / "scripts" / "make_synthetic_export.py"
    out = tmp_path / "export"
    args = [sys.executable, str(script), "--plays", "1200", "--seed", "9", "--account-lag-days", "10", "--out", str(out)]
    done = subprocess.run(args, capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["plays"] == 1200 and summary["bytes"] > 0
    extended = [Path(p) for p in summary["files"]["extended"]]
    music = [r for p in extended if "Audio" in p.name
             for r in json.loads(p.read_text(encoding="utf-8")) if r["master_metadata_track_name"]]  # fmt: skip
    expected = synthetic.generate_plays(SyntheticConfig(n_plays=1200, seed=9))
    assert [(r["master_metadata_track_name"], r["ms_played"]) for r in music] == [(p.title, p.ms_played) for p in expected]
    assert summary["files"]["account"]
    again = subprocess.run(args, capture_output=True, text=True, check=False, timeout=120)
    assert again.returncode == 2 and "not empty" in again.stderr


@pytest.mark.parametrize("account_first", [True, False], ids=["account-first", "extended-first"])
def test_overlapping_exports_import_as_exactly_the_synthetic_plays(tmp_path: Path, account_first: bool) -> None:
    """Both exports of one listener, imported in either order: every play once, no doubles."""
    from service.db import open_database
    from service.importer import import_paths
    from service.library import load_listens, load_tracks

    plays = list(plays_of(CONFIG))
    written = synthetic.write_exports(plays, tmp_path / "export", seed=3)
    account_records = sum(len(json.loads(p.read_text(encoding="utf-8"))) for p in written["account"])
    assert 0 < account_records < len(plays)
    files = written["account"] + written["extended"] if account_first else written["extended"] + written["account"]
    engine = open_database(tmp_path / "data")
    results = import_paths(engine, files)
    assert {r.status for r in results} == {"imported"}
    assert sum(r.imported for r in results) == len(plays)
    assert sum(r.duplicates for r in results) == account_records
    tracks = load_tracks(engine)
    stored = sorted(
        (tracks[x.track_id].artist, tracks[x.track_id].title, x.end_ts, x.ms_played, x.skipped)
        for x in load_listens(engine)
    )
    # The richer extended record is what stays: exact end times and skip flags.
    assert stored == sorted((p.artist, p.title, p.end_ts, p.ms_played, p.skipped) for p in plays)
    # Importing both again changes nothing.
    assert {r.status for r in import_paths(engine, files)} == {"already-imported"}
    assert len(load_listens(engine)) == len(plays)
