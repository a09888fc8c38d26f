"""The graph's fusion step (stages/fuse.py): fused ranking, explanations, zero-weight skips.

Scripted models through the model factory; every test counts the calls it expects.
"""

import json
from pathlib import Path
from typing import Any, cast
from uuid import UUID

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.store.memory import InMemoryStore

from m3rec_graph import build_graph, context_for
from m3rec_graph.context import M3RecContext
from m3rec_graph.contracts.request import parse_request
from m3rec_graph.contracts.schemas import Item
from m3rec_graph.fusion import FusionConfig, FusionConfigError, load_fusion_config, zscores
from m3rec_graph.fusion.config import DEFAULT_FUSION_PATH
from m3rec_graph.integrations.embed import CHECKPOINT_TYPES
from m3rec_graph.state import RecInput
from m3rec_graph.text.similarity import TfidfSimilarity
from tests.fakes import ScriptedModels, default_responder

HISTORY = [
    {"item_id": "h1", "title": "Lavender sleep balm", "categories": ["Skin"]},
    {"item_id": "h2", "title": "Lavender pillow mist", "categories": ["Bath"]},
]
TITLES = ["Lavender body lotion", "Red nail polish", "Blue nail polish", "Hair dryer", "Lavender soap"]
CANDIDATES: list[dict[str, Any]] = [
    {"item_id": f"c{i}", "title": title, "categories": ["Beauty"]} for i, title in enumerate(TITLES)
]
IDS = [c["item_id"] for c in CANDIDATES]
REQUEST: dict[str, Any] = {"user_id": "u1", "history": HISTORY, "candidates": CANDIDATES}


def with_priors(priors: dict[str, float]) -> dict[str, Any]:
    return {**REQUEST, "candidates": [{**c, "prior": priors[c["item_id"]]} for c in CANDIDATES]}


def mar_score(item_id: str) -> int:
    return {"c0": 2, "c1": 9, "c2": 6, "c3": 4, "c4": 1}[item_id]  # MAR prefers c1


def ctx(fusion: object = None, **kw: Any) -> M3RecContext:
    return context_for("hybrid", mar_chunk_size=10, fusion=fusion, **kw)


async def run(
    request: dict[str, Any], context: M3RecContext, models: ScriptedModels | None = None, **build: Any
) -> tuple[dict[str, Any], ScriptedModels]:
    models = models or ScriptedModels(default_responder(score_of=mar_score))
    graph = build_graph(chat_models=models, store=InMemoryStore(), **build)
    out: dict[str, Any] = await graph.ainvoke(cast(RecInput, request), context=context)
    return out, models


def stage_counts(models: ScriptedModels) -> dict[str, int]:
    return {stage: len(models.stage_calls(stage)) for stage in ("mope", "mote", "mar")}


def ids(out: dict[str, Any]) -> list[str]:
    return [r.item_id for r in out["ranking"]]


# --- fusion off --------------------------------------------------------------------------------

async def test_fusion_off_is_the_mar_ranking_with_no_fused_fields() -> None:
    out, models = await run(with_priors(dict.fromkeys(IDS, 1.0)), ctx())
    assert ids(out) == ["c1", "c2", "c3", "c0", "c4"]
    assert all(r.fused_score is None and r.score_parts is None for r in out["ranking"])
    assert out["fusion"] is None
    assert stage_counts(models) == {"mope": 1, "mote": 5, "mar": 1}


async def test_fusion_off_never_runs_the_fuse_node() -> None:
    models = ScriptedModels(default_responder(score_of=mar_score))
    graph = build_graph(chat_models=models, store=InMemoryStore())
    nodes = [
        node
        async for update in graph.astream(cast(RecInput, REQUEST), context=ctx(), stream_mode="updates")
        for node in update
    ]
    assert "fuse" not in nodes and nodes[-1] == "rank"


# --- fusion on ---------------------------------------------------------------------------------

async def test_the_ranking_follows_the_fused_score_and_explains_it() -> None:
    config = FusionConfig(weights={"mar": 1.0, "prior": 2.0})
    priors = {"c0": 5.0, "c1": 0.0, "c2": 1.0, "c3": 2.0, "c4": 3.0}  # the host prefers c0
    out, models = await run(with_priors(priors), ctx(config))
    z_mar = dict(zip(IDS, zscores([mar_score(i) / 10 for i in IDS]), strict=True))
    z_prior = dict(zip(IDS, zscores([priors[i] for i in IDS]), strict=True))
    expected = {i: z_mar[i] + 2.0 * z_prior[i] for i in IDS}
    assert ids(out) == sorted(IDS, key=lambda i: -expected[i])
    for r in out["ranking"]:
        assert r.score == mar_score(r.item_id) / 10  # still MAR's value in [0, 1]
        assert r.source == "llm"
        assert r.fused_score == pytest.approx(expected[r.item_id])
        assert r.score_parts == pytest.approx({"mar": z_mar[r.item_id], "prior": 2.0 * z_prior[r.item_id]})
        assert sum(r.score_parts.values()) == pytest.approx(r.fused_score)
    assert out["fusion"] == {"version": config.version, "signals": ["mar", "prior"], "sampling": None}
    assert stage_counts(models) == {"mope": 1, "mote": 5, "mar": 1}


