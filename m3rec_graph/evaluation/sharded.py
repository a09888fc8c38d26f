"""`m3rec eval --engine ray`: the m3rec methods' users sharded across Ray workers, the driver kept here.

The workers are `m3rec_graph.scale`'s: one `GraphWorker` per Ray actor, each building
its graph, chat model clients and store in its own process (`RayEngine`). One engine
serves the whole run, every m3rec method and slice; each call carries its method's
context. The driver (this process) keeps what `run_m3rec` keeps in one process:

* the run lock and `results.jsonl`: a line is appended and flushed as its user's
  chunk returns, so killing the driver or a worker loses only the users in flight,
  and a rerun (which skips every finished line) redoes none of the others;
* the progress line, the priors of fused methods (sent with each request, as
  `with_priors` does locally) and the fusion config (fitted on validation in this
  process: `fused_graph_config` runs the validation pass on the driver's own graph);
* one store for the run, the driver's graph's and every worker's: `--store URL`
  (`env.store_url`), by default the run directory's `store.sqlite` (several processes
  may write one SQLite file: tests/unit/test_langgraph_stores.py, so workers on this
  machine share it; SQLite is not safe over a network file system, so a cluster joined
  with `--address` on other machines needs `--store postgresql://...`).

Before a pass's users are sharded, a MOTE pre-pass encodes the pass's distinct
candidate items the store does not have yet, each on one worker (`item_shards`), so
no item is encoded twice across workers. Rankings, ranks and metrics are the local
engine's; a user's MOTE calls and cost are not: the pre-pass's calls belong to no
user, where locally the first user to show an item pays for it.
"""

import functools
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TextIO

from langchain_core.runnables import RunnableConfig
from pydantic import TypeAdapter

from m3rec_graph.evaluation.datasets import EvalCase, load_dataset
from m3rec_graph.evaluation.methods import (
    MethodEnv,
    env_context,
    m3rec_record,
    prompt_versions,
    with_priors,
)
from m3rec_graph.evaluation.progress import ProgressBar
from m3rec_graph.evaluation.settings import EvalSlice, EvaluationError, MethodSpec
from m3rec_graph.evaluation.store import append_result
from m3rec_graph.fusion import FusionConfig
from m3rec_graph.llm.factory import ChatModelFactory
from m3rec_graph.scale.batch import item_shards
from m3rec_graph.scale.config import Endpoint, WorkerConfig
from m3rec_graph.scale.engine import Engine
from m3rec_graph.scale.ray_engine import RayEngine
from m3rec_graph.state import RecOutput
from m3rec_graph.text.similarity import TfidfSimilarity

EngineKind = Literal["local", "ray"]
ENGINES: tuple[EngineKind, ...] = ("local", "ray")

_OUTPUT = TypeAdapter(RecOutput)
"""A worker's JSON output back into the graph's output types (what `m3rec_record` reads)."""


@dataclass(frozen=True, kw_only=True)
class EvalEngine:
    """Where an evaluation's m3rec users run: `local` (this process, the default) or `ray`."""

    kind: EngineKind = "local"
    workers: int = 1
    """Ray actors (`ray` only)."""
    address: str | None = None
    """A Ray cluster to join (`ray` only); `None`: a local Ray runtime for the run."""
    worker_chat_models: Callable[[], ChatModelFactory] | None = None
    """Builds each Ray worker's chat model factory in the worker (module-level, so it
    pickles by reference: scripted fakes in tests); `None`: `ChatOpenAI` as routing
    resolves, with the driver's `OPENAI_API_KEY`. The driver's own graph (the
    validation fit of fused methods) uses `run_evaluation`'s `chat_models`."""

    def validate(self) -> None:
        """Refuse flags that do not fit together (`EvaluationError`, CLI exit code 2)."""
        if self.kind not in ENGINES:
            raise EvaluationError(f"--engine must be one of {', '.join(ENGINES)}, got {self.kind!r}")
        if self.workers < 1:
            raise EvaluationError(f"--workers must be >= 1, got {self.workers}")
        if self.kind == "local" and (self.workers != 1 or self.address):
            raise EvaluationError(
                "--engine local runs the m3rec users in this process:"
                " --workers and --address need --engine ray"
            )


