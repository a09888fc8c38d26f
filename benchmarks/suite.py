"""The benchmarks (orchestration overhead, scaling, concurrency, cache effect, tokens) and a profile.

Every model call is answered by `benchmarks.fake_models`, so what is measured is the
graph itself: request validation, prompt rendering, LangGraph's Pregel loop, Send
fan-out, the stage nodes, pydantic validation and the usage report. The cache
effect and the tokens per recommendation (`benchmarks.tokens`) count the real prompts
of real users with tiktoken, offline.
"""

import asyncio
import contextlib
import cProfile
import gc
import importlib.metadata
import math
import operator
import os
import platform
import pstats
import statistics
import sys
import time
import tracemalloc
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, cast

from langchain_core.messages import HumanMessage
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send
from typing_extensions import TypedDict

from benchmarks.fake_models import FakeModels
from benchmarks.tokens import (
    DEFAULT_DATASET,
    QUICK_DATASET,
    TokenResults,
    bench_tokens,
    resolve,
    token_notes,
)
from m3rec_graph.context import M3RecContext
from m3rec_graph.contracts.schemas import ItemTraits
from m3rec_graph.graph import build_graph
from m3rec_graph.llm.routing import context_for
from m3rec_graph.state import ItemDict, M3RecGraph, RecInput, RecOutput
from m3rec_graph.storage.traits import InMemoryTraitCache

MarMode = Literal["listwise", "pointwise"]
HISTORY_LEN = 10
CRITICAL_PATH_CALLS = 2
"""Sequential LLM calls per recommendation: MOPE and MOTE run in one superstep, then MAR."""


@dataclass(frozen=True)
class Settings:
    """What one invocation of the suite measures."""

    quick: bool
    runs: int
    """Timed recommendations per orchestration case."""
    orchestration_candidates: int = 20
    scaling_sizes: tuple[int, ...] = (10, 20, 50, 100, 500)
    scaling_repeats: int = 3
    latency_s: float = 0.2
    batch_users: int = 200
    batch_candidates: int = 5
    concurrency_levels: tuple[int, ...] = (1, 4, 16, 64)
    sensitivity_latencies: tuple[float, ...] = (0.5, 1.0)
    """The highest concurrency level again at these per-call latencies (seconds)."""
    token_dataset: Path = DEFAULT_DATASET
    """Benchmarks 4 and 5: the dataset directory (relative paths from the repository root)."""
    token_users: int = 1000

    @classmethod
    def for_mode(cls, quick: bool, dataset: Path | None = None) -> "Settings":
        if quick:
            settings = cls(
                quick=True,
                runs=5,
                scaling_sizes=(10, 20, 50, 100),
                scaling_repeats=1,
                latency_s=0.05,
                sensitivity_latencies=(0.1,),
                batch_users=8,
                token_dataset=QUICK_DATASET,
                token_users=20,
            )
        else:
            settings = cls(quick=False, runs=50)
        return settings if dataset is None else replace(settings, token_dataset=dataset)


# --- results -----------------------------------------------------------------------------


@dataclass
class Summary:
    """Milliseconds over repeated runs."""

    median: float
    p95: float
    min: float
    max: float


@dataclass
class OrchestrationCase:
    name: str
    """`miss` (every MOTE call made) or `hit` (every trait read from a warm cache)."""
    runs: int
    wall_ms: Summary
    cpu_ms: Summary
    llm_calls: int
    calls_by_stage: dict[str, int]
    peak_mem_kib: float
    """Peak traced Python allocation during one recommendation (tracemalloc)."""
    wall_ms_per_call: float
    """Median wall time divided by the LLM calls: the orchestration cost of one call."""


@dataclass
class Floor:
    """CPU of the library primitives every LLM call of the graph needs, measured alone."""

    chat_call_ms: float
    """One `BaseChatModel.ainvoke` of the instant fake model (langchain-core's per-call machinery)."""
    send_task_ms: float
    """One `Send` task of a trivial LangGraph graph (LangGraph's per-task machinery)."""
    graph_run_ms: float
    """One run of a trivial one-node LangGraph graph."""

    def for_calls(self, calls: int) -> float:
        """CPU ms no graph making `calls` LLM calls, each its own task, can go below."""
        return self.graph_run_ms + calls * (self.chat_call_ms + self.send_task_ms)


