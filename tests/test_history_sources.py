"""ListenBrainz and Last.fm pulls against real HTTP fakes on 127.0.0.1, and the dedup rule
across sources (a pulled listen that overlaps an export play is stored once, the richer)."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import Engine

from service.db import open_database
from service.importer import import_paths
from service.pull import pull_source, stored_state
from service.sources.http_json import Retry
from service.sources.lastfm import LastFm
from service.sources.listenbrainz import ListenBrainz
from songnet_core.play_sources import (
    ACCOUNT,
    EXTENDED,
    SCROBBLE_MIN_MS,
    play_source,
    same_listening,
)
from tests.conftest import logged
from tests.export_records import account, extended, write
from tests.fake_history import FakeHistory, Fault

T0 = 1_700_000_000  # a Tuesday, 22:13 UTC


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    return open_database(tmp_path / "data")


def plays(engine: Engine) -> list[tuple[str, str, int, int]]:
    """(source, title, end_ts, ms_played) of every stored play, by time."""
    url = engine.url.database
    assert url is not None
    con = sqlite3.connect(url)
    try:
        return list(
            con.execute(
                "SELECT p.source, t.title, p.end_ts, p.ms_played FROM play p"
                " JOIN track t ON t.id = p.track_id ORDER BY p.end_ts, t.title"
            )
        )
    finally:
        con.close()


def listenbrainz(fake: FakeHistory, sleeps: Sleeps, **kw: object) -> ListenBrainz:
    source = ListenBrainz(fake.lb_user, root=fake.url, sleep=sleeps, **kw)  # type: ignore[arg-type]
    source.api.retry = Retry(max_attempts=3, initial_backoff=1.0)
    return source


# -- the rule ------------------------------------------------------------------------------


def test_the_rule_knows_each_sources_clock() -> None:
    lb = play_source("listenbrainz")
    # A 200 s play started at T0: the account export says it ended in minute T0+200 (truncated),
    # ListenBrainz that it started at T0.
    account_end = (T0 + 200) // 60 * 60
    assert same_listening(ACCOUNT, account_end, 200_000, lb, lb.stored_end_ts(T0, 200_000), 200_000)
    # Without a duration the listen is stored as 30 s from its start: still the same listening.
    assert same_listening(
        ACCOUNT, account_end, 200_000, lb, lb.stored_end_ts(T0, SCROBBLE_MIN_MS), SCROBBLE_MIN_MS
    )
    # The next play of the same track, 200 s later, is another listening.
    assert not same_listening(
        EXTENDED, T0 + 400, 200_000, lb, lb.stored_end_ts(T0, 200_000), 200_000
    )
    assert EXTENDED.rank > lb.rank > play_source("lastfm").rank > ACCOUNT.rank


# -- ListenBrainz --------------------------------------------------------------------------


def test_listenbrainz_pages_through_the_history_and_then_pulls_only_what_is_new(
    fake_history: FakeHistory, engine: Engine
) -> None:
    for i in range(25):
        fake_history.add_listen(T0 + 300 * i, "Artist", f"Song {i}", duration_ms=180_000)
    sleeps = Sleeps()
    source = listenbrainz(fake_history, sleeps, page_size=10)
    seen: list[int] = []
    outcome = pull_source(engine, source, on_progress=lambda n, _t, _l: seen.append(n))
    assert outcome.error is None
    # After a full page the next one repeats its newest second: one listen comes twice.
    assert [p.records for p in outcome.pages] == [10, 10, 7]
    assert [p.duplicates for p in outcome.pages] == [0, 1, 1]
    assert seen == [10, 20, 27]
    stored = plays(engine)
    assert len(stored) == 25
    assert {s[0] for s in stored} == {"listenbrainz"}
    # listened_at is the start: the stored end is start + duration.
    assert stored[0][2:] == (T0 + 180, 180_000)
    state = stored_state(engine, "listenbrainz", "listener")
    assert state is not None and state.watermark == T0 + 300 * 24
    assert (state.records, state.imported, state.last_error) == (27, 25, None)

    fake_history.add_listen(T0 + 300 * 30, "Artist", "Song new")
    before = fake_history.count("lb")
    again = pull_source(engine, source)
    assert again.imported == 1
    assert fake_history.count("lb") == before + 1
    assert fake_history.requests[-1][1]["min_ts"] == str(T0 + 300 * 24)
    assert len(plays(engine)) == 26


def test_listenbrainz_rate_limit_headers_are_honoured_with_the_injected_sleep(
    fake_history: FakeHistory, engine: Engine
) -> None:
    fake_history.add_listen(T0, "A", "One")
    fake_history.add_listen(T0 + 300, "A", "Two")
    fake_history.add_listen(T0 + 600, "A", "Three")
    fake_history.lb_remaining = 0
    fake_history.lb_reset_in = 7
    fake_history.fail("lb", Fault(429, b"{}", {"X-RateLimit-Reset-In": "5"}))
    sleeps = Sleeps()
    outcome = pull_source(engine, listenbrainz(fake_history, sleeps, page_size=2))
    assert outcome.error is None and outcome.imported == 3
    assert [p.records for p in outcome.pages] == [2, 2, 1]
    # The 429 waits its Reset-In; an answer with nothing remaining waits before the next
    # request, and not after the last one.
    assert sleeps == [5.0, 7.0, 7.0]


def test_listenbrainz_5xx_and_malformed_json_are_retried(
    fake_history: FakeHistory, engine: Engine
) -> None:
    fake_history.add_listen(T0, "A", "One")
    fake_history.fail("lb", Fault(503), Fault(200, b"<html>not json"))
    sleeps = Sleeps()
    outcome = pull_source(engine, listenbrainz(fake_history, sleeps))
    assert outcome.error is None and outcome.imported == 1
    assert sleeps == [1.0, 2.0]


def test_listenbrainz_down_fails_the_pull_keeps_the_watermark_and_the_next_pull_resumes(
    fake_history: FakeHistory, engine: Engine
) -> None:
    for i in range(15):
        fake_history.add_listen(T0 + 300 * i, "Artist", f"Song {i}")
    sleeps = Sleeps()
    source = listenbrainz(fake_history, sleeps, page_size=10)
    # The first page arrives, then the service is down for every retry of the second.
    original = fake_history.listenbrainz
    calls = {"n": 0}

    def flaky(path, query, headers):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] >= 2:
            return 502, {"error": "bad gateway"}, {}
        return original(path, query, headers)

    fake_history.listenbrainz = flaky  # type: ignore[method-assign]
    failed = pull_source(engine, source)
    assert failed.error is not None and "502" in failed.error
    assert failed.imported == 10
    state = stored_state(engine, "listenbrainz", "listener")
    assert state is not None and state.last_error == failed.error and not state.refused
    assert state.watermark == T0 + 300 * 9 - 1  # a full page: its newest second is asked again

    fake_history.listenbrainz = original  # type: ignore[method-assign]
    resumed = pull_source(engine, source)
    assert resumed.error is None
    assert resumed.imported == 5 and sum(p.duplicates for p in resumed.pages) == 1
    assert len(plays(engine)) == 15
    state = stored_state(engine, "listenbrainz", "listener")
    assert state is not None and state.last_error is None


def test_a_listen_without_a_track_name_is_skipped_and_counted(
    fake_history: FakeHistory, engine: Engine
) -> None:
    fake_history.add_listen(T0, "A", "One")
    fake_history.add_listen(T0 + 300, "A", "")
    fake_history.listens.append({"listened_at": T0 + 600, "track_metadata": {"artist_name": "A"}})
    outcome = pull_source(engine, listenbrainz(fake_history, Sleeps()))
    total = outcome.summary()
    assert (total.records, total.imported, total.skipped) == (3, 1, {"no_track": 2})
    assert total.balanced


def test_the_same_listen_twice_is_one_play(fake_history: FakeHistory, engine: Engine) -> None:
    fake_history.add_listen(T0, "A", "One", duration_ms=200_000)
    fake_history.add_listen(T0, "A", "One", duration_ms=200_000)
    fake_history.add_listen(T0 + 1, "a", "ONE")  # the same song, spelt otherwise, no duration
    outcome = pull_source(engine, listenbrainz(fake_history, Sleeps()))
    total = outcome.summary()
    assert (total.records, total.imported, total.duplicates) == (3, 1, 2)
    assert len(plays(engine)) == 1


def test_a_private_listenbrainz_account_needs_the_token_and_a_wrong_one_is_refused(
    fake_history: FakeHistory, engine: Engine
) -> None:
    fake_history.lb_token = "secret-token"
    fake_history.add_listen(T0, "A", "One")
    wrong = pull_source(engine, listenbrainz(fake_history, Sleeps(), token="revoked"))
    assert wrong.refused and "SONGNET_LISTENBRAINZ_TOKEN" in (wrong.error or "")
    state = stored_state(engine, "listenbrainz", "listener")
    assert state is not None and state.refused
    right = pull_source(engine, listenbrainz(fake_history, Sleeps(), token="secret-token"))
    assert right.error is None and right.imported == 1
    state = stored_state(engine, "listenbrainz", "listener")
    assert state is not None and not state.refused and state.last_error is None


def test_an_unknown_listenbrainz_user_is_refused(fake_history: FakeHistory, engine: Engine) -> None:
    source = ListenBrainz("nobody", root=fake_history.url, sleep=Sleeps())
    outcome = pull_source(engine, source)
    assert outcome.refused and "SONGNET_LISTENBRAINZ_USER" in (outcome.error or "")


# -- across sources ------------------------------------------------------------------------


def test_a_listen_that_overlaps_an_export_play_is_stored_once_as_the_richer_record(
    fake_history: FakeHistory, engine: Engine, tmp_path: Path
) -> None:
    # One listening of "One" (200 s from T0) and one of "Two" only ListenBrainz saw.
    write(tmp_path / "acc" / "StreamingHistory_music_0.json", [account(T0 + 200, "A", "One")])
    import_paths(engine, [tmp_path / "acc"])
    fake_history.add_listen(T0, "A", "One", duration_ms=200_000)
    fake_history.add_listen(T0 + 1000, "A", "Two")
    outcome = pull_source(engine, listenbrainz(fake_history, Sleeps()))
    assert (outcome.imported, outcome.summary().duplicates) == (1, 1)
    # ListenBrainz's record is richer than the account export's: it takes the play's place.
    assert [(s, t) for s, t, *_ in plays(engine)] == [
        ("listenbrainz", "One"),
        ("listenbrainz", "Two"),
    ]

    # The extended export of the same listening is richer still; the account export, imported
    # again under another name, is recognised.
    write(
        tmp_path / "ext" / "Streaming_History_Audio_2023.json",
        [extended(T0 + 200, "A", "One"), extended(T0 + 1030, "A", "Two", 30_000)],
    )
    write(
        tmp_path / "acc2" / "StreamingHistory_music_1.json",
        [account(T0 + 200, "A", "One"), account(T0 + 5, "A", "Zero", 60_000)],
    )
    results = import_paths(engine, [tmp_path / "ext", tmp_path / "acc2"])
    assert [(r.imported, r.duplicates) for r in results] == [(0, 2), (1, 1)]
    assert [(s, t) for s, t, *_ in plays(engine)] == [
        ("account", "Zero"),
        ("extended", "One"),
        ("extended", "Two"),
    ]
    # Pulling again changes nothing.
    again = pull_source(engine, listenbrainz(fake_history, Sleeps()))
    assert again.imported == 0
    assert len(plays(engine)) == 3


# -- Last.fm -------------------------------------------------------------------------------


def lastfm(fake: FakeHistory, sleeps: Sleeps, **kw: object) -> LastFm:
    source = LastFm(
        fake.lastfm_user,
        fake.lastfm_key,
        root=fake.url + "/2.0/",
        sleep=sleeps,
        clock=lambda: T0 + 10**6,
        **kw,
    )  # type: ignore[arg-type]
    source.api.retry = Retry(max_attempts=3, initial_backoff=1.0)
    return source


def test_lastfm_walks_the_pages_oldest_first_skipping_now_playing(
    fake_history: FakeHistory, engine: Engine
) -> None:
    for i in range(7):
        fake_history.add_scrobble(T0 + 300 * i, "Artist", f"Song {i}", album="Album")
    fake_history.now_playing = {"artist": {"#text": "Artist"}, "name": "Playing now"}
    sleeps = Sleeps()
    outcome = pull_source(engine, lastfm(fake_history, sleeps, page_size=3))
    assert outcome.error is None
    assert [p.records for p in outcome.pages] == [1, 3, 3]
    assert [q["page"] for s, q in fake_history.requests if s == "lastfm"] == ["1", "3", "2"]
    stored = plays(engine)
    assert len(stored) == 7 and {s[0] for s in stored} == {"lastfm"}
    assert "Playing now" not in {s[1] for s in stored}
    state = stored_state(engine, "lastfm", "listener")
    assert state is not None and state.watermark == T0 + 300 * 6

    fake_history.add_scrobble(T0 + 300 * 10, "Artist", "Song 10")
    again = pull_source(engine, lastfm(fake_history, sleeps, page_size=3))
    # `from` is inclusive: the watermark's scrobble comes again and is a duplicate.
    assert (again.imported, again.summary().duplicates) == (1, 1)
    assert fake_history.requests[-1][1]["from"] == str(T0 + 300 * 6)


def test_lastfm_rate_limit_error_29_is_backed_off_and_retried(
    fake_history: FakeHistory, engine: Engine
) -> None:
    fake_history.add_scrobble(T0, "A", "One")
    fake_history.fail("lastfm", Fault(429, b'{"error": 29, "message": "Rate Limit Exceeded"}'))
    fake_history.fail("lastfm", Fault(500, b'{"error": 16, "message": "temporary"}'))
    sleeps = Sleeps()
    outcome = pull_source(engine, lastfm(fake_history, sleeps))
    assert outcome.error is None and outcome.imported == 1
    assert sleeps == [60.0, 2.0]


def test_lastfm_5xx_and_malformed_json_are_retried(
    fake_history: FakeHistory, engine: Engine
) -> None:
    fake_history.add_scrobble(T0, "A", "One")
    fake_history.fail("lastfm", Fault(502, b"<html>bad gateway"), Fault(200, b"<html>not json"))
    sleeps = Sleeps()
    outcome = pull_source(engine, lastfm(fake_history, sleeps))
    assert outcome.error is None and outcome.imported == 1
    assert sleeps == [1.0, 2.0]
    assert fake_history.count("lastfm") == 3


def test_a_scrobble_without_a_track_name_is_skipped_and_counted(
    fake_history: FakeHistory, engine: Engine
) -> None:
    fake_history.add_scrobble(T0, "A", "One")
    fake_history.add_scrobble(T0 + 300, "A", "")
    fake_history.add_scrobble(T0 + 600, "", "No artist")
    total = pull_source(engine, lastfm(fake_history, Sleeps())).summary()
    assert (total.records, total.imported, total.skipped) == (3, 1, {"no_track": 2})
    assert total.balanced


def test_a_scrobble_that_overlaps_export_plays_is_stored_once_as_the_richer_record(
    fake_history: FakeHistory, engine: Engine, tmp_path: Path
) -> None:
    # "One" (200 s from T0) in the account export; "Two" (100 s from T0 + 1000) in the
    # extended one; Last.fm scrobbled both a few seconds off (its clock) and "Three".
    write(tmp_path / "acc" / "StreamingHistory_music_0.json", [account(T0 + 200, "A", "One")])
    write(
        tmp_path / "ext" / "Streaming_History_Audio_2023.json",
        [extended(T0 + 1100, "A", "Two", 100_000)],
    )
    import_paths(engine, [tmp_path / "acc", tmp_path / "ext"])
    fake_history.add_scrobble(T0 + 4, "A", "One")
    fake_history.add_scrobble(T0 + 997, "A", "Two")
    fake_history.add_scrobble(T0 + 2000, "A", "Three")
    outcome = pull_source(engine, lastfm(fake_history, Sleeps()))
    assert (outcome.imported, outcome.summary().duplicates) == (1, 2)
    # Last.fm's record is richer than the account export's, poorer than the extended one's.
    assert [(s, t) for s, t, *_ in plays(engine)] == [
        ("lastfm", "One"),
        ("extended", "Two"),
        ("lastfm", "Three"),
    ]
    # The account export of "One", imported again under another name, is recognised.
    write(tmp_path / "acc2" / "StreamingHistory_music_1.json", [account(T0 + 200, "A", "One")])
    [again] = import_paths(engine, [tmp_path / "acc2"])
    assert (again.imported, again.duplicates) == (0, 1)
    assert len(plays(engine)) == 3


def test_lastfm_bad_key_is_refused_with_what_to_set(
    fake_history: FakeHistory, engine: Engine
) -> None:
    source = lastfm(fake_history, Sleeps())
    fake_history.lastfm_key = "the-real-key"
    outcome = pull_source(engine, source)
    assert outcome.refused and "SONGNET_LASTFM_API_KEY" in (outcome.error or "")
    assert plays(engine) == []


def test_a_scrobble_and_a_listen_of_the_same_play_are_one_play(
    fake_history: FakeHistory, engine: Engine
) -> None:
    fake_history.add_scrobble(T0 + 2, "A", "One")
    fake_history.add_listen(T0, "A", "One", duration_ms=200_000)
    pull_source(engine, lastfm(fake_history, Sleeps()))
    outcome = pull_source(engine, listenbrainz(fake_history, Sleeps()))
    assert outcome.summary().duplicates == 1
    assert [(s, t, e, ms) for s, t, e, ms in plays(engine)] == [
        ("listenbrainz", "One", T0 + 200, 200_000)
    ]


def test_the_pull_job_goes_on_with_other_sources_when_one_fails(
    fake_history: FakeHistory, tmp_path: Path
) -> None:
    from service.jobs import FAILED, Jobs
    from service.settings import Settings

    fake_history.add_scrobble(T0, "A", "One")
    settings = Settings(
        data_dir=tmp_path / "data",
        listenbrainz_user="nobody",
        listenbrainz_url=fake_history.url,
        lastfm_user="listener",
        lastfm_api_key=fake_history.lastfm_key,
        lastfm_url=fake_history.url + "/2.0/",
    )
    engine = open_database(settings.data_dir)
    run = Jobs(settings, engine).pull_sources()
    assert run.outcome == FAILED and "listenbrainz:nobody" in (run.error or "")
    assert (run.counts["sources"], run.counts["failed"], run.counts["imported"]) == (2, 1, 1)
    assert [s for s, *_ in plays(engine)] == ["lastfm"]


def test_a_listen_stamped_in_the_future_is_skipped_and_does_not_move_the_watermark(
    fake_history: FakeHistory, engine: Engine
) -> None:
    now = T0 + 10_000
    fake_history.add_listen(T0, "A", "One")
    fake_history.add_listen(now + 10 * 86_400, "A", "From the future")
    fake_history.add_listen(1000, "A", "From 1970")
    outcome = pull_source(engine, listenbrainz(fake_history, Sleeps()), clock=lambda: now)
    total = outcome.summary()
    assert (total.imported, total.skipped) == (1, {"implausible_time": 2})
    state = stored_state(engine, "listenbrainz", "listener")
    assert state is not None and state.watermark is not None
    assert state.watermark <= now + 86_400


def test_a_lastfm_user_without_a_key_is_said_once_per_start_and_listenbrainz_is_pulled(
    fake_history: FakeHistory, tmp_path: Path, logs: io.StringIO
) -> None:
    from service.jobs import OK, Jobs
    from service.settings import Settings
    from service.status import collect_status

    fake_history.add_listen(T0, "A", "One")
    settings = Settings(
        data_dir=tmp_path / "data",
        listenbrainz_user=fake_history.lb_user,
        listenbrainz_url=fake_history.url,
        lastfm_user="listener",  # and no SONGNET_LASTFM_API_KEY
    )
    engine = open_database(settings.data_dir)
    jobs = Jobs(settings, engine)
    first, second = jobs.pull_sources(), jobs.pull_sources()
    assert first.outcome == second.outcome == OK
    assert first.counts["imported"] == 1 and second.counts["not_usable"] == 1
    assert [s for s, *_ in plays(engine)] == ["listenbrainz"]
    (error,) = logged(logs, "history source not usable")  # two polls, one line
    assert error["source"] == "lastfm" and "SONGNET_LASTFM_API_KEY" in error["error"]
    # A restart says it once more.
    Jobs(settings, engine).pull_sources()
    assert len(logged(logs, "history source not usable")) == 2
    (problem,) = collect_status(engine, settings, now=T0)["source_problems"]
    assert problem["source"] == "lastfm" and "SONGNET_LASTFM_API_KEY" in problem["error"]


def test_the_export_folder_and_a_pull_source_are_brought_in_by_one_job(
    fake_history: FakeHistory, tmp_path: Path
) -> None:
    """The export folder is a `HistorySource` like a pull source: one job brings both in; the
    folder keeps its watcher's wait for a stable file and its ledger (each file once)."""
    from service.export_folder import ExportFolder
    from service.jobs import FAILED, OK, Jobs
    from service.pull import Pulled
    from service.settings import Settings
    from service.watch import ExportWatcher

    exports = tmp_path / "exports"
    write(exports / "StreamingHistory_music_0.json", [account(T0 + 200, "A", "One")])
    fake_history.add_listen(T0 + 1000, "A", "Two")
    settings = Settings(data_dir=tmp_path / "data", export_dir=exports)
    engine = open_database(settings.data_dir)
    now = [1000.0]
    folder = ExportFolder(ExportWatcher(exports, 10, clock=lambda: now[0]))
    jobs = Jobs(settings, engine)
    sources = [folder, Pulled(listenbrainz(fake_history, Sleeps()))]

    first = jobs.bring_in("import", sources)  # a first look never takes a file
    assert first.outcome == OK and first.counts["sources"] == 2 and first.counts["imported"] == 1
    assert [(s, t) for s, t, *_ in plays(engine)] == [("listenbrainz", "Two")]
    now[0] += 10
    second = jobs.bring_in("import", sources)
    assert second.outcome == OK and (second.counts["imported"], second.counts["duplicates"]) == (1, 0)
    assert [(s, t) for s, t, *_ in plays(engine)] == [("account", "One"), ("listenbrainz", "Two")]
    assert folder.poll() == []  # handled: not offered again

    # The same content under another name is known to the ledger by its hash.
    (exports / "StreamingHistory_music_0.json").rename(exports / "StreamingHistory_music_1.json")
    folder.poll()
    now[0] += 10
    third = jobs.bring_in("import", [folder])
    assert third.counts["already"] == 1 and third.counts["imported"] == 0
    # A bad file fails the run with its name, and the other source is still brought in.
    (exports / "StreamingHistory_music_2.json").write_text("{not json")
    fake_history.add_listen(T0 + 2000, "A", "Three")
    folder.poll()
    now[0] += 10
    fourth = jobs.bring_in("import", sources)
    assert fourth.outcome == FAILED and "StreamingHistory_music_2.json" in (fourth.error or "")
    assert fourth.counts["imported"] == 1 and len(plays(engine)) == 3
