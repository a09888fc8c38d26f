"""Runs that reuse one checkpointer thread: each starts from its own input.

The LangGraph server, Studio and a `RemoteGraph` called with a `thread_id` keep a
thread's state between runs, so a second run on the thread sees the first run's
channels unless `prepare` resets them. These tests run the graph several times
on one `InMemorySaver` thread and check that every output (ranking, usage,
degradations, truncations, profile) comes from that run alone, and that the
joins wait for this run's own MOPE/MOTE/MAR results.
"""

import json
import re
from collections.abc import Callable
from typing import Any, cast

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from m3rec_graph import InMemoryTraitCache, build_graph, context_for
from m3rec_graph.integrations.embed import CHECKPOINT_TYPES
from m3rec_graph.state import M3RecGraph, RecInput
from tests.fakes import (
    Responder,
    ScriptedModels,
    default_responder,
    history_ids_in,
    profile_answer,
)

THREAD: RunnableConfig = {"configurable": {"thread_id": "t"}}

FIRST: dict[str, Any] = {
    "user_id": "u1",
    "history": [
        {"item_id": "h1", "title": "Red nail polish", "categories": ["Makeup > Nails"]},
        {"item_id": "h2", "title": "Glitter top coat"},
    ],
    "candidates": [
        *({"item_id": f"a{i}", "title": f"Nail product {i}"} for i in range(5)),
        {"item_id": "a-bare"},  # no text: neutral traits, a `degraded` entry, no MOTE call
        {"item_id": "a-long", "title": "Long one", "description": "word " * 400},  # truncated
    ],
}
SECOND: dict[str, Any] = {
    "user_id": "u2",
    "history": [
        {"item_id": "h7", "title": "Beard oil"},
        {"item_id": "h8", "title": "Shaving brush"},
        {"item_id": "h9", "title": "Aftershave balm"},
    ],
    "candidates": [{"item_id": f"b{i}", "title": f"Grooming product {i}"} for i in range(3)],
}


def new_graph(models: ScriptedModels) -> M3RecGraph:
    # The serializer the served graph uses (langgraph.json's allowlist), so state round-trips as it does there.
    saver = InMemorySaver(serde=JsonPlusSerializer(allowed_msgpack_modules=CHECKPOINT_TYPES))
    return build_graph(chat_models=models, trait_cache=InMemoryTraitCache(), checkpointer=saver)


def profiling_responder(score_of: Callable[[str], int] = lambda _: 5) -> Responder:
    """`default_responder`, but the MOPE summary names the history it read (so MAR prompts show whose profile they got)."""
    base = default_responder(score_of)

    def respond(stage: str, prompt: str) -> str | BaseException:
        if stage == "mope":
            ids = history_ids_in(prompt)
            return json.dumps({**profile_answer(ids), "summary": f"profile of {'+'.join(ids)}"})
        return base(stage, prompt)

    return respond


async def run_on_thread(
    graph: M3RecGraph, models: ScriptedModels, request: dict[str, Any], **ctx: Any
) -> tuple[dict[str, Any], list[tuple[str, str, str]], list[str]]:
    """Run once on THREAD; return the output, this run's model calls and its progress events."""
    before = len(models.calls)
    events: list[str] = []
    out: dict[str, Any] = {}
    async for mode, part in graph.astream(
        cast(RecInput, request),
        THREAD,
        context=context_for("hybrid", **{"mar_chunk_size": 4, **ctx}),
        stream_mode=["custom", "values"],
    ):
        if mode == "custom":
            events.append(cast(dict[str, Any], part)["m3rec"])
        else:
            out = cast(dict[str, Any], part)
    return out, models.calls[before:], events


def ids(request: dict[str, Any]) -> list[str]:
    return [c["item_id"] for c in request["candidates"]]


def assert_own_output(
    out: dict[str, Any], request: dict[str, Any], calls: list[tuple[str, str, str]], events: list[str]
) -> None:
    assert sorted(r.item_id for r in out["ranking"]) == sorted(ids(request))
    assert [r.rank for r in out["ranking"]] == list(range(1, len(request["candidates"]) + 1))
    assert out["user_id"] == request["user_id"]
    usage = out["usage"]
    assert usage.total.calls == len(calls)
    for stage in ("mope", "mote", "mar"):
        assert usage.stages[stage].calls == sum(1 for _, s, _ in calls if s == stage)
    assert out["profile"].summary == f"profile of {'+'.join(h['item_id'] for h in request['history'])}"
    bare = [c["item_id"] for c in request["candidates"] if len(c) == 1]
    assert out["degraded"] == [{"stage": "mote", "item_id": i, "reason": "item has no text"} for i in bare]
    long = [c["item_id"] for c in request["candidates"] if "description" in c]
    assert [t["item_id"] for t in out["truncated"]] == long
    # each join proceeded once: one profile, one ranking per run
    assert events == ["started", "profile_ready", "items_encoded", "ranking_ready"]


