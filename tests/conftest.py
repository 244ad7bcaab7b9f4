"""Shared fixtures. The real corpus lives in ../shared/corpus beside the checkout."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# The `fake_spotify` fixture (a fake Spotify Web API on 127.0.0.1) for every test module.
pytest_plugins = ["tests.fake_spotify", "tests.fake_history"]

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO.parent / "shared" / "corpus"
CORPUS_NAMES = [
    "account-a", "account-b", "account-c", "account-d",
    "extended-a", "extended-b", "extended-c", "extended-d",
]  # fmt: skip


def require_corpus() -> Path:
    """The corpus folder; skips the test where it is absent, fails in CI (CI=true)."""
    if not CORPUS.is_dir():
        msg = f"real exports not found at {CORPUS} (they sit in ../shared/corpus beside the checkout)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return CORPUS


def corpus_source(name: str) -> dict[str, int]:
    """File name -> record count, from the export's SOURCE.json."""
    data = json.loads((require_corpus() / name / "SOURCE.json").read_text())
    return {f["file"]: f["records"] for f in data["files"]}


@pytest.fixture
def corpus() -> Path:
    return require_corpus()


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    """songnet's JSON log lines (debug and up) in a stream; logging reset to stderr after."""
    from service.logging import configure_logging

    stream = io.StringIO()
    configure_logging("json", "debug", stream=stream)
    yield stream
    configure_logging("json", "info")


def logged(stream: io.StringIO, event: str | None = None) -> list[dict[str, Any]]:
    """The JSON records in `stream`, only those named `event` if given."""
    records = [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]
    return [r for r in records if event is None or r.get("event") == event]
