"""`songnet eval` on a real export: imports into a temporary database, prints the figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from service.cli import app

SCORERS = ("songnet", "model", "fusion", "pop", "markov", "sknn", "repeat")
METRICS = ("hr@10", "mrr@10", "ndcg@10")


def run(data_dir: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["--data-dir", str(data_dir), "--log-level", "error", "eval", *args])
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.corpus
def test_eval_json_on_a_real_export(corpus: Path, tmp_path: Path) -> None:
    code, out, err = run(tmp_path / "data", str(corpus / "extended-d"), "--epochs", "1", "--bootstrap", "50", "--json")
    assert code == 0, err
    report = json.loads(out)  # stdout holds the JSON and nothing else
    assert report["test_steps"] > 50
    assert report["test_sessions"] > 0 and report["train_sessions"] > report["test_sessions"]
    for name in SCORERS:
        for m in METRICS:
            value = report[name][m]
            lo, hi = report[name][f"{m}_ci"]
            assert 0.0 <= lo <= value <= hi <= 1.0
    # MRR never exceeds HR at the same cut-off; NDCG lies between them.
    for name in SCORERS:
        r = report[name]
        assert r["mrr@10"] <= r["ndcg@10"] <= r["hr@10"]
    assert report["model_training"]["best_epoch"] == 1
    # Every scorer ranks the same steps; the best baseline is the best of the four on HR@10.
    assert {report[name]["steps"] for name in SCORERS} == {report["test_steps"]}
    best = report["best_baseline"]
    assert best["name"] in ("pop", "markov", "sknn", "repeat")
    assert best["hr@10"] == max(report[b]["hr@10"] for b in ("pop", "markov", "sknn", "repeat"))
    ratio = report["ratio"]
    assert ratio["hr@10"] == pytest.approx(report["songnet"]["hr@10"] / best["hr@10"], abs=2e-3)
    lo, hi = ratio["hr@10_difference_ci"]
    assert lo <= ratio["hr@10_difference"] <= hi
    assert ratio["hr@10_difference"] == pytest.approx(report["songnet"]["hr@10"] - best["hr@10"], abs=2e-4)
    # SOURCE.json beside the export is not history: reported, not fatal.
    assert "SOURCE.json" in err
    # The data directory was not touched: the exports went into a temporary database.
    assert not (tmp_path / "data" / "songnet.db").exists()


def test_eval_of_something_that_is_no_export_fails_clearly(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.json"
    bogus.write_text('{"hello": 1}')
    code, out, err = run(tmp_path / "data", str(bogus), "--no-model", "--json")
    assert code == 1
    assert out == ""
    assert "no music plays" in err