@dataclass
class Orchestration:
    candidates: int
    compile_ms: float
    """One `build_graph` (not part of any recommendation)."""
    cases: list[OrchestrationCase]
    floor: Floor | None = None


@dataclass
class ProfileEntry:
    function: str
    ncalls: int
    tottime_ms: float
    cumtime_ms: float


@dataclass
class PackageShare:
    package: str
    tottime_ms: float
    share: float
    """Fraction of the profiled run's total self time."""


@dataclass
class Profile:
    candidates: int
    total_ms: float
    """Sum of self time of every profiled function (cProfile slows the run down several-fold)."""
    site_packages: list[ProfileEntry]
    m3rec_graph: list[ProfileEntry]
    self_time: list[ProfileEntry]
    """The top functions by self time, anywhere."""
    by_package: list[PackageShare]
    json_schema_ms: float
    """Cumulative time in pydantic's `BaseModel.model_json_schema` (once per LLM call)."""


@dataclass
class ScalingRow:
    mode: str
    candidates: int
    calls_by_stage: dict[str, int]
    llm_calls: int
    expected_calls: int
    wall_ms: float
    cpu_ms: float
    wall_ms_per_call: float
    gc_ms: float = 0.0
    """Median time in Python's garbage collector per run (part of cpu_ms)."""

    @property
    def cpu_ms_per_call_without_gc(self) -> float:
        """The graph's own CPU per LLM call, garbage collection left out."""
        return (self.cpu_ms - self.gc_ms) / max(1, self.llm_calls)


@dataclass
class Scaling:
    repeats: int
    mar_chunk_size: int
    rows: list[ScalingRow]
    linear: bool
    """Every row's calls equal the linear formula (MOTE = n, MAR = ceil(n/chunk) or n)."""


@dataclass
class ConcurrencyRow:
    max_concurrency: int
    wall_s: float
    throughput: float
    """Recommendations per second."""
    ideal_throughput: float
    """Latency-bound: waves of `max_concurrency` runs, each `critical_path_calls` calls deep."""
    ratio: float
    capped_path_calls: int
    """Sequential calls per run when `max_concurrency` also gates each run's own fan-out."""
    capped_ideal_throughput: float
    capped_ratio: float
    cpu_s: float
    """Process CPU time of the whole batch."""
    cpu_bound_throughput: float
    """users / cpu_s: the ceiling of one event loop on one core, whatever the latency."""
    llm_calls: int
    gc_s: float = 0.0
    """Time spent in Python's cyclic garbage collector during the batch (part of cpu_s)."""
    gc_frozen: bool = False
    """The batch ran after `gc.collect(); gc.freeze()` (start-up objects out of the collector's way)."""
    latency_s: float | None = None
    """Per-call latency when it differs from the section's (the latency-sensitivity rows)."""


@dataclass
class Concurrency:
    latency_s: float
    users: int
    candidates: int
    calls_per_recommendation: int
    critical_path_calls: int
    rows: list[ConcurrencyRow]


@dataclass
class Machine:
    cpu_count: int | None
    platform: str
    python: str
    packages: dict[str, str]
    load_avg: tuple[float, float, float] | None = None
    """1/5/15-minute load average when the suite started: other processes using the CPUs."""


@dataclass
class Results:
    quick: bool
    command: str
    started: str
    duration_s: float
    machine: Machine
    orchestration: Orchestration
    profile: Profile
    scaling: Scaling
    concurrency: Concurrency
    tokens: TokenResults
    notes: list[str] = field(default_factory=list)


# --- workload ----------------------------------------------------------------------------

_SHADES = ("coral", "ruby", "nude", "plum", "teal", "gold", "ivory", "cherry")
_KINDS = ("nail polish", "lipstick", "eye shadow", "face serum", "hand cream", "mascara")


def make_item(item_id: str, n: int) -> ItemDict:
    """Return a catalogue item with realistic amounts of text."""
    shade, kind = _SHADES[n % len(_SHADES)], _KINDS[n % len(_KINDS)]
    return {
        "item_id": item_id,
        "title": f"Long-wear {shade} {kind}, salon finish, {n % 7 + 5} ml",
        "brand": f"Brand{n % 13}",
        "categories": [f"Beauty > Makeup > {kind.title()}"],
        "description": (
            f"A {shade} {kind} with a glossy, chip-resistant finish that lasts up to ten days. "
            "Vegan, cruelty free and quick drying; apply two thin coats for full colour."
        ),
    }


