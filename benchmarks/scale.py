"""Throughput past one process: recommendations/s in one process vs Ray with 1 and 2 workers.

```
python -m benchmarks.scale            # 240 users x 20 candidates, instant model; then 200 ms calls (~2 min)
python -m benchmarks.scale --quick    # a few users: checks the script runs (seconds, plus Ray's start-up)
```

The workload is `benchmarks/suite.py`'s: every user has 20 candidates of their own
(no trait shared), 5 history items, listwise MAR in chunks of 10, and every LLM call
is answered at once by `benchmarks/fake_models.py` (so the graph's CPU is what is
measured). Each configuration runs `m3rec_graph.scale.batch.run_batch` end to end,
the driver of `m3rec recommend-batch`: the MOTE pre-pass over the run's distinct
items, then the shoppers in chunks, every output appended to a file. All three use
one SQLite store file per configuration (the one store several processes on one
machine may share). Timed from the first request to the last output line, with the
engine already started; the start-up is measured separately:

* local: `LocalEngine`, one `GraphWorker` in this process.
* ray-1, ray-2: `RayEngine` with 1 and 2 actors on a local runtime (`ray.init(num_cpus=2)`).

Then Ray's own costs: `ray.init` of a local runtime, building the actors (each
imports the package and compiles its graph), and a no-op actor call's round trip
(the per-chunk overhead). Last, the latency-bound case: every call sleeps 200 ms, 2
Ray workers, throughput vs requests in flight per worker (`--concurrency`).
Prints only: docs/scale.md copies a run's figures.
"""

import argparse
import functools
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.fake_models import FakeModels
from benchmarks.suite import make_request
from m3rec_graph.context import M3RecContext
from m3rec_graph.scale.batch import BatchRequest, read_requests, run_batch
from m3rec_graph.scale.config import WorkerConfig
from m3rec_graph.scale.engine import Engine, LocalEngine
from m3rec_graph.scale.ray_engine import RayEngine

MODEL = "bench-fake"
CTX = M3RecContext(models={"mope": MODEL, "mote": MODEL, "mar": MODEL})
SLOW_MODELS = functools.partial(FakeModels, latency_s=0.2)
"""Every call sleeps 200 ms (a module-level partial, so it pickles by reference to the actors)."""


@dataclass(frozen=True)
class Run:
    name: str
    workers: int
    concurrency: int
    users: int
    start_s: float
    wall_s: float
    mote_encoded: int

    @property
    def recs_per_s(self) -> float:
        return self.users / self.wall_s


def write_requests(path: Path, users: int, candidates: int) -> list[BatchRequest]:
    path.write_text(
        "".join(json.dumps(make_request(f"u{u}", candidates)) + "\n" for u in range(users)),
        encoding="utf-8",
    )
    return read_requests(path)


def timed_run(
    name: str,
    start: Callable[[WorkerConfig], Engine],
    workers: int,
    requests: list[BatchRequest],
    work: Path,
    store: Callable[[str], str],
    *,
    concurrency: int,
    chat_models: Callable[[], Any] = FakeModels,
) -> Run:
    config = WorkerConfig(
        context=CTX,
        store_url=store(f"{name}-c{concurrency}"),
        concurrency=concurrency,
        chat_models=chat_models,
    )
    began = time.perf_counter()
    engine = start(config)
    started = time.perf_counter()
    report = run_batch(requests, work / f"{name}-c{concurrency}.jsonl", lambda: engine, CTX, concurrency=concurrency)
    wall = time.perf_counter() - started
    assert report.computed == len(requests), report
    return Run(name, workers, concurrency, len(requests), started - began, wall, report.mote.get("encoded", 0))


@contextmanager
def postgres() -> Iterator[Any]:
    """A throwaway PostgreSQL server on 127.0.0.1 (the store tests' own), removed at the end."""
    from tests.postgres_server import PostgresServer, _require_bindir  # noqa: PLC0415

    server = PostgresServer(_require_bindir())
    try:
        server.initdb()
        server.start()
        yield server
    finally:
        server.close()


