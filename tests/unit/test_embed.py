"""m3rec inside a host: as a tool of a tool-calling agent, as a node of a host graph, streamed.

The m3rec stages run on scripted fake models (`tests.fakes`); the host agent's
own model is a scripted tool-calling fake (`tests.host_fakes`).
"""

import importlib.util
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel
from typing_extensions import TypedDict

from m3rec_graph import InMemoryTraitCache, build_graph, context_for
from m3rec_graph.cli.demo import load_cases
from m3rec_graph.contracts.schemas import Item, RankedItem
from m3rec_graph.errors import ConfigurationError, InvalidRequestError
from m3rec_graph.evaluation.datasets import load_dataset
from m3rec_graph.integrations.embed import (
    CHECKPOINT_TYPES,
    TOOL_NAME,
    as_node,
    as_tool,
    astream_progress,
)
from m3rec_graph.state import M3RecGraph, RecInput
from m3rec_graph.storage.catalog import (
    InMemoryCatalog,
    JsonlCatalog,
    SqliteCatalog,
    UnknownItemError,
    resolve_items,
)
from m3rec_graph.text.item_text import clean_text
from tests.fakes import ScriptedModels, default_responder
from tests.host_fakes import ScriptedHostModel, call_then_answer

BEAUTY = Path(__file__).parents[1] / "fixtures" / "beauty_small"
CATALOG = JsonlCatalog(BEAUTY)
ITEM_IDS = sorted(load_dataset(BEAUTY).items)
HISTORY_IDS = ITEM_IDS[:3]
CANDIDATE_IDS = ITEM_IDS[10:18]
HYBRID = context_for("hybrid", mar_chunk_size=4)


def score_of(item_id: str) -> int:
    """A fixed, id-dependent MAR score, so the expected ranking is known."""
    return CANDIDATE_IDS.index(item_id) + 1 if item_id in CANDIDATE_IDS else 0


def expected_order() -> list[str]:
    return sorted(CANDIDATE_IDS, key=score_of, reverse=True)


def m3rec(models: ScriptedModels) -> M3RecGraph:
    return build_graph(chat_models=models, trait_cache=InMemoryTraitCache())


@pytest.fixture
def models() -> ScriptedModels:
    return ScriptedModels(default_responder(score_of=score_of))


def request_of(history: list[str], candidates: list[str]) -> RecInput:
    items = {item.item_id: item for item in CATALOG.get_many([*history, *candidates])}
    return cast(
        RecInput,
        {
            "user_id": "u-embed",
            "history": [items[i].model_dump(exclude_none=True) for i in history],
            "candidates": [items[i].model_dump(exclude_none=True) for i in candidates],
        },
    )


# --------------------------------------------------------------------------- catalogs


def test_in_memory_catalog_resolves_in_order_and_names_unknown_ids() -> None:
    catalog = InMemoryCatalog([{"item_id": "a", "title": "A"}, Item(item_id="b", title="B")])
    assert [i.title for i in catalog.get_many(["b", "a", "b"])] == ["B", "A", "B"]
    with pytest.raises(UnknownItemError, match="'x', 'y'") as info:
        catalog.get_many(["a", "x", "y"])
    assert info.value.missing == ["x", "y"]


def test_jsonl_catalog_reads_items_like_the_dataset_loader() -> None:
    dataset = load_dataset(BEAUTY)
    some = ITEM_IDS[:5]
    assert CATALOG.get_many(some) == [dataset.items[i] for i in some]
    assert len(CATALOG) == len(dataset.items)
    with pytest.raises(UnknownItemError):
        CATALOG.get_many(["not-an-asin"])


def test_sqlite_catalog_round_trip(tmp_path: Path) -> None:
    items = CATALOG.get_many(ITEM_IDS[:700] if len(ITEM_IDS) > 700 else ITEM_IDS)
    catalog = SqliteCatalog.write(tmp_path / "items.db", items)
    ids = [item.item_id for item in items][::-1]  # more ids than one query batch, reversed
    assert catalog.get_many(ids) == items[::-1]
    with pytest.raises(UnknownItemError, match="'nope'"):
        catalog.get_many([ids[0], "nope"])
    with sqlite3.connect(tmp_path / "items.db") as conn:
        assert conn.execute("SELECT count(*) FROM items").fetchone()[0] == len(items)
    with pytest.raises(ConfigurationError, match="not found"):
        SqliteCatalog(tmp_path / "missing.db").get_many(["a"])