def make_request(user_id: str, candidates: int, history: int = HISTORY_LEN) -> RecInput:
    """Return a request whose candidate ids are unique to `user_id` (no cache sharing across users)."""
    return {
        "user_id": user_id,
        "history": [make_item(f"{user_id}-h{i}", i) for i in range(history)],
        "candidates": [make_item(f"{user_id}-c{i}", i + 3) for i in range(candidates)],
    }


class SwappableTraitCache:
    """A `TraitCache` whose backing `InMemoryTraitCache` can be replaced between runs.

    `build_graph` binds the cache at compile time; swapping the inner cache gives
    every "miss" run a fresh cache without timing a recompilation.
    """

    blocking = False  # a dict, like the InMemoryTraitCache it wraps

    def __init__(self) -> None:
        self.inner = InMemoryTraitCache()

    def fresh(self) -> None:
        self.inner = InMemoryTraitCache()

    def get_many(self, keys: Iterable[str]) -> dict[str, ItemTraits]:
        return self.inner.get_many(keys)

    def put(self, key: str, item_id: str, traits: ItemTraits) -> None:
        self.inner.put(key, item_id, traits)


@dataclass
class Bench:
    """A compiled graph over fake models and a swappable cache."""

    models: FakeModels
    cache: SwappableTraitCache
    graph: M3RecGraph

    @classmethod
    def build(cls, latency_s: float = 0.0) -> "Bench":
        models = FakeModels(latency_s=latency_s)
        cache = SwappableTraitCache()
        return cls(models, cache, build_graph(chat_models=models, trait_cache=cache))

    async def recommend(self, request: RecInput, ctx: M3RecContext) -> RecOutput:
        out = await self.graph.ainvoke(request, context=ctx)
        check_output(request, out)
        return cast(RecOutput, out)


def check_output(request: RecInput, out: Any) -> None:
    """Fail loudly if a fake answer was rejected: a fallback would be measured instead of the graph."""
    output = cast(RecOutput, out)
    if output["degraded"]:
        raise RuntimeError(f"the benchmark model was not accepted: {output['degraded'][:2]}")
    if len(output["ranking"]) != len(request["candidates"]):
        raise RuntimeError("the ranking does not cover every candidate")


def summarize(samples_ms: list[float]) -> Summary:
    ordered = sorted(samples_ms)
    if len(ordered) >= 2:
        p95 = statistics.quantiles(ordered, n=20, method="inclusive")[18]
    else:
        p95 = ordered[0]
    return Summary(
        median=statistics.median(ordered), p95=p95, min=ordered[0], max=ordered[-1]
    )


