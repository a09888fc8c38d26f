"""The evaluation harness: metrics, baselines, fixed candidate sets, resumable results, the CLI."""

import io
import json
import math
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest

from m3rec_graph.cli import app as cli
from m3rec_graph.context import M3RecContext
from m3rec_graph.contracts.schemas import Item
from m3rec_graph.evaluation import (
    CANDIDATES_FILE,
    RESULTS_FILE,
    SETTINGS_FILE,
    EvalRun,
    EvalSettings,
    EvaluationError,
    MethodSpec,
    chance_metrics,
    parse_method,
    parse_methods,
    prepare_cases,
    read_results,
    run_evaluation,
    store,
)
from m3rec_graph.evaluation.baselines import PopularityBaseline, RandomBaseline, training_popularity
from m3rec_graph.evaluation.datasets import EvalCase, item_popularity, load_dataset
from m3rec_graph.evaluation.metrics import (
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
from tests.fakes import ScriptedModels, default_responder, history_ids_in

ROOT = Path(__file__).parents[2]
BEAUTY = ROOT / "tests" / "fixtures" / "beauty_small"
ALL_METHODS = ["random", "popularity", "m3rec:hybrid"]


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
        "HR@1",
        "HR@5",
        "HR@10",
        "HR@20",
        "NDCG@5",
        "NDCG@10",
        "NDCG@20",
        "MRR",
    ]
    assert user_metrics(3) == {
        "HR@1": 0.0,
        "HR@5": 1.0,
        "HR@10": 1.0,
        "HR@20": 1.0,
        "NDCG@5": 0.5,
        "NDCG@10": 0.5,
        "NDCG@20": 0.5,
        "MRR": pytest.approx(1 / 3),
    }


def test_summarise_means_match_hand_computed_values() -> None:
    summary = summarise([1, 3, 7, 15], (1, 5, 10, 20))
    means = {name: s.mean for name, s in summary.items()}
    assert means == pytest.approx(
        {
            "HR@1": 0.25,
            "HR@5": 0.5,
            "HR@10": 0.75,
            "HR@20": 1.0,
            "NDCG@5": (1 + 0.5) / 4,
            "NDCG@10": (1 + 0.5 + 1 / 3) / 4,
            "NDCG@20": (1 + 0.5 + 1 / 3 + 0.25) / 4,
            "MRR": (1 + 1 / 3 + 1 / 7 + 1 / 15) / 4,
        }
    )
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
    dataset = load_dataset(
        write_dataset(
            tmp_path / "tiny",
            {
                "u1": ["a", "b", "h1", "h2"],
                "u2": ["a", "c", "h1", "h2"],
                "u3": ["b", "c", "h2", "h1"],
                "u4": ["z", "d", "h1", "h2"],
            },
        )
    )
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
    keys = [m.key for m in parse_methods("random, popularity,random,sasrec,text")]
    assert keys == ["random", "popularity", "sasrec", "text"]
    assert parse_method("m3rec:gpt-4o") == MethodSpec("m3rec", "gpt-4o")
    assert parse_method("m3rec:local:no_mope").key == "m3rec:local:no_mope"
    assert parse_method("m3rec:no_mar:hybrid") == MethodSpec("m3rec", "hybrid", "no_mar")
    with pytest.raises(EvaluationError, match="unknown method 'bert4rec'"):
        parse_methods("random,bert4rec")
    with pytest.raises(EvaluationError, match="cannot read 'gpt-5'"):
        parse_method("m3rec:gpt-5")
    with pytest.raises(EvaluationError, match="takes no options"):
        parse_method("random:local")
    with pytest.raises(EvaluationError):
        parse_methods(" , ")


def test_bare_m3rec_resolves_to_the_machine_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert parse_method("m3rec").key == "m3rec:local"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert parse_method("m3rec").key == "m3rec:hybrid"


# --------------------------------------------------------------------------- the harness


def settings(**changes: Any) -> EvalSettings:
    base: dict[str, Any] = {"dataset": BEAUTY, "users": 5, "negatives": 9, "seed": 0}
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


