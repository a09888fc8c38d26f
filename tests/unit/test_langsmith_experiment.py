"""`arun_experiment` against a fake LangSmith API on 127.0.0.1 (`LangSmithApiStub`).

The experiment uploads the cases as a dataset, runs a scripted `predict` as a
LangSmith experiment and posts one feedback per metric and example; the stub
records what LangSmith would have stored. Nothing leaves 127.0.0.1.
"""

import math
import socket
import time
from collections.abc import Iterator
from typing import Any, cast

import pytest
from langsmith import Client
from langsmith.utils import get_env_var
from urllib3.util.retry import Retry

from m3rec_graph.contracts.schemas import Item
from m3rec_graph.errors import M3RecError
from m3rec_graph.evaluation.datasets import EvalCase
from m3rec_graph.evaluation.langsmith_experiment import (
    ExperimentSummary,
    LangSmithConfigError,
    LangSmithServiceError,
    arun_experiment,
    langsmith_dataset_name,
    upload_cases,
)
from m3rec_graph.evaluation.metrics import metric_names
from tests.langsmith_api_stub import LangSmithApiStub

N_CANDIDATES = 20
SETTINGS: dict[str, Any] = {
    "format": 1,
    "dataset_name": "beauty",
    "dataset_sha256": "0f" * 32,
    "dataset_path": "/home/someone/data/beauty",
    "users": 4,
    "negatives": N_CANDIDATES - 1,
    "seed": 0,
    "cold_start": None,
    "routing": "local",
}
PROMPTS = {"mope": "aaaaaaaaaaaa", "mote": "bbbbbbbbbbbb", "mar_listwise": "cccccccccccc"}
METADATA: dict[str, Any] = {"routing": "local", "prompts": PROMPTS, "ablation": "none"}

RANKS = {"u1": 1, "u2": 3, "u3": 7, "u4": 20}
"""Where the scripted `predict` puts each user's target."""

EXPECTED: dict[str, dict[str, float]] = {
    # Worked out by hand: HR@k = [rank <= k], NDCG@k = 1/log2(rank + 1) within k, MRR = 1/rank.
    "u1": {"HR@1": 1, "HR@5": 1, "HR@10": 1, "HR@20": 1, "NDCG@5": 1, "NDCG@10": 1, "NDCG@20": 1, "MRR": 1},
    "u2": {"HR@1": 0, "HR@5": 1, "HR@10": 1, "HR@20": 1, "NDCG@5": 0.5, "NDCG@10": 0.5, "NDCG@20": 0.5, "MRR": 1 / 3},
    "u3": {"HR@1": 0, "HR@5": 0, "HR@10": 1, "HR@20": 1, "NDCG@5": 0, "NDCG@10": 1 / 3, "NDCG@20": 1 / 3, "MRR": 1 / 7},
    "u4": {
        "HR@1": 0, "HR@5": 0, "HR@10": 0, "HR@20": 1,
        "NDCG@5": 0, "NDCG@10": 0, "NDCG@20": 1 / math.log2(21), "MRR": 1 / 20,
    },
}  # fmt: skip


def make_case(user: str, target_slot: int) -> EvalCase:
    candidates = [
        Item(item_id=f"{user}-c{i:02d}", title=f"Candidate {i} of {user}")
        for i in range(N_CANDIDATES)
    ]
    history = [Item(item_id=f"{user}-h{i}", title=f"Bought {i}", brand="Acme") for i in range(3)]
    return EvalCase(
        user_id=user,
        history=history,
        candidates=candidates,
        target_id=candidates[target_slot].item_id,
    )


CASES = [make_case(user, slot) for user, slot in (("u1", 4), ("u2", 0), ("u3", 19), ("u4", 11))]
TARGETS = {case.user_id: case.target_id for case in CASES}


async def scripted_predict(inputs: dict[str, Any]) -> dict[str, Any]:
    """Rank the candidates in order, with the user's target moved to `RANKS[user]`."""
    user = inputs["user_id"]
    ids = [c["item_id"] for c in inputs["candidates"] if c["item_id"] != TARGETS[user]]
    ids.insert(RANKS[user] - 1, TARGETS[user])
    return {"ranking": ids}