async def timed(run: Callable[[], Awaitable[object]]) -> tuple[float, float]:
    """Run once; return (wall ms, process CPU ms)."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await run()
    return (time.perf_counter() - wall0) * 1000, (time.process_time() - cpu0) * 1000


async def peak_memory_kib(run: Callable[[], Awaitable[object]]) -> float:
    """Peak Python allocation above the starting point during one run, in KiB."""
    already = tracemalloc.is_tracing()  # e.g. `python -X tracemalloc`: leave it running
    if not already:
        tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        await run()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        if not already:
            tracemalloc.stop()
    return (peak - base) / 1024


# --- 1. orchestration overhead -----------------------------------------------------------


async def bench_orchestration(settings: Settings) -> Orchestration:
    n = settings.orchestration_candidates
    compile0 = time.perf_counter()
    bench = Bench.build()
    compile_ms = (time.perf_counter() - compile0) * 1000
    ctx = context_for("hybrid")
    request = make_request("u-orch", n)

    async def miss() -> None:
        bench.cache.fresh()
        bench.models.reset()
        await bench.recommend(request, ctx)

    async def hit() -> None:
        bench.models.reset()
        await bench.recommend(request, ctx)

    cases = []
    for name, run in (("miss", miss), ("hit", hit)):
        if name == "hit":
            await miss()  # warm the cache with this request's traits
        for _ in range(2):  # warm-up: imports, prompt loading, pydantic schema caches
            await run()
        walls, cpus = [], []
        for _ in range(settings.runs):
            wall, cpu = await timed(run)
            walls.append(wall)
            cpus.append(cpu)
        calls = bench.models.stage_calls()
        wall_summary = summarize(walls)
        cases.append(
            OrchestrationCase(
                name=name,
                runs=settings.runs,
                wall_ms=wall_summary,
                cpu_ms=summarize(cpus),
                llm_calls=sum(calls.values()),
                calls_by_stage=calls,
                peak_mem_kib=await peak_memory_kib(run),
                wall_ms_per_call=wall_summary.median / max(1, sum(calls.values())),
            )
        )
    return Orchestration(candidates=n, compile_ms=compile_ms, cases=cases, floor=await measure_floor(settings))


class _FloorState(TypedDict):
    done: Annotated[list[int], operator.add]


async def _cpu_ms_per(run: Callable[[], Awaitable[object]], repeats: int, per_run: int = 1) -> float:
    for _ in range(max(2, repeats // 10)):  # warm-up
        await run()
    samples = []
    for _ in range(repeats):
        cpu0 = time.process_time()
        await run()
        samples.append((time.process_time() - cpu0) * 1000 / per_run)
    return statistics.median(samples)


async def measure_floor(settings: Settings) -> Floor:
    """Measure the per-call and per-task CPU of langchain-core and LangGraph themselves."""
    repeats = 50 if settings.quick else 400
    model = FakeModels()(context_for("hybrid").mote_model)
    messages = [HumanMessage("You are MOTE\n<item>[i1] a lipstick</item>")]
    fan_out = 20

    async def task(state: _FloorState) -> dict[str, list[int]]:
        return {"done": [1]}

    def send_all(state: _FloorState) -> list[Send]:
        return [Send("task", {"done": []}) for _ in range(fan_out)]

    builder: StateGraph[_FloorState, None, _FloorState, _FloorState] = StateGraph(_FloorState)
    builder.add_node("task", task)
    builder.add_conditional_edges(START, send_all, ["task"])
    builder.add_edge("task", END)
    sends = builder.compile()
    single: StateGraph[_FloorState, None, _FloorState, _FloorState] = StateGraph(_FloorState)
    single.add_node("task", task)
    single.add_edge(START, "task")
    single.add_edge("task", END)
    one = single.compile()
    graph_run = await _cpu_ms_per(lambda: one.ainvoke({"done": []}), repeats)
    with_sends = await _cpu_ms_per(lambda: sends.ainvoke({"done": []}), max(10, repeats // 10))
    return Floor(
        chat_call_ms=await _cpu_ms_per(lambda: model.ainvoke(messages), repeats),
        send_task_ms=max(0.0, (with_sends - graph_run) / fan_out),
        graph_run_ms=graph_run,
    )


# --- profile -----------------------------------------------------------------------------


def _where(filename: str) -> tuple[str, str]:
    """Return (group, short path) of a profiled function's file."""
    path = filename.replace(os.sep, "/")
    if "/site-packages/" in path:
        short = path.split("/site-packages/", 1)[1]
        return "site-packages", short
    if "/m3rec_graph/" in path:
        return "m3rec_graph", "m3rec_graph/" + path.split("/m3rec_graph/", 1)[1]
    if "/benchmarks/" in path:
        return "benchmarks", "benchmarks/" + path.split("/benchmarks/", 1)[1]
    if filename == "~" or filename.startswith("<"):
        return "builtins", filename
    return "stdlib", path.rsplit("/", 1)[-1]


def _package_of(group: str, short: str) -> str:
    if group == "site-packages":
        top = short.split("/", 1)[0]
        return top.removesuffix(".py").split(".", 1)[0]
    if group == "benchmarks":
        return "benchmarks (fake model)"
    if group == "builtins":
        return "builtins (C functions)"
    if group == "stdlib":
        return "stdlib"
    return group


def _label(func: tuple[str, int, str]) -> str:
    filename, line, name = func
    _, short = _where(filename)
    return f"{name} ({short}:{line})" if filename != "~" else name


def _entries(stats: dict[Any, Any], keys: list[Any]) -> list[ProfileEntry]:
    return [
        ProfileEntry(
            function=_label(key),
            ncalls=int(stats[key][1]),
            tottime_ms=round(stats[key][2] * 1000, 3),
            cumtime_ms=round(stats[key][3] * 1000, 3),
        )
        for key in keys
    ]