def ray_overheads(ray: Any, calls: int) -> dict[str, float]:
    @ray.remote(num_cpus=0)
    class Noop:
        def ping(self) -> int:
            return 1

    began = time.perf_counter()
    actor = Noop.remote()  # type: ignore[attr-defined]
    ray.get(actor.ping.remote())
    actor_s = time.perf_counter() - began
    began = time.perf_counter()
    for _ in range(calls):
        ray.get(actor.ping.remote())
    per_call_ms = (time.perf_counter() - began) / calls * 1000
    ray.kill(actor)
    return {"noop_actor_start_s": actor_s, "noop_call_ms": per_call_ms}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few users (checks the script; figures mean little)")
    parser.add_argument("--users", type=int, default=240)
    parser.add_argument("--concurrency", type=int, default=8, help="in flight per worker (instant model)")
    parser.add_argument(
        "--store",
        choices=["postgres", "sqlite"],
        default="postgres",
        help="postgres: a throwaway PostgreSQL server (tests/postgres_server.py, fsync off), one database"
        " per configuration; sqlite: one file per configuration (default: postgres)",
    )
    args = parser.parse_args(argv)
    for var in ("LANGSMITH_TRACING", "LANGCHAIN_TRACING_V2"):
        os.environ[var] = "false"
    users = 12 if args.quick else args.users
    import ray  # noqa: PLC0415  (the scale extra)

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="m3rec-scale-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        store: Callable[[str], str] = lambda name: f"sqlite:///{work / (name + '.db')}"  # noqa: E731
        if args.store == "postgres":
            server = stack.enter_context(postgres())
            store = lambda name: server.create_database()  # noqa: E731
        requests = write_requests(work / "in.jsonl", users, 20)
        runs = [timed_run("local", LocalEngine, 1, requests, work, store, concurrency=args.concurrency)]

        began = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        init_s = time.perf_counter() - began
        try:
            for workers in (1, 2):
                runs.append(
                    timed_run(
                        f"ray-{workers}",
                        functools.partial(RayEngine, workers=workers),
                        workers,
                        requests,
                        work,
                        store,
                        concurrency=args.concurrency,
                    )
                )
            overheads = ray_overheads(ray, 50 if args.quick else 500)
            slow_users, levels = (8, (2, 8)) if args.quick else (64, (2, 8, 32))
            slow_requests = write_requests(work / "slow.jsonl", slow_users, 5)
            slow = [
                timed_run(
                    "ray-2-slow",
                    functools.partial(RayEngine, workers=2),
                    2,
                    slow_requests,
                    work,
                    store,
                    concurrency=c,
                    chat_models=SLOW_MODELS,
                )
                for c in levels
            ]
        finally:
            ray.shutdown()
    load_after = os.getloadavg()

    local = runs[0].recs_per_s
    print(f"## {users} users x 20 candidates, instant model, {args.concurrency} in flight per worker, {args.store} store\n")
    print("| engine | workers | recs/s | vs one process | run s | engine start-up s | MOTE calls (pre-pass) |")
    print("|---|---|---|---|---|---|---|")
    for r in runs:
        print(
            f"| {r.name} | {r.workers} | {r.recs_per_s:.1f} | {r.recs_per_s / local:.2f}x | {r.wall_s:.2f}"
            f" | {r.start_s:.2f} | {r.mote_encoded} |"
        )
    print("\n## Ray's own costs\n")
    print(f"- local runtime start (`ray.init(num_cpus=2)`): {init_s:.2f} s")
    print(f"- a no-op actor, created and answering: {overheads['noop_actor_start_s']:.2f} s")
    print(f"- a no-op actor call's round trip (`ray.get(actor.ping.remote())`): {overheads['noop_call_ms']:.2f} ms")
    print(f"\n## Latency-bound: 200 ms per call, {slow_users} users x 5 candidates, 2 Ray workers\n")
    print("| in flight per worker | recs/s | run s (pre-pass + shoppers) |")
    print("|---|---|---|")
    for r in slow:
        print(f"| {r.concurrency} | {r.recs_per_s:.1f} | {r.wall_s:.2f} |")
    cpu = platform.processor() or platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    print(
        f"\nmachine: {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, ray {ray.__version__};"
        f" load average before {load_before[0]:.2f}, after {load_after[0]:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
