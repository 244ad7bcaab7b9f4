"""Secrets never reach the logs: the structlog processor redacts them wherever they appear."""

from __future__ import annotations

import io
import json
from pathlib import Path

import structlog

from service.db import open_database
from service.jobs import FAILED, JobRun, Jobs
from service.logging import configure_logging, register_secret
from service.settings import load_settings

SECRET = "cl1ent-s3cret-do-not-log-7f9a"
TOKEN = "BQD-access-token-xyz-123456"


def render(fmt: str, emit: object) -> str:
    stream = io.StringIO()
    configure_logging(fmt, "debug", stream=stream)
    try:
        emit()  # type: ignore[operator]
    finally:
        configure_logging("json", "info")
    return stream.getvalue()


def test_secret_keys_bearer_headers_and_registered_values_are_redacted() -> None:
    register_secret(SECRET)

    def emit() -> None:
        log = structlog.get_logger("test")
        log.info(
            "token refreshed",
            client_secret=SECRET,
            access_token=TOKEN,
            refresh_token="r" * 20,
            request={"headers": {"Authorization": f"Bearer {TOKEN}"}, "url": "https://api/x"},
            attempts=[{"code_verifier": "v" * 43}, f"Basic {SECRET}"],
            error=f"token endpoint said invalid_client for {SECRET}",
        )

    for fmt in ("json", "console"):
        out = render(fmt, emit)
        for secret in (SECRET, TOKEN, "r" * 20, "v" * 43):
            assert secret not in out, f"{fmt}: secret leaked"
        assert "[redacted]" in out
        assert "https://api/x" in out  # the rest of the line stays readable
    line = json.loads(render("json", emit))
    assert line["client_secret"] == "[redacted]"
    assert line["request"]["headers"]["Authorization"] == "[redacted]"
    assert line["error"] == "token endpoint said invalid_client for [redacted]"


def test_a_failing_job_does_not_leak_a_secret_in_its_traceback(tmp_path: Path) -> None:
    settings = load_settings(
        data_dir=tmp_path, spotify_client_id="id", spotify_client_secret=SECRET
    )
    register_secret(settings.spotify_client_secret)
    engine = open_database(tmp_path)
    runs: list[JobRun] = []

    def body(run: JobRun) -> None:
        raise RuntimeError(f"spotify rejected client secret {SECRET}")

    out = render("json", lambda: runs.append(Jobs(settings, engine).run("sync", body)))
    engine.dispose()
    assert runs[0].outcome == FAILED
    failed = next(json.loads(x) for x in out.splitlines() if '"job failed"' in x)
    assert SECRET not in out
    assert "[redacted]" in failed["exception"] and "[redacted]" in failed["error"]


def test_figures_whose_names_merely_start_like_a_secret_stay_readable() -> None:
    def emit() -> None:
        structlog.get_logger("test").info(
            "trained", tokens_per_second=1234.5, token_count=7, id_token="eyJ-secret-jwt-value", cookie="sid=abc123"
        )

    line = json.loads(render("json", emit))
    assert line["tokens_per_second"] == 1234.5
    assert line["token_count"] == "[redacted]"  # a word "token": redacted, to be safe
    assert line["id_token"] == line["cookie"] == "[redacted]"
