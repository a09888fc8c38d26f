"""Run the graph from scripts and the CLI: the local server when needed, tracing flushed at the end."""

import asyncio
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from langchain_core.tracers.langchain import wait_for_all_tracers
from langsmith.run_trees import get_cached_client
from langsmith.utils import tracing_is_enabled

from m3rec_graph.context import M3RecContext
from m3rec_graph.llm.routing import uses_local_server
from m3rec_graph.local.server import local_server
from m3rec_graph.stages.fuse import needs_motivations
from m3rec_graph.state import M3RecGraph, RecOutput


@contextmanager
def serving(ctx: M3RecContext) -> Iterator[None]:
    """Make sure the models `ctx` routes to are reachable: start (and later stop) the local server if needed.

    Not needed when no stage will call a model: the offline default's fusion weights
    give `mar` and `overlap` weight 0, so MOPE, MOTE and MAR make no call and the
    server would only cost its start-up.
    """
    if uses_local_server(ctx) and needs_motivations(ctx):
        with local_server():
            yield
    else:
        yield


def flush_traces() -> None:
    """Send pending LangSmith runs before the process exits (a no-op when tracing is off)."""
    wait_for_all_tracers()
    if tracing_is_enabled():
        get_cached_client().flush()


def recommend_many(
    graph: M3RecGraph,
    requests: Sequence[dict[str, Any]],
    ctx: M3RecContext,
    *,
    max_concurrency: int = 4,
) -> list[RecOutput]:
    """Run several requests, in order, with the local server and tracing handled."""

    async def run_all() -> list[RecOutput]:
        outs = await graph.abatch(
            list(requests),  # type: ignore[arg-type]
            {"max_concurrency": max_concurrency},
            context=ctx,
        )
        return list(outs)

    with serving(ctx):
        try:
            return asyncio.run(run_all())
        finally:
            flush_traces()
