"""The compiled graph end to end with scripted models: routing, re-asks, fallbacks, cache."""

import json
from typing import Any, cast

import pytest
from langchain_core.exceptions import (
    ModelAuthenticationError,
    ModelInvalidRequestError,
    ModelNotFoundError,
    ModelRateLimitError,
)

from m3rec_graph import (
    InMemoryTraitCache,
    InvalidRequestError,
    ProviderAuthError,
    build_graph,
    context_for,
)
from m3rec_graph.contracts.schemas import Dimension
from m3rec_graph.errors import ProviderRequestError
from m3rec_graph.prompts.loader import load_prompt
from m3rec_graph.state import RecInput
from tests.fakes import (
    Responder,
    ScriptedModels,
    candidate_ids_in,
    default_responder,
    history_ids_in,
    item_id_in,
    listwise_answer,
    profile_answer,
)

HISTORY = [
    {"item_id": "h1", "title": "Red nail polish", "brand": "OPI", "categories": ["Makeup > Nails"]},
    {"item_id": "h2", "title": "Glitter top coat", "categories": ["Makeup > Nails"]},
]
CANDIDATES: list[dict[str, Any]] = [
    {"item_id": f"c{i}", "title": f"Product {i}", "categories": ["Makeup"]} for i in range(6)
]
REQUEST: dict[str, Any] = {"user_id": "u1", "history": HISTORY, "candidates": CANDIDATES}
HYBRID = context_for("hybrid", mar_chunk_size=4)


def with_override(base: Responder, stage: str, answers: list[str]) -> Responder:
    """Answer `stage` from `answers` in order (then fall back to `base`)."""
    queue = list(answers)

    def respond(s: str, prompt: str) -> str | BaseException:
        if s == stage and queue:
            return queue.pop(0)
        return base(s, prompt)

    return respond


async def run(models: ScriptedModels, request: dict[str, Any] = REQUEST, **kw: Any) -> dict[str, Any]:
    cache = kw.pop("cache", InMemoryTraitCache())
    graph = build_graph(chat_models=models, trait_cache=cache)
    out: dict[str, Any] = await graph.ainvoke(cast(RecInput, request), context=kw.pop("context", HYBRID))
    return out


async def test_happy_path_ranks_by_mar_score_and_reports_everything() -> None:
    models = ScriptedModels(default_responder(score_of=lambda i: int(i[1:])))
    out = await run(models)
    assert [r.item_id for r in out["ranking"]] == ["c5", "c4", "c3", "c2", "c1", "c0"]
    assert [r.rank for r in out["ranking"]] == [1, 2, 3, 4, 5, 6]
    assert out["ranking"][0].score == 0.5
    assert out["ranking"][0].matched_motivations == [Dimension.AESTHETIC]
    assert out["ranking"][0].rationale == "fits the look (c5)"
    assert out["profile"].aesthetic.strength == 0.9
    assert out["profile"].aesthetic.evidence == ["h1", "h2"]
    assert out["degraded"] == []
    usage = out["usage"]
    assert usage.stages["mope"].calls == 1
    assert usage.stages["mote"].calls == 6
    assert usage.stages["mar"].calls == 2  # 6 candidates in chunks of 4
    assert usage.total.input_tokens == 9 * 100
    # private working keys never leak into the output contract
    assert set(out) == {"user_id", "ranking", "profile", "usage", "degraded", "truncated", "memory", "fusion"}
    assert out["truncated"] == []


async def test_routing_sends_each_stage_to_its_model_and_prices_it() -> None:
    models = ScriptedModels(default_responder())
    out = await run(models)
    stages_by_model = {(name, stage) for name, stage, _ in models.calls}
    assert stages_by_model == {("gpt-6-luna", "mope"), ("gpt-6-luna", "mote"), ("gpt-6.1-sol", "mar")}
    mar = out["usage"].stages["mar"]
    assert mar.models == ["gpt-6.1-sol"]
    # 2 calls x (100 in, 10 out) at gpt-6.1-sol's $2 / $10 per 1M tokens
    assert mar.cost_usd == pytest.approx(2 * (100 * 2.0 + 10 * 10.0) / 1e6)


