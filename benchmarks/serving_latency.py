"""Serving latency of one recommendation (20 candidates, current `hybrid`) against a provider latency model.

```
python -m benchmarks.serving_latency                 # the docs/serving.md run (about 20 minutes on 2 cores)
python -m benchmarks.serving_latency --quick         # 1 repetition, reasoning 256 only, 1 and 4 in flight
```

The provider is `tests/latency_server.py` in a process of its own (so its CPU is
its own): OpenAI's Chat Completions rules, and every answer takes TTFT + (reasoning
+ answer tokens) / tokens per second of its model, from `benchmarks/latency_model.json`
(cited medians, seeded jitter), with answers of the dry-run size model's lengths.
Real time, no time scale: a figure here is what a shopper would wait under that model.
The client is the production path: `build_graph()` with `ChatOpenAI` models
(`endpoint_chat_models` pointing them at the server), all sharing one HTTP pool
(`shared_client_chat_models`), profiles and traits in an `InMemoryStore`.

What it reports:

* **Per state and MAR variant** (`listwise`, the paper's answer; `scores_first`), at one
  recommendation in flight: p50/p95 time to the ranked list (the `ranking_ready` custom
  event) and to the full answer (the graph's output), the critical path (the chain of
  model calls, each starting after the one before it ended, that ends at that time),
  tokens and USD per recommendation (the graph's own usage report), for each assumed
  reasoning budget of MAR's effort `low` (gpt-6.1-sol refuses `none`). The states:
  1. cold shopper, cold catalogue: MOPE and 20 MOTE calls, then MAR;
  2. cold shopper, warm catalogue: the traits are stored (another shopper's run of the
     same candidates), MOPE then MAR;
  3. warm shopper, warm catalogue: the profile of this history is stored too, MAR only;
  4. history grown by one item: profile memory updates the stored profile
     (incremental MOPE, when that prompt is the shorter) or re-profiles; then MAR.
* **Throughput at N shoppers in flight** (state 1, the most calls: 1 + 20 + 2 = 23 per
  recommendation): N workers each run recommendations back to back. Throughput is
  N / mean latency (Little's law for a closed loop without think time); "allowed" is
  N / the mean latency at one in flight, what the latency model lets N shoppers do
  when nothing else waits. Each row shows p95, the server's and the client's CPU
  (share of one core over the row's wall time) and the client's connection-pool wait
  (from httpx's request hook to the first byte it writes for that request, via the
  `trace` extension; a new connection's TCP connect is not counted as waiting).
* **The pool.** 64 shoppers x 23 calls can be 1,472 requests at once, past openai's
  default pool (`DEFAULT_CONNECTION_LIMITS`: 1,000 connections, 100 kept alive). The
  64-in-flight row runs twice: once on the default pool (requests past 1,000 wait in
  it), once on one shared pool sized to the peak (2,048 connections, all kept alive).
"""

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast
from uuid import UUID

import httpx2
import openai
from langchain_core.callbacks import AsyncCallbackHandler
from langchain_core.messages import BaseMessage
from langchain_core.outputs import LLMResult
from langgraph.store.memory import InMemoryStore

from m3rec_graph import build_graph, context_for
from m3rec_graph.cli.demo import load_cases
from m3rec_graph.context import M3RecContext
from m3rec_graph.evaluation.plots import LatencyPoint, plot_time_to_ranking
from m3rec_graph.llm.endpoint import endpoint_chat_models
from m3rec_graph.llm.factory import shared_client_chat_models
from m3rec_graph.state import M3RecGraph, RecInput

ROOT = Path(__file__).resolve().parents[1]
MODEL_FILE = ROOT / "benchmarks" / "latency_model.json"
TODAY = "2026-12-03"
STATES = (
    "cold shopper, cold catalogue",
    "cold shopper, warm catalogue",
    "warm shopper, warm catalogue",
    "history grown by one item",
)
VARIANTS = ("listwise", "scores_first")
SOL_NONE = "scores_first, mar=gpt-6-sol@none"
"""Not `hybrid`: MAR on gpt-6-sol at effort none (same price as gpt-6.1-sol, no reasoning), for the goals' sake."""
SIZED_POOL = 2048