async def test_without_priors_the_prior_drops_out_and_the_rest_renormalises() -> None:
    config = FusionConfig(weights={"mar": 1.0, "prior": 3.0})
    out, _ = await run(REQUEST, ctx(config))
    z_mar = dict(zip(IDS, zscores([mar_score(i) / 10 for i in IDS]), strict=True))
    assert out["fusion"]["signals"] == ["mar"]
    for r in out["ranking"]:
        assert r.score_parts == pytest.approx({"mar": 4.0 * z_mar[r.item_id]})  # |1| + |3| over |1|
    assert ids(out) == ["c1", "c2", "c3", "c0", "c4"]


async def test_the_text_signal_is_the_text_baselines_tfidf_with_request_idf_by_default() -> None:
    out, _ = await run(REQUEST, ctx({"weights": {"text": 1.0}}))
    request = parse_request(REQUEST)
    similarity = TfidfSimilarity([*request.history, *request.candidates])
    sims = similarity.scores(request.history, request.candidates)
    expected = dict(zip(IDS, zscores([sims[i] for i in IDS]), strict=True))
    assert {r.item_id: r.fused_score for r in out["ranking"]} == pytest.approx(expected)
    assert ids(out)[:2] == ["c4", "c0"] or ids(out)[:2] == ["c0", "c4"]  # the lavender items


async def test_the_text_signal_fits_its_idf_on_the_catalogue_when_given() -> None:
    # In this catalogue "lavender" is everywhere (idf ~0) and "soap" is rare, so the
    # order differs from the request-idf one: the corpus is what decides.
    catalogue = [Item(item_id=f"k{i}", title=f"Lavender thing {i}") for i in range(30)]
    catalogue += [Item.model_validate({k: v for k, v in c.items() if k != "prior"}) for c in CANDIDATES]
    catalogue += [Item.model_validate(h) for h in HISTORY]
    out, _ = await run(REQUEST, ctx({"weights": {"text": 1.0}}), text_corpus=catalogue)
    request = parse_request(REQUEST)
    sims = TfidfSimilarity(catalogue).scores(request.history, request.candidates)
    expected = dict(zip(IDS, zscores([sims[i] for i in IDS]), strict=True))
    assert {r.item_id: r.fused_score for r in out["ranking"]} == pytest.approx(expected)
    own = TfidfSimilarity([*request.history, *request.candidates]).scores(request.history, request.candidates)
    assert sims != pytest.approx(own)
    shared, _ = await run(REQUEST, ctx({"weights": {"text": 1.0}}), text_corpus=TfidfSimilarity(catalogue))
    assert {r.item_id: r.fused_score for r in shared["ranking"]} == pytest.approx(expected)


async def test_the_overlap_signal_is_the_no_mar_overlap() -> None:
    config = FusionConfig(weights={"mar": 1.0, "overlap": 1.0})
    fused, _ = await run(REQUEST, ctx(config))
    no_mar, _ = await run(REQUEST, ctx(ablation="no_mar"))
    overlap = {r.item_id: r.score for r in no_mar["ranking"]}
    z = dict(zip(IDS, zscores([overlap[i] for i in IDS]), strict=True))
    assert {r.item_id: r.score_parts["overlap"] for r in fused["ranking"]} == pytest.approx(z)


async def test_the_shipped_default_config_runs_and_is_recorded() -> None:
    out, _ = await run(with_priors({i: float(n) for n, i in enumerate(IDS)}), ctx("default"))
    default = load_fusion_config(DEFAULT_FUSION_PATH)
    assert out["fusion"]["version"] == default.version
    assert out["fusion"]["signals"] == ["mar", "overlap", "text", "prior"]
    assert all(set(r.score_parts) == {"mar", "overlap", "text", "prior"} for r in out["ranking"])


async def test_a_config_file_path_is_read(tmp_path: Path) -> None:
    config = FusionConfig(weights={"prior": 1.0}, sampling="uniform", fitted={"method": "logistic"})
    path = tmp_path / "fusion.json"
    config.dump(path)
    out, _ = await run(with_priors({i: float(n) for n, i in enumerate(IDS)}), ctx(str(path)))
    assert out["fusion"] == {"version": config.version, "signals": ["prior"], "sampling": "uniform"}
    assert ids(out) == list(reversed(IDS))


