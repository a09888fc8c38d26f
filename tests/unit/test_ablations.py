"""The ablations (`M3RecContext.ablation`): the same graph with one stage switched off."""

import json
from typing import Any, cast

import pytest

from m3rec_graph import InMemoryTraitCache, build_graph, context_for
from m3rec_graph.context import ABLATIONS
from m3rec_graph.contracts.schemas import Dimension
from m3rec_graph.llm.routing import RemoteContext
from m3rec_graph.state import RecInput
from tests.fakes import ScriptedModels, candidate_ids_in, default_responder, traits_answer

HISTORY = [
    {"item_id": "h1", "title": "Red nail polish", "brand": "OPI", "categories": ["Makeup > Nails"]},
    {"item_id": "h2", "title": "Glitter top coat", "categories": ["Makeup > Nails"]},
]
CANDIDATES: list[dict[str, Any]] = [
    {"item_id": f"c{i}", "title": f"Product {i}", "brand": f"Brand{i}", "categories": ["Makeup"]}
    for i in range(6)
]
REQUEST: dict[str, Any] = {"user_id": "u1", "history": HISTORY, "candidates": CANDIDATES}


async def run(models: ScriptedModels, ablation: str, **settings: Any) -> dict[str, Any]:
    graph = build_graph(chat_models=models, trait_cache=InMemoryTraitCache())
    ctx = context_for("hybrid", mar_chunk_size=4, ablation=ablation, **settings)
    out: dict[str, Any] = await graph.ainvoke(cast(RecInput, REQUEST), context=ctx)
    return out


def calls_per_stage(models: ScriptedModels) -> dict[str, int]:
    return {stage: len(models.stage_calls(stage)) for stage in ("mope", "mote", "mar")}


def assert_full_valid_ranking(out: dict[str, Any]) -> None:
    ids = [r.item_id for r in out["ranking"]]
    assert sorted(ids) == sorted(c["item_id"] for c in CANDIDATES)
    assert [r.rank for r in out["ranking"]] == list(range(1, len(CANDIDATES) + 1))
    assert out["degraded"] == []


def profile_blocks(models: ScriptedModels) -> list[str]:
    return [p.rsplit("<profile>", 1)[1].split("</profile>")[0] for _, _, p in models.stage_calls("mar")]


def candidate_blocks(models: ScriptedModels) -> list[str]:
    return [p.rsplit("<candidates>", 1)[1].split("</candidates>")[0] for _, _, p in models.stage_calls("mar")]


async def test_full_pipeline_calls_every_stage_and_shows_profile_and_traits() -> None:
    models = ScriptedModels(default_responder(score_of=lambda i: int(i[1:])))
    out = await run(models, "none")
    assert calls_per_stage(models) == {"mope": 1, "mote": 6, "mar": 2}
    assert all("strengths:" in b and "purchase history" not in b for b in profile_blocks(models))
    assert all("traits:" in b for b in candidate_blocks(models))
    assert_full_valid_ranking(out)


async def test_no_mope_skips_mope_and_shows_mar_the_raw_history() -> None:
    models = ScriptedModels(default_responder(score_of=lambda i: int(i[1:])))
    out = await run(models, "no_mope")
    assert calls_per_stage(models) == {"mope": 0, "mote": 6, "mar": 2}
    for block in profile_blocks(models):
        assert "purchase history" in block
        assert "[h1] Red nail polish | brand: OPI" in block and "[h2] Glitter top coat" in block
        assert "strengths:" not in block and "summary:" not in block
    assert all("traits:" in b for b in candidate_blocks(models))  # MOTE still runs
    assert_full_valid_ranking(out)
    assert [r.item_id for r in out["ranking"]] == ["c5", "c4", "c3", "c2", "c1", "c0"]
    assert {r.source for r in out["ranking"]} == {"llm"}
    assert out["profile"].summary.startswith("Keyword profile")  # the keyword profile stands in
    assert "ablation no_mope" in out["profile"].summary and "no valid" not in out["profile"].summary
    assert out["usage"].stages["mope"].calls == 0


async def test_no_mope_respects_max_history_items() -> None:
    models = ScriptedModels(default_responder())
    await run(models, "no_mope", max_history_items=1)
    for block in profile_blocks(models):
        assert "[h2]" in block and "[h1]" not in block


async def test_no_mote_skips_mote_and_shows_mar_the_item_text() -> None:
    models = ScriptedModels(default_responder(score_of=lambda i: int(i[1:])))
    out = await run(models, "no_mote")
    assert calls_per_stage(models) == {"mope": 1, "mote": 0, "mar": 2}
    blocks = candidate_blocks(models)
    assert all("traits:" not in b and "strengths:" not in b for b in blocks)
    assert "[c0] Product 0 | brand: Brand0 | category: Makeup" in "".join(blocks)
    assert sorted(i for p in models.stage_calls("mar") for i in candidate_ids_in(p[2])) == [
        f"c{i}" for i in range(6)
    ]
    assert all("strengths:" in b for b in profile_blocks(models))  # MOPE still runs
    assert_full_valid_ranking(out)
    assert [r.item_id for r in out["ranking"]] == ["c5", "c4", "c3", "c2", "c1", "c0"]


async def test_no_mote_pointwise_shows_the_item_text() -> None:
    models = ScriptedModels(default_responder())
    out = await run(models, "no_mote", mar_mode="pointwise")
    assert calls_per_stage(models) == {"mope": 1, "mote": 0, "mar": 6}
    prompts = [p for _, _, p in models.stage_calls("mar")]
    assert all("traits:" not in p.rsplit("<candidate>", 1)[1] for p in prompts)
    assert_full_valid_ranking(out)


async def test_no_mar_ranks_by_profile_trait_overlap_without_calling_mar() -> None:
    # MOPE: aesthetic 9, every other dimension 6 (see profile_answer); MOTE: item cN is
    # strong on aesthetic in proportion to N, weak elsewhere, so the overlap order is c5..c0.
    def respond(stage: str, prompt: str) -> str | BaseException:
        if stage == "mote":
            n = int(prompt.rsplit("<item>", 1)[1].split("[c", 1)[1].split("]", 1)[0])
            answer = traits_answer(level=1)
            answer["strengths"][Dimension.AESTHETIC.value] = 1 + n
            return json.dumps(answer)
        return default_responder()(stage, prompt)

    models = ScriptedModels(respond)
    out = await run(models, "no_mar")
    assert calls_per_stage(models) == {"mope": 1, "mote": 6, "mar": 0}
    assert_full_valid_ranking(out)
    assert [r.item_id for r in out["ranking"]] == ["c5", "c4", "c3", "c2", "c1", "c0"]
    assert {r.source for r in out["ranking"]} == {"fallback"}
    scores = [r.score for r in out["ranking"]]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) == 6
    assert out["usage"].stages["mar"].calls == 0


@pytest.mark.parametrize("ablation", ["no_mope", "no_mote", "no_mar"])
async def test_remote_context_carries_the_ablation(ablation: str) -> None:
    assert RemoteContext(routing="hybrid", ablation=ablation).resolve().ablation == ablation  # type: ignore[arg-type]
    assert RemoteContext(routing="hybrid").resolve().ablation == "none"


def test_ablations_are_listed() -> None:
    assert ABLATIONS == ("none", "no_mope", "no_mote", "no_mar")