async def test_per_stage_override_changes_only_that_stage() -> None:
    models = ScriptedModels(default_responder())
    await run(models, context=context_for("hybrid", {"mar": "gpt-4o-mini"}))
    assert {name for name, stage, _ in models.calls if stage == "mar"} == {"gpt-4o-mini"}
    assert {name for name, stage, _ in models.calls if stage == "mope"} == {"gpt-6-luna"}


async def test_malformed_answer_is_reasked_with_the_error_text() -> None:
    models = ScriptedModels(with_override(default_responder(), "mope", ["The shopper likes colour."]))
    out = await run(models)
    mope_prompts = [p for _, stage, p in models.calls if stage == "mope"]
    assert len(mope_prompts) == 2
    assert "previous answer was rejected" not in mope_prompts[0]
    assert "previous answer was rejected: the answer is not valid JSON" in mope_prompts[1]
    assert out["degraded"] == []
    assert out["usage"].stages["mope"].calls == 2
    assert out["usage"].stages["mope"].wasted_tokens == 110


async def test_evidence_outside_the_history_is_rejected_and_reasked() -> None:
    bad = profile_answer(["h1"])
    bad["value"]["evidence"] = ["not-in-history"]
    models = ScriptedModels(with_override(default_responder(), "mope", [json.dumps(bad)]))
    await run(models)
    second = [p for _, stage, p in models.calls if stage == "mope"][1]
    feedback = second.split("previous answer was rejected")[1]
    assert "value.evidence" in feedback and "'h1' or 'h2'" in feedback


async def test_spent_budget_falls_back_and_flags_every_stage() -> None:
    def always_bad(stage: str, prompt: str) -> str:
        return "[]"

    models = ScriptedModels(always_bad)
    out = await run(models, context=context_for("hybrid", max_schema_retries=1))
    assert len(models.stage_calls("mope")) == 2  # first try + 1 re-ask
    assert len(models.stage_calls("mote")) == 6 * 2
    stages = sorted({d["stage"] for d in out["degraded"]})
    assert stages == ["mar", "mope", "mote"]
    assert {d["item_id"] for d in out["degraded"] if d["stage"] == "mote"} == {f"c{i}" for i in range(6)}
    assert "Keyword profile" in out["profile"].summary and "no valid LLM profile" in out["profile"].summary
    assert all(r.source == "fallback" for r in out["ranking"])
    assert sorted(r.item_id for r in out["ranking"]) == sorted(c["item_id"] for c in CANDIDATES)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda a: a["scores"].update({"zzz": a["scores"]["c0"]}), "zzz"),  # unknown id
        (lambda a: a["scores"].pop(next(iter(a["scores"]))), "Field required"),  # missing id
    ],
)
async def test_mar_answer_not_covering_exactly_its_ids_is_rejected(mutate: Any, expected: str) -> None:
    first: list[str] = []

    def respond(stage: str, prompt: str) -> str | BaseException:
        if stage == "mar" and not first:
            answer = listwise_answer(candidate_ids_in(prompt))
            mutate(answer)
            first.append(json.dumps(answer))
            return first[0]
        return default_responder()(stage, prompt)

    models = ScriptedModels(respond)
    out = await run(models, context=context_for("hybrid", mar_chunk_size=10))
    mar_prompts = [p for _, stage, p in models.calls if stage == "mar"]
    assert len(mar_prompts) == 2
    assert expected in mar_prompts[1].split("previous answer was rejected")[1]
    assert out["degraded"] == []


async def test_mar_answer_with_a_duplicate_id_is_rejected() -> None:
    sent: list[int] = []

    def respond(stage: str, prompt: str) -> str | BaseException:
        if stage == "mar" and not sent:
            sent.append(1)
            ids = candidate_ids_in(prompt)
            entries = [f'"{i}": {{"score": 5, "matched": [], "rationale": "x"}}' for i in ids]
            entries.append(f'"{ids[0]}": {{"score": 9, "matched": [], "rationale": "again"}}')
            return '{"scores": {' + ", ".join(entries) + "}}"
        return default_responder()(stage, prompt)

    models = ScriptedModels(respond)
    await run(models, context=context_for("hybrid", mar_chunk_size=10))
    second = [p for _, stage, p in models.calls if stage == "mar"][1]
    assert "scored more than once" in second


