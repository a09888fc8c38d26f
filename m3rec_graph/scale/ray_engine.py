"""`RayEngine`: one `GraphWorker` per Ray actor, on a local Ray runtime or a cluster.

Without an address the engine starts a local runtime for the run (`ray.init` with
as many CPUs as workers, no dashboard) and stops it at the end; with one it joins
that cluster (`ray.init(address=...)`, e.g. `auto` or `ray://head:10001`), where
every node must have this package installed. A runtime already started in this
process (a notebook, the tests) is used as it is and left running.

Each actor takes one CPU and builds its own graph, clients and store. The driver
keeps `depth` chunks queued per actor, so an actor never waits for the driver
between chunks, and gives the next chunk to whichever actor finished one.
"""

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from langchain_core.runnables import RunnableConfig

from m3rec_graph.context import M3RecContext
from m3rec_graph.errors import ConfigurationError, M3RecError
from m3rec_graph.scale.config import WorkerConfig
from m3rec_graph.scale.engine import Chunk, EngineError, Timed, check_split
from m3rec_graph.scale.worker import EncodeReport, GraphWorker
from m3rec_graph.storage.store import open_store


def _ray() -> Any:
    try:
        import ray  # noqa: PLC0415  (the `scale` extra; nothing else needs it)
    except ImportError:
        raise ConfigurationError(
            "--engine ray needs Ray: pip install 'm3rec-graph[scale]'"
        ) from None
    return ray


class RayEngine:
    """`workers` Ray actors, each a `GraphWorker` (worker `i` of `workers`)."""

    def __init__(
        self,
        config: WorkerConfig,
        workers: int,
        *,
        address: str | None = None,
        depth: int = 2,
    ) -> None:
        """Start (or join) the runtime and the actors; return once every actor is built.

        Raises:
            ConfigurationError: Ray is not installed, `workers` < 1, or the limits cannot be
                split that many ways; a worker's constructor refused the config.
            EngineError: The runtime or an actor could not start.
        """
        if workers < 1:
            raise ConfigurationError(f"--workers must be >= 1, got {workers}")
        check_split(config, workers)
        self._ray = ray = _ray()
        # Opened once here first: an unreachable or malformed store fails with its own
        # typed error (exit 2), not as N dead actors, and its tables are set up once.
        with open_store(config.store_url):
            pass
        self._workers, self._depth = workers, max(1, depth)
        self._owns_runtime = False
        if not ray.is_initialized():
            try:
                if address:
                    ray.init(address=address, log_to_driver=False)
                else:
                    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise EngineError(f"cannot start or join Ray ({address or 'local'}): {exc}") from exc
            self._owns_runtime = True
        actor = ray.remote(num_cpus=1, max_restarts=0)(GraphWorker)
        self._actors = [actor.remote(config, i, workers) for i in range(workers)]
        try:
            self._get([a.ready.remote() for a in self._actors])
        except BaseException:
            self.close()
            raise

    @property
    def workers(self) -> int:
        """How many actors run."""
        return self._workers

    def _get(self, refs: Any) -> Any:
        """`ray.get`, with a worker's own typed error re-raised as itself (a one-line CLI message)."""
        ray = self._ray
        try:
            return ray.get(refs)
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause
            if isinstance(cause, M3RecError):
                raise cause from None
            raise EngineError(f"a Ray worker failed: {cause!r}; rerun to resume") from None
        except ray.exceptions.RayActorError as exc:
            if getattr(exc, "actor_init_failed", False):  # the constructor raised: its last line says what
                lines = [line.strip() for line in str(getattr(exc, "error_msg", exc)).splitlines() if line.strip()]
                raise EngineError(f"a Ray worker could not start: {lines[-1] if lines else exc!r}") from None
            raise EngineError("a Ray worker died (killed, out of memory or its node lost); rerun to resume") from None
        except ray.exceptions.RayError as exc:
            raise EngineError(f"Ray failed: {type(exc).__name__}; rerun to resume") from None

    def encode(
        self, shards: Sequence[Chunk], context: M3RecContext | None = None
    ) -> list[EncodeReport]:
        """Run shard `i` on actor `i`, all at once; return when every shard is done."""
        refs = [
            a.encode.remote(list(s), context) for a, s in zip(self._actors, shards, strict=False)
        ]
        reports: list[EncodeReport] = self._get(refs)
        return reports

    def recommend(
        self, chunks: Sequence[Chunk], context: M3RecContext | None = None
    ) -> Iterator[tuple[int, list[dict[str, Any]]]]:
        """Hand out chunks, `depth` per actor at a time; yield each one's outputs as it returns."""
        yield from self._dispatch("recommend", chunks, context)

    def recommend_timed(
        self,
        chunks: Sequence[Chunk],
        context: M3RecContext | None = None,
        run_config: RunnableConfig | None = None,
    ) -> Iterator[tuple[int, Timed]]:
        """As `recommend`, each output with its run's seconds."""
        yield from self._dispatch("recommend_timed", chunks, context, run_config)

    def _dispatch(self, method: str, chunks: Sequence[Chunk], *args: Any) -> Iterator[tuple[int, Any]]:
        """Call actor `method(chunk, *args)` for every chunk, `depth` per actor queued; yield as they return."""
        ray = self._ray
        pending: dict[Any, tuple[int, Any]] = {}  # ref -> (chunk index, actor)
        next_chunk = 0

        def submit(actor: Any) -> None:
            nonlocal next_chunk
            if next_chunk < len(chunks):
                ref = getattr(actor, method).remote(list(chunks[next_chunk]), *args)
                pending[ref] = (next_chunk, actor)
                next_chunk += 1

        for _ in range(self._depth):
            for actor in self._actors:
                submit(actor)
        try:
            while pending:
                (ready,), _ = ray.wait(list(pending), num_returns=1)
                index, actor = pending.pop(ready)
                outputs = self._get(ready)
                submit(actor)
                yield index, outputs
        finally:
            for ref in pending:  # the driver stopped early: no work left behind
                with contextlib.suppress(Exception):
                    ray.cancel(ref)

    def close(self) -> None:
        """Close the actors' stores and end them; stop the runtime if this engine started it."""
        ray = self._ray
        with contextlib.suppress(Exception):
            ray.get([a.close.remote() for a in self._actors], timeout=30)
        for actor in self._actors:
            with contextlib.suppress(Exception):
                ray.kill(actor)
        if self._owns_runtime:
            ray.shutdown()
