"""Embed m3rec in an assistant: as a LangChain tool, as a node of a host graph, or streamed.

```python
tool = as_tool(catalog=JsonlCatalog("items.jsonl"), k=5)      # for any tool-calling agent
builder.add_node("recommend", as_node(input_map={"history": "purchases"}))  # in a StateGraph
async for event in astream_progress(request): ...              # status lines for a chat UI
```

m3rec always runs with its own `M3RecContext` (the one given here, else the
default routing), whatever context the host graph was invoked with. A compiled
graph added directly as a host node would receive the host's context instead, and
refuses it (`ConfigurationError`) rather than guess a routing.
Neither wrapper starts the local model server: run the host inside
`m3rec_graph.local_server()` when the routing is `local`.
"""

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, Literal, Protocol, cast

from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool, StructuredTool, ToolException
from langgraph.config import get_stream_writer
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from typing_extensions import TypedDict

from m3rec_graph.context import M3RecContext
from m3rec_graph.contracts.request import MAX_CANDIDATES, Candidate, item_dict
from m3rec_graph.contracts.schemas import Item
from m3rec_graph.errors import M3RecError
from m3rec_graph.llm.factory import describe_validation_error
from m3rec_graph.llm.routing import default_context
from m3rec_graph.state import M3RecGraph, RecInput, RecOutput
from m3rec_graph.storage.catalog import Catalog, ItemRef, resolve_items
from m3rec_graph.text.item_text import clean_text, item_text

TOOL_NAME = "recommend_products"
TOOL_DESCRIPTION = (
    "Rank candidate products for a shopper by how well they fit the shopper's buying "
    "motivations, inferred from their purchase history. Pass the history (oldest first) and "
    "the candidates{ids}. Returns JSON: the top items, best first, each with a score in [0, 1] "
    "and a one-line reason. Use it to answer 'what should I buy next?'."
)
REASON_CHARS = 160
"""Length of the one-line reason per item in the tool's answer."""

CHECKPOINT_TYPES: list[tuple[str, str]] = [
    ("m3rec_graph.contracts.request", "RecommendationRequest"),
    ("m3rec_graph.contracts.request", "Candidate"),
    ("m3rec_graph.contracts.schemas", "Item"),
    ("m3rec_graph.contracts.schemas", "Dimension"),
    ("m3rec_graph.contracts.schemas", "MotivationProfile"),
    ("m3rec_graph.contracts.schemas", "ItemTraits"),
    ("m3rec_graph.contracts.schemas", "AlignmentScore"),
    ("m3rec_graph.contracts.schemas", "RankedItem"),
    ("m3rec_graph.llm.usage", "UsageReport"),
]
"""The types m3rec keeps in graph state, for a host checkpointer's msgpack allowlist:
`JsonPlusSerializer(allowed_msgpack_modules=CHECKPOINT_TYPES)` (also in `langgraph.json`)."""

# --------------------------------------------------------------------------- tool


class RecommendArgs(BaseModel):
    """Arguments of the recommendation tool: full items."""

    model_config = ConfigDict(extra="forbid")

    history: list[Item] = Field(
        max_length=500, description="Products the shopper bought or reviewed, oldest first."
    )
    candidates: list[Candidate] = Field(
        min_length=1,
        max_length=MAX_CANDIDATES,
        description=(
            "Products to rank. Each may carry `prior`, your retriever's or ranker's score for it "
            "(a finite number, higher is better): give it for every candidate or for none. It counts "
            "only when m3rec's context turns fusion on."
        ),
    )
    user_id: str = Field(default="shopper", min_length=1, description="The shopper's id, if known.")
    k: int | None = Field(default=None, ge=1, description="How many top products to return.")


class RecommendByIdArgs(BaseModel):
    """Arguments of the recommendation tool: catalog item ids."""

    model_config = ConfigDict(extra="forbid")

    history: list[str] = Field(
        max_length=500,
        description="Products the shopper bought or reviewed, oldest first: catalog item ids.",
    )
    candidates: list[str] = Field(
        min_length=1, max_length=MAX_CANDIDATES, description="Products to rank: catalog item ids."
    )
    priors: list[float] | None = Field(
        default=None,
        description=(
            "Optional: your retriever's or ranker's score for each candidate, in the same order "
            "(finite numbers, higher is better; one per candidate). It counts only when m3rec's "
            "context turns fusion on."
        ),
    )
    user_id: str = Field(default="shopper", min_length=1, description="The shopper's id, if known.")
    k: int | None = Field(default=None, ge=1, description="How many top products to return.")

    @model_validator(mode="after")
    def _one_prior_per_candidate(self) -> "RecommendByIdArgs":
        if self.priors is not None and len(self.priors) != len(self.candidates):
            raise ValueError(
                f"priors has {len(self.priors)} scores for {len(self.candidates)} candidates: "
                "give one per candidate, in the same order, or leave priors out"
            )
        return self


