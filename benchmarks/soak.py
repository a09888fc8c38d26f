"""Soak test: a batch of recommendations through the real `ChatOpenAI` path while the provider misbehaves.

```
python -m benchmarks.soak           # 200 users x 20 candidates, 30% of requests faulted; writes docs/reliability.md
python -m benchmarks.soak --quick   # 12 users x 8 candidates, short timeouts; prints only (the unit test runs this)
```

Every stage calls the model `fault-model` (the run context names it), and the chat
model factory points it at `tests.fault_server.FaultServer`, an
OpenAI-compatible server on 127.0.0.1 that answers with schema-valid JSON from a
scripted answerer, except for a seeded share of requests, which get one of the
fault kinds (malformed JSON, wrong ids or scores, truncated, empty, 429 with
Retry-After, 500/503, slower than the client timeout, dropped connection). The
graph is the production one (`build_graph()` with `openai_chat_model`, given the
server's URL, timeout, retries and limits by `endpoint_chat_models`), so the faults
travel through the OpenAI client's retries, langchain-openai's error mapping, the
re-ask loop and the fallbacks.

Who retries: the OpenAI client, and only it (`ModelSpec.max_retries`, on 408/409/429/5xx,
timeouts and connection errors, with exponential backoff that honours `Retry-After`),
so a stage call makes at most `max_retries + 1` HTTP attempts. The stage nodes have no
`RetryPolicy`: a provider error that outlasts the client's retries degrades its task.

Figures:

* every user's ranking is a permutation of its candidates; no exception escapes;
* degraded results by stage and cause (provider errors after retries, or invalid
  answers after the re-ask budget);
* retries and re-asks: HTTP requests the server saw, model invocations the graph
  made (LangChain callbacks), stage tasks; the client's retries are
  requests - invocations, re-asks are derived from the invocations, the provider
  errors and the fallbacks (every provider error that reaches the graph should
  degrade its task: the report shows how many did not);
* wasted tokens (answers that failed validation, as the graph's usage report
  counts them; and the tokens of every faulted answer the server sent);
* a rate-limit experiment: the same fault-free batch against the server's own
  requests-per-second limit, without and with `ModelSpec.requests_per_second`,
  counting the 429s.

The size (200 users x 20 candidates = 4,600 stage tasks, ~6,300 HTTP requests)
takes about 2.5 minutes on 2 cores under `nice -n 10` (95 s the fault batch, 17 s
the rate-limit run without a client limit, 35 s the one with it; 2026-12-03): the
scripted answerer takes no time, so what is measured is the client, the graph and
the faults' delays.
"""

import argparse
import asyncio
import importlib.metadata
import math
import os
import platform
import shlex
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import openai
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage

from m3rec_graph.context import M3RecContext, ModelSpec
from m3rec_graph.graph import build_graph
from m3rec_graph.llm.endpoint import endpoint_chat_models
from m3rec_graph.llm.factory import ChatModelFactory
from m3rec_graph.state import ItemDict, M3RecGraph, RecInput
from m3rec_graph.storage.traits import InMemoryTraitCache
from tests.fault_server import FAULT_KINDS, FaultConfig, FaultRates, FaultServer

MODEL_NAME = "fault-model"
DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "reliability.md"
KEEP_MARKER = "<!-- Sections below are written by other commands"
_DEFAULT_MAX_RETRIES = ModelSpec(name=MODEL_NAME).max_retries
"""Everything from this comment on in docs/reliability.md is kept when the soak rewrites the doc."""