def test_resolve_items_mixes_ids_and_items_and_needs_a_catalog_for_ids() -> None:
    catalog = InMemoryCatalog([{"item_id": "a", "title": "A"}])
    items = resolve_items([" a ", Item(item_id="b"), {"item_id": "c", "title": "C"}], catalog)
    assert [i.item_id for i in items] == ["a", "b", "c"]
    with pytest.raises(InvalidRequestError, match="no catalog"):
        resolve_items(["a"], None)


# --------------------------------------------------------------------------- tool


def args_schema_of(tool: BaseTool) -> dict[str, Any]:
    schema = tool.tool_call_schema
    assert isinstance(schema, type) and issubclass(schema, BaseModel)
    return schema.model_json_schema()


def test_tool_has_a_clear_name_description_and_schema() -> None:
    tool = as_tool(catalog=CATALOG)
    assert tool.name == TOOL_NAME
    assert "purchase history" in tool.description and "catalog item ids" in tool.description
    schema = args_schema_of(tool)
    assert set(schema["required"]) == {"history", "candidates"}
    assert {"user_id", "k"} <= set(schema["properties"])
    assert schema["properties"]["candidates"]["items"] == {"type": "string"}
    # without a catalog the model passes full items
    items_schema = args_schema_of(as_tool())
    assert items_schema["properties"]["candidates"]["items"] == {"$ref": "#/$defs/Candidate"}
    assert "prior" in items_schema["$defs"]["Candidate"]["properties"]
    assert "prior" in items_schema["properties"]["candidates"]["description"]
    assert "purchase history" in as_tool().description and "as items" in as_tool().description


async def test_agent_calls_the_tool_and_reads_the_ranking(models: ScriptedModels) -> None:
    tool = as_tool(m3rec(models), context=HYBRID, catalog=CATALOG, k=3)
    args = {"history": HISTORY_IDS, "candidates": CANDIDATE_IDS}
    host = ScriptedHostModel(script=call_then_answer(TOOL_NAME, args), conversations=[], tools=[])
    agent = create_agent(host, [tool], system_prompt="You are a shopping assistant.")

    result = await agent.ainvoke({"messages": [HumanMessage("What should I buy next?")]})

    assert set(host.tools) == {TOOL_NAME}
    tool_message = next(m for m in result["messages"] if isinstance(m, ToolMessage))
    assert tool_message.status == "success"
    answer = json.loads(tool_message.text)
    assert [r["item_id"] for r in answer["recommendations"]] == expected_order()[:3]
    assert [r["rank"] for r in answer["recommendations"]] == [1, 2, 3]
    first = answer["recommendations"][0]
    assert first["title"] and first["why"].startswith("aesthetic: fits the look")
    assert answer["out_of"] == len(CANDIDATE_IDS)
    assert len(tool_message.text) < 1500  # compact: the host model reads all of it
    # the full output travels as the artifact, for the host application
    assert [r["item_id"] for r in tool_message.artifact["ranking"]] == expected_order()[:3]
    final = result["messages"][-1]
    assert isinstance(final, AIMessage) and expected_order()[0] in final.text
    # m3rec ran with its own routing, not the default
    assert {name for name, _, _ in models.calls} == {"gpt-6-luna", "gpt-6.1-sol"}


@pytest.mark.parametrize(
    ("bad_args", "expected"),
    [
        ({"history": HISTORY_IDS}, "invalid arguments for recommend_products: candidates: Field required"),
        ({"history": HISTORY_IDS, "candidates": "B00, B01"}, "candidates: Input should be a valid list"),
        ({"history": HISTORY_IDS, "candidates": ["B000-unknown"]}, "UnknownItemError: unknown item id(s) 'B000-unknown'"),
        ({"history": HISTORY_IDS, "candidates": CANDIDATE_IDS[:1] * 2}, "duplicate candidate item_id"),
        ({"history": HISTORY_IDS, "candidates": CANDIDATE_IDS, "k": 0}, "k: Input should be greater than or equal to 1"),
    ],
)
async def test_bad_tool_arguments_come_back_as_a_tool_error_the_agent_recovers_from(
    models: ScriptedModels, bad_args: dict[str, Any], expected: str
) -> None:
    tool = as_tool(m3rec(models), context=HYBRID, catalog=CATALOG, k=2)
    good = {"history": HISTORY_IDS, "candidates": CANDIDATE_IDS}
    host = ScriptedHostModel(script=call_then_answer(TOOL_NAME, bad_args, retry_args=good), conversations=[], tools=[])
    agent = create_agent(host, [tool])

    result = await agent.ainvoke({"messages": [HumanMessage("What should I buy next?")]})

    results = [m for m in result["messages"] if isinstance(m, ToolMessage)]
    assert [m.status for m in results] == ["error", "success"]
    assert expected in results[0].text, results[0].text
    assert results[0].text.startswith("Error: ")
    assert expected_order()[0] in result["messages"][-1].text