async def test_top_k_cuts_the_fused_ranking() -> None:
    out, _ = await run({**with_priors({i: float(n) for n, i in enumerate(IDS)}), "k": 2}, ctx({"weights": {"prior": 1}}))
    assert ids(out) == ["c4", "c3"] and [r.rank for r in out["ranking"]] == [1, 2]


# --- zero weight: the stage does not run ------------------------------------------------------

async def test_mar_at_zero_weight_makes_no_mar_call() -> None:
    config = FusionConfig(weights={"mar": 0.0, "overlap": 1.0, "text": 1.0})
    out, models = await run(REQUEST, ctx(config))
    assert stage_counts(models) == {"mope": 1, "mote": 5, "mar": 0}
    assert all(r.source == "fallback" for r in out["ranking"])  # the no_mar path's overlap scores
    assert all(set(r.score_parts) == {"overlap", "text"} for r in out["ranking"])
    assert out["degraded"] == []


async def test_mar_and_overlap_at_zero_weight_make_no_llm_call_at_all() -> None:
    config = FusionConfig(weights={"mar": 0.0, "overlap": 0.0, "text": 1.0, "prior": 1.0})
    priors = {i: float(n) for n, i in enumerate(IDS)}
    out, models = await run(with_priors(priors), ctx(config))
    assert models.calls == []
    assert out["usage"].total.calls == 0
    assert all(set(r.score_parts) == {"text", "prior"} for r in out["ranking"])
    assert out["degraded"] == []
    assert "MOPE skipped" in out["profile"].summary


async def test_the_no_mar_ablation_under_fusion_still_fuses_without_mar() -> None:
    out, models = await run(REQUEST, ctx({"weights": {"mar": 1.0, "text": 1.0}}, ablation="no_mar"))
    assert stage_counts(models)["mar"] == 0
    assert out["fusion"]["signals"] == ["text"]


# --- errors ------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("weights", "ablation"),
    [({"prior": 1.0}, "none"), ({"prior": 1.0, "mar": 1.0}, "no_mar")],
)
async def test_a_config_whose_signals_are_all_missing_raises_before_any_call(
    weights: dict[str, float], ablation: str
) -> None:
    models = ScriptedModels(default_responder())
    with pytest.raises(FusionConfigError, match="has no priors"):
        await run(REQUEST, ctx({"weights": weights}, ablation=ablation), models)  # no priors in the request
    assert models.calls == []


async def test_a_missing_config_file_raises_before_any_call(tmp_path: Path) -> None:
    models = ScriptedModels(default_responder())
    with pytest.raises(FusionConfigError, match="does not exist"):
        await run(REQUEST, ctx(str(tmp_path / "nope.json")), models)
    assert models.calls == []


async def test_a_bad_inline_config_raises_before_any_call() -> None:
    models = ScriptedModels(default_responder())
    with pytest.raises(FusionConfigError, match="non-zero"):
        await run(REQUEST, ctx({"weights": {"mar": 0.0}}), models)
    assert models.calls == []


# --- the context field ------------------------------------------------------------------------

def test_the_fusion_setting_keeps_the_context_json_and_hashable(tmp_path: Path) -> None:
    config = FusionConfig(weights={"text": 1.0})
    by_object = M3RecContext(fusion=config)
    by_json = M3RecContext.coerce({"fusion": json.loads(json.dumps(config.model_dump(mode="json")))})
    assert by_object == by_json and hash(by_object) == hash(by_json)
    assert json.loads(json.dumps(by_object.fusion)) == config.model_dump(mode="json")
    assert M3RecContext(fusion=tmp_path / "f.json").fusion == str(tmp_path / "f.json")
    assert M3RecContext().fusion is None


# --- joins and reused threads ------------------------------------------------------------------

async def test_fuse_runs_once_after_a_mar_reask() -> None:
    base = default_responder(score_of=mar_score)
    answers = ["not json"]

    def respond(stage: str, prompt: str) -> str | BaseException:
        if stage == "mar" and answers:
            return answers.pop()
        return base(stage, prompt)

    models = ScriptedModels(respond)
    graph = build_graph(chat_models=models, store=InMemoryStore())
    updates = [
        update
        async for update in graph.astream(
            cast(RecInput, REQUEST), context=ctx({"weights": {"mar": 1.0}}), stream_mode="updates"
        )
    ]
    nodes = [node for update in updates for node in update]
    assert len(models.stage_calls("mar")) == 2
    assert nodes.count("fuse") == 1 and nodes[-1] == "rank"