async def test_second_run_over_the_same_candidates_makes_no_mote_calls() -> None:
    cache = InMemoryTraitCache()
    first = ScriptedModels(default_responder())
    await run(first, cache=cache)
    assert len(first.stage_calls("mote")) == 6
    second = ScriptedModels(default_responder())
    other_user = {**REQUEST, "user_id": "u2"}
    out = await run(second, other_user, cache=cache)
    assert second.stage_calls("mote") == []
    assert out["usage"].stages["mote"].calls == 0
    assert len(out["ranking"]) == 6


async def test_cache_misses_when_model_or_prompt_text_changes() -> None:
    cache = InMemoryTraitCache()
    await run(ScriptedModels(default_responder()), cache=cache)
    other_model = ScriptedModels(default_responder())
    await run(other_model, cache=cache, context=context_for("hybrid", {"mote": "gpt-4o-mini"}))
    assert len(other_model.stage_calls("mote")) == 6
    edited = {**REQUEST, "candidates": [{**CANDIDATES[0], "title": "New title"}, *CANDIDATES[1:]]}
    changed_text = ScriptedModels(default_responder())
    await run(changed_text, edited, cache=cache)
    assert [item_id_in(p) for _, _, p in changed_text.stage_calls("mote")] == ["c0"]


async def test_failed_traits_are_not_cached() -> None:
    cache = InMemoryTraitCache()
    models = ScriptedModels(lambda s, p: "{}" if s == "mote" else default_responder()(s, p))
    await run(models, cache=cache)
    assert len(cache) == 0


async def test_item_without_text_gets_neutral_traits_without_a_call() -> None:
    request = {**REQUEST, "candidates": [*CANDIDATES, {"item_id": "bare"}]}
    models = ScriptedModels(default_responder())
    out = await run(models, request)
    assert "bare" not in [item_id_in(p) for _, _, p in models.stage_calls("mote")]
    assert {"stage": "mote", "item_id": "bare", "reason": "item has no text"} in out["degraded"]
    assert "bare" in [r.item_id for r in out["ranking"]]


async def test_empty_history_skips_mope_and_still_ranks() -> None:
    models = ScriptedModels(default_responder())
    out = await run(models, {**REQUEST, "history": []})
    assert models.stage_calls("mope") == []
    assert {"stage": "mope", "item_id": None, "reason": "empty history"} in out["degraded"]
    assert len(out["ranking"]) == 6


async def test_pointwise_mode_calls_once_per_candidate() -> None:
    models = ScriptedModels(default_responder(score_of=lambda i: int(i[1:])))
    out = await run(models, context=context_for("hybrid", mar_mode="pointwise"))
    assert len(models.stage_calls("mar")) == 6
    assert [r.item_id for r in out["ranking"]][:2] == ["c5", "c4"]


async def test_shown_order_is_seeded_and_ties_break_by_it() -> None:
    async def order(seed: int) -> tuple[list[str], list[str]]:
        models = ScriptedModels(default_responder())  # every score ties
        out = await run(models, context=context_for("hybrid", mar_chunk_size=10, seed=seed))
        shown = candidate_ids_in(models.stage_calls("mar")[0][2])
        return shown, [r.item_id for r in out["ranking"]]

    shown_a, ranking_a = await order(1)
    shown_b, ranking_b = await order(1)
    shown_c, _ = await order(2)
    assert shown_a == shown_b and ranking_a == ranking_b
    assert ranking_a == shown_a  # all tied: shown order decides
    assert shown_a != shown_c
    assert shown_a != [c["item_id"] for c in CANDIDATES] or shown_c != [c["item_id"] for c in CANDIDATES]


async def test_top_k_truncates_the_ranking() -> None:
    out = await run(ScriptedModels(default_responder()), {**REQUEST, "k": 3})
    assert len(out["ranking"]) == 3