async def test_two_runs_on_one_thread_each_answer_their_own_request() -> None:
    models = ScriptedModels(profiling_responder())
    graph = new_graph(models)
    out, calls, events = await run_on_thread(graph, models, FIRST)
    assert_own_output(out, FIRST, calls, events)
    assert len(calls) == 1 + 6 + 2  # MOPE, MOTE for the 6 with text, 7 candidates in chunks of 4

    out, calls, events = await run_on_thread(graph, models, SECOND)
    assert_own_output(out, SECOND, calls, events)
    assert len(calls) == 1 + 3 + 1
    assert out["degraded"] == [] and out["truncated"] == []


async def test_three_runs_on_one_thread_each_answer_their_own_request() -> None:
    models = ScriptedModels(profiling_responder())
    graph = new_graph(models)
    totals = []
    for request in (FIRST, SECOND, FIRST, SECOND):
        out, calls, events = await run_on_thread(graph, models, request)
        assert_own_output(out, request, calls, events)
        totals.append(out["usage"].total.calls)
    # the reruns find their traits cached: MOPE + MAR only (not 9 + 5 + 3 ... accumulated)
    assert totals == [9, 5, 1 + 2, 1 + 1]


async def test_rerunning_the_same_request_reports_only_its_own_calls() -> None:
    models = ScriptedModels(profiling_responder())
    graph = new_graph(models)
    request = {**SECOND, "candidates": SECOND["candidates"][:2]}
    reported = []
    for _ in range(3):
        out, calls, events = await run_on_thread(graph, models, request)
        assert_own_output(out, request, calls, events)
        reported.append(out["usage"].total.calls)
    assert reported == [1 + 2 + 1, 2, 2]


async def test_a_later_run_without_k_ranks_every_candidate() -> None:
    models = ScriptedModels(profiling_responder())
    graph = new_graph(models)
    out, _, _ = await run_on_thread(graph, models, {**SECOND, "k": 1})
    assert len(out["ranking"]) == 1
    out, calls, events = await run_on_thread(graph, models, SECOND)
    assert_own_output(out, SECOND, calls, events)


@pytest.mark.parametrize(
    "second",
    [
        pytest.param(SECOND, id="other-candidates"),
        # the first run's ids with new text: the traits miss the cache, but no id is new to the thread
        pytest.param(
            {**SECOND, "candidates": [{"item_id": i, "title": f"Grooming {i}"} for i in ids(FIRST)]},
            id="same-ids-new-text",
        ),
    ],
)
async def test_a_mope_reask_in_a_later_run_waits_for_that_runs_profile(second: dict[str, Any]) -> None:
    invalid_once = {"armed": False}
    base = profiling_responder(score_of=lambda i: int(re.sub(r"\D", "", i) or 0))

    def respond(stage: str, prompt: str) -> str | BaseException:
        if stage == "mope" and invalid_once["armed"]:
            invalid_once["armed"] = False
            return "The shopper likes grooming."  # not JSON: re-asked
        return base(stage, prompt)

    models = ScriptedModels(respond)
    graph = new_graph(models)
    out, calls, events = await run_on_thread(graph, models, FIRST)
    assert_own_output(out, FIRST, calls, events)

    invalid_once["armed"] = True
    out, calls, events = await run_on_thread(graph, models, second)
    assert_own_output(out, second, calls, events)
    assert [s for _, s, _ in calls].count("mope") == 2
    assert "previous answer was rejected" in [p for _, s, p in calls if s == "mope"][1]
    mar_prompts = [p for _, s, p in calls if s == "mar"]
    # one call per chunk of 4, on this run's profile: not first on the old profile, then again
    assert len(mar_prompts) == -(-len(second["candidates"]) // 4)
    assert all("profile of h7+h8+h9" in p and "h1+h2" not in p for p in mar_prompts)
    assert out["usage"].stages["mope"].calls == 2 and out["usage"].stages["mope"].wasted_tokens == 110


@pytest.mark.parametrize("ablation", ["no_mope", "no_mote", "no_mar"])
async def test_ablations_on_a_reused_thread_answer_their_own_request(ablation: str) -> None:
    models = ScriptedModels(profiling_responder())
    graph = new_graph(models)
    for request in (FIRST, SECOND):
        out, calls, events = await run_on_thread(graph, models, request, ablation=ablation)
        assert sorted(r.item_id for r in out["ranking"]) == sorted(ids(request))
        assert out["usage"].total.calls == len(calls)
        assert events == ["started", "profile_ready", "items_encoded", "ranking_ready"]
        if ablation == "no_mar":
            assert all(r.source == "fallback" for r in out["ranking"])
