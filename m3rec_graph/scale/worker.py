"""One worker: its own graph, chat model clients, store and event loop, built from a `WorkerConfig`.

The same class runs in this process (`LocalEngine`) and as a Ray actor (`RayEngine`),
so both engines take one code path. Its calls are synchronous: each runs a batch of
requests to the end on the worker's event loop and returns JSON, which crosses a
process boundary as is.
"""

import asyncio
import time
from collections.abc import Coroutine, Sequence
from contextlib import ExitStack
from typing import Any, TypeVar, cast

from langchain_core.runnables import RunnableConfig
from pydantic_core import to_jsonable_python

from m3rec_graph.context import M3RecContext
from m3rec_graph.contracts.schemas import Item
from m3rec_graph.graph import build_graph
from m3rec_graph.integrations.runner import flush_traces
from m3rec_graph.llm.endpoint import endpoint_chat_models
from m3rec_graph.llm.factory import ChatModelFactory
from m3rec_graph.llm.worker_share import worker_share
from m3rec_graph.prompts.loader import load_prompt
from m3rec_graph.scale.config import WorkerConfig
from m3rec_graph.scale.prepass import BufferedTraits, build_prepass_graph
from m3rec_graph.state import M3RecGraph, RecInput
from m3rec_graph.storage.store import open_store

T = TypeVar("T")

PREPASS_CHUNK = 20
"""Items per pre-pass run: a 20-candidate recommendation's fan-out."""

EncodeReport = dict[str, int]
"""What a MOTE pre-pass did: `items` asked, `stored` already in the store, `encoded`, `failed`."""


def worker_chat_models(config: WorkerConfig, index: int, workers: int) -> ChatModelFactory:
    """Return worker `index`'s chat model factory: the config's, else `ChatOpenAI` with its share of the limits."""
    if config.chat_models is not None:
        return config.chat_models()
    share = worker_share(config.limits, workers, index)
    endpoint = config.endpoint
    return endpoint_chat_models(
        endpoint.base_url,
        api_key=endpoint.api_key,
        timeout_s=endpoint.timeout_s,
        max_retries=endpoint.max_retries,
        tokenizer_model=endpoint.tokenizer_model,
        requests_per_second=share.requests_per_second,
        tokens_per_minute=share.tokens_per_minute,
        max_inflight_requests=share.max_inflight_requests,
    )


class GraphWorker:
    """Runs recommendations (and the MOTE pre-pass) for one shard of a batch.

    Everything is built here, in the process the worker runs in: a compiled graph,
    its clients and a store connection pool cannot be pickled, and the clients'
    connection pools belong to the event loop that opened them.
    """

    def __init__(self, config: WorkerConfig, index: int = 0, workers: int = 1) -> None:
        """Build worker `index` of `workers` (its share of the provider limits follows from both).

        Raises:
            ConfigurationError: A malformed store URL, an unreachable database, or limits
                that cannot be split `workers` ways.
        """
        self.config, self.index, self.workers = config, index, workers
        self._stack = ExitStack()
        self._loop = asyncio.new_event_loop()
        self._stack.callback(self._loop.close)
        try:
            self._store = self._stack.enter_context(open_store(config.store_url))
            self._chat_models = worker_chat_models(config, index, workers)
            self._graph = build_graph(
                chat_models=self._chat_models,
                store=self._store,
                profile_ttl_days=config.profile_ttl_days,
                text_corpus=config.text_corpus() if config.text_corpus is not None else None,
            )
            self._buffer = BufferedTraits(self._store)
            self._prepass = build_prepass_graph(self._chat_models, self._buffer)
        except BaseException:
            self._stack.close()
            raise

    def ready(self) -> int:
        """Return the worker's index (a Ray caller waits on it to see the constructor finish)."""
        return self.index

    def encode(
        self, items: Sequence[dict[str, Any]], context: M3RecContext | None = None
    ) -> EncodeReport:
        """Store MOTE traits for those `items` the store does not have yet; return the counts.

        The items are distinct and this worker's alone (the driver split them), so no
        other worker encodes them: the pre-pass is how an item is encoded once across
        workers. An item whose answers all fail is not stored (as in a graph run): the
        shopper that shows it asks MOTE again. `context` (default: the config's) names
        the MOTE model and prompt, so the traits land where that context's runs read.
        """
        parsed = [Item.model_validate(i) for i in items]
        ctx = self.config.context if context is None else context
        return self._loop.run_until_complete(
            _encode(self._prepass, self._buffer, parsed, ctx, self.config.concurrency)
        )

    def recommend(
        self, requests: Sequence[dict[str, Any]], context: M3RecContext | None = None
    ) -> list[dict[str, Any]]:
        """Run `requests` (at most `concurrency` at once) and return their outputs as JSON, in order.

        `context` (default: the config's) is the run context of every request: one worker
        serves several methods of an evaluation, each with its own.
        """
        timed = self.recommend_timed(requests, context)
        return [output for output, _ in timed]

    def recommend_timed(
        self,
        requests: Sequence[dict[str, Any]],
        context: M3RecContext | None = None,
        run_config: RunnableConfig | None = None,
    ) -> list[tuple[dict[str, Any], float]]:
        """As `recommend`, each output with the seconds its own graph run took (a result line's `seconds`).

        `run_config` (run name, tags, metadata) is passed to every graph run, for its trace.
        """
        ctx = self.config.context if context is None else context
        return self._loop.run_until_complete(
            _recommend(self._graph, requests, ctx, self.config.concurrency, run_config)
        )

    def close(self) -> None:
        """Send pending traces, close the store and the event loop."""
        try:
            flush_traces()
        finally:
            self._stack.close()