async def profile_miss_run(candidates: int, top: int = 8) -> Profile:
    """cProfile one all-miss recommendation (after a warm-up run) and group the time."""
    bench = Bench.build()
    ctx = context_for("hybrid")
    request = make_request("u-prof", candidates)
    await bench.recommend(request, ctx)  # warm-up
    bench.cache.fresh()
    profiler = cProfile.Profile()
    profiler.enable()
    await bench.recommend(request, ctx)
    profiler.disable()
    # pstats.Stats.stats: (file, line, func) -> (primitive calls, calls, tottime, cumtime, callers)
    stats: dict[Any, Any] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    by_group: dict[str, list[Any]] = defaultdict(list)
    by_package: dict[str, float] = defaultdict(float)
    for key, (_, _, tottime, _, _) in stats.items():
        group, short = _where(key[0])
        by_group[group].append(key)
        by_package[_package_of(group, short)] += tottime
    total = sum(by_package.values())
    json_schema = sum(
        stats[k][3]
        for k in by_group["site-packages"]
        if k[2] == "model_json_schema" and k[0].replace(os.sep, "/").endswith("pydantic/main.py")
    )

    def top_by(keys: list[Any], column: int) -> list[Any]:
        return sorted(keys, key=lambda k: stats[k][column], reverse=True)[:top]

    return Profile(
        candidates=candidates,
        total_ms=round(total * 1000, 3),
        site_packages=_entries(stats, top_by(by_group["site-packages"], 3)),
        m3rec_graph=_entries(stats, top_by(by_group["m3rec_graph"], 3)),
        self_time=_entries(stats, top_by(list(stats), 2)),
        by_package=[
            PackageShare(package=name, tottime_ms=round(t * 1000, 3), share=t / total)
            for name, t in sorted(by_package.items(), key=lambda kv: kv[1], reverse=True)
        ],
        json_schema_ms=round(json_schema * 1000, 3),
    )


# --- 2. scaling with candidates ----------------------------------------------------------


def expected_calls(n: int, mode: MarMode, chunk: int, history: bool = True) -> int:
    """LLM calls of one all-miss recommendation: MOPE + one MOTE per candidate + MAR."""
    mar = n if mode == "pointwise" else math.ceil(n / max(1, chunk))
    return int(history) + n + mar


async def bench_scaling(settings: Settings) -> Scaling:
    bench = Bench.build()
    rows = []
    modes: tuple[MarMode, ...] = ("listwise", "pointwise")
    chunk = context_for("hybrid").mar_chunk_size
    await bench.recommend(make_request("u-warm", 10), context_for("hybrid"))
    for mode in modes:
        ctx = context_for("hybrid", mar_mode=mode)
        for n in settings.scaling_sizes:
            request = make_request(f"u-scale-{n}", n)
            walls, cpus, gcs = [], [], []
            calls: dict[str, int] = {}

            async def run(request: RecInput = request, ctx: M3RecContext = ctx) -> None:
                bench.cache.fresh()
                bench.models.reset()
                await bench.recommend(request, ctx)

            for _ in range(settings.scaling_repeats):
                with gc_timer() as gc_time:
                    wall, cpu = await timed(run)
                walls.append(wall)
                cpus.append(cpu)
                gcs.append(gc_time[0] * 1000)
                calls = bench.models.stage_calls()
            total = sum(calls.values())
            wall_ms = statistics.median(walls)
            rows.append(
                ScalingRow(
                    mode=mode,
                    candidates=n,
                    calls_by_stage=calls,
                    llm_calls=total,
                    expected_calls=expected_calls(n, mode, chunk),
                    wall_ms=wall_ms,
                    cpu_ms=statistics.median(cpus),
                    wall_ms_per_call=wall_ms / max(1, total),
                    gc_ms=statistics.median(gcs),
                )
            )
    linear = all(
        r.llm_calls == r.expected_calls and r.calls_by_stage["mote"] == r.candidates for r in rows
    )
    return Scaling(
        repeats=settings.scaling_repeats, mar_chunk_size=chunk, rows=rows, linear=linear
    )


# --- 3. concurrency ----------------------------------------------------------------------