async def test_fallback_mar_scores_never_count_as_the_mar_signal() -> None:
    base = default_responder(score_of=mar_score)

    def respond(stage: str, prompt: str) -> str | BaseException:
        return "not json" if stage == "mar" else base(stage, prompt)  # MAR never answers validly

    out, _ = await run(REQUEST, ctx({"weights": {"mar": 1.0, "text": 1.0}}), ScriptedModels(respond))
    assert {r.source for r in out["ranking"]} == {"fallback"}
    assert out["fusion"]["signals"] == ["text"]  # the overlap fallback does not pose as MAR
    assert all(set(r.score_parts or {}) == {"text"} for r in out["ranking"])


async def test_each_run_on_a_reused_thread_fuses_its_own_priors() -> None:
    saver = InMemorySaver(serde=JsonPlusSerializer(allowed_msgpack_modules=CHECKPOINT_TYPES))
    models = ScriptedModels(default_responder(score_of=mar_score))
    graph = build_graph(chat_models=models, store=InMemoryStore(), checkpointer=saver)
    thread: RunnableConfig = {"configurable": {"thread_id": "t"}}
    prior_only = ctx({"weights": {"prior": 1.0}})
    up = {i: float(n) for n, i in enumerate(IDS)}
    down = {i: -v for i, v in up.items()}
    first = await graph.ainvoke(cast(RecInput, with_priors(up)), thread, context=prior_only)
    second = await graph.ainvoke(cast(RecInput, with_priors(down)), thread, context=prior_only)
    third = await graph.ainvoke(cast(RecInput, with_priors(up)), thread, context=ctx())
    assert ids(first) == list(reversed(IDS))
    assert ids(second) == IDS
    assert ids(third) == ["c1", "c2", "c3", "c0", "c4"]  # fusion off: MAR, no stale fused scores
    assert third["fusion"] is None and all(r.fused_score is None for r in third["ranking"])


async def test_the_trace_records_the_fusion_config_version() -> None:
    class Metadata(BaseCallbackHandler):
        def __init__(self) -> None:
            self.runs: list[tuple[str, dict[str, Any]]] = []

        def on_chain_start(
            self, serialized: Any, inputs: Any, *, run_id: UUID, metadata: dict[str, Any] | None = None, **kw: Any
        ) -> None:
            self.runs.append((str(kw.get("name")), dict(metadata or {})))

    recorder = Metadata()
    config = FusionConfig(weights={"mar": 1.0, "text": 1.0}, sampling="uniform")
    graph = build_graph(chat_models=ScriptedModels(default_responder(score_of=mar_score)), store=InMemoryStore())
    await graph.ainvoke(cast(RecInput, REQUEST), {"callbacks": [recorder]}, context=ctx(config))
    fusion_runs = [meta for name, meta in recorder.runs if name == "fusion"]
    assert len(fusion_runs) == 1
    assert fusion_runs[0]["m3rec_fusion_version"] == config.version
    assert fusion_runs[0]["m3rec_fusion_sampling"] == "uniform"
    assert fusion_runs[0]["langgraph_node"] == "fuse"


# --- the offline preset's default fusion -------------------------------------------------------

async def test_the_local_preset_fuses_with_the_shipped_local_weights_unless_switched_off() -> None:
    """`fusion` unset on the offline preset: the shipped `local` config, fit on validation users."""
    from m3rec_graph.fusion import LOCAL_FUSION_PATH

    local = load_fusion_config(LOCAL_FUSION_PATH)
    assert local.fitted["method"] == "logistic" and local.sampling == "uniform"
    out, models = await run(REQUEST, context_for("local", mar_chunk_size=10))
    assert out["fusion"] is not None and out["fusion"]["version"] == local.version
    assert all(r.fused_score is not None for r in out["ranking"])
    # a stage that only feeds zero-weight signals does not run
    assert stage_counts(models) == {
        "mope": int(local.weights.get("overlap", 0) != 0 or local.weights.get("mar", 0) != 0),
        "mote": 5 * int(local.weights.get("overlap", 0) != 0 or local.weights.get("mar", 0) != 0),
        "mar": int(local.weights.get("mar", 0) != 0),
    }
    off, off_models = await run(REQUEST, context_for("local", mar_chunk_size=10, fusion="off"))
    assert off["fusion"] is None and all(r.fused_score is None for r in off["ranking"])
    assert stage_counts(off_models) == {"mope": 1, "mote": 5, "mar": 1}


async def test_a_preset_default_fusion_needs_the_presets_own_models() -> None:
    """Weights fit on the local model's signals do not carry over to another MAR, nor to the OpenAI presets."""
    overridden, _ = await run(REQUEST, context_for("local", {"mar": "gpt-6-sol"}, mar_chunk_size=10))
    assert overridden["fusion"] is None
    hybrid, _ = await run(REQUEST, ctx())
    assert hybrid["fusion"] is None