async def test_tool_called_directly_with_items_without_a_catalog(models: ScriptedModels) -> None:
    tool = as_tool(m3rec(models), context=HYBRID, k=2)
    request = request_of(HISTORY_IDS, CANDIDATE_IDS)
    text = await tool.ainvoke({"history": request["history"], "candidates": request["candidates"], "k": 4})
    answer = json.loads(text)
    assert [r["item_id"] for r in answer["recommendations"]] == expected_order()[:4]
    # ids need a catalog: the model is told to pass full items
    message = await tool.ainvoke(
        {"type": "tool_call", "name": TOOL_NAME, "id": "c1", "args": {"history": [], "candidates": ["x"]}}
    )
    assert isinstance(message, ToolMessage) and message.status == "error"
    assert "Input should be a valid dictionary" in message.text


def test_tool_runs_synchronously_outside_an_event_loop(models: ScriptedModels) -> None:
    tool: BaseTool = as_tool(m3rec(models), context=HYBRID, catalog=CATALOG, k=1)
    text = tool.invoke({"history": HISTORY_IDS, "candidates": CANDIDATE_IDS})
    assert json.loads(text)["recommendations"][0]["item_id"] == expected_order()[0]


# --------------------------------------------------------------------------- node


@dataclass(frozen=True)
class ShopContext:
    """The host's own context type (not an M3RecContext)."""

    store_name: str


class ShopState(TypedDict, total=False):
    customer: str
    purchases: list[str]
    shortlist: list[str]
    recommendations: list[RankedItem]
    reply: str


async def reply(state: ShopState) -> dict[str, Any]:
    return {"reply": f"Try {state['recommendations'][0].item_id}"}


def shop_graph(node: Any, checkpointer: InMemorySaver | None = None) -> Any:
    builder = StateGraph(ShopState, context_schema=ShopContext)
    builder.add_node("recommend", node)
    builder.add_node("reply", reply)
    builder.add_edge(START, "recommend")
    builder.add_edge("recommend", "reply")
    builder.add_edge("reply", END)
    return builder.compile(checkpointer=checkpointer)


SHOP_INPUT: ShopState = {"customer": "c-42", "purchases": HISTORY_IDS, "shortlist": CANDIDATE_IDS}
NODE_MAPS: dict[str, Any] = {
    "input_map": {"user_id": "customer", "history": "purchases", "candidates": "shortlist"},
    "output_map": {"ranking": "recommendations"},
}


async def test_node_in_a_host_graph_with_its_own_state_and_context(
    models: ScriptedModels, caplog: pytest.LogCaptureFixture
) -> None:
    saver = InMemorySaver(serde=JsonPlusSerializer(allowed_msgpack_modules=CHECKPOINT_TYPES))
    host = shop_graph(as_node(m3rec(models), HYBRID, catalog=CATALOG, **NODE_MAPS), saver)
    config: RunnableConfig = {"configurable": {"thread_id": "t1"}}

    out = await host.ainvoke(SHOP_INPUT, config, context=ShopContext(store_name="Beauty Corner"))

    assert [r.item_id for r in out["recommendations"]] == expected_order()
    assert out["reply"] == f"Try {expected_order()[0]}"
    assert set(out) == {"customer", "purchases", "shortlist", "recommendations", "reply"}
    # m3rec's own routing (hybrid), although the host passed a ShopContext
    assert {(name, stage) for name, stage, _ in models.calls} == {
        ("gpt-6-luna", "mope"), ("gpt-6-luna", "mote"), ("gpt-6.1-sol", "mar")
    }
    mope_prompt = models.stage_calls("mope")[0][2]
    assert all(f"[{i}]" in mope_prompt for i in HISTORY_IDS)
    # m3rec checkpoints under the host's node, and its types are on the allowlist
    namespaces = {c.config["configurable"]["checkpoint_ns"].split(":")[0] for c in saver.list(None)}
    assert namespaces == {"", "recommend"}
    assert (await host.aget_state(config)).values["recommendations"][0].item_id == expected_order()[0]
    assert "unregistered type" not in caplog.text


