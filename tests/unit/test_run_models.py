"""A run directory refuses to resume an m3rec method whose preset now routes to other models.

The preset's meaning changing is simulated by patching `routing.PRESETS` (or the
default efforts) between two runs on the same directory.
"""

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from m3rec_graph.errors import ConfigurationError
from m3rec_graph.evaluation import (
    MODELS_FILE,
    RESULTS_FILE,
    EvaluationError,
    MethodModelsChangedError,
    read_method_models,
    resolved_models,
)
from m3rec_graph.llm import routing
from m3rec_graph.llm.routing import context_for
from tests.unit.test_evaluation import BEAUTY, eval_cli, fake_models, read_lines, run

USERS = 3
METHODS = ["random", "m3rec:hybrid"]
ALL_LUNA = {"mope": "gpt-6-luna", "mote": "gpt-6-luna", "mar": "gpt-6-luna"}


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("models") / "run"
    run(out, fake_models(), METHODS, users=USERS)
    return out


@pytest.fixture
def out(made: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(made, copy)
    return copy


def hybrid_lines(out: Path) -> list[dict[str, Any]]:
    return [r for r in read_lines(out / RESULTS_FILE) if r["method"] == "m3rec:hybrid"]


def test_the_first_run_records_each_stage_model_and_effort(out: Path) -> None:
    recorded = read_method_models(out)
    assert list(recorded) == ["m3rec:hybrid"]  # LLM methods only
    assert recorded["m3rec:hybrid"] == resolved_models(context_for("hybrid"))
    # what the lines' own usage says each stage called
    for line in hybrid_lines(out):
        for stage, usage in line["stages"].items():
            assert usage["models"] in ([], [recorded["m3rec:hybrid"][stage]["name"]])
    assert all("reasoning_effort" in entry for entry in recorded["m3rec:hybrid"].values())


def test_resolved_models_leave_out_the_stage_an_ablation_switches_off() -> None:
    ctx = context_for("hybrid", ablation="no_mar")
    assert set(resolved_models(ctx)) == {"mope", "mote"}
    local = resolved_models(context_for("local"))
    assert local["mar"] == {"name": routing.LOCAL_MODEL_NAME}  # no effort: not a reasoning model


def test_the_same_models_resume(out: Path) -> None:
    lines = (out / RESULTS_FILE).read_text(encoding="utf-8").splitlines(keepends=True)
    (out / RESULTS_FILE).write_text("".join(lines[:-1]), encoding="utf-8")  # lose one m3rec user
    models = fake_models()
    assert run(out, models, METHODS, users=USERS).computed[("m3rec:hybrid", "full")] == 1
    assert len(hybrid_lines(out)) == USERS and models.stage_calls("mar")


def test_a_preset_now_routed_elsewhere_is_refused_before_any_call(
    out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = (out / RESULTS_FILE).read_bytes()
    lines = before.splitlines(keepends=True)
    (out / RESULTS_FILE).write_bytes(b"".join(lines[:-1]))  # a missing user would be computed
    monkeypatch.setitem(routing.PRESETS, "hybrid", ALL_LUNA)
    models = fake_models()
    with pytest.raises(MethodModelsChangedError) as caught:
        run(out, models, METHODS, users=USERS)
    message = str(caught.value)
    assert isinstance(caught.value, ConfigurationError) and isinstance(
        caught.value, EvaluationError
    )
    assert "\n" not in message
    assert message.startswith(f"m3rec:hybrid in {out} was scored with mope=gpt-6-luna")
    assert "mar=gpt-6.1-sol (effort low)" in message and f"recorded in {MODELS_FILE}" in message
    assert "now resolves to mope=gpt-6-luna (effort none)" in message
    assert "mar=gpt-6-luna (effort low)" in message and "use a new --out directory" in message
    assert models.calls == []
    assert (out / RESULTS_FILE).read_bytes() == b"".join(lines[:-1])  # nothing appended
    assert read_method_models(out)["m3rec:hybrid"]["mar"]["name"] == "gpt-6.1-sol"


def test_a_changed_reasoning_effort_is_refused(out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(routing.DEFAULT_EFFORTS, "mar", "medium")
    with pytest.raises(
        MethodModelsChangedError, match=r"now resolves to .*mar=gpt-6.1-sol \(effort medium\)"
    ):
        run(out, fake_models(), METHODS, users=USERS)


def test_the_refusal_names_a_method_routed_to_the_recorded_models(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    with monkeypatch.context() as patched:
        patched.setitem(routing.PRESETS, "hybrid", ALL_LUNA)
        run(out, fake_models(), ["m3rec:hybrid"], users=USERS)
    with pytest.raises(MethodModelsChangedError) as caught:
        run(out, fake_models(), ["m3rec:hybrid"], users=USERS)
    assert str(caught.value).endswith(
        "use a new --out directory for m3rec:hybrid (the same settings draw the same candidates),"
        " or a method routed to the recorded models"
        " (m3rec:gpt-6-luna)"
    )
    run(out, fake_models(), ["m3rec:gpt-6-luna"], users=USERS)  # which runs there as its own method


def test_another_method_key_records_its_own_models(
    out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(routing.PRESETS, "hybrid", ALL_LUNA)
    # the ablation is a method of its own, with no lines yet: it runs on today's models
    result = run(out, fake_models(), ["m3rec:hybrid:no_mar"], users=USERS)
    assert result.computed == {("m3rec:hybrid:no_mar", "full"): USERS}
    recorded = read_method_models(out)
    assert recorded["m3rec:hybrid:no_mar"] == resolved_models(
        context_for("hybrid", ablation="no_mar")
    )
    assert set(recorded["m3rec:hybrid:no_mar"]) == {"mope", "mote"}
    assert recorded["m3rec:hybrid"]["mar"]["name"] == "gpt-6.1-sol"  # kept as it was
    with pytest.raises(MethodModelsChangedError):  # while m3rec:hybrid itself is refused
        run(out, fake_models(), ["m3rec:hybrid:no_mar", "m3rec:hybrid"], users=USERS)


def test_a_record_without_lines_is_replaced(out: Path) -> None:
    (out / RESULTS_FILE).write_text("", encoding="utf-8")
    stale = {"format": 1, "methods": {"m3rec:hybrid": {"mar": {"name": "gpt-3.5-turbo"}}}}
    (out / MODELS_FILE).write_text(json.dumps(stale), encoding="utf-8")
    run(out, fake_models(), METHODS, users=USERS)
    assert read_method_models(out)["m3rec:hybrid"] == resolved_models(context_for("hybrid"))


def test_a_malformed_record_is_refused(out: Path) -> None:
    (out / MODELS_FILE).write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(EvaluationError, match=f"{MODELS_FILE}: expected"):
        run(out, fake_models(), METHODS, users=USERS)


# --------------------------------------------------------------------------- run directories from before the record


def test_an_old_directory_whose_lines_agree_is_recorded_on_resume(out: Path) -> None:
    (out / MODELS_FILE).unlink()
    assert run(out, fake_models(), METHODS, users=USERS).computed[("m3rec:hybrid", "full")] == 0
    assert read_method_models(out)["m3rec:hybrid"] == resolved_models(context_for("hybrid"))


def test_an_old_directory_whose_lines_called_other_models_is_refused(
    out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (out / MODELS_FILE).unlink()
    monkeypatch.setitem(routing.PRESETS, "hybrid", ALL_LUNA)
    with pytest.raises(MethodModelsChangedError) as caught:
        run(out, fake_models(), METHODS, users=USERS)
    message = str(caught.value)
    assert f"per its {USERS} result lines, from before {MODELS_FILE}" in message
    assert " was scored with mope=gpt-6-luna, mote=gpt-6-luna, mar=gpt-6.1-sol (per" in message
    assert "now resolves to mope=gpt-6-luna (effort none)" in message
    assert not (out / MODELS_FILE).exists()


def test_an_old_directory_whose_lines_name_no_model_is_refused(out: Path) -> None:
    (out / MODELS_FILE).unlink()
    lines = read_lines(out / RESULTS_FILE)
    for line in lines:
        line.pop("stages", None)
    (out / RESULTS_FILE).write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    with pytest.raises(MethodModelsChangedError, match="was scored with unknown models"):
        run(out, fake_models(), METHODS, users=USERS)


def test_old_lines_that_mixed_models_are_refused(out: Path) -> None:
    (out / MODELS_FILE).unlink()
    lines = read_lines(out / RESULTS_FILE)
    old = next(r for r in lines if r["method"] == "m3rec:hybrid")
    old["stages"]["mar"]["models"] = ["gpt-4o"]
    (out / RESULTS_FILE).write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    with pytest.raises(MethodModelsChangedError, match=r"mar=gpt-4o\+gpt-6.1-sol"):
        run(out, fake_models(), METHODS, users=USERS)


# --------------------------------------------------------------------------- the CLI


def test_the_cli_refuses_with_one_line_and_exit_code_2(
    out: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--dataset", str(BEAUTY), "--users", str(USERS), "--negatives", "9",
            "--methods", ",".join(METHODS), "--out", str(out), "--n-boot", "50", "--no-plots"]  # fmt: skip
    assert eval_cli(argv) == 0  # the same models: a finished run resumes to nothing
    capsys.readouterr()
    monkeypatch.setitem(routing.PRESETS, "hybrid", ALL_LUNA)
    assert eval_cli(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("m3rec: error: m3rec:hybrid in ")
    assert "use a new --out directory" in err
