"""Shared fixtures. The real corpus lives in ../shared/corpus beside the checkout."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

# The `fake_spotify` fixture (a fake Spotify Web API on 127.0.0.1) for every test module.
pytest_plugins = ["tests.fake_spotify"]

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