def tool_answer(out: RecOutput, candidates: Sequence[Item]) -> dict[str, Any]:
    """Return the compact, JSON-able answer a host model reads: top items with one-line reasons."""
    titles = {item.item_id: clean_text(item.title or item_text(item), 90) for item in candidates}
    recommendations = []
    for entry in out["ranking"]:
        motives = ", ".join(m.value for m in entry.matched_motivations)
        reason = clean_text(entry.rationale, REASON_CHARS)
        recommendations.append(
            {
                "rank": entry.rank,
                "item_id": entry.item_id,
                "title": titles.get(entry.item_id, ""),
                "score": round(entry.score, 2),
                "why": f"{motives}: {reason}" if motives else reason,
            }
        )
        if entry.fused_score is not None:  # fusion on: this, not `score`, decided the order
            recommendations[-1]["fused_score"] = round(entry.fused_score, 2)
    answer: dict[str, Any] = {
        "recommendations": recommendations,
        "out_of": len(candidates),
        "shopper": clean_text(out["profile"].summary, 240),
    }
    if out["degraded"]:
        answer["note"] = (
            f"{len(out['degraded'])} step(s) fell back to a simpler heuristic; "
            "treat the order as approximate"
        )
    return answer


def full_result(out: RecOutput) -> dict[str, Any]:
    """Return the whole graph output as JSON-able data (the tool message's `artifact`)."""
    return {
        "user_id": out["user_id"],
        "ranking": [entry.model_dump(mode="json") for entry in out["ranking"]],
        "profile": out["profile"].model_dump(mode="json"),
        "usage": out["usage"].model_dump(mode="json"),
        "degraded": list(out["degraded"]),
        "fusion": out.get("fusion"),
    }


def _argument_error(tool_name: str) -> Callable[[Any], str]:
    def describe(exc: Any) -> str:
        detail = describe_validation_error(exc) if isinstance(exc, ValidationError) else str(exc)
        return (
            f"Error: invalid arguments for {tool_name}: {detail}. Expected "
            '{"history": [...], "candidates": [...], "k": optional int}. Fix them and call again.'
        )

    return describe


def _tool_error(exc: ToolException) -> str:
    return f"Error: {exc}"


def as_tool(
    graph: M3RecGraph | None = None,
    *,
    context: M3RecContext | None = None,
    catalog: Catalog | None = None,
    k: int = 5,
    name: str = TOOL_NAME,
    description: str | None = None,
) -> BaseTool:
    """Return m3rec as a LangChain tool for a tool-calling agent.

    The tool's answer (the `ToolMessage` content) is compact JSON the host model
    reads: the top `k` items with score and a one-line reason, the shopper's
    profile summary, and a note when some step degraded. The full output
    (ranking, profile, usage, degraded) is the message's `artifact`. Bad
    arguments, unknown ids and m3rec errors come back as a `ToolMessage` with
    `status="error"` that tells the model what to fix, never as an exception.

    Args:
        graph: The compiled graph (default: `m3rec_graph.graph.graph`).
        context: m3rec's routing (default: `default_context()` at each call), and its
            fusion setting (`M3RecContext.fusion`).
        catalog: Resolves item ids: with one, the model passes catalog ids (a short
            schema, and no item text to copy) and, optionally, `priors`, the host ranker's
            score of each candidate in their order; without, full items, where each
            candidate may carry a `prior` (the host ranker's score; on all or none).
        k: How many items the answer lists unless the model asks for another `k`.
        name: The tool name the model sees.
        description: The tool description the model sees (default: `TOOL_DESCRIPTION`).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    schema: type[BaseModel] = RecommendByIdArgs if catalog is not None else RecommendArgs
    ids_hint = " as catalog item ids" if catalog is not None else " as items (item_id, title, ...)"
    default_k = k

    async def recommend(
        history: Sequence[ItemRef],
        candidates: Sequence[ItemRef],
        user_id: str = "shopper",
        k: int | None = None,
        priors: Sequence[float] | None = None,
    ) -> tuple[str, dict[str, Any]]:
        try:
            candidate_items = resolve_items(candidates, catalog)
            candidate_dicts = [item_dict(i) for i in candidate_items]
            if priors is not None:  # by id: the scores come apart from the ids, in their order
                candidate_dicts = [
                    {**c, "prior": p} for c, p in zip(candidate_dicts, priors, strict=True)
                ]
            request = {
                "user_id": user_id,
                "history": [item_dict(i) for i in resolve_items(history, catalog)],
                "candidates": candidate_dicts,
                "k": k or default_k,
            }
            result = await _graph(graph).ainvoke(cast(RecInput, request), context=_context(context))
        except M3RecError as exc:
            raise ToolException(f"{type(exc).__name__}: {exc}") from exc
        out = cast(RecOutput, result)
        answer = json.dumps(
            tool_answer(out, candidate_items), ensure_ascii=False, separators=(",", ":")
        )
        return answer, full_result(out)

    def recommend_sync(
        history: Sequence[ItemRef],
        candidates: Sequence[ItemRef],
        user_id: str = "shopper",
        k: int | None = None,
        priors: Sequence[float] | None = None,
    ) -> tuple[str, dict[str, Any]]:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(recommend(history, candidates, user_id, k, priors))
        raise ToolException(f"{name} was called synchronously inside an event loop: use ainvoke")

    return StructuredTool.from_function(
        func=recommend_sync,
        coroutine=recommend,
        name=name,
        description=description or TOOL_DESCRIPTION.format(ids=ids_hint),
        args_schema=schema,
        response_format="content_and_artifact",
        handle_tool_error=_tool_error,
        handle_validation_error=_argument_error(name),
    )


# --------------------------------------------------------------------------- node


class HostNode(Protocol):
    """A host graph node: LangGraph passes `state` and `config` by name."""

    async def __call__(self, state: Mapping[str, Any], config: RunnableConfig) -> dict[str, Any]:
        """Run m3rec on the host state and return the host's update."""


