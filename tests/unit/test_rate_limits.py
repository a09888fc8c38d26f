"""Client-side limits: the tokens-per-minute pacer, the in-flight cap, their configuration, and
a batch against the fault server's own limits (429s without the client limits, none with them).
"""

import asyncio
import random
import threading
import time
from typing import Any, cast

import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI

from benchmarks.rate_limits import Settings, run_all
from m3rec_graph import ModelSpec
from m3rec_graph.errors import ConfigurationError
from m3rec_graph.llm.factory import openai_chat_model
from m3rec_graph.llm.rate_limits import (
    InflightCap,
    RequestLimiter,
    TokenPacer,
    rate_limiter_for,
    request_tokens,
)
from m3rec_graph.llm.tokens import count_messages


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- tokens per minute ---------------------------------------------------------------------------


def admissions(tpm: int, asks: list[tuple[float, int]]) -> list[tuple[float, int]]:
    """Return (start time, tokens) of each request asking at (time, tokens), in order, on a fake clock."""
    clock = FakeClock()
    pacer = TokenPacer(tpm, clock=clock)
    started = []
    for at, tokens in asks:
        clock.now = at
        started.append((at + pacer.reserve(tokens), tokens))
    return started


def most_in_window(started: list[tuple[float, int]], window: float) -> int:
    """The most tokens started within any `window` seconds (windows open at a start)."""
    best = 0
    for i, (opened, _) in enumerate(started):
        best = max(best, sum(n for at, n in started[i:] if at < opened + window))
    return best


@pytest.mark.parametrize("seed", range(5))
def test_the_pacer_never_lets_more_than_the_budget_through(seed: int) -> None:
    rng = random.Random(seed)
    tpm, largest = 60_000, 3_000  # 1,000 tokens a second
    at, asks = 1000.0, []
    for _ in range(400):  # bursts of callers asking at once, then quiet spells
        at += rng.choice([0.0, 0.0, 0.0, 0.01, 0.5, 5.0])
        asks.append((at, rng.randint(1, largest)))
    started = admissions(tpm, asks)

    times = [t for t, _ in started]
    assert times == sorted(times)  # first come, first served
    assert all(t >= asked for t, (asked, _) in zip(times, asks, strict=True))
    # any W seconds: at most W * tpm / 60, plus the one request that opens the window
    for window in (0.5, 1.0, 10.0, 60.0):
        assert most_in_window(started, window) <= window * tpm / 60 + largest
    # a minute never holds more than the budget and one request's worth
    assert most_in_window(started, 60.0) <= tpm + largest


def test_the_pacer_spends_the_whole_budget_when_saturated() -> None:
    tpm = 60_000
    started = admissions(tpm, [(0.0, 500)] * 600)  # 300,000 tokens asked at once
    last_start = started[-1][0]
    assert last_start == pytest.approx((300_000 - 500) / 1_000)  # exactly the budget's pace
    assert started[0][0] == 0.0  # the first one goes at once


def test_a_quiet_spell_does_not_save_up_a_burst() -> None:
    started = admissions(60_000, [(0.0, 1_000), (100.0, 1_000), (100.0, 1_000), (100.0, 1_000)])
    assert [t for t, _ in started] == [0.0, 100.0, 101.0, 102.0]


async def test_request_books_tokens_and_waits_its_turn() -> None:
    limiter = RequestLimiter(tokens=TokenPacer(60_000))  # 1,000 tokens a second
    loop_time = asyncio.get_running_loop().time
    started = loop_time()
    stamps = []

    async def call() -> None:
        async with limiter.request(100):
            stamps.append(loop_time() - started)

    await asyncio.gather(*(call() for _ in range(3)))
    assert stamps[0] < 0.05 and stamps[1] >= 0.09 and stamps[2] >= 0.19


def test_request_tokens_bound_what_a_provider_counts() -> None:
    messages = [
        SystemMessage("You are MOTE, the item encoder."),
        HumanMessage("<item>\n[a1] Lip balm\n</item>"),
    ]
    schema = {"type": "object", "properties": {"traits": {"type": "array"}}}
    tokens = request_tokens(messages, schema, tokenizer="gpt-4o", max_tokens=300)
    assert tokens >= count_messages(messages, "gpt-4o") + 300
    characters = sum(len(m.text) for m in messages)
    assert tokens >= characters / 4 + 300
    assert (
        tokens - request_tokens(messages, {}, tokenizer="gpt-4o", max_tokens=300) > 5
    )  # the schema counts


# --- requests in flight ---------------------------------------------------------------------------


