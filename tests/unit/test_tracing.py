"""LangSmith tracing of one recommendation, recorded offline by a fake LangSmith API.

The graph runs with scripted models under `tracing_context(client=...)` pointed
at `LangSmithRecorder` on 127.0.0.1 (no `LANGSMITH_*` environment variables),
and the test asserts on the run tree LangSmith would have received.

Observed shape (abbreviated; `mope`, `mote` and `mar` are plain nodes of the graph,
one node run per task, and a re-ask is another run of the same node whose input
carries the validation error in `feedback`):

```
m3rec
  prepare
  mope -> mope.llm (attempt 1) -> ScriptedChatModel [llm], parse    (rejected: re-sent)
  mote -> mote.llm -> ...                   (one mote node run per candidate)
  mope -> mope.llm (attempt 2) -> ...       (the re-ask, accepted)
  collect_traits                            (idle: the MOPE re-ask was still pending)
  collect_traits
  mar -> mar.llm -> ...                     (one listwise chunk)
  rank
```
"""

import json
import re
from collections import Counter
from collections.abc import Iterator

import pytest
from langchain_core.tracers.langchain import wait_for_all_tracers
from langsmith import Client
from langsmith.run_helpers import tracing_context

import m3rec_graph
from m3rec_graph.prompts.loader import PromptName, load_prompt
from m3rec_graph.state import RecInput
from tests.fakes import Responder, ScriptedModels, default_responder, profile_answer
from tests.langsmith_recorder import LangSmithRecorder, Run

PROJECT = "m3rec-test"
REASK_MARKER = "Your previous answer was rejected"

REQUEST: RecInput = {
    "user_id": "u-trace",
    "history": [
        {"item_id": "h1", "title": "Red gel nail polish", "categories": ["Makeup > Nails"]},
        {"item_id": "h2", "title": "Holographic glitter top coat", "brand": "Sparkle"},
    ],
    "candidates": [
        {"item_id": "c1", "title": "Pastel pink nail polish set"},
        {"item_id": "c2", "title": "Glass nail file"},
        {"item_id": "c3", "title": "Shimmer lip gloss"},
    ],
}


def mope_wrong_first() -> Responder:
    """Answer every stage validly, except MOPE's first attempt: it cites an unknown item."""
    valid = default_responder()

    def respond(stage: str, prompt: str) -> str:
        if stage == "mope" and REASK_MARKER not in prompt:
            return json.dumps(profile_answer(["not-in-history"]))
        answer = valid(stage, prompt)
        assert isinstance(answer, str)
        return answer

    return respond


@pytest.fixture
def recorder() -> Iterator[LangSmithRecorder]:
    with LangSmithRecorder() as rec:
        yield rec


@pytest.fixture
def client(recorder: LangSmithRecorder) -> Iterator[Client]:
    """A LangSmith client that sends to the recorder (its background threads stop afterwards)."""
    ls_client = Client(api_url=recorder.url, api_key="fake")
    yield ls_client
    ls_client.close(timeout=5)


def metadata(run: Run) -> dict[str, object]:
    meta: dict[str, object] = (run.get("extra") or {}).get("metadata") or {}
    return meta


def only(runs: list[Run]) -> Run:
    assert len(runs) == 1, [r.get("name") for r in runs]
    return runs[0]


def check_llm_stage_run(
    recorder: LangSmithRecorder,
    run: Run,
    *,
    node: Run,
    stage: str,
    model: str,
    prompt: PromptName,
    attempt: int,
) -> None:
    """One `<stage>.llm` run, the chat model's own: metadata, tags, place in the tree, token usage."""
    expected = load_prompt(prompt)
    meta = metadata(run)
    assert meta["m3rec_stage"] == stage
    assert meta["m3rec_model"] == model
    assert meta["m3rec_routing"] == "hybrid"
    assert meta["m3rec_prompt"] == expected.name
    assert isinstance(meta["m3rec_prompt_version"], str)
    assert re.fullmatch(r"[0-9a-f]{12}", meta["m3rec_prompt_version"])
    assert meta["m3rec_prompt_version"] == expected.version
    assert meta["m3rec_attempt"] == attempt
    assert f"m3rec:{stage}" in run["tags"]

    # It is the model call of this stage's node run.
    assert run["parent_run_id"] == node["id"]

    # It is the chat model's run itself (one run per call, no wrapper chain), with the tokens.
    assert run["run_type"] == "llm"
    assert recorder.children(run) == []
    usage = metadata(run)["usage_metadata"]
    assert isinstance(usage, dict) and usage["input_tokens"] > 0


