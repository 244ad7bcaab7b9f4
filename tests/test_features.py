"""The feature cache: per-track features from plays, the feature matrix, the audio CSV."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from songnet_core.features import (
    AUDIO_COLUMNS,
    FEATURE_DIM,
    FEATURE_NAMES,
    MIN_FULL_LENGTH_MS,
    SKIP_MS,
    compute_track_features,
    feature_matrix,
    local_hours,
)
from songnet_core.history import Listen


def ts(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


def listen(pid: int, track: int, end: int, ms: int, skipped: bool | None = None) -> Listen:
    return Listen(play_id=pid, track_id=track, artist_id=track * 10, end_ts=end, ms_played=ms, skipped=skipped)


def test_counts_skips_completion_and_span() -> None:
    plays = [
        listen(1, 1, ts("2024-01-01T10:00:00"), 200_000),
        listen(2, 1, ts("2024-01-02T10:00:00"), 100_000),
        listen(3, 1, ts("2024-01-03T10:00:00"), 10_000),  # no flag, short: a skip
        listen(4, 2, ts("2024-01-01T11:00:00"), 240_000, skipped=True),  # the export says skipped
        listen(5, 2, ts("2024-01-05T11:00:00"), 5_000, skipped=False),  # the export says not
    ]
    f = compute_track_features(plays)
    assert set(f) == {1, 2}
    assert f[1].play_count == 3
    assert math.isclose(f[1].skip_rate, 1 / 3)
    # Full length estimated from the longest play (fewer than 20 plays): 200 s.
    assert math.isclose(f[1].mean_completion, (1.0 + 0.5 + 0.05) / 3)
    assert f[1].first_ts == ts("2024-01-01T10:00:00")
    assert f[1].last_ts == ts("2024-01-03T10:00:00")
    assert math.isclose(f[2].skip_rate, 0.5)
    assert f[2].first_ts == ts("2024-01-01T11:00:00")


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(1, 6),  # track
            st.integers(1_136_073_600, 1_900_000_000),  # end
            st.integers(-5, 900_000),  # ms played
            st.sampled_from([None, True, False]),
        ),
        min_size=1,
        max_size=300,
    )
)
def test_features_match_their_definition_track_by_track(
    plays: list[tuple[int, int, int, bool | None]],
) -> None:
    # The whole-array computation against the definition written out, one track at a time.
    berlin = ZoneInfo("Europe/Berlin")
    listens = [listen(i, t, end, ms, skipped) for i, (t, end, ms, skipped) in enumerate(plays)]
    got = compute_track_features(reversed(listens), tz=berlin)
    assert set(got) == {t for t, *_ in plays}
    for tid, f in got.items():
        mine = [x for x in listens if x.track_id == tid]
        n = len(mine)
        lengths = sorted(max(x.ms_played, 0) for x in mine)
        full = max(lengths[math.ceil(0.95 * n) - 1], MIN_FULL_LENGTH_MS)
        skips = [x.skipped if x.skipped is not None else x.ms_played < SKIP_MS for x in mine]
        hours = [
            datetime.fromtimestamp(x.end_ts - max(x.ms_played, 0) // 1000, berlin).hour
            for x in mine
        ]
        assert f.play_count == n
        assert math.isclose(f.skip_rate, sum(skips) / n)
        assert math.isclose(f.mean_completion, sum(min(m / full, 1.0) for m in lengths) / n)
        assert (f.first_ts, f.last_ts) == (min(x.end_ts for x in mine), max(x.end_ts for x in mine))
        assert f.hour_profile == tuple(hours.count(h) / n for h in range(24))


def test_only_skipped_track_does_not_look_fully_played() -> None:
    f = compute_track_features([listen(1, 7, ts("2024-01-01T10:00:00"), 9_000)])
    assert math.isclose(f[7].mean_completion, 9_000 / MIN_FULL_LENGTH_MS)


def test_full_length_ignores_a_rare_overlong_play() -> None:
    plays = [listen(i, 3, ts("2024-01-01T10:00:00") + i * 600, 180_000) for i in range(39)]
    plays.append(listen(99, 3, ts("2024-02-01T10:00:00"), 3_600_000))  # paused for an hour
    f = compute_track_features(plays)
    assert f[3].mean_completion > 0.95


def test_hour_profile_uses_the_zone_and_the_start_of_the_play() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    plays = [
        listen(1, 1, ts("2024-07-01T12:02:00"), 240_000),  # started 11:58 UTC = 13:58 CEST
        listen(2, 1, ts("2024-01-10T12:30:00"), 60_000),  # 12:29 UTC = 13:29 CET
        listen(3, 1, ts("2024-01-10T23:30:00"), 60_000),  # 00:29 next day CET
    ]
    profile = compute_track_features(plays, tz=berlin)[1].hour_profile
    assert len(profile) == 24
    assert math.isclose(profile[13], 2 / 3)
    assert math.isclose(profile[0], 1 / 3)
    assert math.isclose(sum(profile), 1.0)
    utc_profile = compute_track_features(plays)[1].hour_profile
    assert math.isclose(utc_profile[11], 1 / 3) and math.isclose(utc_profile[12], 1 / 3)


@settings(max_examples=60, deadline=None)
@given(
    stamps=st.lists(st.integers(min_value=0, max_value=2_000_000_000), min_size=1, max_size=40),
    zone=st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu"]),
)
def test_local_hours_match_datetime(stamps: list[int], zone: str) -> None:
    tz = ZoneInfo(zone)
    got = local_hours(np.asarray(stamps, dtype=np.int64), tz)
    assert got.tolist() == [datetime.fromtimestamp(s, tz).hour for s in stamps]


@pytest.mark.parametrize(
    "zone", ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "America/Sao_Paulo"]
)
def test_local_hours_match_datetime_through_every_change_of_a_year(zone: str) -> None:
    # Every quarter hour of 2023 and 2024 (some seconds into it): the days the zone changes
    # its offset are converted quarter by quarter, the others from their two ends.
    stamps = np.arange(ts("2023-01-01T00:00:00"), ts("2025-01-01T00:00:00"), 900) + 437
    tz = ZoneInfo(zone)
    expected = [datetime.fromtimestamp(int(t), tz).hour for t in stamps]
    assert local_hours(stamps, tz).tolist() == expected


def test_matrix_rows_are_bounded_and_missing_values_filled() -> None:
    plays = [listen(i, 1 + i % 3, ts("2024-01-01T10:00:00") + i * 3600, 150_000 + i) for i in range(30)]
    f = compute_track_features(plays)
    audio = {
        1: {"danceability": 0.8, "tempo": 128.0, "loudness": -5.0, "energy": float("nan")},
        2: dict.fromkeys(AUDIO_COLUMNS, 0.5),
    }
    ids = [1, 2, 3, 404]  # 404 was never played and has no audio features
    m = feature_matrix(ids, f, audio)
    assert m.shape == (4, FEATURE_DIM) == (4, len(FEATURE_NAMES))
    assert m.dtype == np.float32
    assert np.isfinite(m).all() and (m >= 0).all() and (m <= 1).all()
    col = {name: i for i, name in enumerate(FEATURE_NAMES)}
    assert m[:3, col["has_history"]].tolist() == [1, 1, 1]
    assert m[3, col["has_history"]] == 0 and m[3, col["log_play_count"]] == 0
    assert math.isclose(m[0, col["audio_coverage"]], 3 / len(AUDIO_COLUMNS), rel_tol=1e-6)
    assert m[1, col["audio_coverage"]] == 1.0 and m[2, col["audio_coverage"]] == 0.0
    assert math.isclose(m[0, col["danceability"]], 0.8, rel_tol=1e-6)
    assert math.isclose(m[0, col["tempo"]], 128 / 250, rel_tol=1e-6)
    assert math.isclose(m[0, col["loudness"]], 55 / 60, rel_tol=1e-6)
    # The most recent track is fully recent; hour shares sum to one.
    assert m[:3, col["recency"]].max() == 1.0
    hours = [col[f"hour_{h:02d}"] for h in range(24)]
    assert np.allclose(m[:3, hours].sum(axis=1), 1.0)


def test_matrix_row_does_not_depend_on_the_batch() -> None:
    plays = [listen(i, 1 + i % 5, ts("2024-03-01T08:00:00") + i * 999, 100_000 + 1000 * i) for i in range(50)]
    f = compute_track_features(plays)
    whole = feature_matrix([1, 2, 3, 4, 5], f)
    alone = feature_matrix([4], f)
    assert np.array_equal(whole[3], alone[0])


# --- The SQLite cache: audio-features CSV and the combined matrix ---------------------------

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from sqlalchemy import Engine  # noqa: E402

from service import tables  # noqa: E402
from service.db import open_database, session_scope  # noqa: E402
from service.features import (  # noqa: E402
    AudioCsvError,
    import_audio_features_csv,
    load_audio_features,
    load_feature_matrix,
    normalise_track_uri,
)

ID1, ID2, ID3 = "4uLU6hMCjMI75M1A2tKUQC", "7GhIk7Il098yCjg4BQjzvb", "0VjIjW4GlUZAMYd2vXMi3b"


@pytest.fixture
def library_db(tmp_path: Path) -> Engine:
    """Two tracks: one with a preferred URI, one known by an alias URI only."""
    engine = open_database(tmp_path / "data")
    with session_scope(engine) as s:
        s.add(tables.Artist(id=1, key="a", name="A"))
        s.add(tables.Track(id=1, key="a\x1fone", artist_id=1, title="One", uri=f"spotify:track:{ID1}"))
        s.add(tables.Track(id=2, key="a\x1ftwo", artist_id=1, title="Two"))
        s.add(tables.Track(id=3, key="a\x1fthree", artist_id=1, title="Three"))
        s.flush()
        s.add(tables.TrackUri(uri=f"spotify:track:{ID1}", track_id=1))
        s.add(tables.TrackUri(uri=f"spotify:track:{ID2}", track_id=2))
    return engine


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def test_track_ids_in_every_spelling() -> None:
    assert normalise_track_uri(ID1) == f"spotify:track:{ID1}"
    assert normalise_track_uri(f" spotify:track:{ID1} ") == f"spotify:track:{ID1}"
    assert normalise_track_uri(f"https://open.spotify.com/track/{ID1}?si=x") == f"spotify:track:{ID1}"
    assert normalise_track_uri("spotify:album:" + ID1) is None
    assert normalise_track_uri("not an id") is None


def test_kaggle_csv_rows_stored_and_bad_rows_counted(library_db: Engine, tmp_path: Path) -> None:
    csv_path = write(
        tmp_path / "tracks.csv",
        "id,name,danceability,energy,valence,tempo,loudness,duration_ms\n"
        f"{ID1},One,0.8,0.7,0.6,120.5,-5.2,200000\n"
        f"{ID2},Two,0.1,nan,,90,-12,180000\n"  # nan and empty: those values left out
        f"{ID3},Three,0.5,0.5,0.5,100,-8,1\n"  # not in the library: stored all the same
        ",No id,0.5,0.5,0.5,100,-8,1\n"
        "garbage,Bad id,0.5,0.5,0.5,100,-8,1\n"
        f"{ID3},Text,high,low,mid,fast,loud,long\n"  # no usable audio value
        f"{ID2},Broken,0.1,0.2,0.3,90,-12,180000,surplus\n"
        f"{ID1},One again,0.9,0.7,0.6,120.5,-5.2,200000\n",  # a later duplicate wins
    )
    report = import_audio_features_csv(library_db, csv_path)
    assert report.rows == 8
    assert report.bad_rows == {"no track id": 2, "no audio values": 1, "extra fields": 1}
    assert report.duplicates == 1
    assert report.stored == 3
    assert report.rows == report.stored + report.duplicates + sum(report.bad_rows.values())
    assert report.columns == ["danceability", "energy", "valence", "tempo", "loudness"]
    assert report.matched_tracks == 2  # track 1 by its URI, track 2 by an alias
    audio = load_audio_features(library_db)
    assert audio[1]["danceability"] == 0.9 and audio[1]["duration_ms"] == 200000
    assert "energy" not in audio[2] and "valence" not in audio[2] and audio[2]["tempo"] == 90
    m = load_feature_matrix(library_db, [1, 2, 3])
    col = {name: i for i, name in enumerate(FEATURE_NAMES)}
    assert math.isclose(m[0, col["danceability"]], 0.9, rel_tol=1e-6)
    assert math.isclose(m[1, col["audio_coverage"]], 3 / len(AUDIO_COLUMNS), rel_tol=1e-6)
    assert m[2, col["audio_coverage"]] == 0.0 and m[2, col["has_history"]] == 0.0
    assert np.isfinite(m).all()
    # Importing again changes nothing.
    again = import_audio_features_csv(library_db, csv_path)
    assert again.stored == 3 and load_audio_features(library_db) == audio


def test_uri_column_and_semicolons(library_db: Engine, tmp_path: Path) -> None:
    path = write(tmp_path / "f.csv", f"\ufeffTrack_URI;Energy;Speechiness\nspotify:track:{ID2};0,5;0.04\n")
    report = import_audio_features_csv(library_db, path)
    # "0,5" is not a number; speechiness still makes the row usable.
    assert report.stored == 1 and report.bad_rows == {}
    assert load_audio_features(library_db)[2] == {"speechiness": 0.04}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "empty"),
        ("name,artist\nx,y\n", "no track column"),
        ("id,name,artist\nx,y,z\n", "none of the audio feature columns"),
    ],
)
def test_unusable_files_fail_with_a_reason_and_store_nothing(
    library_db: Engine, tmp_path: Path, content: str, message: str
) -> None:
    with pytest.raises(AudioCsvError, match=message):
        import_audio_features_csv(library_db, write(tmp_path / "x.csv", content))
    assert load_audio_features(library_db) == {}


def test_non_utf8_and_missing_files(library_db: Engine, tmp_path: Path) -> None:
    latin = write(tmp_path / "latin.csv", f"id,danceability,name\n{ID1},0.5,Beyoncé\n", "latin-1")
    with pytest.raises(AudioCsvError, match="UTF-8"):
        import_audio_features_csv(library_db, latin)
    with pytest.raises(AudioCsvError, match="cannot read"):
        import_audio_features_csv(library_db, tmp_path / "missing.csv")
    assert load_audio_features(library_db) == {}


def test_recompute_features_from_the_stored_history(tmp_path: Path) -> None:
    from service.features import load_track_features, recompute_features
    from service.library import load_listens
    from songnet_core.synthetic import SyntheticConfig, generate_plays
    from tests.library_rows import store_plays

    engine = open_database(tmp_path / "data")
    plays = generate_plays(SyntheticConfig(n_plays=3000, n_artists=40, n_clusters=4, seed=3))
    store_plays(engine, plays)
    berlin = ZoneInfo("Europe/Berlin")
    n = recompute_features(engine, tz=berlin, now=123)
    cached = load_track_features(engine)
    expected = compute_track_features(load_listens(engine), tz=berlin)
    assert n == len(cached) == len(expected) == len({p.key for p in plays})
    assert sum(f.play_count for f in cached.values()) == len(plays)
    some = next(iter(expected))
    assert cached[some].play_count == expected[some].play_count
    assert np.allclose(cached[some].hour_profile, expected[some].hour_profile, atol=1e-5)
    # Recomputing replaces the cache rather than adding to it.
    assert recompute_features(engine, tz=berlin) == n
    assert len(load_track_features(engine)) == n
    m = load_feature_matrix(engine, sorted(cached))
    assert m.shape == (n, FEATURE_DIM) and np.isfinite(m).all()
    assert m[:, FEATURE_NAMES.index("recency")].max() == 1.0


def test_features_import_csv_command(library_db: Engine, tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from service.cli import app

    data_dir = tmp_path / "data"  # where library_db lives
    good = write(tmp_path / "audio.csv", f"id,danceability,energy\n{ID1},0.7,0.4\n,0.1,0.1\n")
    runner = CliRunner()
    result = runner.invoke(app, ["--data-dir", str(data_dir), "features", "import-csv", str(good), "--json"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["rows"] == 2 and report["stored"] == 1 and report["bad_rows"] == {"no track id": 1}
    assert report["matched_tracks"] == 1
    table = runner.invoke(app, ["--data-dir", str(data_dir), "features", "import-csv", str(good)])
    assert table.exit_code == 0 and "no track id: 1" in table.stderr and table.stdout == ""
    bad = write(tmp_path / "bad.csv", "name\nx\n")
    failed = runner.invoke(app, ["--data-dir", str(data_dir), "features", "import-csv", str(bad), "--json"])
    assert failed.exit_code == 1
    assert "no track column" in json.loads(failed.stdout)["error"] and "no track column" in failed.stderr