InputMap = Mapping[str, str] | Callable[[Mapping[str, Any]], RecInput]
"""m3rec input key -> host state key, or a function from the host state to the m3rec input."""
OutputMap = Mapping[str, str] | Callable[[RecOutput], dict[str, Any]]
"""m3rec output key -> host state key, or a function from the m3rec output to the host update."""

_INPUT_KEYS = ("user_id", "history", "candidates", "k")


def _host_input(
    state: Mapping[str, Any], input_map: InputMap | None, catalog: Catalog | None
) -> RecInput:
    if callable(input_map):
        return input_map(state)
    mapping = {key: key for key in _INPUT_KEYS} | dict(input_map or {})
    request: dict[str, Any] = {"user_id": "anonymous"}
    for key, host_key in mapping.items():
        if host_key in state and state[host_key] is not None:
            request[key] = state[host_key]
    for key in ("history", "candidates"):
        if key in request and isinstance(request[key], list):
            refs = request[key]
            if any(isinstance(ref, str) for ref in refs):
                request[key] = [item_dict(item) for item in resolve_items(refs, catalog)]
            else:
                request[key] = [item_dict(r) if isinstance(r, Item) else r for r in refs]
    return cast(RecInput, request)


def _host_update(out: RecOutput, output_map: OutputMap | None) -> dict[str, Any]:
    if callable(output_map):
        return output_map(out)
    mapping = dict(output_map or {"ranking": "ranking"})
    return {host_key: out[key] for key, host_key in mapping.items()}  # type: ignore[literal-required]


def as_node(
    graph: M3RecGraph | None = None,
    context: M3RecContext | None = None,
    *,
    input_map: InputMap | None = None,
    output_map: OutputMap | None = None,
    catalog: Catalog | None = None,
) -> HostNode:
    """Wrap the graph as a node of a host `StateGraph` whose state has its own keys.

    ```python
    builder.add_node("recommend", as_node(
        input_map={"user_id": "customer", "history": "purchases", "candidates": "shortlist"},
        output_map={"ranking": "recommendations"},
    ))
    ```

    m3rec runs as a nested graph of the host run (same trace, the host's
    checkpointer) but with its own context, so a host invoked with another
    `context=` still gets m3rec's routing. m3rec's custom progress events are
    forwarded to the host's `stream_mode="custom"` stream.

    Args:
        graph: The compiled graph (default: `m3rec_graph.graph.graph`).
        context: m3rec's routing (default: `default_context()` at each call).
        input_map: m3rec input key -> host state key (`user_id`, `history`,
            `candidates`, `k`; unmapped keys are read under their own name, and a
            missing `user_id` is "anonymous"), or a function building the input.
            History and candidates may be items or ids resolved through `catalog`.
            A candidate given as an item (a mapping or a `Candidate`) may carry
            `prior`, the host ranker's score (finite; on every candidate or on none),
            which the fusion step uses when `context.fusion` is set; a candidate
            given as a catalog id carries none.
        output_map: m3rec output key -> host state key (default `{"ranking": "ranking"}`),
            or a function building the host update.
        catalog: Resolves item ids found in the host state.

    Raises:
        ValueError: A map names a key m3rec does not have.
        M3RecError: At run time, for a bad request or a configuration problem
            (the host's error handling applies, as for any node).
    """
    for given, allowed, what in (
        (input_map, _INPUT_KEYS, "input"),
        (output_map, tuple(RecOutput.__annotations__), "output"),
    ):
        unknown = sorted(set(given) - set(allowed)) if isinstance(given, Mapping) else []
        if unknown:
            raise ValueError(f"{what}_map keys must be m3rec {what} keys {allowed}, got {unknown}")

    async def m3rec(state: Mapping[str, Any], config: RunnableConfig) -> dict[str, Any]:
        request = _host_input(state, input_map, catalog)
        out = await _run_forwarding_progress(_graph(graph), request, _context(context), config)
        return _host_update(out, output_map)

    return m3rec


