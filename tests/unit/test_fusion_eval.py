"""Issue 15, evaluation side: the validation split, the weight fit, the method grammar, fusion runs."""

import io
import json
import random
from pathlib import Path

import pytest

from m3rec_graph.evaluation import EvalSettings, EvaluationError, parse_method, run_evaluation
from m3rec_graph.evaluation.datasets import build_requests, load_dataset
from m3rec_graph.evaluation.fusion_method import FusionSamplingMismatchError
from m3rec_graph.evaluation.settings import MethodSpec, parse_methods
from m3rec_graph.evaluation.validation import SplitOverlapError, validation_cases
from m3rec_graph.fusion import FusionConfig
from m3rec_graph.fusion.fit import (
    FitError,
    FitGroup,
    fit_weights,
    supported_signals,
    weight_intervals,
)

ROOT = Path(__file__).parents[2]
BEAUTY = ROOT / "tests" / "fixtures" / "beauty_small"


# --------------------------------------------------------------------------- the validation split


@pytest.mark.parametrize("sampling", ["uniform", "popularity"])
def test_validation_cases_are_disjoint_from_the_test_candidates(sampling: str) -> None:
    dataset = load_dataset(BEAUTY)
    tests = build_requests(dataset, n_users=40, n_negatives=19, seed=3, sampling=sampling)  # type: ignore[arg-type]
    valid = validation_cases(dataset, tests, seed=3, sampling=sampling)  # type: ignore[arg-type]
    assert [v.user_id for v in valid] == [t.user_id for t in tests]
    for test, case in zip(tests, valid, strict=True):
        seq = dataset.sequences[case.user_id]
        assert case.target_id == seq[-2]
        assert [i.item_id for i in case.history] == seq[:-2]
        ids = [i.item_id for i in case.candidates]
        assert len(ids) == len(test.candidates) == 20 and len(set(ids)) == 20
        assert not set(ids) & {i.item_id for i in test.candidates}
        assert seq[-1] not in ids  # the test target never shows up in validation
    again = validation_cases(dataset, tests, seed=3, sampling=sampling)  # type: ignore[arg-type]
    assert [c.candidates for c in again] == [c.candidates for c in valid]


def test_an_overlap_with_the_test_candidates_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    dataset = load_dataset(BEAUTY)
    tests = build_requests(dataset, n_users=3, n_negatives=9, seed=0)
    from m3rec_graph.evaluation import validation

    def leaky(*args: object, **kwargs: object) -> list[str]:
        # A sampler that ignores `exclude`, as a regression would: the check must catch it.
        return [i.item_id for i in tests[0].candidates]

    monkeypatch.setattr(validation, "sample_candidates", leaky)
    with pytest.raises(SplitOverlapError, match="share"):
        validation_cases(dataset, tests[:1], seed=0)


# --------------------------------------------------------------------------- the fit


def synthetic_groups(n: int, seed: int) -> list[FitGroup]:
    """The target is pushed up by `prior` and down by `text`; noise hides it in single groups."""
    rng = random.Random(seed)
    groups = []
    for _ in range(n):
        target = rng.randrange(20)
        prior = [rng.gauss(0, 1) + (1.5 if i == target else 0.0) for i in range(20)]
        text = [rng.gauss(0, 1) - (0.8 if i == target else 0.0) for i in range(20)]
        groups.append(FitGroup(signals={"prior": prior, "text": text}, target=target))
    return groups


@pytest.mark.parametrize("method", ["logistic", "coordinate"])
def test_fit_recovers_the_sign_of_known_weights(method: str) -> None:
    result = fit_weights(synthetic_groups(300, seed=1), ["text", "prior"], method)  # type: ignore[arg-type]
    assert result.weights["prior"] > 0 > result.weights["text"]
    assert abs(result.weights["prior"]) > abs(result.weights["text"])
    assert sum(abs(w) for w in result.weights.values()) == pytest.approx(1.0, abs=1e-5)
    assert result.groups == 300 and 0.0 < result.in_sample["NDCG@10"] <= 1.0


