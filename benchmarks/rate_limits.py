"""Client-side rate limits against a provider's own limits: 429s, retries and wall time.

```
python -m benchmarks.rate_limits           # 6 users x 20 candidates, 2 servers x 4 runs (~1.5 min)
python -m benchmarks.rate_limits --quick   # 3 users x 8 candidates, 1 server x 2 runs (seconds)
```

A batch of recommendations runs through the production graph (`build_graph()`
with `openai_chat_model`, given the server and the limits by `endpoint_chat_models`,
so the real `ChatOpenAI` path)
against `tests.fault_server.FaultServer`, whose scripted answerer returns valid
JSON after `latency_s` and which enforces, like a provider, a tokens-per-minute
limit (prompt + schema + `max_tokens` booked on arrival, token bucket) and a cap
on the requests it works on at once; beyond either it answers 429 with
`Retry-After`. No fault is injected otherwise. Two servers: one whose TPM limit
binds first (fast answers), one whose in-flight cap does (slow answers).

Against each, the same batch runs without client limits, with
`ModelSpec.tokens_per_minute` only, with `ModelSpec.max_inflight_requests` only,
and with both (`--quick`: one server, the first and the last run), each against
a fresh server. Printed per run: HTTP
requests, 429s by the limit hit, transport retries (the OpenAI client's, on
429: HTTP requests - model invocations), node retries (the graph's
`RetryPolicy`), degraded tasks, valid rankings, the server's peak of admitted
requests, the rate of tokens it booked, and wall time; then the machine. Prints only: the figures in
`docs/reliability.md` were copied from a run of this script.
"""

import argparse
import asyncio
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

from benchmarks.soak import (
    CallCounter,
    SoakSettings,
    graph_for_server,
    machine_info,
    make_requests,
    soak_context,
)
from m3rec_graph.context import M3RecContext
from m3rec_graph.state import M3RecGraph, RecInput
from tests.fault_server import FaultConfig, FaultServer


@dataclass(frozen=True)
class Provider:
    """The limits and speed of the server one set of runs is measured against."""

    name: str
    tokens_per_minute: int
    max_in_flight: int
    latency_s: float
    """How long the server takes per admitted request (a model's generation time)."""
    burst_s: float = 2.0
    """The TPM bucket holds this many seconds of budget."""


TOKENS_BOUND = Provider("tokens-bound", tokens_per_minute=900_000, max_in_flight=8, latency_s=0.2)
"""Fast answers: its TPM limit is what a batch runs into."""
CONCURRENCY_BOUND = Provider(
    "concurrency-bound", tokens_per_minute=1_500_000, max_in_flight=8, latency_s=0.5
)
"""Slow answers: its in-flight cap is what a batch runs into."""


@dataclass(frozen=True)
class Settings:
    """The batch, the servers it runs against, and the client limits of the limited runs."""

    users: int = 6
    candidates: int = 20
    history: int = 5
    concurrency: int = 8
    """Users in flight (`max_concurrency`; LangGraph applies it inside each run too)."""
    providers: tuple[Provider, ...] = (TOKENS_BOUND, CONCURRENCY_BOUND)
    client_share: float = 0.9
    """`ModelSpec.tokens_per_minute` of the limited runs, as a share of the server's limit
    (`max_inflight_requests` is the server's cap itself: a client slot outlasts the server's)."""
    timeout_s: float = 10.0
    max_retries: int = 2
    """The OpenAI client's transport retries (it honours `Retry-After`)."""
    retry_after_s: float = 1.0
    seed: int = 7
    runs: tuple[str, ...] = ("none", "tokens", "in flight", "both")

    @classmethod
    def quick(cls) -> "Settings":
        """A few seconds: 3 users x 8 candidates, without and with both limits, one server."""
        return cls(
            users=3,
            candidates=8,
            history=3,
            concurrency=3,
            providers=(
                Provider(
                    "quick", tokens_per_minute=900_000, max_in_flight=4, latency_s=0.1, burst_s=0.5
                ),
            ),
            timeout_s=5.0,
            max_retries=1,
            retry_after_s=0.05,
            runs=("none", "both"),
        )