@contextlib.contextmanager
def gc_timer() -> Iterator[list[float]]:
    """Yield a one-element list that ends up holding the seconds spent in garbage collection."""
    total = [0.0]
    started = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            total[0] += time.perf_counter() - started[0]

    gc.callbacks.append(on_gc)
    try:
        yield total
    finally:
        gc.callbacks.remove(on_gc)


def ideal_throughput(users: int, concurrency: int, latency_s: float, path_calls: int) -> float:
    """Recommendations/s if only model latency counted: waves of `concurrency` runs, `path_calls` deep."""
    waves = math.ceil(users / max(1, min(concurrency, users)))
    return users / (waves * path_calls * latency_s)


def capped_path_calls(candidates: int, mar_tasks: int, concurrency: int) -> int:
    """Sequential calls of one all-miss run whose supersteps are gated by `max_concurrency`.

    LangGraph hands the batch's `max_concurrency` to every run, and each run's Pregel
    loop applies it to its own tasks: MOPE + the MOTE misses share one superstep, the
    MAR tasks the next.
    """
    c = max(1, concurrency)
    return math.ceil((1 + candidates) / c) + math.ceil(mar_tasks / c)


async def bench_concurrency(settings: Settings) -> Concurrency:
    bench = Bench.build(latency_s=settings.latency_s)
    ctx = context_for("hybrid")
    inputs = [
        make_request(f"u{u:03d}", settings.batch_candidates) for u in range(settings.batch_users)
    ]
    rows = []
    per_rec = expected_calls(settings.batch_candidates, "listwise", ctx.mar_chunk_size)
    mar_tasks = per_rec - 1 - settings.batch_candidates
    # The last level once more with the start-up heap frozen: what a host can do about the
    # collector's full passes over every imported module's objects (not the default).
    levels = [(c, False, settings.latency_s) for c in settings.concurrency_levels]
    top = settings.concurrency_levels[-1]
    levels.append((top, True, settings.latency_s))
    levels += [(top, False, latency) for latency in settings.sensitivity_latencies]
    for c, frozen, latency in levels:
        bench.models.set_latency(latency)
        bench.cache.fresh()
        bench.models.reset()
        if frozen:
            gc.collect()
            gc.freeze()
        try:
            with gc_timer() as gc_time:
                cpu0, wall0 = time.process_time(), time.perf_counter()
                outs = await bench.graph.abatch(inputs, {"max_concurrency": c}, context=ctx)
                wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        finally:
            if frozen:
                gc.unfreeze()
        for request, out in zip(inputs, outs, strict=True):
            check_output(request, out)
        throughput = len(inputs) / wall
        ideal = ideal_throughput(len(inputs), c, latency, CRITICAL_PATH_CALLS)
        capped = capped_path_calls(settings.batch_candidates, mar_tasks, c)
        capped_ideal = ideal_throughput(len(inputs), c, latency, capped)
        rows.append(
            ConcurrencyRow(
                max_concurrency=c,
                wall_s=wall,
                throughput=throughput,
                ideal_throughput=ideal,
                ratio=throughput / ideal,
                capped_path_calls=capped,
                capped_ideal_throughput=capped_ideal,
                capped_ratio=throughput / capped_ideal,
                cpu_s=cpu,
                cpu_bound_throughput=len(inputs) / cpu if cpu > 0 else math.inf,
                llm_calls=bench.models.calls,
                gc_s=gc_time[0],
                gc_frozen=frozen,
                latency_s=None if latency == settings.latency_s else latency,
            )
        )
    return Concurrency(
        latency_s=settings.latency_s,
        users=settings.batch_users,
        candidates=settings.batch_candidates,
        calls_per_recommendation=per_rec,
        critical_path_calls=CRITICAL_PATH_CALLS,
        rows=rows,
    )


# --- the whole suite ---------------------------------------------------------------------


def machine_info() -> Machine:
    packages = {}
    for name in ("langgraph", "langchain-core", "pydantic", "m3rec-graph"):
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            packages[name] = "not installed"
    return Machine(
        cpu_count=os.cpu_count(),
        platform=platform.platform(),
        python=f"{platform.python_implementation()} {platform.python_version()}",
        packages=packages,
        load_avg=os.getloadavg() if hasattr(os, "getloadavg") else None,
    )


def default_command(quick: bool) -> str:
    exe = os.path.relpath(sys.executable) if not sys.executable.startswith("/usr") else "python"
    return f"{exe} -m benchmarks" + (" --quick" if quick else "")