@pytest.fixture(autouse=True)
def fresh_env_cache() -> Iterator[None]:
    """`langsmith.utils.get_env_var` is cached: clear it around each test's environment."""
    cached = cast(Any, get_env_var)  # an lru_cache behind typing overloads
    cached.cache_clear()
    yield
    cached.cache_clear()


@pytest.fixture
def stub() -> Iterator[LangSmithApiStub]:
    with LangSmithApiStub() as api:
        yield api


@pytest.fixture
def client(stub: LangSmithApiStub) -> Iterator[Client]:
    ls_client = Client(api_url=stub.url, api_key="fake")
    yield ls_client
    ls_client.close(timeout=5)


async def run(client: Client | None, **overrides: Any) -> ExperimentSummary:
    kwargs: dict[str, Any] = {
        "predict": scripted_predict,
        "dataset_label": "Beauty",
        "settings": SETTINGS,
        "experiment_prefix": "m3rec-local",
        "metadata": METADATA,
        "max_concurrency": 2,
        "client": client,
        **overrides,
    }
    return await arun_experiment(CASES, **kwargs)


def run_feedback(stub: LangSmithApiStub) -> list[dict[str, Any]]:
    """Feedback on runs (one per metric and example); experiment-level feedback has no `run_id`."""
    return [f for f in stub.feedback if f.get("run_id") is not None]


def experiment_feedback(stub: LangSmithApiStub) -> dict[str, dict[str, float]]:
    """The summary evaluator's feedback: experiment (session) id -> key -> score."""
    found: dict[str, dict[str, float]] = {}
    for f in stub.feedback:
        if f.get("run_id") is None:
            found.setdefault(str(f["session_id"]), {})[f["key"]] = f["score"]
    return found


def wait_for_feedback(
    stub: LangSmithApiStub, count: int, timeout: float = 5.0
) -> list[dict[str, Any]]:
    """The SDK posts run feedback from background threads: wait (bounded) until `count` arrived.

    Every test that runs an experiment waits: a feedback post still pending when
    the stub stops is retried by the SDK with a long backoff, and the
    interpreter waits for it at exit. Returns the run feedback only (the summary
    evaluator's experiment feedback is posted before `aevaluate` returns).
    """
    deadline = time.monotonic() + timeout
    while len(run_feedback(stub)) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return run_feedback(stub)


def expected_experiment_feedback(summary: ExperimentSummary) -> dict[str, float]:
    return {
        **{f"mean {key}": value for key, value in summary.metrics.items()},
        "failed predictions": summary.failed,
    }


def only_dataset(stub: LangSmithApiStub) -> dict[str, Any]:
    datasets = list(stub.datasets.values())
    assert len(datasets) == 1, [d["name"] for d in datasets]
    return datasets[0]


# --------------------------------------------------------------------------- dataset name


def test_dataset_name_is_stable_and_ignores_routing_and_paths() -> None:
    name = langsmith_dataset_name("Beauty", SETTINGS)
    assert name.startswith("m3rec-beauty-n19-u4-s0-")
    assert len(name.rsplit("-", 1)[1]) == 8
    # Routing, ablation and where the files live do not change the candidate sets.
    same = {**SETTINGS, "routing": "openai", "ablation": "no_mope", "dataset_path": "/elsewhere"}
    assert langsmith_dataset_name("Beauty", same) == name
    # Anything else does.
    assert langsmith_dataset_name("Beauty", {**SETTINGS, "dataset_sha256": "1f" * 32}) != name
    assert langsmith_dataset_name("Beauty", {**SETTINGS, "seed": 1}) != name
    assert langsmith_dataset_name("Beauty", {**SETTINGS, "cold_start": 5}).startswith(
        "m3rec-beauty-n19-u4-s0-c5-"
    )


# --------------------------------------------------------------------------- end to end


