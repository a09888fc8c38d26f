"""Engines: where a batch's workers run. `LocalEngine` here, in-process; `RayEngine` (ray_engine.py) as Ray actors.

An engine takes the MOTE pre-pass as one shard of items per worker and the
shoppers as chunks of requests, and yields each chunk's outputs as it finishes.
"""

import pickle
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

from langchain_core.runnables import RunnableConfig

from m3rec_graph.context import M3RecContext
from m3rec_graph.errors import ConfigurationError, M3RecError
from m3rec_graph.llm.worker_share import worker_share
from m3rec_graph.scale.config import WorkerConfig
from m3rec_graph.scale.worker import EncodeReport, GraphWorker
from m3rec_graph.storage.store import store_kind

Chunk = Sequence[dict[str, Any]]
"""Requests one worker call runs (at most `concurrency` of them in flight at once)."""
Timed = list[tuple[dict[str, Any], float]]
"""A chunk's outputs in request order, each with the seconds its graph run took."""


class EngineError(M3RecError, RuntimeError):
    """A worker died or the engine could not start (CLI exit code 1): rerun to resume."""


class Engine(Protocol):
    """Runs a batch on `workers` workers built from one `WorkerConfig`."""

    @property
    def workers(self) -> int:
        """How many workers run at once (the MOTE pre-pass takes one shard per worker)."""

    def encode(
        self, shards: Sequence[Chunk], context: M3RecContext | None = None
    ) -> list[EncodeReport]:
        """Run the MOTE pre-pass, shard `i` on worker `i`, and return once every shard is stored.

        `context` (default: the config's) names the MOTE model and prompt.
        """

    def recommend(
        self, chunks: Sequence[Chunk], context: M3RecContext | None = None
    ) -> Iterator[tuple[int, list[dict[str, Any]]]]:
        """Yield `(chunk index, outputs in request order)` for each chunk, as chunks finish."""

    def recommend_timed(
        self,
        chunks: Sequence[Chunk],
        context: M3RecContext | None = None,
        run_config: RunnableConfig | None = None,
    ) -> Iterator[tuple[int, Timed]]:
        """As `recommend`, each output with its run's seconds (`GraphWorker.recommend_timed`)."""

    def close(self) -> None:
        """Stop the workers (and a runtime the engine started)."""


def check_split(config: WorkerConfig, workers: int) -> None:
    """Refuse, before any worker starts, what `workers` workers cannot share (`ConfigurationError`).

    That is limits too small to split `workers` ways, and an in-memory store: each
    worker process would have its own, so none would see another's traits.
    """
    for index in range(workers):
        worker_share(config.limits, workers, index)
    if workers > 1 and store_kind(config.store_url) == "memory":
        raise ConfigurationError(
            f"--store memory: cannot be shared by {workers} worker processes: use postgresql://..."
            " (any cluster) or sqlite:///PATH (one machine)"
        )


class LocalEngine:
    """One `GraphWorker` in this process: the reference the Ray engine is compared with.

    The config goes through pickle first, as it does on its way to a Ray actor, so
    a config that only works in-process fails here too.
    """

    def __init__(self, config: WorkerConfig) -> None:
        """Build the worker."""
        check_split(config, 1)
        self._worker = GraphWorker(pickle.loads(pickle.dumps(config)), 0, 1)

    @property
    def workers(self) -> int:
        """One."""
        return 1

    def encode(
        self, shards: Sequence[Chunk], context: M3RecContext | None = None
    ) -> list[EncodeReport]:
        """Run the one shard."""
        return [self._worker.encode(shard, context) for shard in shards]

    def recommend(
        self, chunks: Sequence[Chunk], context: M3RecContext | None = None
    ) -> Iterator[tuple[int, list[dict[str, Any]]]]:
        """Run the chunks in order."""
        for n, chunk in enumerate(chunks):
            yield n, self._worker.recommend(chunk, context)

    def recommend_timed(
        self,
        chunks: Sequence[Chunk],
        context: M3RecContext | None = None,
        run_config: RunnableConfig | None = None,
    ) -> Iterator[tuple[int, Timed]]:
        """Run the chunks in order, timing each run."""
        for n, chunk in enumerate(chunks):
            yield n, self._worker.recommend_timed(chunk, context, run_config)

    def close(self) -> None:
        """Close the worker."""
        self._worker.close()