async def run_suite(
    quick: bool = False,
    *,
    command: str | None = None,
    progress: Callable[[str], None] | None = None,
    dataset: Path | None = None,
) -> Results:
    """Run every benchmark in the current event loop and return the results.

    `dataset` is the Beauty directory of benchmarks 4 and 5 (default: the full
    dataset, or the test fixture in quick mode).
    """
    settings = Settings.for_mode(quick, dataset)
    if not resolve(settings.token_dataset).is_dir():  # fail before the long benchmarks
        raise FileNotFoundError(f"dataset directory not found: {resolve(settings.token_dataset)}")
    say = progress or (lambda _: None)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    machine = machine_info()  # before the benchmarks: the load average is other processes'
    t0 = time.perf_counter()
    say(f"orchestration overhead ({settings.runs} runs x miss/hit) ...")
    orchestration = await bench_orchestration(settings)
    say("profiling one miss run ...")
    profile = await profile_miss_run(settings.orchestration_candidates)
    say(f"scaling with candidates {settings.scaling_sizes} ...")
    scaling = await bench_scaling(settings)
    say(f"concurrency ({settings.batch_users} users, {settings.latency_s * 1000:.0f} ms per call) ...")
    concurrency = await bench_concurrency(settings)
    say(f"cache effect and tokens ({settings.token_users} users of {settings.token_dataset}) ...")
    tokens = bench_tokens(settings.token_dataset, settings.token_users)
    results = Results(
        quick=quick,
        command=command or default_command(quick),
        started=started,
        duration_s=time.perf_counter() - t0,
        machine=machine,
        orchestration=orchestration,
        profile=profile,
        scaling=scaling,
        concurrency=concurrency,
        tokens=tokens,
    )
    results.notes = findings(results)
    return results