def run(
    out: Path,
    models: ScriptedModels,
    methods: list[str] | None = None,
    *,
    cold_start: int | None = None,
    progress: io.StringIO | None = None,
    **changes: Any,
) -> EvalRun:
    return run_evaluation(
        settings(**changes),
        parse_methods(",".join(methods or ALL_METHODS)),
        out,
        cold_start=cold_start,
        chat_models=models,
        serve=Served([]),
        progress=progress or io.StringIO(),
        n_boot=200,
        plots=False,
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
        settings(),
        parse_methods(",".join(ALL_METHODS)),
        out,
        cold_start=2,
        # One user at a time: two users in flight that share a candidate may both miss the
        # trait cache and both encode it (a race, not a bug), which would make the
        # encoded-once assertion below depend on timing.
        concurrency=1,
        chat_models=models,
        serve=served,
        progress=progress,
        n_boot=200,
        plots=False,
    )
    return FirstRun(out, models, result, progress.getvalue(), served)


@pytest.fixture
def run_copy(first_run: FirstRun, tmp_path: Path) -> Path:
    out = tmp_path / "beauty5"
    shutil.copytree(first_run.out, out)
    return out


SLICES = ["full", "cold-start-2"]


def test_one_result_line_per_method_slice_and_user(first_run: FirstRun) -> None:
    cases = read_lines(first_run.out / CANDIDATES_FILE)
    results = read_lines(first_run.out / RESULTS_FILE)
    assert len(cases) == 5
    assert len(results) == 3 * 2 * 5
    assert sorted((r["method"], r["slice"], r["user_id"]) for r in results) == sorted(
        (m, s, c["user_id"]) for m in ALL_METHODS for s in SLICES for c in cases
    )
    assert first_run.run.computed == {(m, s): 5 for m in ALL_METHODS for s in SLICES}
    m3rec = [r for r in results if r["method"] == "m3rec:hybrid"]
    for record in m3rec:
        assert record["total_tokens"] == record["llm_calls"] * 110  # the fakes report 100 + 10
        assert record["cost_usd"] > 0
        assert record["degraded"] == 0
        assert record["seconds"] > 0
        assert record["routing"] == "hybrid" and record["ablation"] == "none"
        assert set(record["prompts"]) == {"mope", "mote", "mar_listwise"}
        assert set(record["stages"]) == {"mope", "mote", "mar"}
    assert "m3rec:hybrid [full] 5/5 users (100%)" in first_run.progress
    assert "random [cold-start-2] 5/5 users" in first_run.progress
    assert "tokens | $" in first_run.progress  # the m3rec bar shows tokens and cost so far
    # the models were served once per slice, with the run's seed as the display-order seed
    assert [ctx.seed for ctx in first_run.served.contexts] == [0, 0]


def test_every_method_and_slice_ranks_the_same_candidates(first_run: FirstRun) -> None:
    cases = {c["user_id"]: c for c in read_lines(first_run.out / CANDIDATES_FILE)}
    for case in cases.values():
        assert len(case["candidates"]) == 10
        assert case["target_id"] in case["candidates"]
        assert case["target_id"] not in case["history"]
    for record in read_lines(first_run.out / RESULTS_FILE):
        case = cases[record["user_id"]]
        assert sorted(record["ranking"]) == sorted(case["candidates"])
        assert record["rank"] == record["ranking"].index(case["target_id"]) + 1
    # m3rec profiled exactly the stored histories, and their last two items in the cold slice
    profiled = sorted(history_ids_in(p) for _, _, p in first_run.models.stage_calls("mope"))
    expected = [c["history"] for c in cases.values()] + [c["history"][-2:] for c in cases.values()]
    assert profiled == sorted(expected)


def test_the_cold_slice_reuses_the_traits_of_the_full_one(first_run: FirstRun) -> None:
    encoded = [p for _, _, p in first_run.models.stage_calls("mote")]
    assert len(encoded) == len(set(encoded))  # each item encoded once across both slices


def test_report_and_results_json(first_run: FirstRun) -> None:
    report = (first_run.out / "report.md").read_text(encoding="utf-8")
    assert report == first_run.run.report
    assert "## full" in report and "## cold-start-2" in report
    for method in ALL_METHODS:
        assert report.count(f"| {method} | 5 | ") == 2
    # 10 candidates: every method hits within 10
    assert report.count("| 1.0000 [1.0000, 1.0000] |") == 6
    assert {s: [r.method for r in rs] for s, rs in first_run.run.reports.items()} == dict.fromkeys(
        SLICES, ALL_METHODS
    )
    doc = json.loads((first_run.out / "results.json").read_text(encoding="utf-8"))
    assert doc["settings"]["negatives"] == 9 and doc["settings"]["seed"] == 0
    assert doc["versions"]["langgraph"] and doc["machine"]["cpu_count"]
    m3rec = doc["slices"]["cold-start-2"]["m3rec:hybrid"]
    assert m3rec["users"] == 5 and m3rec["config"]["routing"] == "hybrid"
    assert m3rec["metrics"]["HR@10"] == {"mean": 1.0, "low": 1.0, "high": 1.0}
    ranks = [
        r["rank"]
        for r in read_lines(first_run.out / RESULTS_FILE)
        if r["method"] == "random" and r["slice"] == "full"
    ]
    assert doc["slices"]["full"]["random"]["metrics"]["MRR"]["mean"] == pytest.approx(
        sum(1 / r for r in ranks) / len(ranks)
    )


