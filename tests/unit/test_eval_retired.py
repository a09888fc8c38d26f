"""`m3rec eval --allow-retired`: the paper preset's gpt-3.5-turbo (shut down 2026-10-23) runs only when asked."""

import io
import json
from contextlib import nullcontext
from pathlib import Path

import pytest

from m3rec_graph.cli import app as cli
from m3rec_graph.context import M3RecContext
from m3rec_graph.evaluation import EvalSettings, parse_methods, run_evaluation
from m3rec_graph.llm.registry import ModelRetiredError
from tests.fakes import ScriptedModels, default_responder

BEAUTY = Path(__file__).parents[1] / "fixtures" / "beauty_small"


def evaluate(out: Path, models: ScriptedModels, *, allow_retired: bool) -> None:
    run_evaluation(
        EvalSettings(dataset=BEAUTY, users=2, negatives=9, seed=0), parse_methods("m3rec:paper"), out,
        chat_models=models, serve=lambda ctx: nullcontext(), progress=io.StringIO(), n_boot=0,
        plots=False, allow_retired=allow_retired,
    )  # fmt: skip


def test_a_retired_model_is_refused_before_any_call(tmp_path: Path) -> None:
    models = ScriptedModels(default_responder())
    with pytest.raises(ModelRetiredError, match="gpt-3.5-turbo"):
        evaluate(tmp_path / "run", models, allow_retired=False)
    assert models.calls == []


def test_allow_retired_runs_the_paper_preset(tmp_path: Path) -> None:
    models = ScriptedModels(default_responder())
    evaluate(tmp_path / "run", models, allow_retired=True)
    lines = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and all(line["llm_calls"] > 0 for line in lines)
    stages = json.loads((tmp_path / "run" / "models.json").read_text())["methods"]["m3rec:paper"]
    assert stages["mope"]["name"] == "gpt-3.5-turbo"


def test_the_cli_refuses_a_retired_method_with_exit_code_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        cli.main([
            "eval", "--dataset", str(BEAUTY), "--methods", "m3rec:paper", "--users", "2",
            "--negatives", "9", "--out", str(tmp_path / "run"), "--no-plots",
        ])  # fmt: skip
    assert stop.value.code == 2
    assert "--allow-retired" in capsys.readouterr().err


def test_context_carries_the_flag_to_every_worker() -> None:
    """Ray workers rebuild nothing from flags: they resolve the pickled context, which carries it."""
    from m3rec_graph.evaluation.methods import m3rec_context
    from m3rec_graph.evaluation.settings import parse_method

    ctx = m3rec_context(parse_method("m3rec:paper"), 0, allow_retired=True)
    assert isinstance(ctx, M3RecContext) and ctx.allow_retired
    assert ctx.mope_model.name == "gpt-3.5-turbo"
