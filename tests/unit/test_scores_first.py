"""`mar_answer="scores_first"`: scores per chunk, the ranking streamed, then rationales for the top k only."""

import json
from typing import Any, cast

import pytest

from m3rec_graph import InMemoryTraitCache, build_graph, context_for
from m3rec_graph.contracts.schemas import Dimension
from m3rec_graph.errors import ConfigurationError
from m3rec_graph.integrations.embed import astream_progress
from m3rec_graph.state import RecInput
from tests.fakes import (
    Responder,
    ScriptedModels,
    candidate_ids_in,
    default_responder,
    is_rationales,
    is_scores_only,
)
from tests.unit.test_graph import REQUEST

SCORES_FIRST = context_for("hybrid", mar_chunk_size=4, mar_answer="scores_first", mar_rationale_k=2)
BY_NUMBER = default_responder(score_of=lambda i: int(i[1:]))


def graph_of(models: ScriptedModels) -> Any:
    return build_graph(chat_models=models, trait_cache=InMemoryTraitCache())


async def stream(models: ScriptedModels, ctx: Any = SCORES_FIRST, request: dict[str, Any] = REQUEST) -> tuple[list[Any], dict[str, Any]]:
    """Run with custom events, recording each event and each MAR call in the order they happened."""
    timeline: list[Any] = []
    responder = models.responder

    def recording(stage: str, prompt: str) -> str | BaseException:
        if stage == "mar":
            kind = "rationales" if is_rationales(prompt) else "scores" if is_scores_only(prompt) else "listwise"
            timeline.append(("mar", kind, tuple(candidate_ids_in(prompt))))
        return responder(stage, prompt)

    models.responder = recording
    output: dict[str, Any] = {}
    async for mode, chunk in graph_of(models).astream(
        cast(RecInput, request), context=ctx, stream_mode=["custom", "values"]
    ):
        if mode == "custom":
            timeline.append(("event", chunk["m3rec"]))
        else:
            output = chunk
    return timeline, output


async def test_the_ranking_is_streamed_before_the_rationales_are_asked_for() -> None:
    timeline, out = await stream(ScriptedModels(BY_NUMBER))
    kinds = [entry[1] for entry in timeline]
    assert kinds.count("scores") == 2  # 6 candidates in chunks of 4, scores only
    ready = kinds.index("ranking_ready")
    assert all(k != "rationales" for k in kinds[:ready])
    assert kinds[ready + 1 :] == ["rationales", "rationales_ready"]
    assert [r.item_id for r in out["ranking"]] == ["c5", "c4", "c3", "c2", "c1", "c0"]


async def test_only_the_top_k_get_a_rationale_call() -> None:
    timeline, out = await stream(ScriptedModels(BY_NUMBER))
    (rationale_call,) = [e for e in timeline if e[:2] == ("mar", "rationales")]
    assert rationale_call[2] == ("c5", "c4")  # the top 2, best first
    top, rest = out["ranking"][:2], out["ranking"][2:]
    assert [(r.rationale, r.matched_motivations) for r in top] == [("why c5", [Dimension.AESTHETIC]), ("why c4", [Dimension.AESTHETIC])]
    assert all(r.rationale == "" and r.matched_motivations == [] for r in rest)
    assert out["ranking"][0].score == 0.5 and out["ranking"][0].source == "llm"
    assert out["usage"].stages["mar"].calls == 3 and out["degraded"] == []


async def test_the_request_k_caps_the_rationales() -> None:
    timeline, out = await stream(ScriptedModels(BY_NUMBER), request={**REQUEST, "k": 1})
    (rationale_call,) = [e for e in timeline if e[:2] == ("mar", "rationales")]
    assert rationale_call[2] == ("c5",) and [r.item_id for r in out["ranking"]] == ["c5"]


async def test_the_default_stays_the_papers_listwise_answer() -> None:
    assert context_for("hybrid").mar_answer == "listwise"
    timeline, out = await stream(ScriptedModels(BY_NUMBER), ctx=context_for("hybrid", mar_chunk_size=4))
    kinds = [entry[1] for entry in timeline]
    assert kinds.count("listwise") == 2 and "scores" not in kinds and "rationales" not in kinds
    assert kinds[-1] == "ranking_ready" and "rationales_ready" not in kinds
    assert all(r.rationale.startswith("fits the look") for r in out["ranking"])


def failing_first(base: Responder, which: str, answer: str) -> Responder:
    """Answer the first MAR call of kind `which` with `answer`, everything else with `base`."""
    spent = False

    def respond(stage: str, prompt: str) -> str | BaseException:
        nonlocal spent
        kind = is_rationales(prompt) if which == "rationales" else is_scores_only(prompt)
        if stage == "mar" and kind and not spent:
            spent = True
            return answer
        return base(stage, prompt)

    return respond


@pytest.mark.parametrize("which", ["scores", "rationales"])
async def test_a_schema_failure_is_re_asked_with_the_error(which: str) -> None:
    broken = json.dumps({"scores": {"c0": {"score": 42}}} if which == "scores" else {"rationales": {"zz": {"matched": [], "rationale": "x"}}})
    models = ScriptedModels(failing_first(BY_NUMBER, which, broken))
    timeline, out = await stream(models)
    mar_prompts = [p for _, stage, p in models.calls if stage == "mar"]
    asked = [p for p in mar_prompts if (is_rationales(p) if which == "rationales" else is_scores_only(p))]
    assert len(asked) == (2 if which == "rationales" else 3)  # one re-ask
    assert "Your previous answer was rejected" in asked[-1 if which == "rationales" else 2]
    assert out["degraded"] == [] and [r.item_id for r in out["ranking"]][:2] == ["c5", "c4"]
    assert out["ranking"][0].rationale == "why c5"


async def test_rationales_that_never_validate_fall_back_to_the_overlap_and_say_so() -> None:
    def respond(stage: str, prompt: str) -> str | BaseException:
        if stage == "mar" and is_rationales(prompt):
            return "not json"
        return BY_NUMBER(stage, prompt)

    models = ScriptedModels(respond)
    _, out = await stream(models)
    assert len([p for _, s, p in models.calls if s == "mar" and is_rationales(p)]) == 3  # 1 + 2 re-asks
    assert out["ranking"][0].item_id == "c5" and out["ranking"][0].score == 0.5  # the scores stand
    assert out["ranking"][0].rationale.startswith("Deterministic overlap")
    assert [d["stage"] for d in out["degraded"]] == ["mar"] and "rationales" in out["degraded"][0]["reason"]


async def test_astream_progress_tells_the_ranking_then_the_reasons() -> None:
    models = ScriptedModels(BY_NUMBER)
    events = [
        p["event"]
        async for p in astream_progress(cast(RecInput, REQUEST), graph=graph_of(models), context=SCORES_FIRST)
    ]
    assert events.index("ranking_ready") < events.index("rationales_ready") < events.index("done")


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="mar_answer"):
        context_for("hybrid", mar_answer="rationales_last")
    with pytest.raises(ConfigurationError, match="mar_rationale_k"):
        context_for("hybrid", mar_rationale_k=0)


def test_the_command_line_sets_it() -> None:
    import argparse

    from m3rec_graph.cli.options import add_routing_options, build_context

    parser = argparse.ArgumentParser()
    add_routing_options(parser)
    ctx = build_context(parser.parse_args(["--routing", "hybrid", "--mar-answer", "scores_first", "--rationale-k", "3"]))
    assert (ctx.mar_answer, ctx.mar_rationale_k) == ("scores_first", 3)
    assert build_context(parser.parse_args(["--routing", "hybrid"])).mar_answer == "listwise"