@dataclass(frozen=True)
class SoakSettings:
    """What one soak run does."""

    users: int = 200
    candidates: int = 20
    history: int = 5
    fault_rate: float = 0.30
    seed: int = 7
    concurrency: int = 8
    """Users in flight at once (`graph.abatch(..., {"max_concurrency": n})`)."""
    mar_chunk_size: int = 10
    timeout_s: float = 2.0
    """The client's request timeout; a `slow` fault stalls `timeout_s + 0.5` s."""
    max_retries: int = 1
    """`ModelSpec.max_retries`: the OpenAI client's retries, the only ones (on 408/409/429/5xx,
    timeouts, connection errors), so a call makes at most `max_retries + 1` HTTP attempts."""
    retry_after_s: float = 1.0
    limit_users: int = 24
    """Users of each rate-limit run (fault-free)."""
    server_rps: float = 20.0
    """The fault server's own limit in the rate-limit runs."""
    server_burst: float = 2.0
    limiter_rps: float = 18.0
    """`ModelSpec.requests_per_second` of the limited run (a little under the server's limit)."""

    @classmethod
    def quick(cls) -> "SoakSettings":
        """A few users with short timeouts and backoffs: seconds, for the unit test."""
        return cls(
            users=12,
            candidates=8,
            history=3,
            concurrency=4,
            timeout_s=0.5,
            retry_after_s=0.05,
            limit_users=4,
            server_rps=25.0,
            limiter_rps=22.0,
        )

    @property
    def slow_s(self) -> float:
        return self.timeout_s + 0.5


# --- the batch -------------------------------------------------------------------------------

_ADJECTIVES = ("hydrating", "matte", "glossy", "travel-size", "vegan", "long-lasting", "scented", "gentle")
_PRODUCTS = ("lip balm", "nail polish", "face serum", "hair mask", "eyeliner", "body lotion", "shampoo", "sunscreen")
_BRANDS = ("Lumi", "Verde", "Atelier", "Nordic Skin", "Bloom")