@dataclass
class RunReport:
    """What one run of the batch did."""

    provider: str
    name: str
    tokens_per_minute: int | None
    max_inflight_requests: int | None
    users: int
    valid_rankings: int
    exceptions: list[str]
    http_requests: int
    over_tpm: int
    over_inflight: int
    invocations: int
    provider_errors: int
    degraded_tasks: int
    provider_fallbacks: int
    peak_admitted: int
    booked_tokens: int
    """Prompt tokens + `max_tokens` of the admitted requests, as the server counts them."""
    wall_s: float

    @property
    def too_many(self) -> int:
        """429s for either limit."""
        return self.over_tpm + self.over_inflight

    @property
    def transport_retries(self) -> int:
        """Requests the OpenAI client repeated by itself (HTTP requests - model invocations)."""
        return self.http_requests - self.invocations

    @property
    def node_retries(self) -> int:
        """Provider errors the graph's `RetryPolicy` retried (the rest degraded their task)."""
        return self.provider_errors - self.provider_fallbacks

    @property
    def ok(self) -> bool:
        """Every user got a valid ranking and no exception escaped."""
        return self.valid_rankings == self.users and not self.exceptions


def client_limits(
    settings: Settings, provider: Provider, run: str
) -> tuple[int | None, int | None]:
    """Return (`tokens_per_minute`, `max_inflight_requests`) of the named run."""
    tpm = (
        int(provider.tokens_per_minute * settings.client_share)
        if run in ("tokens", "both")
        else None
    )
    cap = provider.max_in_flight if run in ("in flight", "both") else None
    return tpm, cap


def _soak_settings(settings: Settings) -> SoakSettings:
    return SoakSettings(timeout_s=settings.timeout_s, max_retries=settings.max_retries, seed=settings.seed)


def context_for(settings: Settings) -> M3RecContext:
    """Return the run context: the three stages call `MODEL_NAME` (the endpoint is the factory's)."""
    return soak_context(_soak_settings(settings))


def graph_for(url: str, settings: Settings, tpm: int | None, cap: int | None) -> M3RecGraph:
    """Return the production graph whose models call `url` with these client limits."""
    return graph_for_server(
        url, _soak_settings(settings), tokens_per_minute=tpm, max_inflight_requests=cap, key_label="rate-limits"
    )


def server_config(settings: Settings, provider: Provider) -> FaultConfig:
    """Return the fault server's configuration: the provider's limits and latency, no faults."""
    return FaultConfig(
        seed=settings.seed,
        retry_after_s=settings.retry_after_s,
        rate_limit_tpm=provider.tokens_per_minute,
        rate_limit_tpm_burst=provider.tokens_per_minute * provider.burst_s / 60.0,
        max_in_flight=provider.max_in_flight,
        latency_s=provider.latency_s,
    )


def batch(settings: Settings) -> list[RecInput]:
    """Return one request per user, each with its own candidates (every MOTE call goes out)."""
    shape = SoakSettings(
        users=settings.users, candidates=settings.candidates, history=settings.history
    )
    return make_requests(shape)  # the soak test's synthetic beauty items


def _valid(out: Any, request: RecInput) -> bool:
    ids = sorted(c["item_id"] for c in request["candidates"])
    return isinstance(out, dict) and sorted(r.item_id for r in out.get("ranking") or []) == ids