async def _run_forwarding_progress(
    graph: M3RecGraph, request: RecInput, ctx: M3RecContext, config: RunnableConfig
) -> RecOutput:
    """Run `graph` nested in the current host node, passing its custom events to the host stream."""
    write = get_stream_writer()
    out: Any = None
    async for mode, chunk in graph.astream(
        request, config, context=ctx, stream_mode=["custom", "values"]
    ):
        if mode == "custom":
            write(chunk)
        else:
            out = chunk
    return cast(RecOutput, out)


# --------------------------------------------------------------------------- streaming


class Progress(TypedDict, total=False):
    """One status update for a chat UI."""

    event: Literal["started", "profile_ready", "item_encoded", "ranking_ready", "rationales_ready", "done"]
    message: str
    """A short status line, e.g. "Read 12 of 20 products"."""
    done: int
    total: int
    output: RecOutput
    """Only on `done`: the graph's output."""


async def astream_progress(
    request: RecInput,
    *,
    graph: M3RecGraph | None = None,
    context: M3RecContext | None = None,
    config: RunnableConfig | None = None,
) -> AsyncIterator[Progress]:
    """Run the graph and yield status updates as they happen, ending with `done` and the output.

    The graph's own custom events (`stream_mode="custom"`) mark the start and the
    ranking; the per-item `mote` updates (`stream_mode="updates"`), which arrive as
    each item's traits are ready, give the "n of m products" count (a re-asked
    item counts once its answer, or its fallback, is in).
    """
    total = ready = 0
    profile_told = False
    output: Any = None
    stream = _graph(graph).astream(
        request, config, context=_context(context), stream_mode=["custom", "updates", "values"]
    )
    async for mode, chunk in stream:
        data: dict[str, Any] = chunk if isinstance(chunk, dict) else {}
        if mode == "values":
            output = chunk
        elif mode == "updates" and total and _stage_result(data, "mote", "traits"):
            ready += 1
            yield _progress("item_encoded", f"Read {ready} of {total} products", ready, total)
        elif mode == "custom" and data.get("m3rec") == "started":
            total, ready = int(data["candidates"]), int(data["ready"])
            yield _progress("started", f"Reading {total} products ({ready} known)", ready, total)
        elif not profile_told and (
            (mode == "updates" and _stage_result(data, "mope", "profile"))
            or data.get("m3rec") == "profile_ready"
        ):
            profile_told = True  # MOPE's own update, or the graph's event after the join
            yield _progress("profile_ready", "Understood what drives this shopper")
        elif mode == "custom" and data.get("m3rec") == "ranking_ready":
            yield _progress("ranking_ready", "Ranking ready")
        elif mode == "custom" and data.get("m3rec") == "rationales_ready":  # mar_answer="scores_first"
            yield _progress("rationales_ready", "Reasons ready")
    yield {"event": "done", "message": "Done", "output": cast(RecOutput, output)}


# --------------------------------------------------------------------------- helpers


def _progress(
    event: Literal["started", "profile_ready", "item_encoded", "ranking_ready", "rationales_ready"],
    message: str,
    done: int | None = None,
    total: int | None = None,
) -> Progress:
    progress: Progress = {"event": event, "message": message}
    if done is not None and total is not None:
        progress["done"], progress["total"] = done, total
    return progress


def _stage_result(update: dict[str, Any], stage: str, key: str) -> bool:
    """Return whether a `stream_mode="updates"` chunk is a stage task's result (not a re-ask)."""
    return any(
        isinstance(node_update := update.get(node), dict) and key in node_update
        for node in (stage, f"{stage}_fallback")
    )


def _graph(graph: M3RecGraph | None) -> M3RecGraph:
    if graph is not None:
        return graph
    # Imported on first use: `import m3rec_graph` (which re-exports these wrappers)
    # must not compile the module-level graph.
    from m3rec_graph.graph import graph as default_graph  # noqa: PLC0415

    return default_graph


def _context(context: M3RecContext | None) -> M3RecContext:
    return context if context is not None else default_context()
