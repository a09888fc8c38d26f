"""`run_evaluation(langsmith=True)`: each (method, slice) is a LangSmith experiment, results stay resumable.

Against the fake LangSmith API on 127.0.0.1 (`LangSmithApiStub`) with scripted
chat models: the dataset is uploaded, every method and slice becomes an
experiment whose feedback equals the metrics of the local results, the graph's
runs nest under the experiment's runs, and a rerun asks no model again.
"""

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from langsmith.utils import get_env_var

from m3rec_graph.evaluation import EvalRun, EvalSettings, parse_methods, run_evaluation
from m3rec_graph.evaluation.metrics import user_metrics
from tests.fakes import ScriptedModels, default_responder
from tests.langsmith_api_stub import LangSmithApiStub
from tests.unit.test_evaluation import Served

BEAUTY = Path(__file__).parents[2] / "tests" / "fixtures" / "beauty_small"
METHODS = "popularity,m3rec:hybrid"
USERS = 4


@pytest.fixture(autouse=True)
def fresh_env_cache() -> Iterator[None]:
    cached = cast(Any, get_env_var)  # an lru_cache: the LANGSMITH_* variables are read once
    cached.cache_clear()
    yield
    cached.cache_clear()


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[LangSmithApiStub]:
    with LangSmithApiStub() as api:
        monkeypatch.setenv("LANGSMITH_API_KEY", "fake-key")
        monkeypatch.setenv("LANGSMITH_ENDPOINT", api.url)
        monkeypatch.setenv("LANGSMITH_TRACING", "false")  # the experiment traces its own runs
        yield api


def run(out: Path, models: ScriptedModels) -> EvalRun:
    return run_evaluation(
        EvalSettings(dataset=BEAUTY, users=USERS, negatives=9),
        parse_methods(METHODS),
        out,
        cold_start=1,
        chat_models=models,
        serve=Served([]),
        progress=io.StringIO(),
        n_boot=50,
        plots=False,
        langsmith=True,
    )


def run_feedback(stub: LangSmithApiStub) -> list[dict[str, Any]]:
    """Feedback on runs; the summary evaluator's experiment-level feedback has no `run_id`."""
    return [f for f in stub.feedback if f.get("run_id") is not None]


def wait_for_feedback(
    stub: LangSmithApiStub, count: int, timeout: float = 10.0
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while len(run_feedback(stub)) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return run_feedback(stub)


def test_every_method_and_slice_is_an_experiment_scored_like_the_local_results(
    stub: LangSmithApiStub, tmp_path: Path
) -> None:
    models = ScriptedModels(default_responder(score_of=lambda i: sum(map(ord, i)) % 11))
    result = run(tmp_path / "run", models)

    lines = [json.loads(x) for x in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert len(lines) == 2 * 2 * USERS  # methods x slices x users, as without LangSmith
    # one dataset per slice (the cold slice's inputs differ), one experiment per (method, slice)
    assert len(stub.datasets) == 2
    assert len(stub.sessions) == 4 == len(result.experiments)
    metas = [s["extra"]["metadata"] for s in stub.sessions.values()]
    m3rec_meta = [m for m in metas if m["method"] == "m3rec:hybrid"]
    assert len(m3rec_meta) == 2 and all(
        set(m["prompts"]) == {"mope", "mote", "mar_listwise"} for m in m3rec_meta
    )
    # feedback = each user's metrics from the local result line (8 metrics x 16 predictions)
    feedback = wait_for_feedback(stub, 8 * len(lines))
    assert len(feedback) == 8 * len(lines)
    runs = stub.runs
    by_run: dict[str, dict[str, float]] = {}
    for fb in feedback:
        by_run.setdefault(str(fb["run_id"]), {})[fb["key"]] = fb["score"]
    sessions = {s["name"]: s["extra"]["metadata"] for s in stub.sessions.values()}
    by_key = {(x["method"], x["slice"], x["user_id"]): x for x in lines}
    seen = set()
    for run_id, scores in by_run.items():
        traced = runs[run_id]
        meta = sessions[traced["session_name"]]
        request = traced["inputs"].get("inputs", traced["inputs"])  # the target's argument
        key = (meta["method"], meta["slice"], request["user_id"])
        line = by_key[key]
        assert traced["outputs"]["ranking"] == line["ranking"]
        assert scores == pytest.approx(
            user_metrics(line["rank"]), abs=1e-4
        )  # the SDK keeps 4 decimals
        seen.add(key)
    assert len(seen) == len(lines)
    # each experiment's own feedback: the means of its local result lines
    session_ids = {s["id"]: s["extra"]["metadata"] for s in stub.sessions.values()}
    posted: dict[str, dict[str, float]] = {}
    for fb in stub.feedback:
        if fb.get("run_id") is None:
            posted.setdefault(str(fb["session_id"]), {})[fb["key"]] = fb["score"]
    assert set(posted) == set(session_ids)
    for session_id, scores in posted.items():
        meta = session_ids[session_id]
        mine = [user_metrics(x["rank"]) for x in lines if (x["method"], x["slice"]) == (meta["method"], meta["slice"])]
        means = {f"mean {k}": sum(m[k] for m in mine) / len(mine) for k in mine[0]}
        assert scores == pytest.approx({**means, "failed predictions": 0}, abs=1e-4)
    # the graph's own runs are traced inside the experiment's runs
    graph_runs = [r for r in runs.values() if r.get("name") == "m3rec"]
    assert len(graph_runs) == 2 * USERS
    assert all(r.get("parent_run_id") for r in graph_runs)
    assert "langsmith_experiments" in json.loads((tmp_path / "run" / "results.json").read_text())


def test_a_rerun_is_a_new_experiment_without_model_calls(
    stub: LangSmithApiStub, tmp_path: Path
) -> None:
    first = ScriptedModels(default_responder(score_of=lambda i: sum(map(ord, i)) % 11))
    run(tmp_path / "run", first)
    wait_for_feedback(stub, 8 * 4 * USERS)
    again = ScriptedModels(default_responder(score_of=lambda i: 0))
    result = run(tmp_path / "run", again)
    wait_for_feedback(stub, 2 * 8 * 4 * USERS)
    assert again.calls == []  # stored rankings are the predictions
    assert sum(result.computed.values()) == 0
    assert len(stub.sessions) == 8 and len(stub.datasets) == 2  # the datasets are reused


def test_a_prompt_variant_is_recorded_in_the_experiment_metadata(
    stub: LangSmithApiStub, tmp_path: Path
) -> None:
    from m3rec_graph.prompts.loader import load_prompt
    from tests.unit.test_eval_prompt_overrides import mar_variant

    variant = mar_variant(tmp_path)
    models = ScriptedModels(default_responder())
    run_evaluation(
        EvalSettings(dataset=BEAUTY, users=2, negatives=9),
        parse_methods("m3rec:hybrid"),
        tmp_path / "run",
        chat_models=models,
        serve=Served([]),
        progress=io.StringIO(),
        n_boot=20,
        plots=False,
        langsmith=True,
        prompt_overrides={"mar_listwise": str(variant)},
    )
    wait_for_feedback(stub, 8 * 2)
    (session,) = stub.sessions.values()
    recorded = session["extra"]["metadata"]["prompts"]["mar_listwise"]
    assert recorded == load_prompt("mar_listwise", str(variant)).version
    assert recorded != load_prompt("mar_listwise").version