def _item(item_id: str, n: int) -> ItemDict:
    adjective, product = _ADJECTIVES[n % len(_ADJECTIVES)], _PRODUCTS[(n // 3) % len(_PRODUCTS)]
    return {
        "item_id": item_id,
        "title": f"{adjective.capitalize()} {product} no. {n}",
        "brand": _BRANDS[n % len(_BRANDS)],
        "categories": [f"Beauty > {product.title()}"],
        "description": f"A {adjective} {product} that is easy to use every day and lasts.",
    }


def make_requests(settings: SoakSettings, users: int | None = None) -> list[RecInput]:
    """Return one request per user, each with its own candidates (so every MOTE call goes out)."""
    requests: list[RecInput] = []
    for u in range(settings.users if users is None else users):
        history = [_item(f"u{u}-h{j}", u * 7 + j) for j in range(settings.history)]
        candidates = [_item(f"u{u}-c{j}", u * 11 + j) for j in range(settings.candidates)]
        requests.append({"user_id": f"u{u}", "history": history, "candidates": candidates})
    return requests


def soak_context(settings: SoakSettings) -> M3RecContext:
    """Return the run context: every stage calls `MODEL_NAME` (names and settings only, no endpoint)."""
    return M3RecContext(
        models={"mope": MODEL_NAME, "mote": MODEL_NAME, "mar": MODEL_NAME},
        mar_chunk_size=settings.mar_chunk_size,
        seed=settings.seed,
    )


def models_for_server(
    url: str,
    settings: SoakSettings,
    *,
    requests_per_second: float | None = None,
    tokens_per_minute: int | None = None,
    max_inflight_requests: int | None = None,
    key_label: str = "soak",
) -> ChatModelFactory:
    """Return the chat model factory that sends every stage to `url` with these client settings and limits."""
    return endpoint_chat_models(
        url,
        api_key=f"sk-{key_label}-not-a-real-key",
        timeout_s=settings.timeout_s,
        max_retries=settings.max_retries,
        tokenizer_model="gpt-4o",
        requests_per_second=requests_per_second,
        tokens_per_minute=tokens_per_minute,
        max_inflight_requests=max_inflight_requests,
    )


def graph_for_server(url: str, settings: SoakSettings, **limits: Any) -> M3RecGraph:
    """Return the production graph with `models_for_server(url, settings, **limits)` and a fresh trait cache."""
    return build_graph(chat_models=models_for_server(url, settings, **limits), trait_cache=InMemoryTraitCache())


class CallCounter(BaseCallbackHandler):
    """Counts model invocations and the errors they raised, by stage (LangChain callbacks)."""

    run_inline = True

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stage_of: dict[UUID, str] = {}
        self.invocations: Counter[str] = Counter()
        self.provider_errors: Counter[str] = Counter()
        self.error_types: Counter[str] = Counter()
        self.cut_off: Counter[str] = Counter()

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        stage = str((metadata or {}).get("m3rec_stage", "?"))
        with self._lock:
            self._stage_of[run_id] = stage
            self.invocations[stage] += 1

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            stage = self._stage_of.get(run_id, "?")
            if isinstance(error, openai.LengthFinishReasonError):
                self.cut_off[stage] += 1  # an answer (cut off), handled by the re-ask loop
            else:
                self.provider_errors[stage] += 1
                self.error_types[type(error).__name__] += 1


# --- reports ----------------------------------------------------------------------------------


@dataclass
class BatchReport:
    """What happened to one batch."""

    users: int
    candidates: int
    valid_rankings: int
    invalid_rankings: list[str]
    exceptions: list[str]
    """`repr` of every exception that escaped `graph.abatch` (one per failed user)."""
    degraded_users: int
    fallbacks: dict[str, dict[str, int]]
    """stage -> cause (`provider`, `invalid answers`) -> tasks that fell back."""
    tasks: dict[str, int]
    invocations: dict[str, int]
    provider_errors: dict[str, int]
    error_types: dict[str, int]
    cut_off_answers: int
    http_requests: int
    server_counts: dict[str, int]
    graph_tokens: int
    wasted_tokens: int
    wall_s: float
    rps_limit: float | None = None
    over_limit_429: int = 0

    @property
    def total_invocations(self) -> int:
        return sum(self.invocations.values())

    @property
    def total_tasks(self) -> int:
        return sum(self.tasks.values())

    @property
    def total_provider_errors(self) -> int:
        return sum(self.provider_errors.values())

    def fallback_total(self, cause: str | None = None) -> int:
        return sum(n for causes in self.fallbacks.values() for c, n in causes.items() if cause in (None, c))

    @property
    def transport_retries(self) -> int:
        """Requests the OpenAI client repeated by itself (HTTP requests - model invocations)."""
        return self.http_requests - self.total_invocations

    @property
    def undegraded_provider_errors(self) -> int:
        """Provider errors that reached the graph without degrading their task: 0 unless something retried them.

        The stage nodes have no `RetryPolicy`, so every provider error the client
        gives up on sends its task to the fallback."""
        return self.total_provider_errors - self.fallback_total("provider")

    @property
    def answers(self) -> int:
        return self.total_invocations - self.total_provider_errors

    @property
    def rejected_answers(self) -> int:
        """Answers that failed validation: answers - accepted (accepted = tasks - fallbacks)."""
        return self.answers - (self.total_tasks - self.fallback_total())

    @property
    def reasks(self) -> int:
        """Rejected answers followed by a re-ask (the others spent the budget and fell back)."""
        return self.rejected_answers - self.fallback_total("invalid answers")

    @property
    def faults(self) -> dict[str, int]:
        return {kind: self.server_counts.get(kind, 0) for kind in FAULT_KINDS}

    @property
    def faulted_requests(self) -> int:
        return sum(self.faults.values())

    @property
    def ok(self) -> bool:
        return self.valid_rankings == self.users and not self.exceptions


@dataclass
class SoakReport:
    """The fault batch and the two rate-limit runs."""

    settings: SoakSettings
    command: str
    machine: dict[str, str]
    faults: BatchReport
    unlimited: BatchReport
    limited: BatchReport
    finished: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))