async def test_compiled_graph_added_directly_sees_the_host_context(models: ScriptedModels) -> None:
    """Why `as_node` exists: a compiled subgraph gets the host's context, which m3rec refuses.

    A deliberate break (issue 13): m3rec used to run with its default routing here,
    so a host that passed its own context got the local model without being told.
    """

    class Shared(TypedDict, total=False):
        user_id: str
        history: list[dict[str, Any]]
        candidates: list[dict[str, Any]]
        ranking: list[RankedItem]

    builder = StateGraph(Shared, context_schema=ShopContext)
    builder.add_node("m3rec", m3rec(models))
    builder.add_edge(START, "m3rec")
    host = builder.compile()
    with pytest.raises(ConfigurationError, match=r"context of type .*ShopContext.*as_node"):
        await host.ainvoke(cast(Shared, request_of(HISTORY_IDS, CANDIDATE_IDS)), context=ShopContext(store_name="x"))
    assert models.calls == []  # refused before any model call, not run on the default routing


async def test_node_with_function_maps_and_bad_requests_raise(models: ScriptedModels) -> None:
    def to_request(state: Any) -> RecInput:
        return request_of(state["purchases"], state["shortlist"][:2])

    node = as_node(
        m3rec(models), HYBRID, input_map=to_request,
        output_map=lambda out: {"recommendations": out["ranking"], "reply": out["profile"].summary},
    )
    out = await shop_graph(node).ainvoke(SHOP_INPUT, context=ShopContext(store_name="x"))
    assert len(out["recommendations"]) == 2
    with pytest.raises(InvalidRequestError, match="no catalog"):
        await shop_graph(as_node(m3rec(models), HYBRID, **NODE_MAPS)).ainvoke(SHOP_INPUT)
    with pytest.raises(ValueError, match="input_map keys must be m3rec input keys"):
        as_node(m3rec(models), HYBRID, input_map={"items": "x"})
    with pytest.raises(ValueError, match="output_map keys .* got \\['rankings'\\]"):
        as_node(m3rec(models), HYBRID, output_map={"rankings": "x"})


# --------------------------------------------------------------------------- streaming


async def test_streaming_yields_updates_and_progress_events(models: ScriptedModels) -> None:
    graph = m3rec(models)
    custom: list[dict[str, Any]] = []
    updated: list[str] = []
    async for mode, chunk in graph.astream(
        request_of(HISTORY_IDS, CANDIDATE_IDS), context=HYBRID, stream_mode=["custom", "updates"]
    ):
        if mode == "custom":
            custom.append(cast(dict[str, Any], chunk))
        else:
            updated.extend(chunk)
    n = len(CANDIDATE_IDS)
    assert [e["m3rec"] for e in custom] == ["started", "profile_ready", "items_encoded", "ranking_ready"]
    assert custom[0] == {"m3rec": "started", "candidates": n, "to_encode": n, "ready": 0}
    assert custom[2] == {"m3rec": "items_encoded", "encoded": n, "total": n}
    assert custom[3]["top"] == expected_order()[:5]
    assert updated.count("mote") == n and updated.count("mar") == 2
    assert updated[0] == "prepare" and updated[-1] == "rank"


async def test_astream_progress_counts_items_as_they_are_encoded(models: ScriptedModels) -> None:
    cache = InMemoryTraitCache()
    graph = build_graph(chat_models=models, trait_cache=cache)
    half = CANDIDATE_IDS[:4]
    await graph.ainvoke(request_of(HISTORY_IDS, half), context=HYBRID)  # 4 items now cached

    events = [e async for e in astream_progress(request_of(HISTORY_IDS, CANDIDATE_IDS), graph=graph, context=HYBRID)]

    kinds = [e["event"] for e in events]
    assert kinds[0] == "started" and kinds[-2:] == ["ranking_ready", "done"]
    assert kinds.count("profile_ready") == 1
    assert events[0]["message"] == "Reading 8 products (4 known)"
    encoded = [(e["done"], e["total"]) for e in events if e["event"] == "item_encoded"]
    assert encoded == [(5, 8), (6, 8), (7, 8), (8, 8)]
    assert [r.item_id for r in events[-1]["output"]["ranking"]] == expected_order()