def findings(results: Results) -> list[str]:
    """Plain-language observations computed from the numbers (so they stay true on re-runs)."""
    notes = []
    miss, hit = results.orchestration.cases[0], results.orchestration.cases[-1]
    notes.append(
        f"Orchestration with an instant model: {miss.wall_ms.median:.1f} ms wall / "
        f"{miss.cpu_ms.median:.1f} ms CPU per all-miss recommendation of "
        f"{results.orchestration.candidates} candidates ({miss.llm_calls} LLM calls, "
        f"{miss.cpu_ms.median / max(1, miss.llm_calls):.2f} ms CPU per call); a warm trait cache "
        f"({hit.llm_calls} calls) takes {hit.wall_ms.median:.1f} ms. Real model latency is added on top."
    )
    p = results.profile
    shares = ", ".join(f"{s.package} {s.share:.0%}" for s in p.by_package[:6])
    own = next((s.share for s in p.by_package if s.package == "m3rec_graph"), 0.0)
    notes.append(
        f"Profile (self time by package): {shares}. The project's own code is {own:.1%}; "
        "the builtins and stdlib time is spent on behalf of the libraries (isinstance checks, "
        "dataclass copies, asyncio)."
    )
    if p.total_ms > 0 and p.json_schema_ms / p.total_ms >= 0.05:
        notes.append(
            f"pydantic `model_json_schema()` takes {p.json_schema_ms / p.total_ms:.0%} of the "
            "profiled run (answer schemas are meant to be built once per answer model: see "
            "`schemas.AnswerContract`)."
        )
    rows = {(r.mode, r.candidates): r for r in results.scaling.rows}
    sizes = sorted({r.candidates for r in results.scaling.rows})
    for mode in ("listwise", "pointwise"):
        small, large = rows.get((mode, sizes[0])), rows.get((mode, sizes[-1]))
        if small and large:
            notes.append(
                f"Scaling ({mode}): {small.candidates} -> {large.candidates} candidates multiplies "
                f"LLM calls by {large.llm_calls / small.llm_calls:.1f}x and wall time by "
                f"{large.wall_ms / small.wall_ms:.1f}x ({small.wall_ms_per_call:.2f} -> "
                f"{large.wall_ms_per_call:.2f} ms per call); without garbage collection the CPU per "
                f"call goes {small.cpu_ms_per_call_without_gc:.2f} -> "
                f"{large.cpu_ms_per_call_without_gc:.2f} ms."
            )
    c = results.concurrency
    plain = [r for r in c.rows if not r.gc_frozen and r.latency_s is None]
    first, last = plain[0], plain[-1]
    notes.append(
        f"Concurrency: max_concurrency={first.max_concurrency} reaches {first.ratio:.0%} of the "
        f"2-call latency bound because the cap also serialises each run's own fan-out "
        f"({first.capped_path_calls} calls in sequence; {first.capped_ratio:.0%} of that capped "
        f"bound). At max_concurrency={last.max_concurrency}: {last.throughput:.1f} recs/s, "
        f"{last.ratio:.0%} of the latency bound, against a single-core CPU ceiling of "
        f"{last.cpu_bound_throughput:.1f} recs/s (the graph's CPU cost of {c.users} runs)."
    )
    # Why the top level stays below the bound: every run's CPU is spent on one event loop, in
    # bursts (all in-flight runs' answers arrive together after one latency), so each wave of
    # `c` runs waits for the CPU of the whole wave on top of the latency.
    cpu_ms = 1000 * last.cpu_s / c.users
    wave = min(last.max_concurrency, c.users)
    wave_cpu_s = cpu_ms * wave / 1000
    path_s = c.critical_path_calls * c.latency_s
    notes.append(
        f"CPU per recommendation in the batch: {cpu_ms:.1f} ms ({c.calls_per_recommendation} LLM "
        f"calls). A wave of {wave} runs needs {wave_cpu_s:.2f} s of CPU on the one "
        f"event loop against a {path_s:.1f} s latency path, so the latency bound is out of reach "
        f"at this latency: 80% of it would leave {0.25 * path_s * 1000 / wave:.1f} "
        "ms of CPU per recommendation. With a real model's latency (seconds per call) the same CPU "
        "is a small fraction of the path."
    )
    floor = results.orchestration.floor
    if floor is not None:
        budget_ms = 0.25 * path_s * 1000 / wave
        floor_ms = floor.for_calls(c.calls_per_recommendation)
        notes.append(
            f"The library floor for {c.calls_per_recommendation} calls (section 1) is {floor_ms:.1f} ms "
            f"of CPU per recommendation, {'above' if floor_ms > budget_ms else 'within'} that "
            f"{budget_ms:.1f} ms budget: "
            + (
                "on one event loop, no graph built from langchain-core chat model calls in LangGraph "
                "tasks reaches 80% of this latency bound."
                if floor_ms > budget_ms
                else "the gap is the graph's own overhead."
            )
        )
    slower = [r for r in c.rows if r.latency_s is not None]
    if slower:
        notes.append(
            f"The same batch at max_concurrency={last.max_concurrency} with slower calls: "
            + "; ".join(f"{(r.latency_s or 0) * 1000:.0f} ms per call, {r.ratio:.0%} of its latency bound" for r in slower)
            + f" (vs {last.ratio:.0%} at {c.latency_s * 1000:.0f} ms). The graph's CPU per batch "
            "stays the same, so its share of the path shrinks as the model gets slower."
        )
    frozen = next((r for r in c.rows if r.gc_frozen), None)
    default = [r for r in c.rows if not r.gc_frozen and r.latency_s is None]
    if frozen and default:
        top = default[-1]
        notes.append(
            f"Garbage collection took {top.gc_s:.2f} of the {top.cpu_s:.2f} CPU s at "
            f"max_concurrency={top.max_concurrency} (full passes over every imported module's "
            f"objects). With the start-up heap frozen (`gc.freeze()`, a host's choice): "
            f"{frozen.gc_s:.2f} s of GC, {frozen.throughput:.1f} recs/s, {frozen.ratio:.0%} of the "
            "latency bound."
        )
    load = results.machine.load_avg
    cpus = results.machine.cpu_count or 1
    if load is not None and load[0] >= 0.5:
        notes.append(
            f"The machine was shared: the 1-minute load average was {load[0]:.2f} on {cpus} CPUs "
            "before the suite started (other processes). Wall times include waiting for a CPU; "
            "CPU times are the steadier measure."
        )
    notes.extend(token_notes(results.tokens))
    return notes


def run(quick: bool = False, **kwargs: Any) -> Results:
    """Synchronous entry point: `asyncio.run(run_suite(...))`."""
    return asyncio.run(run_suite(quick, **kwargs))