async def run_once(
    settings: Settings, provider: Provider, run: str, requests: list[RecInput]
) -> RunReport:
    """Run the batch once against a fresh server with the named client limits."""
    tpm, cap = client_limits(settings, provider, run)
    counter = CallCounter()
    with FaultServer(server_config(settings, provider)) as server:
        ctx = context_for(settings)
        graph = graph_for(server.url, settings, tpm, cap)
        started = time.perf_counter()
        outs = await graph.abatch(
            list(requests),
            {"max_concurrency": settings.concurrency, "callbacks": [counter]},
            context=ctx,
            return_exceptions=True,
        )
        wall_s = time.perf_counter() - started
        counts = server.counts()
    exceptions, valid, degraded, after_errors = [], 0, 0, 0
    for request, out in zip(requests, outs, strict=True):
        if isinstance(out, BaseException):
            exceptions.append(f"{request['user_id']}: {type(out).__name__}: {out}"[:300])
            continue
        valid += _valid(out, request)
        reasons = Counter(
            d["reason"].startswith("provider error") for d in out.get("degraded") or []
        )
        degraded += sum(reasons.values())
        after_errors += reasons[True]
    return RunReport(
        provider=provider.name,
        name=run,
        tokens_per_minute=tpm,
        max_inflight_requests=cap,
        users=len(requests),
        valid_rankings=valid,
        exceptions=exceptions,
        http_requests=counts.get("requests", 0),
        over_tpm=counts.get("over_tpm", 0),
        over_inflight=counts.get("over_inflight", 0),
        invocations=sum(counter.invocations.values()),
        provider_errors=sum(counter.provider_errors.values()),
        degraded_tasks=degraded,
        provider_fallbacks=after_errors,
        peak_admitted=counts.get("peak_admitted", 0),
        booked_tokens=counts.get("tokens:booked", 0),
        wall_s=wall_s,
    )


async def run_all(settings: Settings) -> list[RunReport]:
    """Run every configured run of the batch, one after another."""
    requests = batch(settings)
    return [
        await run_once(settings, provider, run, requests)
        for provider in settings.providers
        for run in settings.runs
    ]


def render(settings: Settings, reports: list[RunReport], command: str) -> str:
    """Return the results as a markdown table, with the settings and the machine."""
    s = settings
    servers = "; ".join(
        f"{p.name}: {p.tokens_per_minute:,} tokens/min (a bucket of {p.burst_s:g} s), "
        f"{p.max_in_flight} requests in flight, {p.latency_s:g} s per request"
        for p in s.providers
    )
    lines = [
        f"`{command}`: {s.users} users x {s.candidates} candidates (history {s.history}), "
        f"{s.concurrency} users in flight. Servers: {servers}; 429 with "
        f"`Retry-After: {s.retry_after_s:g}`. Client: `max_retries={s.max_retries}` (the only "
        f"retries: the graph adds none); "
        f"limited runs at {s.client_share:.0%} of the server's tokens/min and its in-flight cap.",
        "",
        "| server | client limits | HTTP requests | 429 tokens | 429 in flight "
        "| transport retries | node retries | degraded tasks | valid rankings | peak admitted "
        "| booked tokens/min | wall time |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        limits = ", ".join(
            part
            for part in (
                None if r.tokens_per_minute is None else f"{r.tokens_per_minute:,} tokens/min",
                None if r.max_inflight_requests is None else f"{r.max_inflight_requests} in flight",
            )
            if part
        )
        lines.append(
            f"| {r.provider} | {limits or 'none'} | {r.http_requests:,} | {r.over_tpm:,} "
            f"| {r.over_inflight:,} | {r.transport_retries:,} | {r.node_retries:,} "
            f"| {r.degraded_tasks:,} | {r.valid_rankings} / {r.users} | {r.peak_admitted} "
            f"| {r.booked_tokens * 60 / r.wall_s:,.0f} | {r.wall_s:.1f} s |"
        )
    machine = machine_info()
    lines += ["", "Machine: " + "; ".join(f"{k} {v}" for k, v in machine.items())]
    for r in reports:
        lines += [f"  escaped ({r.provider}, {r.name}): {e}" for e in r.exceptions[:3]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.rate_limits", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="3 users, 2 runs: a few seconds")
    parser.add_argument("--users", type=int, help="override the number of users")
    args = parser.parse_args(argv)
    for var in ("LANGSMITH_TRACING", "LANGCHAIN_TRACING_V2"):
        os.environ[var] = "false"
    settings = Settings.quick() if args.quick else Settings()
    if args.users:
        settings = replace(settings, users=args.users)
    command = "python -m benchmarks.rate_limits" + "".join(
        f" {a}" for a in (argv if argv is not None else sys.argv[1:])
    )
    reports = asyncio.run(run_all(settings))
    print(render(settings, reports, command))
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