async def test_astream_progress_counts_a_reasked_item_and_profile_once() -> None:
    """A re-ask is another run of the stage node: its update is not a result, so it is not counted."""
    valid = default_responder()
    failed: set[str] = set()

    def first_mope_and_mote_fail(stage: str, prompt: str) -> str | BaseException:
        if stage in ("mope", "mote") and stage not in failed:
            failed.add(stage)
            return "{not json"
        return valid(stage, prompt)

    models = ScriptedModels(first_mope_and_mote_fail)
    graph = build_graph(chat_models=models, trait_cache=InMemoryTraitCache())
    events = [e async for e in astream_progress(request_of(HISTORY_IDS, CANDIDATE_IDS), graph=graph, context=HYBRID)]

    assert failed == {"mope", "mote"}
    n = len(CANDIDATE_IDS)
    assert len(models.stage_calls("mote")) == n + 1 and len(models.stage_calls("mope")) == 2
    assert [(e["done"], e["total"]) for e in events if e["event"] == "item_encoded"] == [(i, n) for i in range(1, n + 1)]
    assert [e["event"] for e in events].count("profile_ready") == 1
    assert events[-1]["output"]["degraded"] == []


async def test_node_forwards_progress_to_the_host_stream(models: ScriptedModels) -> None:
    host = shop_graph(as_node(m3rec(models), HYBRID, catalog=CATALOG, **NODE_MAPS))
    events = [
        chunk async for chunk in host.astream(
            SHOP_INPUT, context=ShopContext(store_name="x"), stream_mode="custom"
        )
    ]
    assert [e["m3rec"] for e in events] == ["started", "profile_ready", "items_encoded", "ranking_ready"]


# --------------------------------------------------------------------------- the example