# --- the provider, in its own process -----------------------------------------------------


class ProviderProcess:
    """`python -m tests.latency_server` as a child process; its URL and CPU time."""

    def __init__(self, reasoning_low: int, seed: int) -> None:
        self.args = [
            sys.executable, "-m", "tests.latency_server",
            "--model-file", str(MODEL_FILE), "--reasoning-low", str(reasoning_low), "--seed", str(seed),
        ]
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def __enter__(self) -> "ProviderProcess":
        self.proc = subprocess.Popen(self.args, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("listening "):
            raise RuntimeError(f"latency server did not start: {line!r}")
        self.url = line.removeprefix("listening ")
        return self

    def cpu_s(self) -> float:
        """The server's user + system CPU seconds so far (Linux `/proc/PID/stat`, fields 14 and 15)."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


# --- what the client sees ---------------------------------------------------------------------


@dataclass
class PoolProbe:
    """httpx event hook + trace extension: how long each request waited for a pooled connection."""

    waits: list[float] = field(default_factory=list)

    async def on_request(self, request: httpx2.Request) -> None:
        began = time.monotonic()
        seen = False

        async def trace(name: str, info: dict[str, Any]) -> None:
            nonlocal seen
            if not seen and name in ("connection.connect_tcp.started", "http11.send_request_headers.started"):
                seen = True
                self.waits.append(time.monotonic() - began)

        request.extensions["trace"] = trace


@dataclass(frozen=True)
class Call:
    """One model call of a recommendation, in seconds since the recommendation started."""

    name: str
    start: float
    end: float


class CallRecorder(AsyncCallbackHandler):
    """Records every stage LLM call's start and end (the prompt name tells the MAR kinds apart)."""

    def __init__(self, began: float) -> None:
        self.began = began
        self.open: dict[UUID, tuple[str, float]] = {}
        self.calls: list[Call] = []

    async def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        meta = metadata or {}
        if "m3rec_stage" in meta:
            name = str(meta.get("m3rec_prompt", meta["m3rec_stage"])).removeprefix("m3rec-")
            self.open[run_id] = (name, time.monotonic() - self.began)

    async def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        opened = self.open.pop(run_id, None)
        if opened is not None:
            self.calls.append(Call(opened[0], opened[1], time.monotonic() - self.began))


def critical_path(calls: Sequence[Call], until: float) -> list[Call]:
    """Return the chain of calls that sets `until`: the last call to end by then, the last before its start, ..."""
    path: list[Call] = []
    horizon = until + 1e-3
    while True:
        before = [c for c in calls if c.end <= horizon and c not in path]
        if not before:
            return path
        last = max(before, key=lambda c: c.end)
        path.insert(0, last)
        horizon = last.start + 1e-3


def describe_path(path: Sequence[Call], total: float) -> str:
    """`mope 2.61 -> mar 7.02 (+0.12 graph)`: each call's duration, and what is not a call."""
    if not path:
        return f"no model call (+{total:.2f} graph)"
    spent = sum(c.end - c.start for c in path)
    return " -> ".join(f"{c.name} {c.end - c.start:.2f}" for c in path) + f" (+{total - spent:.2f} graph)"


@dataclass(frozen=True)
class Sample:
    """One recommendation."""

    ranked_s: float
    full_s: float
    input_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cost_usd: float
    calls: int
    degraded: int
    profile_memory: str
    ranked_path: str
    full_path: str


async def recommend(graph: M3RecGraph, request: dict[str, Any], ctx: M3RecContext) -> Sample:
    """Run one recommendation, streaming, and time its ranking event and its end."""
    began = time.monotonic()
    recorder = CallRecorder(began)
    ranked = None
    output: dict[str, Any] = {}
    async for mode, chunk in graph.astream(
        cast(RecInput, request), {"callbacks": [recorder]}, context=ctx, stream_mode=["custom", "values"]
    ):
        if mode == "custom" and isinstance(chunk, dict) and chunk.get("m3rec") == "ranking_ready" and ranked is None:
            ranked = time.monotonic() - began
        elif mode == "values":
            output = cast(dict[str, Any], chunk)
    full = time.monotonic() - began
    ranked = full if ranked is None else ranked
    total = output["usage"].total
    return Sample(
        ranked_s=ranked,
        full_s=full,
        input_tokens=total.input_tokens,
        output_tokens=total.output_tokens,
        reasoning_tokens=total.reasoning_tokens,
        cost_usd=total.cost_usd or 0.0,
        calls=total.calls,
        degraded=len(output["degraded"]),
        profile_memory=output["memory"]["profile"],
        ranked_path=describe_path(critical_path(recorder.calls, ranked), ranked),
        full_path=describe_path(critical_path(recorder.calls, full), full),
    )


CHUNK_SIZE = 10
"""`M3RecContext.mar_chunk_size` of every run (`--chunk-size`; the default 10 is the graph's)."""


def context(variant: str) -> M3RecContext:
    if variant == SOL_NONE:
        return context_for(
            "hybrid", {"mar": "gpt-6-sol"}, efforts={"mar": "none"}, today=TODAY,
            mar_answer="scores_first", mar_chunk_size=CHUNK_SIZE,
        )
    return context_for("hybrid", today=TODAY, mar_answer=variant, mar_chunk_size=CHUNK_SIZE)


def label(variant: str) -> str:
    """The variant as reported: its name, and the chunk size when it is not the default."""
    return variant if CHUNK_SIZE == 10 else f"{variant}, chunks of {CHUNK_SIZE}"


def graph_for(url: str, client: Any, store: InMemoryStore) -> M3RecGraph:
    factory = endpoint_chat_models(url, api_key="latency-model", chat_models=shared_client_chat_models(client))
    return build_graph(chat_models=factory, store=store)


def http_client(probe: PoolProbe, sized: bool) -> Any:
    # openai's own default (openai/_constants.py DEFAULT_CONNECTION_LIMITS), or one pool for the peak.
    limits = (
        httpx2.Limits(max_connections=SIZED_POOL, max_keepalive_connections=SIZED_POOL)
        if sized
        else httpx2.Limits(max_connections=1000, max_keepalive_connections=100)
    )
    return openai.DefaultAsyncHttpxClient(limits=limits, timeout=120.0, event_hooks={"request": [probe.on_request]})


def case_request(n: int, user_id: str, suffix: str = "") -> dict[str, Any]:
    """A real Beauty case (history, 20 candidates); `suffix` renames the candidates (a catalogue no one has seen)."""
    cases = load_cases()
    case = cases[n % len(cases)]
    candidates = [{**c, "item_id": c["item_id"] + suffix} for c in case["candidates"]]
    return {"user_id": user_id, "history": case["history"], "candidates": candidates}


def grown(request: dict[str, Any], n: int) -> dict[str, Any]:
    """The same request with one more history item (the last history item of another case)."""
    cases = load_cases()
    extra = cases[(n + 1) % len(cases)]["history"][-1]
    return {**request, "history": [*request["history"], extra]}


async def state_samples(url: str, variant: str, reps: int, tag: str) -> dict[str, list[Sample]]:
    """Run the four states `reps` times (a fresh store each time), one recommendation in flight."""
    out: dict[str, list[Sample]] = {state: [] for state in STATES}
    ctx = context(variant)
    for rep in range(reps):
        probe = PoolProbe()
        async with http_client(probe, sized=True) as client:
            graph = graph_for(url, client, InMemoryStore())
            first = case_request(rep, f"{tag}-{variant}-{rep}-a")
            out[STATES[0]].append(await recommend(graph, first, ctx))
            shopper = {**first, "user_id": f"{tag}-{variant}-{rep}-b"}  # same candidates: traits stored
            out[STATES[1]].append(await recommend(graph, shopper, ctx))
            out[STATES[2]].append(await recommend(graph, shopper, ctx))
            out[STATES[3]].append(await recommend(graph, grown(shopper, rep), ctx))
    return out


@dataclass(frozen=True)
class LoadRow:
    variant: str
    in_flight: int
    pool: str
    recommendations: int
    wall_s: float
    mean_s: float
    p95_s: float
    throughput: float
    allowed: float
    server_cpu: float
    client_cpu: float
    pool_wait_mean_ms: float
    pool_wait_p95_ms: float
    pool_wait_max_ms: float
    peak_connections: int
    p95_path: str


async def load_row(
    provider: ProviderProcess, variant: str, in_flight: int, rounds: int, sized: bool, baseline_mean: float | None, tag: str
) -> LoadRow:
    """N workers run `rounds` cold-catalogue recommendations each, back to back, on one shared pool."""
    ctx = context(variant)
    probe = PoolProbe()
    async with http_client(probe, sized) as client:
        graph = graph_for(provider.url, client, InMemoryStore())
        samples: list[Sample] = []
        await client.post(provider.url + "/stats/reset")

        async def worker(w: int) -> None:
            for r in range(rounds):
                request = case_request(w + r, f"{tag}-{variant}-{in_flight}-{w}-{r}", suffix=f"~{tag}-{in_flight}-{w}-{r}")
                samples.append(await recommend(graph, request, ctx))

        server0, client0, began = provider.cpu_s(), time.process_time(), time.monotonic()
        await asyncio.gather(*(worker(w) for w in range(in_flight)))
        wall = time.monotonic() - began
        server_cpu = (provider.cpu_s() - server0) / wall
        client_cpu = (time.process_time() - client0) / wall
    stats = await server_stats(provider.url)
    latencies = sorted(s.full_s for s in samples)
    mean = statistics.fmean(latencies)
    waits = sorted(probe.waits) or [0.0]
    slowest = max(samples, key=lambda s: s.full_s)
    base = baseline_mean if baseline_mean is not None else mean
    return LoadRow(
        variant=label(variant),
        in_flight=in_flight,
        pool="sized 2,048" if sized else "openai default 1,000",
        recommendations=len(samples),
        wall_s=wall,
        mean_s=mean,
        p95_s=percentile(latencies, 95),
        throughput=in_flight / mean,
        allowed=in_flight / base,
        server_cpu=server_cpu,
        client_cpu=client_cpu,
        pool_wait_mean_ms=1000 * statistics.fmean(waits),
        pool_wait_p95_ms=1000 * percentile(waits, 95),
        pool_wait_max_ms=1000 * waits[-1],
        peak_connections=int(stats.get("peak_in_flight", 0)),
        p95_path=slowest.full_path,
    )


async def warm_up(url: str) -> None:
    """One unmeasured recommendation: the process's first run loads tokenizer files, prompts and the registry."""
    async with http_client(PoolProbe(), sized=True) as client:
        await recommend(graph_for(url, client, InMemoryStore()), case_request(0, "warm-up"), context("listwise"))


async def server_stats(url: str) -> dict[str, Any]:
    async with httpx2.AsyncClient() as client:
        answer = await client.get(url.removesuffix("/v1") + "/stats")
        stats: dict[str, Any] = answer.json()
        return stats


def percentile(values: Sequence[float], q: float) -> float:
    """The `q`-th percentile, linear between order statistics (p95 of few samples is near the max)."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def summarise(samples: Sequence[Sample]) -> dict[str, Any]:
    ranked = [s.ranked_s for s in samples]
    full = [s.full_s for s in samples]
    median = sorted(samples, key=lambda s: s.ranked_s)[len(samples) // 2]
    return {
        "n": len(samples),
        "ranked_p50": statistics.median(ranked),
        "ranked_p95": percentile(ranked, 95),
        "full_p50": statistics.median(full),
        "full_p95": percentile(full, 95),
        "calls": statistics.fmean(s.calls for s in samples),
        "input_tokens": statistics.fmean(s.input_tokens for s in samples),
        "output_tokens": statistics.fmean(s.output_tokens for s in samples),
        "reasoning_tokens": statistics.fmean(s.reasoning_tokens for s in samples),
        "cost_usd": statistics.fmean(s.cost_usd for s in samples),
        "degraded": sum(s.degraded for s in samples),
        "profile_memory": sorted({s.profile_memory for s in samples}),
        "ranked_path": median.ranked_path,
        "full_path": median.full_path,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"states": {}, "load": [], "settings": {}}
    load_average_at_start = os.getloadavg()
    loads = []
    for reasoning in args.reasoning:
        reps = args.reps if reasoning == args.headline else args.sweep_reps
        with ProviderProcess(reasoning, args.seed) as provider:
            await warm_up(provider.url)
            variants = (*args.variants, SOL_NONE) if reasoning == args.headline and args.sol_none else args.variants
            for variant in variants:
                print(f"states: reasoning {reasoning}, {variant}, {reps} repetitions ...", file=sys.stderr, flush=True)
                samples = await state_samples(provider.url, variant, reps, f"r{reasoning}")
                for state, got in samples.items():
                    if state not in args.states:
                        continue
                    results["states"][f"{reasoning}|{label(variant)}|{state}"] = {
                        "reasoning": reasoning, "variant": label(variant), "state": state, **summarise(got),
                        "samples": [asdict(s) for s in got],
                    }
            if reasoning != args.headline or args.no_load:
                continue
            for variant in args.variants:
                baseline = None
                for in_flight in args.inflight:
                    pools = (False, True) if in_flight == max(args.inflight) else (True,)
                    for sized in pools:
                        rounds = args.rounds if in_flight > 1 else max(args.rounds, 3)
                        print(f"load: {variant}, {in_flight} in flight, sized pool {sized} ...", file=sys.stderr, flush=True)
                        row = await load_row(provider, variant, in_flight, rounds, sized, baseline, f"load{reasoning}")
                        baseline = row.mean_s if baseline is None else baseline
                        loads.append(asdict(row))
    results["load"] = loads
    results["settings"] = {
        "command": "python -m benchmarks.serving_latency " + " ".join(sys.argv[1:]),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, no GPU, {platform.python_version()}",
        "load_average_at_start": load_average_at_start,
        "load_average_at_end": os.getloadavg(),
        "latency_model": json.loads(MODEL_FILE.read_text())["version"],
        "preset": "hybrid (mope, mote: gpt-6-luna at effort none; mar: gpt-6.1-sol at effort low)",
        "reps": args.reps,
        "sweep_reps": args.sweep_reps,
        "seed": args.seed,
    }
    return results


def render(results: dict[str, Any]) -> str:
    lines = ["| reasoning (MAR, low) | variant | state | n | ranked p50 | ranked p95 | full p50 | full p95 | calls | tokens in / out (reasoning) | USD / rec | profile | critical path to the ranked list (s) |",
             "|---:|---|---|---:|---:|---:|---:|---:|---:|---|---:|---|---|"]
    for row in results["states"].values():
        lines.append(
            f"| {row['reasoning']} | {row['variant']} | {row['state']} | {row['n']} | {row['ranked_p50']:.2f} | {row['ranked_p95']:.2f} "
            f"| {row['full_p50']:.2f} | {row['full_p95']:.2f} | {row['calls']:.0f} | {row['input_tokens']:,.0f} / {row['output_tokens']:,.0f} ({row['reasoning_tokens']:,.0f}) "
            f"| {row['cost_usd']:.5f} | {', '.join(row['profile_memory'])} | {row['ranked_path']} |"
        )
    lines += ["", "| variant | in flight | pool | recs | wall s | mean s | p95 s | throughput rec/s | allowed rec/s | ratio | server CPU | client CPU | pool wait mean / p95 / max ms | peak requests at server | slowest recommendation's path (s) |",
              "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|"]
    for row in results["load"]:
        lines.append(
            f"| {row['variant']} | {row['in_flight']} | {row['pool']} | {row['recommendations']} | {row['wall_s']:.1f} | {row['mean_s']:.2f} | {row['p95_s']:.2f} "
            f"| {row['throughput']:.2f} | {row['allowed']:.2f} | {row['throughput'] / row['allowed']:.0%} | {row['server_cpu']:.0%} | {row['client_cpu']:.0%} "
            f"| {row['pool_wait_mean_ms']:.1f} / {row['pool_wait_p95_ms']:.1f} / {row['pool_wait_max_ms']:.1f} | {row['peak_connections']} | {row['p95_path']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serving_latency", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--reasoning", type=lambda s: [int(x) for x in s.split(",")], default=[256, 0, 1024],
                        help="reasoning tokens assumed at MAR's effort low (an assumption: swept)")
    parser.add_argument("--headline", type=int, default=256, help="the reasoning budget of the load rows and the goals")
    parser.add_argument("--reps", type=int, default=6, help="repetitions of each state at the headline budget")
    parser.add_argument("--sweep-reps", type=int, default=3, help="repetitions at the other budgets")
    parser.add_argument("--inflight", type=lambda s: [int(x) for x in s.split(",")], default=[1, 16, 64])
    parser.add_argument("--rounds", type=int, default=2, help="recommendations per worker in a load row")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-load", action="store_true", help="the state table only (no load rows)")
    parser.add_argument("--chunk-size", type=int, default=10, help="M3RecContext.mar_chunk_size (default: the graph's 10)")
    parser.add_argument("--variants", type=lambda s: tuple(s.split(",")), default=VARIANTS, help="MAR variants to run")
    parser.add_argument("--states", type=lambda s: [STATES[int(i) - 1] for i in s.split(",")], default=list(STATES),
                        help="states to report, by number (1-4; all four still run, in order)")
    parser.add_argument("--sol-none", action="store_true", help=f"also the states under {SOL_NONE!r} at the headline budget")
    parser.add_argument("--merge", type=Path, nargs="+", help="render and plot these result files together; run nothing")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "serving_latency.json")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "img" / "serving-time-to-ranking.png")
    parser.add_argument("--quick", action="store_true", help="1 repetition, reasoning 256, 1 and 4 in flight; writes nothing")
    args = parser.parse_args(argv)
    global CHUNK_SIZE
    CHUNK_SIZE = args.chunk_size
    if args.quick:
        args.reasoning, args.reps, args.sweep_reps, args.inflight, args.rounds = [256], 1, 1, [1, 4], 1
    for var in ("LANGSMITH_TRACING", "LANGCHAIN_TRACING_V2"):
        os.environ[var] = "false"
    if args.merge:
        results = merge([json.loads(p.read_text(encoding="utf-8")) for p in args.merge])
        print(render(results))
        write_plot(results, args.plot)
        print(f"wrote {os.path.relpath(args.plot)}")
        return 0
    results = asyncio.run(run(args))
    print(render(results))
    if not args.quick:
        args.out.write_text(json.dumps(results, indent=1), encoding="utf-8")
        write_plot(results, args.plot)
        print(f"wrote {os.path.relpath(args.out)} and {os.path.relpath(args.plot)}")
    return 0


def merge(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One result from several runs (e.g. one process per reasoning budget)."""
    return {
        "states": {k: v for part in parts for k, v in part["states"].items()},
        "load": [row for part in parts for row in part["load"]],
        "settings": [part["settings"] for part in parts],
    }


def write_plot(results: dict[str, Any], path: Path) -> None:
    points = [
        LatencyPoint(
            row["state"],
            row["variant"] if row["variant"].startswith(SOL_NONE) else f"{row['variant']}, reasoning {row['reasoning']}",
            row["ranked_p50"],
            row["ranked_p95"],
        )
        for row in sorted(results["states"].values(), key=lambda r: (r["variant"] == SOL_NONE, r["variant"], r["reasoning"]))
    ]
    # at effort none there is no reasoning: the budget swept for `low` does not apply to SOL_NONE
    plot_time_to_ranking(points, path, goals={STATES[2]: 2.5, STATES[1]: 5.0})


if __name__ == "__main__":
    sys.exit(main())