async def test_a_provider_error_degrades_after_one_call_without_graph_retries() -> None:
    # Retries belong to the OpenAI client (ModelSpec.max_retries); a scripted model has none, and the
    # stage nodes have no RetryPolicy: the error the client would give up with degrades at once.
    failures = {"mote": 0}

    def respond(stage: str, prompt: str) -> str | BaseException:
        if stage == "mote" and item_id_in(prompt) == "c0":
            failures["mote"] += 1
            return ModelRateLimitError("429 slow down")
        return default_responder()(stage, prompt)

    models = ScriptedModels(respond)
    out = await run(models)
    assert failures["mote"] == 1
    assert [item_id_in(p) for _, _, p in models.stage_calls("mote")].count("c0") == 1
    assert out["degraded"] == [
        {"stage": "mote", "item_id": "c0", "reason": "provider error after retries: ModelRateLimitError: 429 slow down"}
    ]
    assert sorted(r.item_id for r in out["ranking"]) == sorted(c["item_id"] for c in CANDIDATES)


@pytest.mark.parametrize(
    "error",
    [
        ModelInvalidRequestError("400 Unsupported value: 'temperature' does not support 0.0 with this model."),
        ModelNotFoundError("404 The model `gpt-retired` does not exist or you do not have access to it."),
    ],
    ids=["invalid_request", "model_not_found"],
)
async def test_a_request_the_provider_refuses_raises_instead_of_degrading(error: Exception) -> None:
    # Every call would be refused alike: a configuration error with the provider's message, no fallback.
    calls = {"c0": 0}

    def respond(stage: str, prompt: str) -> str | BaseException:
        if stage == "mote" and item_id_in(prompt) == "c0":
            calls["c0"] += 1
            return error
        return default_responder()(stage, prompt)

    with pytest.raises(ProviderRequestError) as raised:
        await run(ScriptedModels(respond))
    message = str(raised.value)
    assert message.startswith("mote: the model provider refused the request for ")
    assert message.endswith(str(error))
    assert raised.value.__cause__ is error
    assert not isinstance(raised.value, ProviderAuthError)
    assert calls["c0"] == 1  # not retried


async def test_authentication_errors_raise_a_clear_error() -> None:
    models = ScriptedModels(lambda s, p: ModelAuthenticationError("401 bad key"))
    with pytest.raises(ProviderAuthError, match="rejected"):
        await run(models)


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({**REQUEST, "candidates": []}, "candidates"),
        ({**REQUEST, "candidates": [CANDIDATES[0], CANDIDATES[0]]}, "duplicate candidate"),
        ({**REQUEST, "candidates": [{"title": "no id"}]}, "item_id"),
        ({**REQUEST, "history": "h1,h2"}, "history"),
    ],
)
async def test_bad_requests_raise_a_typed_error(request_: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        await run(ScriptedModels(default_responder()), request_)


def test_prompts_load_with_versions_and_render() -> None:
    for name in ("mope", "mote", "mar_listwise", "mar_pointwise"):
        prompt = load_prompt(name)
        assert len(prompt.version) == 12
        assert prompt.name.startswith("m3rec-")
    messages = load_prompt("mope").format(dimensions="d", history="[x] <b>&", feedback="")
    assert "[x] <b>&" in messages[1].text  # data is not HTML-escaped
    assert history_ids_in(messages[1].text) == ["x"]


async def test_mope_reads_only_the_most_recent_history_items() -> None:
    long_history = [{"item_id": f"h{i}", "title": f"Item {i}"} for i in range(30)]
    models = ScriptedModels(default_responder())
    await run(models, {**REQUEST, "history": long_history}, context=context_for("hybrid", max_history_items=5))
    (mope_prompt,) = [p for _, stage, p in models.calls if stage == "mope"]
    assert history_ids_in(mope_prompt) == [f"h{i}" for i in range(25, 30)]


async def test_over_long_text_is_truncated_and_recorded() -> None:
    huge = {"item_id": "big", "title": "Huge", "description": "word " * 40_000}
    models = ScriptedModels(default_responder())
    out = await run(models, {**REQUEST, "candidates": [*CANDIDATES, huge]})
    (prompt,) = [p for _, _, p in models.stage_calls("mote") if item_id_in(p) == "big"]
    assert len(prompt) < 5_000
    assert [t["note"].split(":")[0] for t in out["truncated"]] == ["description"]
    assert out["truncated"][0]["item_id"] == "big" and out["degraded"] == []