def load_example() -> ModuleType:
    path = Path(__file__).parents[2] / "examples" / "shopping_assistant.py"
    spec = importlib.util.spec_from_file_location("shopping_assistant", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("call_tool_first", [False, True])
async def test_shopping_assistant_example(call_tool_first: bool, capsys: pytest.CaptureFixture[str]) -> None:
    example = load_example()
    case = load_cases()[0]
    shortlist = [item["item_id"] for item in case["candidates"]]
    history = [item["item_id"] for item in case["history"]]
    models = ScriptedModels(default_responder(score_of=lambda i: shortlist.index(i) % 11))
    catalog = InMemoryCatalog([*case["history"], *case["candidates"]])
    tool = as_tool(m3rec(models), context=HYBRID, catalog=catalog, k=3)
    if call_tool_first:  # the offline path: a model that cannot call tools only writes the reply

        def reply_only(messages: list[Any]) -> AIMessage:
            assert not any(isinstance(m, ToolMessage) for m in messages)
            answer = json.loads(messages[-1].text.split("The recommender answered:\n")[1])
            return AIMessage(content=f"Buy {answer['recommendations'][0]['title']}")

        script: Any = reply_only
    else:
        script = call_then_answer(TOOL_NAME, {"history": history, "candidates": shortlist})
    host = ScriptedHostModel(script=script, conversations=[], tools=[])
    assistant = example.build_assistant(host, tool, call_tool_first=call_tool_first)

    messages = await example.ask(assistant, history, shortlist)

    best = max(shortlist, key=lambda i: shortlist.index(i) % 11)  # the one item scored 10
    titles = {item["item_id"]: item.get("title") or item["item_id"] for item in case["candidates"]}
    result = next(m for m in messages if isinstance(m, ToolMessage))
    assert result.status == "success"
    assert json.loads(result.text)["recommendations"][0]["title"] == clean_text(titles[best], 90)
    assert len(host.conversations) == (1 if call_tool_first else 2)
    example.report(messages, titles)
    printed = capsys.readouterr().out
    assert "shopper: What should I buy next?" in printed and "assistant: " in printed
    assert f"1. (1.0) {titles[best]}" in printed


# --------------------------------------------------------------------------- priors and fusion

PRIOR_ONLY = context_for("hybrid", mar_chunk_size=4, fusion={"weights": {"prior": 1.0}})


def with_priors(candidates: list[Any]) -> list[dict[str, Any]]:
    """The host ranker's score: the reverse of MAR's preference, so the order tells which counted."""
    return [{**c, "prior": float(-score_of(c["item_id"]))} for c in candidates]


async def test_tool_candidates_carry_priors_that_fusion_ranks_by(models: ScriptedModels) -> None:
    tool = as_tool(m3rec(models), context=PRIOR_ONLY, k=3)
    assert "prior" in json.dumps(tool.args)
    request = request_of(HISTORY_IDS, CANDIDATE_IDS)
    message = await tool.ainvoke(
        {
            "type": "tool_call",
            "name": TOOL_NAME,
            "id": "c1",
            "args": {"history": request["history"], "candidates": with_priors(list(request["candidates"]))},
        }
    )
    assert isinstance(message, ToolMessage) and message.status != "error"
    answer = json.loads(message.text)
    assert [r["item_id"] for r in answer["recommendations"]] == expected_order()[::-1][:3]
    assert all("fused_score" in r for r in answer["recommendations"])
    assert message.artifact["fusion"]["signals"] == ["prior"]
    assert models.calls == []  # prior only: no stage feeds anything, so no LLM call


async def test_tool_refuses_priors_on_some_candidates_only(models: ScriptedModels) -> None:
    tool = as_tool(m3rec(models), context=PRIOR_ONLY)
    request = request_of(HISTORY_IDS, CANDIDATE_IDS)
    candidates = with_priors(list(request["candidates"]))
    del candidates[1]["prior"]
    message = await tool.ainvoke(
        {"type": "tool_call", "name": TOOL_NAME, "id": "c1", "args": {"history": [], "candidates": candidates}}
    )
    assert isinstance(message, ToolMessage) and message.status == "error"
    assert "give every candidate a prior, or none" in message.text


class PriorHost(TypedDict, total=False):
    user_id: str
    history: list[dict[str, Any]]
    candidates: list[dict[str, Any]]
    ranking: list[RankedItem]


async def test_node_passes_host_priors_through(models: ScriptedModels) -> None:
    request = request_of(HISTORY_IDS, CANDIDATE_IDS)
    builder = StateGraph(PriorHost)
    node: Any = as_node(m3rec(models), PRIOR_ONLY)
    builder.add_node("recommend", node)
    builder.add_edge(START, "recommend")
    builder.add_edge("recommend", END)
    host = builder.compile()
    state = {**request, "candidates": with_priors(list(request["candidates"]))}
    out = await host.ainvoke(cast(PriorHost, state))
    assert [r.item_id for r in out["ranking"]] == expected_order()[::-1]
    assert all(r.score_parts is not None and set(r.score_parts) == {"prior"} for r in out["ranking"])


async def test_the_by_id_tool_takes_priors_in_candidate_order(models: ScriptedModels) -> None:
    request = request_of(HISTORY_IDS, CANDIDATE_IDS)
    catalog = InMemoryCatalog([*request["history"], *request["candidates"]])
    tool = as_tool(m3rec(models), context=PRIOR_ONLY, catalog=catalog, k=3)
    assert "priors" in tool.args
    priors = [c["prior"] for c in with_priors(list(request["candidates"]))]
    args = {"history": HISTORY_IDS, "candidates": CANDIDATE_IDS, "priors": priors}
    message = await tool.ainvoke({"type": "tool_call", "name": TOOL_NAME, "id": "c1", "args": args})
    assert isinstance(message, ToolMessage) and message.status != "error"
    answer = json.loads(message.text)
    assert [r["item_id"] for r in answer["recommendations"]] == expected_order()[::-1][:3]
    assert message.artifact["fusion"]["signals"] == ["prior"]

    short = {**args, "priors": priors[:-1]}
    refused = await tool.ainvoke({"type": "tool_call", "name": TOOL_NAME, "id": "c2", "args": short})
    assert isinstance(refused, ToolMessage) and refused.status == "error"
    assert "one per candidate" in refused.text