class Meter:
    """Thread-safe count of holders now, and the most at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = self.peak = self.done = 0

    async def hold(self, cap: InflightCap, seconds: float) -> None:
        async with cap.slot():
            with self.lock:
                self.now += 1
                self.peak = max(self.peak, self.now)
            await asyncio.sleep(seconds)
            with self.lock:
                self.now -= 1
                self.done += 1


async def test_the_cap_holds_across_concurrent_tasks() -> None:
    cap, meter = InflightCap(3), Meter()
    await asyncio.gather(*(meter.hold(cap, 0.01) for _ in range(20)))
    assert meter.peak == 3 and meter.done == 20 and cap.held == 0


def test_the_cap_holds_across_two_event_loops_in_two_threads() -> None:
    cap, meter = InflightCap(4), Meter()
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)

        async def batch() -> None:
            await asyncio.gather(*(meter.hold(cap, rng.uniform(0.001, 0.01)) for _ in range(40)))

        try:
            asyncio.run(batch())
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert not any(t.is_alive() for t in threads), "a waiter was never woken"
    assert errors == []
    assert meter.done == 80 and meter.peak == 4 and cap.held == 0


async def test_cancelled_waiters_leak_no_slot() -> None:
    cap = InflightCap(1)
    await cap.acquire()
    waiters = [asyncio.create_task(cap.acquire()) for _ in range(3)]
    await asyncio.sleep(0)
    waiters[0].cancel()  # its future is cancelled at once, though it is still queued
    cap.release()  # the slot goes to that future, whose wake-up passes it on to waiters[1]...
    waiters[1].cancel()  # ...cancelled before it runs too: the slot moves on to waiters[2]
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)
    assert isinstance(results[1], asyncio.CancelledError)
    assert results[2] is None and cap.held == 1  # waiters[2] holds the one slot
    cap.release()
    assert cap.held == 0
    await asyncio.wait_for(cap.acquire(), 1.0)
    cap.release()


# --- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -5, 1.5, True, "100", 1024, 300])
def test_tokens_per_minute_must_be_an_integer_above_max_tokens(bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="tokens_per_minute"):
        ModelSpec(name="m", max_tokens=1024, tokens_per_minute=bad)


@pytest.mark.parametrize("bad", [0, -1, 2.0, True, "8"])
def test_inflight_cap_must_be_a_positive_integer(bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="max_inflight_requests"):
        ModelSpec(name="m", max_inflight_requests=bad)


def test_limits_are_shared_per_endpoint_and_model() -> None:
    url = "http://127.0.0.1:9/v1"
    spec = ModelSpec(
        name="m", base_url=url, api_key="sk-x", tokens_per_minute=90_000, max_inflight_requests=4
    )
    limiter = rate_limiter_for(spec)
    assert limiter is not None and limiter.requests is None
    assert limiter.tokens_per_minute == 90_000 and limiter.max_inflight_requests == 4
    assert (
        rate_limiter_for(
            ModelSpec(
                name="m",
                base_url=url,
                tokens_per_minute=90_000,
                max_inflight_requests=4,
                max_tokens=9,
            )
        )
        is limiter
    )
    other = rate_limiter_for(
        ModelSpec(name="other", base_url=url, tokens_per_minute=90_000, max_inflight_requests=4)
    )
    assert other is not None and other is not limiter
    assert other.inflight is limiter.inflight  # one cap per endpoint, across its models
    assert other.tokens is not limiter.tokens  # one token budget per model
    elsewhere = rate_limiter_for(
        ModelSpec(name="m", base_url="http://127.0.0.1:10/v1", max_inflight_requests=4)
    )
    assert elsewhere is not None and elsewhere.inflight is not limiter.inflight

    async def model_in_a_fresh_loop() -> Any:
        return openai_chat_model(spec)

    first, second = asyncio.run(model_in_a_fresh_loop()), asyncio.run(model_in_a_fresh_loop())
    assert first is not second
    assert cast(ChatOpenAI, first).rate_limiter is limiter is cast(ChatOpenAI, second).rate_limiter


# --- against the fault server's limits ----------------------------------------------------------


async def test_a_batch_gets_429s_without_client_limits_and_none_with_them() -> None:
    settings = Settings.quick()
    started = time.perf_counter()
    unlimited, limited = await run_all(settings)
    provider = settings.providers[0]

    assert (unlimited.name, limited.name) == ("none", "both")
    assert unlimited.too_many > 5 and unlimited.over_tpm > 0
    assert unlimited.transport_retries > 0
    assert limited.too_many == 0 and limited.transport_retries == 0 and limited.node_retries == 0
    assert limited.degraded_tasks == 0 and limited.ok and unlimited.exceptions == []
    assert limited.http_requests == limited.invocations
    assert limited.peak_admitted <= provider.max_in_flight
    assert time.perf_counter() - started < 15