async def test_one_recommendation_is_traced_as_a_run_tree(
    recorder: LangSmithRecorder, client: Client
) -> None:
    models = ScriptedModels(mope_wrong_first())
    graph = m3rec_graph.build_graph(
        chat_models=models, trait_cache=m3rec_graph.InMemoryTraitCache()
    )

    with tracing_context(enabled=True, client=client, project_name=PROJECT):
        result = await graph.ainvoke(REQUEST, context=m3rec_graph.context_for("hybrid"))
    wait_for_all_tracers()
    client.flush(timeout=30)  # a bounded wait: missing runs fail below instead of hanging

    # The run itself: MOPE was re-asked once and then accepted, nothing degraded.
    assert result["degraded"] == []
    assert sorted(r.item_id for r in result["ranking"]) == ["c1", "c2", "c3"]
    assert [c[0] for c in models.stage_calls("mope")] == ["gpt-6-luna"] * 2
    assert {c[0] for c in models.stage_calls("mote")} == {"gpt-6-luna"}
    assert {c[0] for c in models.stage_calls("mar")} == {"gpt-6.1-sol"}

    tree = recorder.tree(("m3rec_model", "m3rec_attempt"))
    runs = recorder.runs
    assert runs, "no run reached the fake LangSmith API"
    assert recorder.unrecognised_parts == []
    assert all(r.status < 400 for r in recorder.requests), recorder.requests
    assert {r.path.split("?")[0] for r in recorder.requests} <= {"/info", "/runs/multipart"}

    # One trace, rooted at the graph.
    root = only(recorder.roots())
    assert root["name"] == "m3rec", tree
    assert root["run_type"] == "chain"
    assert root.get("parent_run_id") is None
    for run in runs.values():
        assert run["trace_id"] == root["id"], run["name"]
        assert run["session_name"] == PROJECT, run["name"]
        assert run.get("end_time"), f"{run['name']} was never closed"
        assert not run.get("error"), f"{run['name']} failed: {run.get('error')}"

    # The parent graph's nodes: one run per node execution, MOTE once per candidate, MOPE
    # twice (the re-ask), and collect_traits once idle while the re-ask was pending.
    nodes = recorder.children(root)
    assert Counter(n["name"] for n in nodes) == Counter(
        {"prepare": 1, "mope": 2, "mote": 3, "collect_traits": 2, "mar": 1, "rank": 1}
    ), tree
    for node in nodes:
        assert metadata(node)["langgraph_node"] == node["name"]
    assert nodes[0]["name"] == "prepare" and nodes[-1]["name"] == "rank", tree
    idle, joined = recorder.children(root, "collect_traits")
    assert idle["outputs"]["output"]["goto"] == [], tree  # waited for the re-ask
    assert joined["outputs"]["output"]["goto"], tree  # sent MAR

    # MOPE: two runs of the mope node, the first rejected and re-sent with the error, the second accepted.
    mope_nodes = recorder.children(root, "mope")
    assert len(mope_nodes) == 2, tree
    first, second = (n["outputs"]["output"] for n in mope_nodes)
    assert "Send(node='mope'" in first["goto"] and "profile" not in first["update"]
    assert [u["accepted"] for u in first["update"]["usage_log"]] == [False]
    assert "feedback" not in mope_nodes[0]["inputs"]
    feedback = mope_nodes[1]["inputs"]["feedback"][0]
    assert "evidence" in feedback
    assert "profile" in second["update"] and second["goto"] == "collect_traits"

    mope_llm = recorder.by_name("mope.llm")
    assert len(mope_llm) == 2, tree
    for attempt, (run, mope_node) in enumerate(zip(mope_llm, mope_nodes, strict=True), start=1):
        check_llm_stage_run(
            recorder,
            run,
            node=mope_node,
            stage="mope",
            model="gpt-6-luna",
            prompt="mope",
            attempt=attempt,
        )
    # The re-ask's prompt, as traced, carries the first attempt's validation error.
    assert REASK_MARKER not in json.dumps(mope_llm[0]["inputs"])
    assert REASK_MARKER in json.dumps(mope_llm[1]["inputs"])
    assert json.dumps(feedback)[1:-1] in json.dumps(mope_llm[1]["inputs"])

    # MOTE: one model call under each candidate's node run.
    mote_nodes = recorder.children(root, "mote")
    mote_llm = recorder.by_name("mote.llm")
    assert len(mote_llm) == 3, tree
    for mote_node in mote_nodes:
        run = only(recorder.descendants(mote_node, "mote.llm"))
        check_llm_stage_run(
            recorder,
            run,
            node=mote_node,
            stage="mote",
            model="gpt-6-luna",
            prompt="mote",
            attempt=1,
        )
    traced_items = {n["outputs"]["output"]["update"]["traits"].popitem()[0] for n in mote_nodes}
    assert traced_items == {"c1", "c2", "c3"}

    # MAR: one listwise call on the strong model.
    mar_node = only(recorder.children(root, "mar"))
    check_llm_stage_run(
        recorder,
        only(recorder.by_name("mar.llm")),
        node=mar_node,
        stage="mar",
        model="gpt-6.1-sol",
        prompt="mar_listwise",
        attempt=1,
    )

    # No model call outside the stage nodes.
    for node_name in ("prepare", "collect_traits", "rank"):
        for node in recorder.children(root, node_name):
            assert not [r for r in recorder.descendants(node) if r["run_type"] == "llm"], tree