def test_fit_is_deterministic_and_ignores_a_signals_scale() -> None:
    groups = synthetic_groups(100, seed=2)
    scaled = [
        FitGroup(
            signals={
                "prior": [v * 1000 + 7 for v in g.signals["prior"]],
                "text": g.signals["text"],
            },
            target=g.target,
        )
        for g in groups
    ]
    one = fit_weights(groups, ["text", "prior"])
    assert fit_weights(groups, ["text", "prior"]) == one
    assert fit_weights(scaled, ["text", "prior"]).weights == pytest.approx(one.weights, abs=1e-5)


def test_weight_intervals_bracket_known_signs_and_pin_a_constant_signal_at_zero() -> None:
    """A signal the data decides gets an interval off 0; a constant one (MAR scoring all alike) is 0 always."""
    groups = [
        FitGroup(signals={**g.signals, "mar": [5.0] * 20}, target=g.target)
        for g in synthetic_groups(120, seed=3)
    ]
    intervals = weight_intervals(groups, ["mar", "text", "prior"], n_boot=60)
    assert intervals["mar"] == (0.0, 0.0)
    assert 0 < intervals["prior"][0] <= intervals["prior"][1]
    assert intervals["text"][0] <= intervals["text"][1] < 0
    assert weight_intervals(groups, ["mar", "text", "prior"], n_boot=60) == intervals  # seeded
    assert supported_signals(intervals) == ["text", "prior"]  # mar's interval is [0, 0]


def test_fit_refuses_bad_groups() -> None:
    with pytest.raises(FitError, match="no validation cases"):
        fit_weights([], ["text"])
    with pytest.raises(FitError, match="target index"):
        fit_weights([FitGroup(signals={"text": [0.1, 0.2]}, target=2)], ["text"])
    with pytest.raises(FitError, match="different numbers"):
        fit_weights(
            [FitGroup(signals={"text": [0.1], "prior": [1.0, 2.0]}, target=0)], ["text", "prior"]
        )
    with pytest.raises(FitError, match="signals must be"):
        fit_weights(synthetic_groups(2, 0), ["bm25"])  # type: ignore[list-item]


# --------------------------------------------------------------------------- the method grammar


def test_fusion_and_fused_method_names() -> None:
    assert parse_method("fusion:sasrec+text") == MethodSpec("fusion", fused=True, prior="sasrec")
    assert parse_method("fusion:popularity+text").key == "fusion:popularity+text"
    assert parse_method("fusion:none+text").key == "fusion:none+text"
    spec = parse_method("m3rec:local:fused+sasrec")
    assert (spec.routing, spec.ablation, spec.fused, spec.prior) == (
        "local",
        "none",
        True,
        "sasrec",
    )
    assert spec.key == "m3rec:local:fused+sasrec"
    assert parse_method("m3rec:hybrid:no_mope:fused").key == "m3rec:hybrid:no_mope:fused"
    assert parse_method("m3rec:local").fused is False
    keys = [m.key for m in parse_methods("text,fusion:sasrec+text,sasrec,fusion:sasrec+text")]
    assert keys == ["text", "fusion:sasrec+text", "sasrec"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("fusion:bert4rec+text", "expected fusion:PRIOR\\+text"),
        ("fusion:sasrec", "expected fusion:PRIOR\\+text"),
        ("fusion:sasrec+bm25", "expected fusion:PRIOR\\+text"),
        ("fusion:sasrec+text:local", "expected fusion:PRIOR\\+text"),
        ("m3rec:local:fused+none", "expected fused or fused\\+PRIOR"),
        ("m3rec:local:fused+bert4rec", "expected fused or fused\\+PRIOR"),
        ("m3rec:local:fused:fused", "cannot read 'fused'"),
        ("m3rec:local:fusedx", "cannot read 'fusedx'"),
    ],
)
def test_bad_fusion_method_names_are_refused(text: str, message: str) -> None:
    with pytest.raises(EvaluationError, match=message):
        parse_method(text)