def test_resume_recomputes_only_the_missing_lines(run_copy: Path, first_run: FirstRun) -> None:
    results_path = run_copy / RESULTS_FILE
    lines = results_path.read_text(encoding="utf-8").splitlines(keepends=True)
    keep = [line for line in lines if '"cold-start-2"' not in line or "m3rec" not in line]
    removed = [json.loads(line) for line in lines if line not in keep][2:]
    results_path.write_text(
        "".join(line for line in lines if json.loads(line) not in removed), encoding="utf-8"
    )
    assert len(removed) == 3 and {r["method"] for r in removed} == {"m3rec:hybrid"}

    models = fake_models()
    resumed = run(run_copy, models, cold_start=2)

    assert resumed.computed[("m3rec:hybrid", "cold-start-2")] == 3
    assert sum(resumed.computed.values()) == 3
    histories = {c["user_id"]: c["history"] for c in read_lines(run_copy / CANDIDATES_FILE)}
    # The first run stored these users' profiles for exactly these 2-item windows and
    # the MOPE settings (exact-match memory): no MOPE call, and each line says so.
    assert models.stage_calls("mope") == []
    assert len(models.stage_calls("mar")) == 3  # one listwise chunk of 10 per user
    assert models.stage_calls("mote") == []  # traits came from the run's store
    redone_lines = read_lines(results_path)[-3:]
    assert [line["memory"]["profile"] for line in redone_lines] == ["hit"] * 3
    assert all(line["memory"]["traits_miss"] == 0 for line in redone_lines)
    assert {line["user_id"]: len(histories[line["user_id"]][-2:]) for line in redone_lines} == {
        r["user_id"]: 2 for r in removed
    }
    redone = {r["user_id"]: r["ranking"] for r in redone_lines}
    assert redone == {r["user_id"]: r["ranking"] for r in removed}

    # a complete run resumes to nothing at all
    idle = fake_models()
    assert sum(run(run_copy, idle, cold_start=2).computed.values()) == 0
    assert idle.calls == []


def test_a_line_cut_off_by_a_crash_is_recomputed(run_copy: Path) -> None:
    results_path = run_copy / RESULTS_FILE
    text = results_path.read_text(encoding="utf-8")
    results_path.write_text(text[: len(text) - 40], encoding="utf-8")  # half the last line
    assert len(read_results(results_path)) == 29
    assert results_path.read_text(encoding="utf-8").endswith("\n")
    models = fake_models()
    assert run(run_copy, models, cold_start=2).computed[("m3rec:hybrid", "cold-start-2")] == 1
    # Its profile was stored before the line was cut: recomputing makes no MOPE call.
    assert models.stage_calls("mope") == []
    assert read_lines(results_path)[-1]["memory"]["profile"] == "hit"
    assert len(read_lines(results_path)) == 30


def test_methods_can_be_added_to_a_finished_run(run_copy: Path) -> None:
    more = run(run_copy, fake_models(), ["text", "m3rec:hybrid:no_mar"])
    assert more.computed == {("text", "full"): 5, ("m3rec:hybrid:no_mar", "full"): 5}
    # the report still covers every method and slice on record
    assert [r.method for r in more.reports["full"]] == [
        "text",
        "m3rec:hybrid:no_mar",
        *sorted(ALL_METHODS),
    ]
    assert "## cold-start-2" in more.report


