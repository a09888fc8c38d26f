"""Incremental MOPE: a history grown by a few items updates the stored profile from the new items only."""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
from langgraph.store.base import BaseStore
from langgraph.store.memory import InMemoryStore

from evals.incremental_tokens import measure_growth
from m3rec_graph import M3RecContext, as_shopper_tool, build_graph, context_for
from m3rec_graph.contracts.schemas import Item
from m3rec_graph.evaluation.datasets import load_dataset
from m3rec_graph.evaluation.methods import m3rec_context
from m3rec_graph.evaluation.settings import parse_method
from m3rec_graph.stages.fallbacks import fallback_profile
from m3rec_graph.stages.incremental import incremental_version, items_added
from m3rec_graph.stages.mope import incremental_saving, profile_key
from m3rec_graph.state import IncrementalBase, MopeState, RecInput
from m3rec_graph.storage.memory import aforget, read_profile
from tests.fakes import (
    Responder,
    ScriptedModels,
    default_responder,
    history_ids_in,
    is_incremental,
    new_item_ids_in,
    profile_answer,
)

BEAUTY = Path(__file__).parents[1] / "fixtures" / "beauty_small"
CTX = context_for("hybrid", mar_chunk_size=10)


def item(n: int) -> dict[str, Any]:
    """A history item with a realistic amount of text (Beauty titles run long)."""
    return {
        "item_id": f"h{n}",
        "title": f"Shade {n} long-wear matte liquid lipstick with vitamin E, smudge-proof, 0.17 fl oz",
        "brand": f"Brand{n}",
        "categories": ["Makeup > Lips > Lipstick", "Beauty > Makeup"],
    }


HISTORY = [item(n) for n in range(12)]
CANDIDATES = [{"item_id": f"c{n}", "title": f"Candidate product {n}"} for n in range(4)]


def request(history: list[dict[str, Any]], user: str = "alice") -> RecInput:
    return cast(RecInput, {"user_id": user, "history": history, "candidates": CANDIDATES})


def window_of(history: list[dict[str, Any]], size: int = 20) -> list[Item]:
    return [Item.model_validate(entry) for entry in history[-size:]]


class Shop:
    """One graph on one store, with scripted models: runs requests and reports the MOPE prompts."""

    def __init__(self, responder: Responder | None = None, store: BaseStore | None = None) -> None:
        self.models = ScriptedModels(responder or default_responder())
        self.store = store if store is not None else InMemoryStore()
        self.graph = build_graph(chat_models=self.models, store=self.store)

    async def run(self, req: RecInput, ctx: M3RecContext = CTX) -> tuple[dict[str, Any], list[str]]:
        before = len(self.models.stage_calls("mope"))
        out: dict[str, Any] = await self.graph.ainvoke(req, context=ctx)
        return out, [prompt for _, _, prompt in self.models.stage_calls("mope")[before:]]


# --------------------------------------------------------------------------- the rule


def w(*ids: str) -> tuple[tuple[str, str], ...]:
    return tuple((i, "hash") for i in ids)


@pytest.mark.parametrize(
    ("old", "new", "added"),
    [
        (w("a", "b"), w("a", "b", "c"), 1),  # grown by one
        (w("a"), w("a", "b", "c", "d"), 3),  # grown by max_incremental_items
        (w("a", "b"), w("b", "c", "d", "e"), 3),  # grown by three, the window filled and slid by one
        (w("a", "b", "c"), w("a", "b", "c", "d"), 1),  # filled the window
        (w("a", "b", "c", "d"), w("b", "c", "d", "e"), 1),  # a full window slid by one
        (w("a", "b", "c", "d"), w("c", "d", "e", "f"), 2),  # slid by two, grown by two
        (w("a", "b", "c"), w("b", "c", "d", "e"), 2),  # filled and slid by one
        (w("a", "a"), w("a", "a", "a"), 1),  # repeated purchases: the fewest new items
        (w("a", "b"), w("a", "b"), None),  # the same window: an exact hit, not an increment
        (w("a", "b"), w("c", "d", "e", "f"), None),  # grown by more than 3
        (w("a", "b", "c"), w("b", "c", "d"), None),  # the oldest removed, though the window is not full
        (w("a", "b", "c"), w("a", "c", "d"), None),  # an old item removed
        (w("a", "b", "c"), w("b", "a", "c", "d"), None),  # reordered
        (w("a", "b", "c"), w("a", "b"), None),  # shrunk
        (w("a", "b", "c", "d"), w("d", "e"), None),  # a smaller window (max_history_items lowered)
        (w("a"), w("b"), None),  # nothing old left
        ((("a", "h1"), ("b", "h2")), (("a", "h1"), ("b", "edited"), ("c", "h3")), None),  # text edited
    ],
)
def test_which_window_changes_are_increments(
    old: tuple[tuple[str, str], ...], new: tuple[tuple[str, str], ...], added: int | None
) -> None:
    assert items_added(old, new, 3, window_size=4) == added


# --------------------------------------------------------------------------- the graph