# --------------------------------------------------------------------------- fusion runs


def settings(**changes: object) -> EvalSettings:
    base: dict[str, object] = {"dataset": BEAUTY, "users": 30, "negatives": 19, "seed": 0}
    return EvalSettings(**{**base, **changes})  # type: ignore[arg-type]


def test_fusion_method_fits_on_validation_and_records_its_config(tmp_path: Path) -> None:
    out, progress = tmp_path / "run", io.StringIO()
    run = run_evaluation(
        settings(), parse_methods("text,fusion:none+text,fusion:popularity+text"), out,
        cold_start=2, progress=progress, n_boot=50, plots=False,
    )  # fmt: skip
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    fused = [r for r in lines if r["method"] == "fusion:popularity+text"]
    assert len(fused) == 60
    stored = FusionConfig.model_validate_json((out / "fusion-popularity.json").read_text())
    assert set(stored.weights) == {"text", "prior"} and stored.sampling == "uniform"
    assert str(stored.fitted["split"]).startswith("validation") and stored.fitted["users"] == 30
    assert {json.dumps(r["fusion"], sort_keys=True) for r in fused} == {
        json.dumps(
            {"fitted": True, "source": "validation", "version": stored.version}, sort_keys=True
        )
    }
    # A single signal ranks as that signal alone: fusion:none+text is the text baseline.
    text = {(r["slice"], r["user_id"]): r["ranking"] for r in lines if r["method"] == "text"}
    alone = {
        (r["slice"], r["user_id"]): r["ranking"] for r in lines if r["method"] == "fusion:none+text"
    }
    assert alone == text
    assert "validation fused: HR@10" in progress.getvalue()
    assert f"fusion@{stored.version} (fitted on validation)" in run.report
    document = json.loads((out / "results.json").read_text())
    recorded = document["slices"]["full"]["fusion:popularity+text"]["config"]["fusion"]
    assert recorded["version"] == stored.version


def test_a_given_config_is_used_and_its_sampling_checked(tmp_path: Path) -> None:
    path = tmp_path / "weights.json"
    FusionConfig(weights={"text": 1.0, "prior": -0.5}, sampling="popularity").dump(path)
    methods = parse_methods("fusion:popularity+text")
    with pytest.raises(FusionSamplingMismatchError, match="--allow-sampling-mismatch"):
        run_evaluation(
            settings(), methods, tmp_path / "a", progress=io.StringIO(), fusion=path, plots=False
        )
    run_evaluation(
        settings(), methods, tmp_path / "b", progress=io.StringIO(), fusion=path, n_boot=0,
        plots=False, allow_sampling_mismatch=True,
    )  # fmt: skip
    line = json.loads((tmp_path / "b" / "results.jsonl").read_text().splitlines()[0])
    assert line["fusion"]["fitted"] is False and line["fusion"]["source"] == str(path)
    assert not (tmp_path / "b" / "fusion-popularity.json").exists()
    # adding a slice to that directory with another config would mix configs under one name
    FusionConfig(weights={"text": 1.0, "prior": 0.5}, sampling="uniform").dump(path)
    with pytest.raises(EvaluationError, match="was scored with fusion config"):
        run_evaluation(
            settings(), methods, tmp_path / "b", cold_start=2, progress=io.StringIO(), fusion=path,
            n_boot=0, plots=False,
        )  # fmt: skip


# --------------------------------------------------------------------------- report breakdowns


def test_paired_difference_by_hand() -> None:
    from m3rec_graph.evaluation.metrics import paired_difference

    # HR@10 per user: method 1,0,1,0; baseline 1,1,0,0 -> differences 0,-1,+1,0, mean 0
    gain = paired_difference([1, 20, 3, 11], [2, 2, 30, 50], "HR@10", n_boot=500, seed=0)
    assert gain.mean == 0.0 and -1.0 <= gain.low < 0.0 < gain.high <= 1.0
    same = paired_difference([4, 7], [4, 7], "NDCG@10", n_boot=100)
    assert (same.mean, same.low, same.high) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="equal length"):
        paired_difference([1], [1, 2], "HR@10")


