"""`songnet eval` on a real export: imports into a temporary database, prints the figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from service.cli import app

SCORERS = ("songnet", "model", "fusion", "pop", "markov", "sknn", "repeat")
METRICS = ("hr@10", "mrr@10", "ndcg@10")
BASELINES = ("pop", "markov", "sknn", "repeat")


def run(data_dir: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["--data-dir", str(data_dir), "--log-level", "error", "eval", *args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def small_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """The evaluation's training config at a tenth of its size, on one thread: the whole CLI
    path (import, split, training, weights, ranking, JSON) in seconds, not minutes on a busy
    machine (the full-size model's figures are scripts/evaluation_report.py's business)."""
    import songnet_core.evaluate as evaluate
    from songnet_core.train import TrainConfig

    def small(**overrides: object) -> TrainConfig:
        base: dict[str, object] = {
            "dim": 16, "hidden": 32, "window": 32, "memory": 64, "min_steps": 4, "threads": 1, "time_budget_s": None,
        }  # fmt: skip
        return TrainConfig(**{**base, **overrides})  # type: ignore[arg-type]

    monkeypatch.setattr(evaluate, "evaluation_train_config", small)


@pytest.mark.corpus
@pytest.mark.usefixtures("small_model")
def test_eval_json_on_a_real_export(corpus: Path, tmp_path: Path) -> None:
    code, out, err = run(tmp_path / "data", str(corpus / "extended-d"), "--epochs", "1", "--bootstrap", "400", "--json")
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
    # The fit's curve, one entry per epoch run, agrees with the best epoch's validation figure.
    (epoch,) = report["training_curve"]
    assert epoch["epoch"] == 1 and epoch["seconds"] > 0 and epoch["loss"] > 0
    assert epoch["val_hr@10"] == pytest.approx(report["model_training"]["val_hr@10"], abs=1e-4)
    # Every scorer ranks the same steps; the best baseline is the best of the four on HR@10.
    assert {report[name]["steps"] for name in SCORERS} == {report["test_steps"]}
    best = report["best_baseline"]
    assert best["name"] in ("pop", "markov", "sknn", "repeat")
    assert best["hr@10"] == max(report[b]["hr@10"] for b in BASELINES)
    ratio = report["ratio"]
    # The ratio is computed before rounding, the figures it divides are rounded to 4 decimals.
    s_hr, b_hr = report["songnet"]["hr@10"], best["hr@10"]
    assert (s_hr - 5e-5) / (b_hr + 5e-5) - 1e-4 <= ratio["hr@10"] <= (s_hr + 5e-5) / max(b_hr - 5e-5, 1e-9) + 1e-4
    lo, hi = ratio["hr@10_difference_ci"]
    assert lo <= ratio["hr@10_difference"] <= hi
    assert ratio["hr@10_difference"] == pytest.approx(report["songnet"]["hr@10"] - best["hr@10"], abs=2e-4)
    # SOURCE.json beside the export is not history: reported, not fatal.
    assert "SOURCE.json" in err
    # stderr is no terminal here: progress comes as lines, every phase with its steps.
    for phase in ("training (fit) epoch 1/1", "fitting weights", "ranking test steps", *(f"baseline {b}" for b in BASELINES)):
        assert f"eval: {phase}: " in err, phase
    assert f"eval: ranking test steps: {report['test_steps']}/{report['test_steps']}" in err
    # The data directory was not touched: the exports went into a temporary database.
    assert not (tmp_path / "data" / "songnet.db").exists()


def test_eval_of_something_that_is_no_export_fails_clearly(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.json"
    bogus.write_text('{"hello": 1}')
    code, out, err = run(tmp_path / "data", str(bogus), "--no-model", "--json")
    assert code == 1
    assert out == ""
    assert "no music plays" in err


def test_progress_lines_give_each_phase_its_steps_time_spent_and_time_left() -> None:
    from service.cli.evaluation import _Lines

    now = [0.0]
    lines: list[str] = []
    shown = _Lines(lines.append, every=10.0, clock=lambda: now[0])
    shown("ranking test steps", 10, 1000)  # a phase's first update: one line
    for done in range(20, 1000, 10):  # one update a second: a line every 10 s, not each time
        now[0] += 1.0
        shown("ranking test steps", done, 1000)
    now[0] += 1.0
    shown("ranking test steps", 1000, 1000)  # the last update always shows
    assert lines[0] == "eval: ranking test steps: 10/1000"
    assert len(lines) == 2 + 98 // 10
    # After 10 s, 100 more steps done: 890 to go at 10 steps a second.
    assert lines[1] == "eval: ranking test steps: 110/1000, 0:00:10 spent, ETA 0:01:29"
    assert lines[-1] == "eval: ranking test steps: 1000/1000, 0:01:39 spent, done"
    # Phases are timed apart.
    shown("baseline pop", 512, 1000)
    assert lines[-1] == "eval: baseline pop: 512/1000"