async def test_a_grown_history_updates_the_stored_profile_from_the_new_item_only() -> None:
    shop = Shop()
    first, prompts = await shop.run(request(HISTORY[:8]))
    assert first["memory"]["profile"] == "miss"
    assert len(prompts) == 1 and not is_incremental(prompts[0])

    grown, prompts = await shop.run(request(HISTORY[:9]))
    assert grown["memory"]["profile"] == "incremental"
    assert grown["usage"].stages["mope"].calls == 1 and grown["degraded"] == []
    (prompt,) = prompts
    assert is_incremental(prompt) and "<history>" not in prompt.rsplit("</profile>", 1)[1]
    assert new_item_ids_in(prompt) == ["h8"]
    # The old items are not re-read: no old title in the prompt, only the stored profile.
    assert HISTORY[8]["title"] in prompt
    assert not any(old["title"] in prompt for old in HISTORY[:8])
    assert first["profile"].summary in prompt
    assert "aesthetic 9: h0, h1" in prompt  # the stored profile, on the answer's 0-10 scale

    # Stored under the new window's key, marked incremental: served as an exact hit next time.
    key = profile_key("alice", window_of(HISTORY[:9]), CTX)
    assert await read_profile(shop.store, key, incremental_version=incremental_version(CTX)) == grown["profile"]
    assert await read_profile(shop.store, key) is None  # exact-match full profiles only
    again, prompts = await shop.run(request(HISTORY[:9]))
    assert again["memory"]["profile"] == "hit" and prompts == []

    # Grown again, from the incremental profile: a chain of updates.
    chained, prompts = await shop.run(request(HISTORY[:11]))
    assert chained["memory"]["profile"] == "incremental"
    assert new_item_ids_in(prompts[0]) == ["h9", "h10"]


@pytest.mark.parametrize(
    ("label", "change"),
    [
        ("reordered", lambda h: [h[1], h[0], *h[2:], HISTORY[8]]),
        ("text edited", lambda h: [{**h[0], "title": "Another title"}, *h[1:], HISTORY[8]]),
        ("item removed", lambda h: [*h[1:], HISTORY[8]]),
        ("grown by four", lambda h: [*h, *HISTORY[8:12]]),
        ("item replaced", lambda h: [*h[:-1], HISTORY[8]]),
    ],
)
async def test_any_other_history_change_re_profiles_in_full(
    label: str, change: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]
) -> None:
    shop = Shop()
    await shop.run(request(HISTORY[:8]))
    changed, prompts = await shop.run(request(change(HISTORY[:8])))
    assert changed["memory"]["profile"] == "miss", label
    (prompt,) = prompts
    assert not is_incremental(prompt)
    assert history_ids_in(prompt) == [entry["item_id"] for entry in change(HISTORY[:8])]


async def test_other_mope_settings_and_incremental_off_re_profile_in_full() -> None:
    shop = Shop()
    await shop.run(request(HISTORY[:8]))
    for ctx in (
        context_for("hybrid", mar_chunk_size=10, max_incremental_items=0),
        context_for("hybrid", mar_chunk_size=10, efforts={"mope": "low"}),
    ):
        out, prompts = await shop.run(request(HISTORY[:9]), ctx)
        assert out["memory"]["profile"] == "miss" and not is_incremental(prompts[0])


async def test_a_full_window_slides_and_evidence_that_left_it_is_dropped() -> None:
    ctx = context_for("hybrid", mar_chunk_size=10, max_history_items=5)
    shop = Shop()
    first, _ = await shop.run(request(HISTORY[:7]), ctx)  # window h2..h6
    assert first["profile"].aesthetic.evidence == ["h2", "h3"]
    grown, prompts = await shop.run(request(HISTORY[:8]), ctx)  # window h3..h7
    assert grown["memory"]["profile"] == "incremental"
    (prompt,) = prompts
    assert new_item_ids_in(prompt) == ["h7"]
    assert "aesthetic 9: h3\n" in prompt and "h2" not in prompt  # h2 left the window
    # The answer may cite what the prompt shows: stored evidence still in the window, new items.
    assert set(grown["profile"].aesthetic.evidence) <= {"h3", "h7"}


async def test_a_short_history_is_re_profiled_when_the_profile_costs_more_than_its_items() -> None:
    short = [{"item_id": "s0", "title": "Nail file"}]
    shop = Shop()
    first, _ = await shop.run(request(short))
    grown_history = [*short, {"item_id": "s1", "title": "Top coat"}]
    task = MopeState(
        user_id="alice",
        history=window_of(grown_history),
        incremental=IncrementalBase(profile=first["profile"], new_items=1, increments=1),
    )
    assert incremental_saving(task, CTX) < 0
    grown, prompts = await shop.run(request(grown_history))
    assert grown["memory"]["profile"] == "miss" and not is_incremental(prompts[0])