async def test_experiment_uploads_dataset_runs_and_posts_metric_feedback(
    stub: LangSmithApiStub, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LANGSMITH_API_KEY", "fake-key")
    monkeypatch.setenv("LANGSMITH_ENDPOINT", stub.url)

    summary = await run(None)  # the client comes from the LANGSMITH_* variables

    # The dataset: one example per case; inputs are the request, the target only a reference output.
    dataset = only_dataset(stub)
    assert dataset["name"] == summary.dataset_name == langsmith_dataset_name("Beauty", SETTINGS)
    examples = stub.examples(dataset["id"])
    assert len(examples) == len(CASES) == dataset["example_count"]
    by_user = {e["metadata"]["user_id"]: e for e in examples}
    for case in CASES:
        example = by_user[case.user_id]
        assert example["inputs"] == case.to_request()
        assert "target_id" not in example["inputs"]
        assert example["outputs"] == {"target_id": case.target_id}
    assert dataset["metadata"]["dataset_sha256"] == SETTINGS["dataset_sha256"]
    assert "dataset_path" not in dataset["metadata"]

    # The experiment: on that dataset, with the prompt versions, routing and settings as metadata.
    (session,) = stub.sessions.values()
    assert session["name"] == summary.experiment_name
    assert session["name"].startswith("m3rec-local-")
    assert session["reference_dataset_id"] == dataset["id"]
    meta = session["extra"]["metadata"]
    assert meta["prompts"] == PROMPTS
    assert meta["routing"] == "local"
    assert meta["ablation"] == "none"
    assert meta["seed"] == 0
    assert meta["dataset_sha256"] == SETTINGS["dataset_sha256"]
    assert meta["langsmith_dataset"] == summary.dataset_name
    assert "dataset_path" not in meta
    assert set(session["evaluator_keys"]) == set(metric_names())
    assert summary.url is not None and dataset["id"] in summary.url and session["id"] in summary.url

    # One root run per example in the experiment, linked to its example, with the metadata.
    roots = stub.roots()
    assert len(roots) == len(CASES)
    example_user = {e["id"]: e["metadata"]["user_id"] for e in examples}
    run_user: dict[str, str] = {}
    for root in roots:
        assert root["session_name"] == summary.experiment_name
        assert root["extra"]["metadata"]["prompts"] == PROMPTS
        run_user[root["id"]] = example_user[str(root["reference_example_id"])]
        assert (
            root["outputs"]["ranking"][RANKS[run_user[root["id"]]] - 1]
            == TARGETS[run_user[root["id"]]]
        )

    # Feedback: every metric for every example, with the hand-computed values.
    feedback = wait_for_feedback(stub, len(CASES) * len(metric_names()))
    assert len(feedback) == len(CASES) * len(metric_names())
    got = {(run_user[str(f["run_id"])], f["key"]): f["score"] for f in feedback}
    for user, metrics in EXPECTED.items():
        for key, value in metrics.items():
            assert got[(user, key)] == pytest.approx(value, abs=1e-4), (user, key)

    # The summary: the mean of each metric over the examples.
    assert summary.examples == len(CASES) and summary.failed == 0
    assert set(summary.metrics) == set(metric_names())
    for key in metric_names():
        assert summary.metrics[key] == pytest.approx(
            sum(m[key] for m in EXPECTED.values()) / len(EXPECTED)
        )
    assert summary.metrics["HR@10"] == pytest.approx(0.75)
    assert summary.metrics["MRR"] == pytest.approx((1 + 1 / 3 + 1 / 7 + 1 / 20) / 4)
    # ... computed by the summary evaluator and posted as the experiment's own feedback.
    assert experiment_feedback(stub) == {
        session["id"]: pytest.approx(expected_experiment_feedback(summary), abs=1e-4)
    }
    # One evaluator per example and no evaluator traces (disable_evaluator_tracing):
    # the only runs are the experiment's, and no feedback links to an evaluator run.
    assert {r["session_name"] for r in stub.runs.values()} == {summary.experiment_name}
    assert not any("__run" in (f["feedback_source"].get("metadata") or {}) for f in feedback)

    # The SDK's "View the evaluation results" line does not land on stdout.
    assert capsys.readouterr().out == ""


async def test_rerun_reuses_the_dataset(stub: LangSmithApiStub, client: Client) -> None:
    first = await run(client)
    second = await run(
        client, metadata={**METADATA, "prompts": {**PROMPTS, "mope": "dddddddddddd"}}
    )

    dataset = only_dataset(stub)
    assert first.dataset_name == second.dataset_name == dataset["name"]
    assert len(stub.examples(dataset["id"])) == len(CASES)
    bulk_uploads = [
        r for r in stub.requests if r.method == "POST" and r.path.startswith("/examples/bulk")
    ]
    assert len(bulk_uploads) == 1
    # Two experiments on the one dataset, told apart by their prompt versions.
    sessions = list(stub.sessions.values())
    assert len(sessions) == 2 and first.experiment_name != second.experiment_name
    assert {s["reference_dataset_id"] for s in sessions} == {dataset["id"]}
    assert {s["extra"]["metadata"]["prompts"]["mope"] for s in sessions} == {
        "aaaaaaaaaaaa",
        "dddddddddddd",
    }
    assert second.metrics == first.metrics
    # Let the SDK's background feedback posts land before the stub stops.
    assert len(wait_for_feedback(stub, 2 * len(CASES) * len(metric_names()))) == 64
    assert len(experiment_feedback(stub)) == 2


def test_interrupted_upload_is_completed_and_foreign_examples_are_refused(
    stub: LangSmithApiStub, client: Client
) -> None:
    name = langsmith_dataset_name("Beauty", SETTINGS)
    upload_cases(client, CASES[:2], name, "partial")  # as if the first upload stopped half-way
    dataset = upload_cases(client, CASES, name, "full")
    stored = stub.examples(str(dataset.id))
    assert sorted(e["metadata"]["user_id"] for e in stored) == ["u1", "u2", "u3", "u4"]
    assert only_dataset(stub)["description"] == "partial"

    with pytest.raises(LangSmithConfigError, match="not in this evaluation set"):
        upload_cases(client, [make_case("u9", 0)], name, "other cases")
    assert len(stub.examples(str(dataset.id))) == len(CASES)


async def test_a_failing_prediction_is_counted_not_scored(
    stub: LangSmithApiStub, client: Client
) -> None:
    async def predict(inputs: dict[str, Any]) -> dict[str, Any]:
        if inputs["user_id"] == "u4":
            raise RuntimeError("model server went away")
        return await scripted_predict(inputs)

    summary = await run(client, predict=predict)

    assert summary.examples == len(CASES) and summary.failed == 1
    for key in metric_names():
        scored = [EXPECTED[u][key] for u in ("u1", "u2", "u3")]
        assert summary.metrics[key] == pytest.approx(sum(scored) / 3)
    feedback = wait_for_feedback(stub, len(CASES) * len(metric_names()))
    errors = [f for f in feedback if f.get("score") is None]
    assert {f["key"] for f in errors} == set(metric_names())
    ((_, posted),) = experiment_feedback(stub).items()
    assert posted == pytest.approx(expected_experiment_feedback(summary), abs=1e-4)
    assert posted["failed predictions"] == 1


# --------------------------------------------------------------------------- failures


async def test_no_api_key_is_a_typed_one_line_error(
    stub: LangSmithApiStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("LANGSMITH_API_KEY", "LANGCHAIN_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LANGSMITH_ENDPOINT", stub.url)

    with pytest.raises(LangSmithConfigError) as caught:
        await run(None)

    assert isinstance(caught.value, M3RecError) and isinstance(caught.value, ValueError)
    message = str(caught.value)
    assert "LANGSMITH_API_KEY" in message and "\n" not in message
    # Nothing was sent: no dataset, example, experiment, run or feedback. (The SDK may read the
    # server's public /info on its own, from a background thread; that carries no data.)
    assert [r for r in stub.requests if r.path.split("?")[0] != "/info"] == []


async def test_unreachable_langsmith_is_a_typed_error_quickly() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = Client(
        api_url=f"http://127.0.0.1:{port}",
        api_key="fake",
        retry_config=Retry(total=0),
        timeout_ms=1000,
    )
    started = time.monotonic()
    try:
        with pytest.raises(LangSmithServiceError) as caught:
            await run(client)
    finally:
        client.close(timeout=1)

    assert time.monotonic() - started < 5
    error = caught.value
    assert isinstance(error, M3RecError) and not isinstance(error, ValueError)
    assert error.unreachable
    assert f"unreachable at http://127.0.0.1:{port}" in str(error) and "\n" not in str(error)