def machine_info() -> dict[str, str]:
    """Return the machine and package versions a figure was measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for package in ("langgraph", "langchain-core", "langchain-openai", "openai"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "?"
    return {
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        **versions,
    }


# --- running ----------------------------------------------------------------------------------


def _valid_ranking(out: Any, candidate_ids: list[str]) -> bool:
    if not isinstance(out, dict):
        return False
    ranking = out.get("ranking") or []
    ids = [r.item_id for r in ranking]
    return (
        sorted(ids) == sorted(candidate_ids)
        and [r.rank for r in ranking] == list(range(1, len(candidate_ids) + 1))
        and all(0.0 <= r.score <= 1.0 for r in ranking)
    )


def _cause(reason: str) -> str | None:
    if reason in ("item has no text", "empty history"):
        return None  # nothing was asked: not a fallback after a failed call
    return "provider" if reason.startswith("provider error after retries") else "invalid answers"


async def run_batch(
    server: FaultServer,
    settings: SoakSettings,
    requests: list[RecInput],
    *,
    requests_per_second: float | None = None,
) -> BatchReport:
    """Run `requests` through the production graph against `server` and count what happened."""
    ctx = soak_context(settings)
    graph = graph_for_server(server.url, settings, requests_per_second=requests_per_second)
    counter = CallCounter()
    server.reset()
    started = time.perf_counter()
    outs = await graph.abatch(
        list(requests),
        {"max_concurrency": settings.concurrency, "callbacks": [counter]},
        context=ctx,
        return_exceptions=True,
    )
    wall_s = time.perf_counter() - started

    valid, invalid, exceptions, degraded_users = 0, [], [], 0
    fallbacks: dict[str, Counter[str]] = {stage: Counter() for stage in ("mope", "mote", "mar")}
    graph_tokens = wasted = 0
    for request, out in zip(requests, outs, strict=True):
        if isinstance(out, BaseException):
            exceptions.append(f"{request['user_id']}: {type(out).__name__}: {out}"[:300])
            continue
        if _valid_ranking(out, [c["item_id"] for c in request["candidates"]]):
            valid += 1
        else:
            invalid.append(request["user_id"])
        degraded = out.get("degraded") or []
        degraded_users += bool(degraded)
        for entry in degraded:
            cause = _cause(entry["reason"])
            if cause is not None:
                fallbacks[entry["stage"]][cause] += 1
        usage = out["usage"].total
        graph_tokens += usage.input_tokens + usage.output_tokens
        wasted += usage.wasted_tokens

    chunks = math.ceil(settings.candidates / settings.mar_chunk_size)
    tasks = {
        "mope": sum(1 for r in requests if r["history"]),
        "mote": sum(len(r["candidates"]) for r in requests),
        "mar": len(requests) * chunks,
    }
    counts = server.counts()
    return BatchReport(
        users=len(requests),
        candidates=settings.candidates,
        valid_rankings=valid,
        invalid_rankings=invalid,
        exceptions=exceptions,
        degraded_users=degraded_users,
        fallbacks={stage: dict(c) for stage, c in fallbacks.items()},
        tasks=tasks,
        invocations=dict(counter.invocations),
        provider_errors=dict(counter.provider_errors),
        error_types=dict(counter.error_types),
        cut_off_answers=sum(counter.cut_off.values()),
        http_requests=counts.get("requests", 0),
        server_counts=counts,
        graph_tokens=graph_tokens,
        wasted_tokens=wasted,
        wall_s=wall_s,
        rps_limit=requests_per_second,
        over_limit_429=counts.get("over_limit", 0),
    )


def _load() -> float | None:
    """Return the 1-minute load average (other processes' work included), or `None` where unknown."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


async def run_soak(settings: SoakSettings, command: str = "python -m benchmarks.soak") -> SoakReport:
    """Run the fault batch, then the rate-limit experiment (without and with a client limiter)."""
    load_before = _load()
    fault_config = FaultConfig(
        rates=FaultRates.spread(settings.fault_rate),
        seed=settings.seed,
        retry_after_s=settings.retry_after_s,
        slow_s=settings.slow_s,
    )
    with FaultServer(fault_config) as server:
        faults = await run_batch(server, settings, make_requests(settings))

    limit_requests = make_requests(settings, settings.limit_users)
    limit_config = FaultConfig(
        seed=settings.seed,
        retry_after_s=settings.retry_after_s,
        rate_limit_rps=settings.server_rps,
        rate_limit_burst=settings.server_burst,
    )
    with FaultServer(limit_config) as server:
        unlimited = await run_batch(server, settings, limit_requests)
    with FaultServer(limit_config) as server:
        limited = await run_batch(server, settings, limit_requests, requests_per_second=settings.limiter_rps)
    machine = machine_info()
    load_after = _load()
    if load_before is not None and load_after is not None:
        machine["load"] = (
            f"1-minute load average {load_before:.2f} before the run, {load_after:.2f} after it "
            f"({os.cpu_count()} cores; it counts every process, the soak's own after it)"
        )
    return SoakReport(settings, command, machine, faults, unlimited, limited)


# --- rendering --------------------------------------------------------------------------------


def _pct(part: int | float, whole: int | float) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "n/a"


def _ratio(part: int | float, whole: int | float) -> str:
    return f"{part / whole:.2f}" if whole else "n/a"


INPUT_AND_INJECTION_NOTES = """## Bad input and prompt injection (tests)

These are checked by tests rather than measured: `tests/unit/test_bad_input.py` and
`tests/unit/test_injection.py` (scripted models, and the real `ChatOpenAI` path against the
fault server).

- Refused with `InvalidRequestError` (CLI: one line on stderr, exit code 2), the message on one
  printable line naming the field: an empty or over-long (> 1,000) candidate list, duplicate
  candidate ids, wrong JSON types (`k` must be a JSON integer: `"3"`, `true` and `2.5` are
  refused), unknown fields, text from undecodable bytes (lone surrogates), item ids containing
  line breaks, control or format characters or any of `<>[]`; request files that are not UTF-8 JSON.
- Handled: empty history (MOPE skipped, flagged), a single candidate, 500 candidates (50 listwise
  MAR calls), items without text (neutral traits without a call, flagged), emoji and right-to-left
  text (passed through intact; bidi override characters dropped), a 200,000-character
  description or review (cut to 600 / 400 characters, and dense text to 300 / 200 tiktoken
  tokens, before any prompt; `m3rec_graph.text.item_text.truncations(item)` names the cut fields).
- Hypothesis properties: any JSON value, and any request-shaped value, either parses or raises
  `InvalidRequestError` with a one-line message; rendered item text is one line without data
  tags; MAR's coverage check accepts exactly the permutations of a chunk's ids.
- Injection defences: item text is flattened to one line per item, stripped of control
  characters and of anything resembling a data tag (also spaced, with attributes, fullwidth or
  nested), inside delimited blocks the system prompt declares to be data; ids are validated
  and are the only thing the answer schema is built from (`required` keys, no additional
  properties), so text cannot add ids or change the schema; answers are validated and
  re-asked. A scripted "gullible" MAR that would obey a leaked role line, fake candidate line
  or fake JSON answer ranks injected candidates exactly as the clean ones.
- Secrets: with `OPENAI_API_KEY` set to a marker, the key reaches the provider only in the
  `Authorization` header; it is absent from request bodies, outputs, degraded reasons,
  LangSmith runs (offline recorder) and the CLI's stdout/stderr.
- Injection on the offline default model: measured below (the 135M model scores every candidate alike, so the figure cannot show resistance).
"""


def write_doc(body: str, path: Path) -> None:
    """Write the soak's part of the doc, keeping the sections other commands wrote below `KEEP_MARKER`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    kept = old[old.index(KEEP_MARKER) :] if KEEP_MARKER in old else ""
    path.write_text(body.rstrip() + "\n" + ("\n" + kept if kept else ""), encoding="utf-8")


def render_markdown(report: SoakReport) -> str:
    """Render the report as the body of `docs/reliability.md`."""
    s, f = report.settings, report.faults
    stages = ("mope", "mote", "mar")
    reasks = soak_context(s).max_schema_retries
    lines = [
        "# Reliability: faults, retries, fallbacks and rate limits",
        "",
        f"Measured {report.finished} with `{report.command}` (`benchmarks/soak.py`; "
        "`--quick` runs a small version inside `tests/unit/test_reliability.py`).",
        "",
        "Every stage calls the production `ChatOpenAI` path (`build_graph()` with "
        "`openai_chat_model`, pointed at the server by `endpoint_chat_models`) against "
        "`tests/fault_server.py`, an OpenAI-compatible "
        "server on 127.0.0.1 whose scripted answerer returns schema-valid JSON, except for a "
        "seeded share of requests that get a fault instead. The answerer takes no time, so the "
        "figures measure the client, the graph and the faults, not a model.",
        "",
        "## Machine",
        "",
        *[f"- {key}: {value}" for key, value in report.machine.items()],
        "",
        "## Settings",
        "",
        f"- {s.users} users x {s.candidates} candidates (history {s.history}), each user with "
        f"its own candidates, so every MOTE task calls the model; MAR listwise in chunks of {s.mar_chunk_size}",
        f"- {_pct(s.fault_rate, 1)} of HTTP requests faulted, spread evenly over {len(FAULT_KINDS)} kinds "
        f"(seed {s.seed}); slow answers stall {s.slow_s:g} s",
        f"- retries: the OpenAI client's only, `max_retries={s.max_retries}` (`ModelSpec`'s default is "
        f"{_DEFAULT_MAX_RETRIES}), so at most {s.max_retries + 1} HTTP attempts per stage call (on "
        "408/409/429/5xx, timeouts and connection errors; exponential backoff, honouring `Retry-After`); "
        f"timeout {s.timeout_s:g} s; 429s carry `Retry-After: {s.retry_after_s:g}`",
        f"- graph: no `RetryPolicy` on the stage nodes (a provider error after the client's retries "
        f"degrades its task), {reasks} re-asks per task on invalid answers, {s.concurrency} users in flight "
        f"(`max_concurrency={s.concurrency}`, which LangGraph also applies to the parallel tasks inside each run)",
        "",
        "## Fault batch",
        "",
        "| figure | value |",
        "|---|---|",
        f"| users with a valid ranking (a permutation of their candidates) | {f.valid_rankings} / {f.users} |",
        f"| exceptions that escaped | {len(f.exceptions)} |",
        f"| users with at least one degraded result | {f.degraded_users} ({_pct(f.degraded_users, f.users)}) |",
        f"| wall time | {f.wall_s:.1f} s ({f.http_requests / f.wall_s:.0f} requests/s) |",
        f"| peak requests in flight at the server | {f.server_counts.get('peak_in_flight', 0)} (stalled `slow` answers included) |",
        f"| stage tasks (MOPE + MOTE + MAR chunks) | {f.total_tasks:,} |",
        f"| model invocations by the graph | {f.total_invocations:,} |",
        f"| HTTP requests the server answered | {f.http_requests:,} |",
        f"| faulted requests | {f.faulted_requests:,} ({_pct(f.faulted_requests, f.http_requests)}) |",
        f"| HTTP requests per model invocation (mean; at most {s.max_retries + 1} each) | {_ratio(f.http_requests, f.total_invocations)} |",
        f"| retries by the OpenAI client (requests - invocations) | {f.transport_retries:,} |",
        f"| provider errors that reached the graph (after the client's retries) | {f.total_provider_errors:,} |",
        f"| of them not degrading their task (0 expected: the graph does not retry) | {f.undegraded_provider_errors:,} |",
        f"| answers rejected by validation | {f.rejected_answers:,} (of {f.answers:,} answers; {f.cut_off_answers} cut off at the token limit) |",
        f"| re-asks with the error text | {f.reasks:,} |",
        f"| fallbacks (tasks that degraded) | {f.fallback_total():,} ({_pct(f.fallback_total(), f.total_tasks)} of tasks) |",
        f"| tokens the graph accounted | {f.graph_tokens:,} |",
        f"| wasted tokens (answers that failed validation) | {f.wasted_tokens:,} ({_pct(f.wasted_tokens, f.graph_tokens)}) |",
        f"| tokens of every faulted answer the server sent | {f.server_counts.get('tokens:faulted', 0):,} |",
        "",
        "Faults injected, by kind:",
        "",
        "| kind | requests |",
        "|---|---|",
        *[f"| {kind} | {n} |" for kind, n in f.faults.items()],
        "",
        "Wrong answers, by variant: "
        + ", ".join(
            f"{key.split(':', 1)[1]} {n}" for key, n in sorted(f.server_counts.items()) if key.startswith("variant:")
        )
        + ".",
        "",
        "Provider errors seen by the graph, by type: "
        + (", ".join(f"{name} {n}" for name, n in sorted(f.error_types.items())) or "none")
        + ".",
        "",
        "Fallbacks by stage and cause (tasks; MOPE 1 per user, MOTE 1 per candidate, MAR 1 per chunk):",
        "",
        f"| stage | tasks | invocations | provider errors after the client's retries | invalid answers after {reasks} re-asks |",
        "|---|---|---|---|---|",
        *[
            f"| {st} | {f.tasks[st]:,} | {f.invocations.get(st, 0):,} | {f.fallbacks[st].get('provider', 0)} "
            f"| {f.fallbacks[st].get('invalid answers', 0)} |"
            for st in stages
        ],
        "",
        "A degraded result is flagged in the output's `degraded` list (stage, item id, reason) "
        "and still ranked: MOPE falls back to a keyword-lexicon profile, MOTE to neutral traits "
        "(not cached), MAR to profile-weighted trait overlap.",
        "",
        "## Rate limiting",
        "",
        f"The same fault-free batch of {report.unlimited.users} users x {s.candidates} candidates "
        f"against the server's own limit of {s.server_rps:g} requests/s (token bucket, burst "
        f"{s.server_burst:g}; beyond it 429 with `Retry-After`), without and with "
        f"`ModelSpec(requests_per_second={s.limiter_rps:g})` (langchain-core `InMemoryRateLimiter`, "
        "one per model and endpoint in the process, shared by the three stages here).",
        "",
        "| client limit | HTTP requests | 429s | fallbacks (tasks) | degraded users | valid rankings | peak in flight | wall time |",
        "|---|---|---|---|---|---|---|---|",
        *[
            f"| {'none' if r.rps_limit is None else f'{r.rps_limit:g} requests/s'} | {r.http_requests:,} "
            f"| {r.over_limit_429:,} ({_pct(r.over_limit_429, r.http_requests)}) | {r.fallback_total()} "
            f"| {r.degraded_users} | {r.valid_rankings} / {r.users} | {r.server_counts.get('peak_in_flight', 0)} "
            f"| {r.wall_s:.1f} s |"
            for r in (report.unlimited, report.limited)
        ],
        "",
        "The limiter counts model invocations, not the OpenAI client's own retries, "
        "and it limits requests, not tokens.",
        "",
        INPUT_AND_INJECTION_NOTES,
    ]
    return "\n".join(lines)


def render_text(report: SoakReport) -> str:
    """A short summary for the terminal."""
    f = report.faults
    lines = [
        f"fault batch: {f.valid_rankings}/{f.users} valid rankings, {len(f.exceptions)} exceptions, "
        f"{f.degraded_users} degraded users, {f.wall_s:.1f} s",
        f"  requests {f.http_requests} (faulted {f.faulted_requests}), invocations {f.total_invocations}, "
        f"tasks {f.total_tasks}; client retries {f.transport_retries} (max_retries={report.settings.max_retries}), "
        f"provider errors {f.total_provider_errors} (not degraded {f.undegraded_provider_errors}), "
        f"re-asks {f.reasks}, fallbacks {f.fallback_total()}; wasted tokens {f.wasted_tokens}",
        f"  faults: {f.faults}",
    ]
    for r in (report.unlimited, report.limited):
        lines.append(
            f"rate limit {r.rps_limit or 'none'}: {r.http_requests} requests, {r.over_limit_429} x 429, "
            f"{r.degraded_users} degraded users, {r.wall_s:.1f} s"
        )
    lines.extend(f"  escaped: {e}" for e in f.exceptions[:5])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few users and short timeouts; prints only")
    parser.add_argument("--users", type=int, help="override the number of users of the fault batch")
    args = parser.parse_args(argv)
    for var in ("LANGSMITH_TRACING", "LANGCHAIN_TRACING_V2"):
        os.environ[var] = "false"
    settings = SoakSettings.quick() if args.quick else SoakSettings()
    if args.users:
        settings = replace(settings, users=args.users)
    niceness = os.nice(0) if hasattr(os, "nice") else 0
    command = ("" if niceness <= 0 else f"nice -n {niceness} ") + "python -m benchmarks.soak"
    command += "".join(f" {shlex.quote(a)}" for a in (argv if argv is not None else sys.argv[1:]))
    report = asyncio.run(run_soak(settings, command))
    print(render_text(report))
    if not args.quick:
        write_doc(render_markdown(report), DOC_PATH)
        print(f"wrote {DOC_PATH}")
    return 0 if report.faults.ok and report.limited.ok and report.unlimited.ok else 1


if __name__ == "__main__":
    sys.exit(main())
