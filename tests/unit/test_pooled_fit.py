"""`m3rec fit-fusion --from-runs`: one fit from the validation signals several eval runs recorded."""

import contextlib
import io
import json
from pathlib import Path

import pytest

from m3rec_graph.cli import app as cli
from m3rec_graph.context import M3RecContext
from m3rec_graph.evaluation import EvalSettings, EvaluationError, parse_methods, run_evaluation
from m3rec_graph.evaluation.graph_fit import fitted_config_file, validation_file
from m3rec_graph.evaluation.pooled_fit import fit_pooled_runs
from m3rec_graph.fusion import FusionConfig
from tests.fakes import ScriptedModels, default_responder

FIXTURES = Path(__file__).parents[1] / "fixtures"
METHOD = "m3rec:hybrid:fused"


def no_server(ctx: M3RecContext) -> contextlib.AbstractContextManager[None]:
    return contextlib.nullcontext()


def eval_run(out: Path, dataset: str, models: ScriptedModels, *, sampling: str = "uniform") -> Path:
    run_evaluation(
        EvalSettings(dataset=FIXTURES / dataset, users=4, negatives=9, seed=0, sampling=sampling),  # type: ignore[arg-type]
        parse_methods(METHOD), out, chat_models=models, serve=no_server, progress=io.StringIO(),
        n_boot=0, plots=False,
    )  # fmt: skip
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("runs")
    models = ScriptedModels(default_responder(score_of=lambda i: sum(map(ord, i)) % 11))
    return (
        eval_run(base / "beauty", "beauty_small", models),
        eval_run(base / "sports", "sports_small", models),
    )


def test_pooling_one_run_gives_that_runs_own_fit(runs: tuple[Path, Path]) -> None:
    """The pooled fit rebuilds each run's validation cases and signals exactly as its own fit saw them."""
    beauty, _ = runs
    own = FusionConfig.model_validate_json(fitted_config_file(beauty, METHOD).read_text())
    pooled, parts = fit_pooled_runs([beauty], METHOD)
    assert pooled.weights == own.weights
    assert pooled.fitted["weight_ci95"] == own.fitted["weight_ci95"]
    assert pooled.fitted["dropped"] == own.fitted["dropped"]
    assert [(p.dataset, p.users) for p in parts] == [("beauty_small", own.fitted["users"])]


def test_pooling_two_runs_fits_on_both_and_calls_no_model(runs: tuple[Path, Path]) -> None:
    beauty, sports = runs
    pooled, parts = fit_pooled_runs([beauty, sports], METHOD)
    recorded = sum(len(validation_file(r, METHOD).read_text().splitlines()) for r in runs)
    assert pooled.fitted["users"] == sum(p.users for p in parts) == recorded - sum(p.left_out for p in parts)
    assert [p.dataset for p in parts] == ["beauty_small", "sports_small"]
    assert pooled.fitted["dataset"] == "beauty_small+sports_small"
    assert set(pooled.weights) == {"mar", "overlap", "text"} and pooled.sampling == "uniform"
    one = fit_pooled_runs([beauty], METHOD)[0]
    assert pooled.fitted["weight_ci95"] != one.fitted["weight_ci95"]  # the Sports users count


def test_the_cli_writes_the_pooled_config(runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "local.json"
    cli.main(["fit-fusion", "--from-runs", *map(str, runs), "--method", METHOD, "--out", str(out)])
    written = FusionConfig.model_validate_json(out.read_text())
    assert written.version == fit_pooled_runs(list(runs), METHOD)[0].version
    printed = capsys.readouterr().out
    assert f"fusion config {written.version}" in printed and "validation users of sports_small" in printed


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--method", METHOD], "--from-runs"),  # --method alone
        (["--from-runs", "X"], "needs --method"),
        (["--from-runs", "X", "--method", METHOD, "--signals", "text"], "drop --prior"),
        (["--from-runs", "X", "--method", "m3rec:hybrid:fused+popularity"], "prior"),
        (["--from-runs", "X", "--method", "m3rec:hybrid"], "not a fused method"),
    ],
)
def test_bad_from_runs_input_exits_2(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [a if a != "X" else str(tmp_path) for a in argv]
    with pytest.raises(SystemExit) as stop:
        cli.main(["fit-fusion", *argv, "--out", str(tmp_path / "f.json")])
    assert stop.value.code == 2
    assert message in capsys.readouterr().err


def test_a_run_without_the_methods_validation_signals_is_refused(runs: tuple[Path, Path], tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("settings.json", "candidates.jsonl"):
        (bare / name).write_text((runs[0] / name).read_text())
    with pytest.raises(EvaluationError, match="no validation signals"):
        fit_pooled_runs([runs[0], bare], METHOD)


def test_runs_under_different_sampling_do_not_pool(runs: tuple[Path, Path], tmp_path: Path) -> None:
    models = ScriptedModels(default_responder(score_of=lambda i: sum(map(ord, i)) % 11))
    popular = eval_run(tmp_path / "pop", "sports_small", models, sampling="popularity")
    assert json.loads((popular / "settings.json").read_text())["sampling"] == "popularity"
    with pytest.raises(EvaluationError, match="different negative sampling"):
        fit_pooled_runs([runs[0], popular], METHOD)