def catalogue_corpus(dataset_path: str) -> TfidfSimilarity:
    """The fusion `text` signal's corpus: the dataset's catalogue, as `m3rec_graph_for` builds it.

    Called in each worker (a `functools.partial` over the path pickles; the catalogue
    is read where the worker runs).
    """
    return TfidfSimilarity(load_dataset(Path(dataset_path)).items.values())


def worker_config(env: MethodEnv, choice: EvalEngine, *, fused: bool) -> WorkerConfig:
    """The config every worker of an evaluation is built from: the run's store, its corpus."""
    corpus = functools.partial(catalogue_corpus, str(env.dataset_path.resolve())) if fused else None
    return WorkerConfig(
        store_url=env.store_url,
        concurrency=env.concurrency,
        endpoint=Endpoint(api_key=os.environ.get("OPENAI_API_KEY") or None),
        chat_models=choice.worker_chat_models,
        text_corpus=corpus,
    )


class ShardedUsers:
    """Runs m3rec passes of one evaluation on an engine started at the first pass and kept to `close`."""

    def __init__(
        self,
        env: MethodEnv,
        choice: EvalEngine,
        *,
        fused: bool,
        start: Callable[[WorkerConfig, int, str | None], Engine] | None = None,
    ) -> None:
        """Nothing starts yet: a run with every m3rec line finished never starts Ray.

        Args:
            env: The run's method environment.
            choice: The engine flags (`kind` `ray`).
            fused: A fused m3rec method runs (the workers then build the catalogue corpus).
            start: Starts the engine (default: `RayEngine(config, workers, address=...)`).
        """
        self._env, self._choice = env, choice
        self._config = worker_config(env, choice, fused=fused)
        self._start = start or (lambda c, n, a: RayEngine(c, n, address=a))
        self._engine: Engine | None = None

    def engine(self) -> Engine:
        """The running engine (started on first use)."""
        if self._engine is None:
            self._engine = self._start(self._config, self._choice.workers, self._choice.address)
        return self._engine

    def run(
        self,
        spec: MethodSpec,
        slice_: EvalSlice,
        todo: Sequence[EvalCase],
        handle: TextIO,
        bar: ProgressBar,
        fusion: FusionConfig | None,
        priors: Mapping[str, Sequence[float]] | None,
    ) -> None:
        """Pre-pass MOTE over `todo`'s uncached items, then run its users, appending each line as its chunk returns."""
        env = self._env
        ctx = env_context(spec, env, fusion)
        prompts = prompt_versions(ctx)
        with env.serve(ctx):  # weights that leave every LLM stage out need no server
            engine = self.engine()
            shards = item_shards((c for case in todo for c in case.candidates), ctx, engine.workers)
            if any(shards):
                _print_prepass(env.stream, spec.key, slice_.name, engine.encode(shards, ctx))
            size = max(1, 2 * env.concurrency)  # a chunk keeps a worker's slots busy, as in recommend-batch
            chunks = [list(todo[i : i + size]) for i in range(0, len(todo), size)]
            payloads = [
                [with_priors(case.to_request(), (priors or {}).get(case.user_id)) for case in chunk]
                for chunk in chunks
            ]
            run_config: RunnableConfig = {
                "run_name": "m3rec",
                "metadata": {"eval_method": spec.key, "eval_slice": slice_.name},
            }
            for index, timed in engine.recommend_timed(payloads, ctx, run_config):
                for case, (output, seconds) in zip(chunks[index], timed, strict=True):
                    out: dict[str, Any] = dict(_OUTPUT.validate_python(output))
                    record = m3rec_record(spec, slice_, case, out, seconds, prompts)
                    append_result(handle, record)
                    bar.advance(record["total_tokens"], record["cost_usd"])

    def close(self) -> None:
        """Stop the engine if it started."""
        if self._engine is not None:
            engine, self._engine = self._engine, None
            engine.close()


def _print_prepass(stream: TextIO, method: str, slice_name: str, reports: Sequence[Mapping[str, int]]) -> None:
    total = {k: sum(r.get(k, 0) for r in reports) for k in ("items", "stored", "encoded", "failed")}
    print(
        f"{method} [{slice_name}]: MOTE pre-pass over {total['items']:,} distinct items:"
        f" {total['stored']:,} stored, {total['encoded']:,} encoded, {total['failed']:,} failed",
        file=stream,
        flush=True,
    )
