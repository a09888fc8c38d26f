"""Prompt variants through the evaluation harness: `run_evaluation(prompt_overrides=...)` and `m3rec eval --prompt-file`."""

import io
import json
from pathlib import Path
from typing import Any

import pytest

from m3rec_graph.cli import eval as eval_cli
from m3rec_graph.evaluation import (
    RESULTS_FILE,
    EvalRun,
    EvalSettings,
    EvaluationError,
    parse_methods,
    run_evaluation,
)
from m3rec_graph.prompts.loader import load_prompt, prompt_dir
from tests.fakes import ScriptedModels, default_responder
from tests.unit.test_evaluation import BEAUTY, Served, read_lines
from tests.unit.test_evaluation import eval_cli as run_eval_cli

MARKER = "Weigh the shopper's strongest motivation twice."
SETTINGS = EvalSettings(dataset=BEAUTY, users=3, negatives=5, seed=0)


def mar_variant(directory: Path) -> Path:
    """The shipped listwise MAR prompt with one more instruction line."""
    shipped = (prompt_dir() / "mar_listwise.toml").read_text(encoding="utf-8")
    anchor = "Score every candidate exactly once, in the order given."
    assert anchor in shipped
    path = directory / "mar_variant.toml"
    path.write_text(shipped.replace(anchor, f"{MARKER}\n{anchor}"), encoding="utf-8")
    return path


def evaluate(out: Path, models: ScriptedModels, **kwargs: Any) -> EvalRun:
    return run_evaluation(
        SETTINGS,
        parse_methods("popularity,m3rec:hybrid"),
        out,
        chat_models=models,
        serve=Served([]),
        progress=io.StringIO(),
        n_boot=50,
        plots=False,
        **kwargs,
    )


def m3rec_lines(out: Path) -> list[dict[str, Any]]:
    return [r for r in read_lines(out / RESULTS_FILE) if r["method"] == "m3rec:hybrid"]


def test_an_overridden_mar_prompt_is_used_and_recorded(tmp_path: Path) -> None:
    variant = mar_variant(tmp_path)
    shipped = {name: load_prompt(name).version for name in ("mope", "mote", "mar_listwise")}
    variant_version = load_prompt("mar_listwise", str(variant)).version
    assert variant_version != shipped["mar_listwise"]

    base_models = ScriptedModels(default_responder())
    base = evaluate(tmp_path / "shipped", base_models)
    models = ScriptedModels(default_responder())
    run = evaluate(tmp_path / "variant", models, prompt_overrides={"mar_listwise": str(variant)})

    # the same settings draw the same users and candidates: the two runs compare like for like
    assert [(c.user_id, c.candidates, c.target_id) for c in run.cases] == [
        (c.user_id, c.candidates, c.target_id) for c in base.cases
    ]
    # the model saw the new MAR wording, and only in MAR calls
    mar_prompts = [prompt for _, stage, prompt in models.calls if stage == "mar"]
    assert len(mar_prompts) == 3 and all(MARKER in p for p in mar_prompts)
    assert not any(MARKER in p for _, stage, p in models.calls if stage != "mar")
    assert not any(MARKER in p for _, _, p in base_models.calls)
    # every result line records the prompt versions it was made with
    assert [r["prompts"] for r in m3rec_lines(tmp_path / "variant")] == [
        {**shipped, "mar_listwise": variant_version}
    ] * 3
    assert [r["prompts"] for r in m3rec_lines(tmp_path / "shipped")] == [shipped] * 3
    # and the report shows it
    assert f"mar_listwise@{variant_version}" in run.report
    assert f"mar_listwise@{shipped['mar_listwise']}" in base.report
    full = {r.method: r for r in run.reports["full"]}
    assert full["m3rec:hybrid"].config["prompts"]["mar_listwise"] == variant_version
    assert "prompts" not in full["popularity"].config  # baselines have no prompts


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"mar_pointwise": "{variant}"}, "cannot override prompt 'mar_pointwise'"),
        ({"mar": "{variant}"}, "cannot override prompt 'mar'"),
        ({"mar_listwise": "no/such/prompt.toml"}, "prompt file not found"),
    ],
)
def test_bad_overrides_fail_before_the_run(
    tmp_path: Path, overrides: dict[str, str], message: str
) -> None:
    variant = mar_variant(tmp_path)
    resolved = {k: v.format(variant=variant) for k, v in overrides.items()}
    models = ScriptedModels(default_responder())
    with pytest.raises(EvaluationError, match=message):
        evaluate(tmp_path / "bad", models, prompt_overrides=resolved)
    assert not (tmp_path / "bad").exists() and not models.calls


def test_a_malformed_prompt_file_is_refused(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text('name = "m3rec-mar"\n', encoding="utf-8")  # no messages
    with pytest.raises(EvaluationError, match="bad prompt file"):
        evaluate(tmp_path / "bad", ScriptedModels(default_responder()),
                 prompt_overrides={"mar_listwise": str(broken)})  # fmt: skip


# --------------------------------------------------------------------------- the CLI


def test_parse_prompt_files_maps_mar_to_the_listwise_prompt() -> None:
    assert eval_cli.parse_prompt_files(["mar=a.toml", " MOPE = b.toml "]) == {
        "mar_listwise": "a.toml",
        "mope": "b.toml",
    }
    for bad in ["mar", "mar=", "=a.toml"]:
        with pytest.raises(EvaluationError, match="bad --prompt-file"):
            eval_cli.parse_prompt_files([bad])


def test_cli_prompt_file_reaches_the_graph(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    variant = mar_variant(tmp_path)
    models = ScriptedModels(default_responder())

    def with_fakes(*args: Any, **kwargs: Any) -> EvalRun:
        return run_evaluation(*args, **kwargs, chat_models=models, serve=Served([]))

    monkeypatch.setattr(eval_cli, "run_evaluation", with_fakes)
    out = tmp_path / "cli"
    argv = ["--dataset", str(BEAUTY), "--users", "3", "--negatives", "5", "--methods",
            "m3rec:hybrid", "--out", str(out), "--n-boot", "20", "--no-plots",
            "--prompt-file", f"mar={variant}"]  # fmt: skip
    assert run_eval_cli(argv) == 0
    version = load_prompt("mar_listwise", str(variant)).version
    assert f"mar_listwise@{version}" in capsys.readouterr().out
    assert {r["prompts"]["mar_listwise"] for r in m3rec_lines(out)} == {version}
    assert all(MARKER in p for _, stage, p in models.calls if stage == "mar")
    doc = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert doc["slices"]["full"]["m3rec:hybrid"]["config"]["prompts"]["mar_listwise"] == version


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("mar", "bad --prompt-file 'mar'"),
        ("mar_pointwise=x.toml", "cannot override prompt 'mar_pointwise'"),
        ("mope=no/such.toml", "prompt file not found"),
    ],
)
def test_cli_bad_prompt_file_is_one_line_and_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, message: str
) -> None:
    argv = ["--dataset", str(BEAUTY), "--users", "3", "--negatives", "5", "--methods",
            "random", "--out", str(tmp_path / "bad"), "--prompt-file", flag]  # fmt: skip
    assert run_eval_cli(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "bad").exists()