def test_breakdowns_pair_users_and_bucket_history_lengths() -> None:
    from m3rec_graph.evaluation.breakdowns import bucket_of, history_breakdown, paired_gains

    assert [bucket_of(n) for n in (1, 4, 5, 7, 8, 15, 16, 200)] == [
        "<=4", "<=4", "5-7", "5-7", "8-15", "8-15", ">15", ">15",
    ]  # fmt: skip
    records = {
        "sasrec": {"u1": {"rank": 20, "history_items": 4}, "u2": {"rank": 1, "history_items": 9}},
        "text": {"u1": {"rank": 1, "history_items": 4}, "u2": {"rank": 1, "history_items": 9}},
    }
    (gain,) = paired_gains("full", records, n_boot=0)
    assert (gain.method, gain.users, gain.deltas["HR@10"].mean) == ("text", 2, 0.5)
    assert paired_gains("full", {"text": records["text"]}) == []
    buckets = {(b.method, b.bucket): b.users for b in history_breakdown(records, n_boot=0)}
    assert buckets == {
        ("sasrec", "<=4"): 1,
        ("sasrec", "8-15"): 1,
        ("text", "<=4"): 1,
        ("text", "8-15"): 1,
    }


# --------------------------------------------------------------------------- m3rec fit-fusion


def fit_cli(argv: list[str]) -> int:
    from m3rec_graph.cli import app as cli

    try:
        cli.main(["fit-fusion", *argv])
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_fit_fusion_writes_a_config_and_prints_validation_metrics(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "configs" / "beauty.json"
    argv = ["--dataset", str(BEAUTY), "--prior", "popularity", "--signals", "text,prior",
            "--users", "30", "--negatives", "19", "--n-boot", "50", "--out", str(out)]  # fmt: skip
    assert fit_cli(argv) == 0
    config = FusionConfig.model_validate_json(out.read_text())
    assert set(config.weights) == {"text", "prior"} and config.fitted["prior"] == "popularity"
    printed = capsys.readouterr().out
    assert f"fusion config {config.version}" in printed
    for row in ("fused", "text", "prior"):
        assert f"validation {row}: HR@10 " in printed
    # the eval run on the same settings fits the same config on its own validation split
    run_evaluation(
        settings(), parse_methods("fusion:popularity+text"), tmp_path / "run",
        progress=io.StringIO(), n_boot=0, plots=False,
    )  # fmt: skip
    assert (tmp_path / "run" / "fusion-popularity.json").read_text() == out.read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--signals", "text,bm25"], "unknown signal 'bm25'"),
        (["--signals", " , "], "--signals is empty"),
        (["--signals", "text,mar"], "needs an LLM"),
        (["--signals", "text", "--prior", "sasrec"], "has no prior"),
        (["--signals", "text,prior", "--prior", "none"], "--prior is none"),
        (["--dataset", "no/such/dir"], "dataset directory not found"),
        (["--users", "0"], "--users must be >= 1"),
        (["--negatives", "0"], "--negatives must be >= 1"),
        (["--n-boot", "-1"], "--n-boot must be >= 0"),
    ],
)
def test_fit_fusion_bad_input_is_one_line_and_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    base = {"--dataset": str(BEAUTY), "--prior": "none", "--signals": "text",
            "--users": "5", "--negatives": "9", "--out": str(tmp_path / "c.json")}  # fmt: skip
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    assert fit_cli([part for pair in base.items() for part in pair]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "c.json").exists()


def test_fit_fusion_refuses_a_directory_and_an_unknown_prior(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--dataset", str(BEAUTY), "--signals", "text", "--users", "5", "--negatives", "9"]
    assert fit_cli([*argv, "--prior", "none", "--out", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert fit_cli([*argv, "--prior", "bert4rec", "--out", str(tmp_path / "c.json")]) == 2
    assert "invalid choice: 'bert4rec'" in capsys.readouterr().err