# The coroutines live outside the class: Ray makes an actor whose class has any `async def`
# an async actor, which runs every method inside Ray's own event loop (where
# `run_until_complete` on the worker's loop would fail).


async def _encode(
    prepass: Any, memory: BufferedTraits, items: list[Item], ctx: M3RecContext, concurrency: int
) -> EncodeReport:
    model = ctx.model_for("mote").name
    version = load_prompt("mote", ctx.prompt_overrides.get("mote")).version
    stored = await memory.read(items, model=model, prompt_version=version)
    misses = [item for item in items if item.item_id not in stored]
    gate = asyncio.Semaphore(concurrency)

    async def one(chunk: list[Item]) -> int:
        async with gate:  # a chunk is one run's fan-out, as a recommendation's candidates are
            out = await prepass.ainvoke({"items": chunk}, context=ctx)
            await memory.flush()  # this run's traits (and any a sibling buffered), one abatch
        failed = {d["item_id"] for d in out.get("degraded", []) if d["stage"] == "mote"}
        return len(chunk) - len(failed)

    chunks = [misses[i : i + PREPASS_CHUNK] for i in range(0, len(misses), PREPASS_CHUNK)]
    encoded = sum(await _all([one(chunk) for chunk in chunks]))
    return {
        "items": len(items),
        "stored": len(stored),
        "encoded": encoded,
        "failed": len(misses) - encoded,
    }


async def _recommend(
    graph: M3RecGraph,
    requests: Sequence[dict[str, Any]],
    ctx: M3RecContext,
    concurrency: int,
    run_config: RunnableConfig | None = None,
) -> list[tuple[dict[str, Any], float]]:
    # A semaphore, not `abatch(max_concurrency=...)`: LangGraph passes that cap down
    # into each run, where it would also serialise the run's own MOPE/MOTE fan-out.
    gate = asyncio.Semaphore(concurrency)

    async def one(request: dict[str, Any]) -> tuple[dict[str, Any], float]:
        async with gate:
            started = time.perf_counter()  # the user's own run, not its wait for a slot
            out = await graph.ainvoke(cast(RecInput, request), run_config, context=ctx)
            seconds = time.perf_counter() - started
        jsonable: dict[str, Any] = to_jsonable_python(out)
        return jsonable, seconds

    return await _all([one(request) for request in requests])


async def _all(coroutines: Sequence[Coroutine[Any, Any, T]]) -> list[T]:
    """Await every coroutine; the first failure cancels the rest (none is left running) and raises."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