def test_existing_candidates_are_reused_not_rebuilt(
    run_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_rebuild(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("candidates were rebuilt")

    monkeypatch.setattr(store, "build_requests", no_rebuild)
    before = (run_copy / CANDIDATES_FILE).read_text(encoding="utf-8")
    cases = prepare_cases(settings(), load_dataset(BEAUTY), run_copy)
    assert [c.user_id for c in cases] == [
        c["user_id"] for c in read_lines(run_copy / CANDIDATES_FILE)
    ]
    assert (run_copy / CANDIDATES_FILE).read_text(encoding="utf-8") == before


@pytest.mark.parametrize(
    ("change", "named"),
    [({"negatives": 19}, "negatives"), ({"seed": 1}, "seed"), ({"sampling": "popularity"}, "sampling"),
     ({"users": 6}, "users")],
)  # fmt: skip
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


def test_popularity_sampling_draws_popular_negatives(tmp_path: Path) -> None:
    uniform = run(tmp_path / "u", fake_models(), ["random"], users=30, negatives=19)
    popular = run(
        tmp_path / "p", fake_models(), ["random"], users=30, negatives=19, sampling="popularity"
    )
    counts = item_popularity(load_dataset(BEAUTY))

    def mean_negative_count(result: EvalRun) -> float:
        negatives = [
            i.item_id for c in result.cases for i in c.candidates if i.item_id != c.target_id
        ]
        return sum(counts[i] for i in negatives) / len(negatives)

    assert [c.target_id for c in popular.cases] == [c.target_id for c in uniform.cases]
    assert mean_negative_count(popular) > 1.5 * mean_negative_count(uniform)


# --------------------------------------------------------------------------- the CLI


def eval_cli(argv: list[str]) -> int:
    try:
        cli.main(["eval", *argv])
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_cli_runs_the_baselines_and_prints_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli"
    argv = ["--dataset", str(BEAUTY), "--users", "5", "--negatives", "9",
            "--methods", "random,popularity", "--out", str(out), "--n-boot", "100"]  # fmt: skip
    assert eval_cli(argv) == 0
    captured = capsys.readouterr()
    assert "| random | 5 |" in captured.out and "| popularity | 5 |" in captured.out
    assert "popularity [full] 5/5 users" in captured.err
    assert len(read_lines(out / RESULTS_FILE)) == 10
    assert (out / "results.json").exists() and (out / "report.md").exists()
    # the same settings again: nothing to do; other settings: refused with exit code 2
    assert eval_cli(argv) == 0
    assert eval_cli([*argv[:5], "19", *argv[6:]]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("m3rec: error: ") and "different settings" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "no/such/dir"], "dataset directory not found"),
        (["--methods", "random,bert4rec"], "unknown method 'bert4rec'"),
        (["--methods", "m3rec:nope"], "cannot read 'nope'"),
        (["--users", "0"], "--users must be >= 1"),
        (["--users", "-3"], "--users must be >= 1"),
        (["--cold-start", "0"], "--cold-start must be >= 1"),
        (["--concurrency", "0"], "--concurrency must be >= 1"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    base = {"--dataset": str(BEAUTY), "--users": "5", "--negatives": "9",
            "--methods": "random", "--out": str(tmp_path / "bad")}  # fmt: skip
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    argv = [part for pair in base.items() for part in pair]
    assert eval_cli(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "bad").exists()


def test_nan_free_report_numbers(first_run: FirstRun) -> None:
    for reports in first_run.run.reports.values():
        for report in reports:
            assert not math.isnan(report.seconds_per_user)
            assert all(not math.isnan(s.mean) for s in report.metrics.values())


def test_an_ablation_is_its_own_method_on_the_same_candidates(run_copy: Path) -> None:
    models = fake_models()
    result = run(run_copy, models, ["m3rec:hybrid:no_mar"])
    assert {stage for _, stage, _ in models.calls} == {"mope"}  # traits are cached; no MAR at all
    records = [
        r for r in read_lines(run_copy / RESULTS_FILE) if r["method"] == "m3rec:hybrid:no_mar"
    ]
    assert len(records) == 5 and all(r["ablation"] == "no_mar" for r in records)
    assert result.computed == {("m3rec:hybrid:no_mar", "full"): 5}


def test_a_fused_graph_method_runs_mar_with_the_prior_and_records_its_fusion_config(tmp_path: Path) -> None:
    """`m3rec:hybrid:fused+popularity --fusion FILE`: the graph fuses MAR with the harness's prior."""
    from m3rec_graph.fusion import FusionConfig

    config = tmp_path / "fusion.json"
    FusionConfig(weights={"mar": 1.0, "prior": 2.0}, sampling="uniform").dump(config)
    models = fake_models()
    run_evaluation(
        settings(users=3),
        parse_methods("popularity,m3rec:hybrid:fused+popularity"),
        tmp_path / "run",
        chat_models=models,
        serve=Served([]),
        progress=io.StringIO(),
        fusion=config,
        n_boot=0,
        plots=False,
    )
    lines = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    fused = [r for r in lines if r["method"] == "m3rec:hybrid:fused+popularity"]
    assert len(fused) == 3
    assert models.stage_calls("mar")  # MAR ran: its weight is not 0
    for record in fused:
        assert record["fusion"]["version"] == FusionConfig.model_validate_json(config.read_text()).version
        assert set(record["fusion"]["signals"]) == {"mar", "prior"}


def test_a_fused_graph_method_without_a_file_fits_mar_on_validation_and_resumes(tmp_path: Path) -> None:
    """`m3rec:hybrid:fused+popularity` with no --fusion: the LLM runs on the validation split first.

    Every validation user's signals are appended as they finish; a rerun after a
    crash runs only the missing users, and the fitted config is the same.
    """
    from m3rec_graph.evaluation.graph_fit import fitted_config_file, validation_file
    from m3rec_graph.evaluation.validation import validation_cases
    from m3rec_graph.fusion import FusionConfig

    method = "m3rec:hybrid:fused+popularity"
    out = tmp_path / "run"
    models = fake_models()

    def evaluate() -> None:
        run_evaluation(
            settings(users=4), parse_methods(method), out, chat_models=models, serve=Served([]),
            progress=io.StringIO(), n_boot=0, plots=False,
        )  # fmt: skip

    evaluate()
    lines = validation_file(out, method).read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 4
    for record in records:  # both graph signals, one value per validation candidate
        assert set(record["signals"]) == {"mar", "overlap"}
        assert len(record["signals"]["mar"]) == 10
    config = FusionConfig.model_validate_json(fitted_config_file(out, method).read_text())
    assert set(config.weights) == {"mar", "overlap", "text", "prior"}
    assert config.fitted is not None and config.fitted["users"] == 4 and config.sampling == "uniform"
    intervals = config.fitted["weight_ci95"]  # how sure each weight is, over the few LLM-run users
    assert isinstance(intervals, dict) and set(intervals) == set(config.weights)
    for signal, (low, high) in intervals.items():  # a weight survives only where its sign is clear
        if signal in cast(list[str], config.fitted["dropped"]):
            assert low <= 0 <= high and config.weights[signal] == 0
        else:
            assert (low > 0 and config.weights[signal] > 0) or (high < 0 and config.weights[signal] < 0)
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {r["fusion"]["version"] for r in results} == {config.version}
    # the validation requests are the validation cases (second-last item), never a test case
    test_cases = {r["user_id"]: r["ranking"] for r in results}
    valid = validation_cases(load_dataset(BEAUTY), prepare_cases(settings(users=4), load_dataset(BEAUTY), out), seed=0)
    shown = {c.user_id: {i.item_id for i in c.candidates} for c in valid}
    assert all(not shown[user] & set(ranking) for user, ranking in test_cases.items())

    # a crash during the validation run: the last line is lost; the rerun redoes only that user
    validation_file(out, method).write_text("\n".join(lines[:2]) + "\n")
    (out / "results.jsonl").unlink()
    evaluate()
    again = validation_file(out, method).read_text().splitlines()
    assert again[:2] == lines[:2] and len(again) == 4
    assert sorted(json.loads(line)["user_id"] for line in again) == sorted(r["user_id"] for r in records)
    assert FusionConfig.model_validate_json(fitted_config_file(out, method).read_text()).version == config.version


def test_fit_users_fits_a_fused_graph_method_on_the_first_users_only(tmp_path: Path) -> None:
    """`--fit-users 2` of 4: two validation graph runs (the run's first two users), all four tested."""
    from m3rec_graph.evaluation.graph_fit import fitted_config_file, validation_file
    from m3rec_graph.fusion import FusionConfig

    method = "m3rec:hybrid:fused"
    out = tmp_path / "run"
    progress = io.StringIO()
    run_evaluation(
        settings(users=4), parse_methods(method), out, chat_models=fake_models(), serve=Served([]),
        progress=progress, n_boot=0, plots=False, fit_users=2,
    )  # fmt: skip
    # the fit's line names each weight's bootstrap interval
    assert re.search(r"fitted on 2 validation users.*95% CI .*: mar \[[-+]\d", progress.getvalue())
    fitted_on = [json.loads(line)["user_id"] for line in validation_file(out, method).read_text().splitlines()]
    first_two = [c.user_id for c in prepare_cases(settings(users=4), load_dataset(BEAUTY), out)][:2]
    assert sorted(fitted_on) == sorted(first_two)
    config = FusionConfig.model_validate_json(fitted_config_file(out, method).read_text())
    assert config.fitted is not None and config.fitted["users"] == 2
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(results) == 4


def test_fit_users_below_one_is_refused(tmp_path: Path) -> None:
    with pytest.raises(EvaluationError, match="--fit-users"):
        run_evaluation(
            settings(users=2), parse_methods("m3rec:hybrid:fused"), tmp_path / "run",
            chat_models=fake_models(), serve=Served([]), progress=io.StringIO(), fit_users=0,
        )  # fmt: skip


def test_report_only_reports_the_users_every_method_finished_and_computes_nothing(tmp_path: Path) -> None:
    """An interrupted run: `--report-only` gives paired interim figures on the users all methods finished."""
    out = tmp_path / "run"
    models = fake_models()
    run_evaluation(
        settings(users=4), parse_methods("random,m3rec:hybrid"), out, chat_models=models,
        serve=Served([]), progress=io.StringIO(), n_boot=0, plots=False,
    )  # fmt: skip
    records = [json.loads(line) for line in (out / RESULTS_FILE).read_text().splitlines()]
    dropped = next(r["user_id"] for r in reversed(records) if r["method"] == "m3rec:hybrid")
    kept = [
        json.dumps(r) for r in records if not (r["method"] == "m3rec:hybrid" and r["user_id"] == dropped)
    ]
    (out / RESULTS_FILE).write_text("\n".join(kept) + "\n")  # the last m3rec user "was interrupted"
    calls = len(models.calls)
    interim = run_evaluation(
        settings(users=4), parse_methods("random,m3rec:hybrid"), out, chat_models=models,
        serve=Served([]), progress=io.StringIO(), n_boot=0, plots=False, report_only=True,
    )  # fmt: skip
    assert len(models.calls) == calls  # nothing computed
    assert len(interim.cases) == 3 and "the 3 of the run's 4 users" in interim.report
    assert all(r.users == 3 for reports in interim.reports.values() for r in reports)
    assert (out / RESULTS_FILE).read_text().splitlines() == kept  # nothing appended


def test_a_fit_drops_signals_it_cannot_sign_and_the_test_pass_then_skips_their_stages(tmp_path: Path) -> None:
    """MAR scoring every candidate alike (as the offline model mostly does) gets weight 0, so MAR never runs on test.

    The scripted MOTE gives every item the same traits, so `overlap` is constant too:
    only `text` keeps a weight, and the test pass makes no LLM call at all.
    """
    from m3rec_graph.evaluation.graph_fit import fitted_config_file
    from m3rec_graph.fusion import FusionConfig

    method = "m3rec:hybrid:fused"
    out = tmp_path / "run"
    models = ScriptedModels(default_responder(score_of=lambda _: 5))
    run_evaluation(
        settings(users=4), parse_methods(method), out, chat_models=models, serve=Served([]),
        progress=io.StringIO(), n_boot=0, plots=False,
    )  # fmt: skip
    config = FusionConfig.model_validate_json(fitted_config_file(out, method).read_text())
    assert config.active() == ("text",) and config.fitted["dropped"] == ["mar", "overlap"]
    assert cast(dict[str, list[float]], config.fitted["weight_ci95"])["mar"] == [0.0, 0.0]
    assert len(models.stage_calls("mar")) == 4  # one listwise chunk per validation user, none on test
    tested = [json.loads(line) for line in (out / RESULTS_FILE).read_text().splitlines()]
    assert len(tested) == 4 and all(r["llm_calls"] == 0 for r in tested)


def test_fusion_takes_a_shipped_configs_name(tmp_path: Path) -> None:
    """`m3rec eval --fusion default` (or `local`) reads the shipped config, as `--fusion` does everywhere."""
    from m3rec_graph.fusion import DEFAULT_FUSION_PATH, load_fusion_config

    run_evaluation(
        settings(users=2), parse_methods("m3rec:hybrid:fused"), tmp_path / "run", chat_models=fake_models(),
        serve=Served([]), progress=io.StringIO(), n_boot=0, plots=False, fusion=Path("default"),
    )  # fmt: skip
    lines = [json.loads(line) for line in (tmp_path / "run" / RESULTS_FILE).read_text().splitlines()]
    assert {r["fusion"]["version"] for r in lines} == {load_fusion_config(DEFAULT_FUSION_PATH).version}
