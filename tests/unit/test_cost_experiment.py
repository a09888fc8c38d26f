"""`m3rec cost measure`: presets measured through the harness, cost against accuracy."""

import io
import json
from pathlib import Path
from typing import Any

import pytest

from m3rec_graph.cli import app as cli
from m3rec_graph.cli import cost as cost_cli
from m3rec_graph.cost.measure import (
    COST_PLOT,
    COST_REPORT,
    CostMeasurement,
    MeasuredMethod,
    run_cost_experiment,
)
from m3rec_graph.evaluation import EvalSettings
from m3rec_graph.evaluation.metrics import MetricSummary
from tests.fakes import ScriptedModels, default_responder
from tests.unit.test_evaluation import Served

BEAUTY = Path(__file__).parents[2] / "tests" / "fixtures" / "beauty_small"


def test_presets_are_measured_on_the_same_users_and_compared_with_the_estimate(
    tmp_path: Path,
) -> None:
    pytest.importorskip("matplotlib")
    models = ScriptedModels(default_responder(score_of=lambda i: sum(map(ord, i)) % 11))
    out = tmp_path / "cost"
    measured = run_cost_experiment(
        EvalSettings(dataset=BEAUTY, users=6, negatives=9),
        ["hybrid", "gpt-4o"],
        out,
        baselines=["random", "popularity"],
        chat_models=models,
        serve=Served([]),
        progress=io.StringIO(),
        n_boot=50,
        # One user at a time: two users in flight that share a candidate may both miss the
        # trait cache and both encode it, so the token totals below would depend on timing.
        concurrency=1,
    )
    by_name = {m.method: m for m in measured.methods}
    assert list(by_name) == ["random", "popularity", "m3rec:hybrid", "m3rec:gpt-4o"]
    hybrid, gpt4o = by_name["m3rec:hybrid"], by_name["m3rec:gpt-4o"]
    # the fakes answer every call with 100 input + 10 output tokens: the same tokens per call,
    # other prices (calls can differ by a MOTE or two: two users in flight may share an item)
    for m in (hybrid, gpt4o):
        calls = sum(s["calls"] or 0 for s in m.stages.values())
        assert m.tokens_per_user == pytest.approx(110 * calls)
    assert hybrid.cost_per_user_usd is not None and gpt4o.cost_per_user_usd is not None
    assert hybrid.tokens_per_user is not None and gpt4o.tokens_per_user is not None
    per_token = (
        hybrid.cost_per_user_usd / hybrid.tokens_per_user,
        gpt4o.cost_per_user_usd / gpt4o.tokens_per_user,
    )
    assert 0 < per_token[0] < per_token[1]
    assert by_name["random"].cost_per_1000_users_usd == 0.0
    assert set(hybrid.stages) == {"mope", "mote", "mar"}
    assert hybrid.stages["mar"]["calls"] == 1.0  # one listwise chunk of 10 candidates
    # the trait cache is shared across users (keys include the MOTE model, so not across presets)
    assert hybrid.mote_calls_per_candidate is not None and 0 < hybrid.mote_calls_per_candidate <= 1
    assert hybrid.estimated_cost_per_user_usd is not None and hybrid.estimated_cost_per_user_usd > 0
    report = (out / COST_REPORT).read_text(encoding="utf-8")
    assert "| m3rec:hybrid |" in report and "| m3rec:gpt-4o | mar |" in report
    assert (out / COST_PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the run directory is the harness's: m3rec eval on it finds everything done
    lines = (out / "results.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 4 * 6 and {json.loads(x)["slice"] for x in lines} == {"full"}


def test_measured_cost_needs_a_run_directory(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["cost", "measure", "--dataset", str(BEAUTY), "--users", "3", "--presets", "local"])
    assert exit_info.value.code == 2
    assert "m3rec cost measure: error: the following arguments are required: --out" in capsys.readouterr().err


def test_cli_measure_and_its_old_spelling_run_the_same_experiment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[tuple[Any, ...]] = []

    def recorded(settings: EvalSettings, presets: list[str], out: Path, **kwargs: Any) -> CostMeasurement:
        calls.append((settings, presets, out, kwargs))
        summary = MetricSummary(mean=0.5, low=0.25, high=0.75)
        method = MeasuredMethod(method="random", users=3, hr10=summary, ndcg10=summary, seconds_per_user=0.1)
        return CostMeasurement(out, "beauty_small", 19, [method], None, "| the report |")

    monkeypatch.setattr(cost_cli, "run_cost_experiment", recorded)
    flags = ["--dataset", str(BEAUTY), "--users", "3", "--negatives", "19", "--presets", "local,hybrid",
             "--baselines", "random", "--concurrency", "1", "--out", str(tmp_path / "run")]  # fmt: skip
    cli.main(["cost", "measure", *flags, "--json", str(tmp_path / "new.json")])
    new = capsys.readouterr()
    cli.main(["cost", *flags, "--json", str(tmp_path / "old.json")])
    old = capsys.readouterr()
    assert calls[0] == calls[1]
    settings, presets, out, kwargs = calls[0]
    assert (settings.users, settings.negatives, settings.seed) == (3, 19, 0)
    assert presets == ["local", "hybrid"] and out == tmp_path / "run"
    assert kwargs == {"baselines": ["random"], "concurrency": 1}
    assert old.out == new.out == "| the report |\n"
    assert json.loads((tmp_path / "old.json").read_text()) == json.loads((tmp_path / "new.json").read_text())
    assert json.loads((tmp_path / "new.json").read_text())[0]["cost_per_1000_users_usd"] == 0.0
    assert new.err == ""
    assert old.err == (
        "m3rec: note: `m3rec cost` without a mode is deprecated and will be removed in the next release;"
        " use `m3rec cost measure` (the same flags)\n"
    )