def test_the_incremental_call_saves_prompt_tokens() -> None:
    # The graph's own count (what `prepare` decides on) for this history grown by one item.
    task = MopeState(
        user_id="alice",
        history=window_of(HISTORY[:9]),
        incremental=IncrementalBase(profile=fallback_profile(window_of(HISTORY[:8])), new_items=1, increments=1),
    )
    assert incremental_saving(task, CTX) > 0
    # On real Beauty histories (the test fixture's users), as evals/incremental_tokens.py measures:
    # positive for the longer histories, and positive overall when used only where cheaper.
    dataset = load_dataset(BEAUTY)
    measured = [
        m
        for user_id, sequence in sorted(dataset.sequences.items())
        if (m := measure_growth(user_id, [dataset.items[i] for i in sequence[:-1]], CTX)) is not None
    ]
    assert len(measured) == len(dataset.sequences)  # every grown-by-one history is an increment
    long = [m for m in measured if m.window >= 8]
    assert long and all(m.saved > 0 for m in long)
    assert sum(max(0, m.saved) for m in measured) > 0


async def test_two_shoppers_with_the_same_history_keep_separate_profiles() -> None:
    shop = Shop()
    alice, _ = await shop.run(request(HISTORY[:8], "alice"))
    bob, prompts = await shop.run(request(HISTORY[:9], "bob"))
    assert bob["memory"]["profile"] == "miss" and not is_incremental(prompts[0])  # not from alice's
    same, prompts = await shop.run(request(HISTORY[:8], "bob"))
    assert same["memory"]["profile"] == "miss" and len(prompts) == 1  # bob's own entry, not alice's
    assert await aforget(shop.store, "bob") == 2
    grown, _ = await shop.run(request(HISTORY[:9], "alice"))
    assert grown["memory"]["profile"] == "incremental"  # alice's entry survived bob's forget


async def test_an_incremental_answer_goes_through_the_same_validation_and_re_ask() -> None:
    base = default_responder()
    bad: list[str] = []

    def respond(stage: str, prompt: str) -> str | BaseException:
        if stage == "mope" and is_incremental(prompt) and not bad:
            bad.append(prompt)
            return json.dumps(profile_answer(["h4"]))  # an old item the prompt never showed
        return base(stage, prompt)

    shop = Shop(respond)
    await shop.run(request(HISTORY[:8]))
    grown, prompts = await shop.run(request(HISTORY[:9]))
    assert len(prompts) == 2 and all(is_incremental(p) for p in prompts)
    feedback = prompts[1].rsplit("Your previous answer was rejected", 1)[1]
    assert "Input should be 'h0', 'h1' or 'h8'" in feedback  # the ids the prompt showed
    assert grown["memory"]["profile"] == "incremental" and grown["degraded"] == []
    assert grown["usage"].stages["mope"].calls == 2 and grown["usage"].stages["mope"].wasted_tokens > 0


async def test_an_incremental_fallback_is_never_stored() -> None:
    base = default_responder()

    def respond(stage: str, prompt: str) -> str | BaseException:
        if stage == "mope" and is_incremental(prompt):
            return "not json"
        return base(stage, prompt)

    shop = Shop(respond)
    await shop.run(request(HISTORY[:8]))
    grown, _ = await shop.run(request(HISTORY[:9]))
    assert grown["degraded"] and grown["degraded"][0]["stage"] == "mope"
    key = profile_key("alice", window_of(HISTORY[:9]), CTX)
    assert await read_profile(shop.store, key, incremental_version=incremental_version(CTX)) is None


async def test_eval_uses_exact_match_memory_only() -> None:
    ctx = m3rec_context(parse_method("m3rec:hybrid"), seed=0)
    assert ctx.max_incremental_items == 0 and incremental_version(ctx) is None
    shop = Shop()
    await shop.run(request(HISTORY[:8]))
    await shop.run(request(HISTORY[:9]))  # stored incrementally (serving's default)
    for history in (HISTORY[:9], HISTORY[:10]):  # the incremental entry, and a history grown from it
        out, prompts = await shop.run(request(history), ctx)
        assert out["memory"]["profile"] == "miss" and not is_incremental(prompts[0])
    exact, prompts = await shop.run(request(HISTORY[:9]), ctx)  # now a full profile: an exact hit
    assert exact["memory"]["profile"] == "hit" and prompts == []


async def test_the_shopper_tool_returns_the_stored_profile_summary() -> None:
    shop = Shop()
    tool = as_shopper_tool(shop.graph)  # the graph's store
    assert tool.name == "describe_shopper"
    empty = json.loads(await tool.ainvoke({"user_id": "alice"}))
    assert empty["shopper_profile"] is None and "no profile is stored" in empty["note"]

    out, _ = await shop.run(request(HISTORY[:8]))
    answer = json.loads(await tool.ainvoke({"user_id": "alice"}))
    assert answer == {"user_id": "alice", "shopper_profile": out["profile"].summary}
    other = json.loads(await as_shopper_tool(store=shop.store).ainvoke({"user_id": "bob"}))
    assert other["shopper_profile"] is None  # per shopper

    await aforget(shop.store, "alice")
    assert json.loads(await tool.ainvoke({"user_id": "alice"}))["shopper_profile"] is None
    error = await tool.ainvoke({"user_id": ""})
    assert "user_id" in error and "Traceback" not in error
