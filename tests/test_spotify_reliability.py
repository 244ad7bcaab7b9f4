"""The reliability run (see `tests/spotify_reliability.py`; `bench/sync_reliability.py` prints
the same figures for several seeds): 100 syncs of a 120-track playlist while over 40 % of the
Web API requests fail transiently."""

from __future__ import annotations

import json

import pytest

from tests.spotify_reliability import run_reliability

# Logs go to a live stderr whatever CLI test ran before.
pytestmark = pytest.mark.usefixtures("fresh_logging")


@pytest.mark.slow
def test_100_syncs_under_40_percent_transient_failures_all_converge() -> None:
    report = run_reliability(runs=100, tracks=120, fault_rate=0.45, seed=2026, cap_seconds=30.0)
    print(json.dumps(report.figures()))
    assert report.faults_injected / report.requests >= 0.40
    # Every kind of transient fault was met, the ambiguous ones included.
    assert {"429", "500", "502", "503", "502-after", "drop", "drop-after", "delay-after"} <= set(
        report.faults
    )
    assert report.wrong_results == []
    assert report.written == 100 and report.failed == report.deferred == 0
    assert report.max_sleep <= 30.0
    assert report.refreshes >= 10 and report.deletions_by_listener == 4
    # A huge Retry-After defers at once: no wait, no blocking.
    assert report.huge_retry_after_deferred
    assert report.huge_retry_after_sleeps == []
    assert report.huge_retry_after_seconds < 5
