"""The evaluation harness: metrics, baselines, fixed candidate sets, resumable results, the CLI."""

import importlib.util
import io
import json
import math
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from m3rec_graph import evaluation
from m3rec_graph.baselines import PopularityBaseline, RandomBaseline, training_popularity
from m3rec_graph.context import M3RecContext
from m3rec_graph.datasets import EvalCase, item_popularity, load_dataset
from m3rec_graph.evaluation import (
    CANDIDATES_FILE,
    RESULTS_FILE,
    SETTINGS_FILE,
    EvalRun,
    EvalSettings,
    EvaluationError,
    chance_metrics,
    parse_methods,
    prepare_cases,
    read_results,
    run_evaluation,
)
from m3rec_graph.metrics import (
    MetricSummary,
    hit_at,
    metric_names,
    ndcg_at,
    percentile,
    rank_of,
    reciprocal_rank,
    summarise,
    user_metrics,
)
from m3rec_graph.schemas import Item
from tests.fakes import ScriptedModels, default_responder, history_ids_in

ROOT = Path(__file__).parents[2]
BEAUTY = ROOT / "tests" / "fixtures" / "beauty_small"
ALL_METHODS = ["random", "popularity", "m3rec"]


def load_cli() -> ModuleType:
    spec = importlib.util.spec_from_file_location("run_eval", ROOT / "evals" / "run_eval.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


# --------------------------------------------------------------------------- metrics


def test_rank_of_is_one_based_and_rejects_a_missing_target() -> None:
    assert rank_of("a", ["a", "b", "c"]) == 1
    assert rank_of("c", ["a", "b", "c"]) == 3
    with pytest.raises(ValueError, match="not in the ranking"):
        rank_of("z", ["a", "b"])


def test_single_user_metrics_match_hand_computed_values() -> None:
    assert hit_at(1, 1) == 1.0 and hit_at(2, 1) == 0.0
    assert hit_at(5, 5) == 1.0 and hit_at(6, 5) == 0.0
    assert ndcg_at(1, 5) == 1.0
    assert ndcg_at(3, 5) == 0.5  # 1 / log2(4)
    assert ndcg_at(7, 10) == pytest.approx(1 / 3)  # 1 / log2(8)
    assert ndcg_at(15, 20) == 0.25  # 1 / log2(16)
    assert ndcg_at(6, 5) == 0.0
    assert reciprocal_rank(4) == 0.25
    with pytest.raises(ValueError):
        hit_at(0, 5)
    with pytest.raises(ValueError):
        ndcg_at(1, 0)


def test_metric_names_cover_hr_ndcg_and_mrr() -> None:
    assert metric_names() == [
        "HR@1", "HR@5", "HR@10", "HR@20", "NDCG@5", "NDCG@10", "NDCG@20", "MRR",
    ]
    assert user_metrics(3) == {
        "HR@1": 0.0, "HR@5": 1.0, "HR@10": 1.0, "HR@20": 1.0,
        "NDCG@5": 0.5, "NDCG@10": 0.5, "NDCG@20": 0.5, "MRR": pytest.approx(1 / 3),
    }


def test_summarise_means_match_hand_computed_values() -> None:
    summary = summarise([1, 3, 7, 15], (1, 5, 10, 20))
    means = {name: s.mean for name, s in summary.items()}
    assert means == pytest.approx({
        "HR@1": 0.25,
        "HR@5": 0.5,
        "HR@10": 0.75,
        "HR@20": 1.0,
        "NDCG@5": (1 + 0.5) / 4,
        "NDCG@10": (1 + 0.5 + 1 / 3) / 4,
        "NDCG@20": (1 + 0.5 + 1 / 3 + 0.25) / 4,
        "MRR": (1 + 1 / 3 + 1 / 7 + 1 / 15) / 4,
    })
    for s in summary.values():
        assert 0.0 <= s.low <= s.mean <= s.high <= 1.0


def test_bootstrap_interval_by_hand_and_reproducible() -> None:
    # Two users, hit and miss: a resample mean is 0, 0.5 or 1 with probability
    # 1/4, 1/2, 1/4, so 2000 resamples put the 2.5th and 97.5th percentiles at 0 and 1.
    hr1 = summarise([1, 100], (1,), n_boot=2000, seed=3)["HR@1"]
    assert hr1 == MetricSummary(0.5, 0.0, 1.0)
    # every user alike: no spread at all
    assert summarise([2] * 10, (5,))["HR@5"] == MetricSummary(1.0, 1.0, 1.0)
    # n_boot=0 gives the mean alone; the same seed gives the same interval
    assert summarise([1, 4], (1,), n_boot=0)["MRR"] == MetricSummary(0.625, 0.625, 0.625)
    ranks = [1, 2, 5, 9, 14, 3, 1, 20, 7, 2]
    assert summarise(ranks, seed=1) == summarise(ranks, seed=1)
    assert summarise(ranks, seed=1) != summarise(ranks, seed=2)
    with pytest.raises(ValueError):
        summarise([])


def test_percentile_interpolates_linearly() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert percentile([0.0, 10.0], 0.25) == 2.5
    assert percentile([0.0, 10.0, 20.0], 1.0) == 20.0


def test_chance_metrics_of_a_uniform_ranking() -> None:
    chance = chance_metrics(20)
    assert chance["HR@10"] == 0.5
    assert chance["HR@20"] == 1.0
    assert chance["MRR"] == pytest.approx(sum(1 / r for r in range(1, 21)) / 20)


# --------------------------------------------------------------------------- baselines


def make_case(user_id: str, ids: list[str], target: str) -> EvalCase:
    return EvalCase(
        user_id=user_id,
        history=[Item(item_id="h", title="h")],
        candidates=[Item(item_id=i, title=i) for i in ids],
        target_id=target,
    )


def write_dataset(root: Path, sequences: dict[str, list[str]]) -> Path:
    root.mkdir()
    items = sorted({i for seq in sequences.values() for i in seq})
    (root / "items.jsonl").write_text(
        "".join(json.dumps({"item_id": i, "title": f"item {i}"}) + "\n" for i in items)
    )
    rows = ["user_id,item_id,position"] + [
        f"{u},{i},{n}" for u, seq in sequences.items() for n, i in enumerate(seq)
    ]
    (root / "interactions.csv").write_text("\n".join(rows) + "\n")
    return root


def test_popularity_counts_only_training_interactions(tmp_path: Path) -> None:
    # h1 and h2 are the most interacted-with items overall, but only ever as a
    # validation or test item (the last two positions), so they are held out.
    dataset = load_dataset(write_dataset(tmp_path / "tiny", {
        "u1": ["a", "b", "h1", "h2"],
        "u2": ["a", "c", "h1", "h2"],
        "u3": ["b", "c", "h2", "h1"],
        "u4": ["z", "d", "h1", "h2"],
    }))
    assert item_popularity(dataset).most_common(2) == [("h1", 4), ("h2", 4)]
    counts = training_popularity(dataset)
    assert counts == {"a": 2, "b": 2, "c": 2, "z": 1, "d": 1}
    case = make_case("u4", ["h2", "h1", "d", "a", "c", "b"], target="h2")
    # training counts first; ties (a, c, b at 2; h2, h1 at 0) keep the shown order
    assert PopularityBaseline.from_dataset(dataset).rank(case) == ["a", "c", "b", "d", "h2", "h1"]


def test_baselines_ignore_the_target() -> None:
    ids = [f"i{n}" for n in range(20)]
    one, other = make_case("u1", ids, "i3"), make_case("u1", ids, "i17")
    popularity = PopularityBaseline({"i5": 3, "i9": 1})
    assert popularity.rank(one) == popularity.rank(other)
    assert popularity.rank(one)[:2] == ["i5", "i9"]
    rand = RandomBaseline(seed=0)
    assert rand.rank(one) == rand.rank(other)
    assert sorted(rand.rank(one)) == sorted(ids)
    assert rand.rank(one) != ids
    assert rand.rank(make_case("u2", ids, "i3")) != rand.rank(one)
    assert RandomBaseline(seed=1).rank(one) != rand.rank(one)


def test_parse_methods() -> None:
    assert parse_methods("random, popularity,random") == ["random", "popularity"]
    with pytest.raises(EvaluationError, match="unknown method 'sasrec'"):
        parse_methods("random,sasrec")
    with pytest.raises(EvaluationError):
        parse_methods(" , ")


# --------------------------------------------------------------------------- the harness


def settings(**changes: Any) -> EvalSettings:
    base: dict[str, Any] = {
        "dataset": BEAUTY, "users": 5, "negatives": 9, "seed": 0, "routing": "hybrid",
    }
    return EvalSettings(**{**base, **changes})


@dataclass
class Served:
    contexts: list[M3RecContext]

    @contextmanager
    def __call__(self, ctx: M3RecContext) -> Iterator[None]:
        self.contexts.append(ctx)
        yield


def fake_models() -> ScriptedModels:
    return ScriptedModels(default_responder(score_of=lambda i: sum(map(ord, i)) % 11))


def run(out: Path, models: ScriptedModels, methods: list[str] | None = None, **changes: Any) -> EvalRun:
    return run_evaluation(
        settings(**changes),
        methods or ALL_METHODS,
        out,
        chat_models=models,
        serve=Served([]),
        progress=io.StringIO(),
        n_boot=200,
    )


@dataclass
class FirstRun:
    out: Path
    models: ScriptedModels
    run: EvalRun
    progress: str
    served: Served


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> FirstRun:
    out = tmp_path_factory.mktemp("runs") / "beauty5"
    models, served, progress = fake_models(), Served([]), io.StringIO()
    result = run_evaluation(
        settings(), ALL_METHODS, out, chat_models=models, serve=served, progress=progress, n_boot=200
    )
    return FirstRun(out, models, result, progress.getvalue(), served)


@pytest.fixture
def run_copy(first_run: FirstRun, tmp_path: Path) -> Path:
    out = tmp_path / "beauty5"
    shutil.copytree(first_run.out, out)
    return out


def test_one_result_line_per_method_and_user(first_run: FirstRun) -> None:
    cases = read_lines(first_run.out / CANDIDATES_FILE)
    results = read_lines(first_run.out / RESULTS_FILE)
    assert len(cases) == 5
    assert len(results) == 3 * 5
    assert sorted((r["method"], r["user_id"]) for r in results) == sorted(
        (m, c["user_id"]) for m in ALL_METHODS for c in cases
    )
    assert first_run.run.computed == {"random": 5, "popularity": 5, "m3rec": 5}
    m3rec = [r for r in results if r["method"] == "m3rec"]
    for record in m3rec:
        assert record["total_tokens"] == record["llm_calls"] * 110  # the fakes report 100 + 10
        assert record["cost_usd"] > 0
        assert record["degraded"] == 0
        assert record["seconds"] > 0
        assert record["routing"] == "hybrid"
    assert "m3rec 5/5" in first_run.progress and "random 5/5" in first_run.progress
    # the models were served once, with the run's seed as the display-order seed
    assert [ctx.seed for ctx in first_run.served.contexts] == [0]


def test_every_method_ranks_the_same_candidates(first_run: FirstRun) -> None:
    cases = {c["user_id"]: c for c in read_lines(first_run.out / CANDIDATES_FILE)}
    for case in cases.values():
        assert len(case["candidates"]) == 10
        assert case["target_id"] in case["candidates"]
        assert case["target_id"] not in case["history"]
    for record in read_lines(first_run.out / RESULTS_FILE):
        case = cases[record["user_id"]]
        assert sorted(record["ranking"]) == sorted(case["candidates"])
        assert record["rank"] == record["ranking"].index(case["target_id"]) + 1
    # m3rec profiled exactly the stored histories (the target never among them)
    profiled = sorted(history_ids_in(p) for _, _, p in first_run.models.stage_calls("mope"))
    assert profiled == sorted(c["history"] for c in cases.values())


def test_report_has_a_table_per_method(first_run: FirstRun) -> None:
    report = (first_run.out / "report.md").read_text(encoding="utf-8")
    assert report == first_run.run.report
    for method in ALL_METHODS:
        assert f"## {method} (5 users)" in report
    assert "| HR@10 | 1.0000 | [1.0000, 1.0000] | 1.0000 |" in report  # 10 candidates
    assert "| tokens/user |" in report and "| cost/user (USD) |" in report
    assert report.count("| seconds/user |") == 3
    assert [r.method for r in first_run.run.reports] == ALL_METHODS


def test_resume_recomputes_only_the_missing_lines(run_copy: Path, first_run: FirstRun) -> None:
    results_path = run_copy / RESULTS_FILE
    lines = results_path.read_text(encoding="utf-8").splitlines(keepends=True)
    results_path.write_text("".join(lines[:-3]), encoding="utf-8")
    removed = [json.loads(line) for line in lines[-3:]]
    assert {r["method"] for r in removed} == {"m3rec"}

    models = fake_models()
    resumed = run(run_copy, models)

    assert resumed.computed == {"random": 0, "popularity": 0, "m3rec": 3}
    histories = {c["user_id"]: c["history"] for c in read_lines(run_copy / CANDIDATES_FILE)}
    profiled = sorted(history_ids_in(p) for _, _, p in models.stage_calls("mope"))
    assert profiled == sorted(histories[r["user_id"]] for r in removed)
    assert len(models.stage_calls("mar")) == 3  # one listwise chunk of 10 per user
    assert models.stage_calls("mote") == []  # traits came from the run's SQLite cache
    after = results_path.read_text(encoding="utf-8").splitlines(keepends=True)
    assert after[:-3] == lines[:-3]
    assert len(after) == 15
    redone = [json.loads(line) for line in after[-3:]]
    assert [(r["user_id"], r["ranking"]) for r in redone] == [
        (r["user_id"], r["ranking"]) for r in removed
    ]

    # a complete run resumes to nothing at all
    idle = fake_models()
    assert run(run_copy, idle).computed == {"random": 0, "popularity": 0, "m3rec": 0}
    assert idle.calls == []


def test_a_line_cut_off_by_a_crash_is_recomputed(run_copy: Path) -> None:
    results_path = run_copy / RESULTS_FILE
    text = results_path.read_text(encoding="utf-8")
    results_path.write_text(text[: len(text) - 40], encoding="utf-8")  # half the last line
    assert len(read_results(results_path)) == 14
    assert results_path.read_text(encoding="utf-8").endswith("\n")
    models = fake_models()
    assert run(run_copy, models).computed["m3rec"] == 1
    assert len(models.stage_calls("mope")) == 1
    assert len(read_lines(results_path)) == 15


def test_existing_candidates_are_reused_not_rebuilt(
    run_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_rebuild(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("candidates were rebuilt")

    monkeypatch.setattr(evaluation, "build_requests", no_rebuild)
    before = (run_copy / CANDIDATES_FILE).read_text(encoding="utf-8")
    cases = prepare_cases(settings(), load_dataset(BEAUTY), run_copy)
    assert [c.user_id for c in cases] == [c["user_id"] for c in read_lines(run_copy / CANDIDATES_FILE)]
    assert (run_copy / CANDIDATES_FILE).read_text(encoding="utf-8") == before


@pytest.mark.parametrize(
    ("change", "named"),
    [({"negatives": 19}, "negatives"), ({"seed": 1}, "seed"), ({"cold_start": 2}, "cold_start"),
     ({"routing": "local"}, "routing"), ({"users": 6}, "users")],
)
def test_different_settings_are_refused(run_copy: Path, change: dict[str, Any], named: str) -> None:
    before = (run_copy / CANDIDATES_FILE).read_text(encoding="utf-8")
    models = fake_models()
    with pytest.raises(EvaluationError, match=f"different settings.*{named}"):
        run(run_copy, models, **change)
    assert models.calls == []
    assert (run_copy / CANDIDATES_FILE).read_text(encoding="utf-8") == before


def test_candidates_without_settings_are_refused(run_copy: Path) -> None:
    (run_copy / SETTINGS_FILE).unlink()
    with pytest.raises(EvaluationError, match="settings are unknown"):
        run(run_copy, fake_models(), ["random"])


def test_cold_start_keeps_the_last_items_only(tmp_path: Path) -> None:
    out = tmp_path / "cold"
    run(out, fake_models(), ["random"], cold_start=2)
    cases = read_lines(out / CANDIDATES_FILE)
    full = load_dataset(BEAUTY).sequences
    for case in cases:
        assert case["history"] == full[case["user_id"]][-3:-1]


# --------------------------------------------------------------------------- the CLI


def test_cli_runs_the_baselines_and_prints_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cli = load_cli()
    out = tmp_path / "cli"
    argv = ["--dataset", str(BEAUTY), "--users", "5", "--negatives", "9",
            "--methods", "random,popularity", "--out", str(out), "--n-boot", "100"]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    assert "## random (5 users)" in captured.out and "## popularity (5 users)" in captured.out
    assert "popularity 5/5" in captured.err
    assert len(read_lines(out / RESULTS_FILE)) == 10
    # the same settings again: nothing to do; other settings: refused with exit code 2
    assert cli.main(argv) == 0
    assert cli.main([*argv[:5], "19", *argv[6:]]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("run_eval: error: ") and "different settings" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "no/such/dir"], "dataset directory not found"),
        (["--methods", "random,sasrec"], "unknown method 'sasrec'"),
        (["--users", "0"], "--users must be >= 1"),
        (["--users", "-3"], "--users must be >= 1"),
        (["--routing", "nope"], "unknown routing preset"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    base = {"--dataset": str(BEAUTY), "--users": "5", "--negatives": "9",
            "--methods": "random", "--out": str(tmp_path / "bad")}
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    argv = [part for pair in base.items() for part in pair]
    assert load_cli().main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "bad").exists()


def test_nan_free_report_numbers(first_run: FirstRun) -> None:
    for report in first_run.run.reports:
        assert not math.isnan(report.seconds_per_user)
        assert all(not math.isnan(s.mean) for s in report.metrics.values())


def test_cli_usage_errors_are_one_line_too(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        load_cli().main(["--dataset", str(BEAUTY), "--users", "many", "--negatives", "9",
                         "--methods", "random", "--out", "x"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--users" in err


def test_an_ablation_is_stored_in_the_settings_and_not_mixed_with_the_full_run(
    run_copy: Path, tmp_path: Path
) -> None:
    # the full pipeline's run directory refuses an ablation...
    with pytest.raises(EvaluationError, match="different settings.*ablation"):
        run(run_copy, fake_models(), ["m3rec"], ablation="no_mar")
    # ...and an ablation run records it, and runs the graph configured by it
    out, models = tmp_path / "no_mar", fake_models()
    run(out, models, ["m3rec"], ablation="no_mar")
    assert json.loads((out / SETTINGS_FILE).read_text(encoding="utf-8"))["ablation"] == "no_mar"
    assert {stage for _, stage, _ in models.calls} == {"mope", "mote"}
    assert len(read_lines(out / RESULTS_FILE)) == 5
    with pytest.raises(EvaluationError, match="unknown ablation"):
        run(tmp_path / "bad", fake_models(), ["m3rec"], ablation="no_rank")
