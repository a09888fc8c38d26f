"""Client-side provider limits: requests per second, tokens per minute, requests in flight.

A provider limits what arrives from the whole process (in practice the whole
API key), not what one stage or one graph run sends, so every limit here is a
process-wide object shared by the `ModelSpec`s that name the same endpoint (and
model), in every thread and event loop:

| limit | `ModelSpec` field | shared per | what it does |
|---|---|---|---|
| requests | `requests_per_second` | endpoint + model | langchain-core's `InMemoryRateLimiter`, no burst: calls start `1 / rps` apart |
| tokens | `tokens_per_minute` | endpoint + model | `TokenPacer`: a request of n tokens holds the next one back `n / (tpm / 60)` s |
| in flight | `max_inflight_requests` | endpoint | `InflightCap`: at most N requests between "sent" and "answered" |

`RequestLimiter` bundles a spec's three limits. It is a langchain-core
`BaseRateLimiter`, passed to `ChatOpenAI(rate_limiter=...)`, whose
`aacquire()` (called by the chat model before each request) applies the
requests limit. The other two need what `aacquire()` is not told, the size of
the request, and must span the request, so the one place that sends requests
(`models.ainvoke_structured`) wraps each call in `RequestLimiter.request(tokens)`:
first a slot under the in-flight cap, then the token budget, then the chat
model's own `aacquire()`, then the HTTP request.

Why tokens are booked before the request, from an estimate, and never given
back after the answer: a provider admits or refuses a request when it arrives,
from the prompt and `max_tokens` (OpenAI: "usage needs are estimated from this
[max_tokens] value"), before a single token is generated. Debiting the actual
usage after the response would come too late (a batch's first wave of requests
all pass before any answer returns) and too low (answers are shorter than
`max_tokens`), so the provider would still answer 429. The estimate is an upper
bound of what the provider counts (see `request_tokens`).
"""

import asyncio
import contextlib
import json
import math
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from langchain_core.messages import BaseMessage
from langchain_core.rate_limiters import BaseRateLimiter, InMemoryRateLimiter

from m3rec_graph.context import ModelSpec
from m3rec_graph.llm.tokens import count_messages, count_text


def request_tokens(
    messages: Sequence[BaseMessage],
    json_schema: dict[str, Any],
    *,
    tokenizer: str,
    max_tokens: int | None,
) -> int:
    """Return an upper bound of the tokens a provider counts against its TPM limit for one request.

    That is the prompt, the answer schema that travels with it, and the whole
    output budget `max_tokens` (a provider reserves it at admission). The prompt
    is counted as OpenAI bills it (tiktoken, `tokens.count_messages`) but never
    below one token per 4 characters, because OpenAI's limiter estimates a
    request's tokens from its character count.
    """
    schema = json.dumps(json_schema, separators=(",", ":"))
    counted = count_messages(messages, tokenizer) + count_text(schema, tokenizer)
    characters = sum(len(m.text) for m in messages) + len(schema)
    return max(counted, math.ceil(characters / 4)) + (max_tokens or 0)


class TokenPacer:
    """Paces requests to a tokens-per-minute budget, in any thread and event loop.

    Each request books its tokens when it asks; it may start once the tokens of
    the request booked before it have been earned back at `tokens_per_minute / 60`
    per second (the first one, or one after a quiet spell, starts at once). So
    requests start in the order they asked, with no burst: over any W seconds
    the pacer lets through at most `W * tokens_per_minute / 60` tokens plus the
    one request that opens the window, and in the long run exactly the budget.
    This is the token analogue of the requests limiter's `max_bucket_size=1`.

    A booking is not returned if its caller is cancelled while waiting: the
    budget errs on the side of the provider.
    """

    def __init__(
        self, tokens_per_minute: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """Pace to `tokens_per_minute`; `clock` (monotonic seconds) is injectable for tests."""
        if not tokens_per_minute > 0:
            raise ValueError(f"tokens_per_minute must be > 0, got {tokens_per_minute!r}")
        self.tokens_per_minute = tokens_per_minute
        self._per_second = tokens_per_minute / 60.0
        self._clock = clock
        self._lock = threading.Lock()
        self._next_start = -math.inf

    def reserve(self, tokens: int) -> float:
        """Book `tokens` now; return how many seconds the request must wait before it starts."""
        with self._lock:
            now = self._clock()
            start = max(now, self._next_start)
            self._next_start = start + max(tokens, 0) / self._per_second
        return start - now

    async def acquire(self, tokens: int) -> None:
        """Book `tokens` and wait until the request may start."""
        delay = self.reserve(tokens)
        if delay > 0:
            await asyncio.sleep(delay)


class InflightCap:
    """At most `limit` holders at once across every thread and event loop of the process.

    An `asyncio.Semaphore` belongs to one event loop, and the chat models are
    per loop (see `models.openai_chat_model`), so the count lives behind a
    `threading.Lock` and each waiter parks on a future of its own loop. A
    released slot passes straight to the longest waiter (first come, first
    served), woken with `call_soon_threadsafe`; nothing polls.
    """

    def __init__(self, limit: int) -> None:
        """Allow `limit` (>= 1) holders at once."""
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit!r}")
        self.limit = limit
        self._lock = threading.Lock()
        self._held = 0
        self._waiters: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = deque()

    @property
    def held(self) -> int:
        """How many slots are held now."""
        with self._lock:
            return self._held

    async def acquire(self) -> None:
        """Wait for a slot (first come, first served)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._held < self.limit and not self._waiters:
                self._held += 1
                return
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append((loop, waiter))
        try:
            await waiter
        except asyncio.CancelledError:
            with self._lock:
                queued = (loop, waiter) in self._waiters
                if queued:
                    self._waiters.remove((loop, waiter))
            if not queued and waiter.done() and not waiter.cancelled():
                self.release()  # the slot arrived as the task was cancelled: pass it on
            # A cancelled waiter that was already handed a slot gives it back in `_grant`.
            raise

    def release(self) -> None:
        """Give a slot back: to the longest waiter whose loop still runs, else to the pool."""
        with self._lock:
            while self._waiters:
                loop, waiter = self._waiters.popleft()
                try:
                    loop.call_soon_threadsafe(self._grant, waiter)
                except RuntimeError:  # that loop is closed, and its waiter with it
                    continue
                return  # the slot changes hands: `held` stays the same
            self._held -= 1

    def _grant(self, waiter: asyncio.Future[None]) -> None:
        if waiter.done():  # cancelled while the slot was on its way
            self.release()
        else:
            waiter.set_result(None)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a slot for the body of an `async with`."""
        await self.acquire()
        try:
            yield
        finally:
            self.release()


class RequestLimiter(BaseRateLimiter):
    """A model's client-side limits, as the chat model's `rate_limiter` plus a per-request context.

    `acquire`/`aacquire` (what `BaseChatModel` calls before each request) apply
    the requests-per-second limit; `request(tokens)` applies the in-flight cap
    and the tokens-per-minute budget around a call.
    """

    def __init__(
        self,
        *,
        requests: InMemoryRateLimiter | None = None,
        tokens: TokenPacer | None = None,
        inflight: InflightCap | None = None,
    ) -> None:
        """Combine the (shared) limiters of one model; any of them may be absent."""
        self.requests, self.tokens, self.inflight = requests, tokens, inflight

    @property
    def requests_per_second(self) -> float | None:
        """The requests limit, or `None`."""
        return None if self.requests is None else self.requests.requests_per_second

    @property
    def tokens_per_minute(self) -> float | None:
        """The tokens budget, or `None`."""
        return None if self.tokens is None else self.tokens.tokens_per_minute

    @property
    def max_inflight_requests(self) -> int | None:
        """The in-flight cap, or `None`."""
        return None if self.inflight is None else self.inflight.limit

    def acquire(self, *, blocking: bool = True) -> bool:
        """Apply the requests-per-second limit (sync)."""
        return True if self.requests is None else self.requests.acquire(blocking=blocking)

    async def aacquire(self, *, blocking: bool = True) -> bool:
        """Apply the requests-per-second limit (async)."""
        return True if self.requests is None else await self.requests.aacquire(blocking=blocking)

    @contextlib.asynccontextmanager
    async def request(self, tokens: int) -> AsyncIterator[None]:
        """Hold an in-flight slot, then book `tokens`, for the body of an `async with`.

        The slot comes first so that a request paced by the token budget is sent
        when its turn comes, not whenever a slot frees up (which would bunch
        paced requests together).
        """
        async with self.inflight.slot() if self.inflight else contextlib.nullcontext():
            if self.tokens is not None:
                await self.tokens.acquire(tokens)
            yield


_REQUESTS: dict[tuple[str | None, str, float], InMemoryRateLimiter] = {}
_TOKENS: dict[tuple[str | None, str, int], TokenPacer] = {}
_INFLIGHT: dict[tuple[str | None, int], InflightCap] = {}
_LIMITERS: dict[tuple[str | None, str, float | None, int | None, int | None], RequestLimiter] = {}
_LOCK = threading.Lock()


def rate_limiter_for(spec: ModelSpec) -> RequestLimiter | None:
    """Return the process-wide limiter of `spec`'s model and endpoint (`None` when unlimited).

    Specs naming the same endpoint, model and limits get the same limiter, in
    every event loop, whatever their other settings (stages differ in
    `max_tokens` but share the provider's limits). Underneath, the requests and
    tokens limiters are shared per (endpoint, model, limit) and the in-flight cap
    per (endpoint, cap), so the cap also spans the models of one endpoint.
    """
    rps, tpm, cap = spec.requests_per_second, spec.tokens_per_minute, spec.max_inflight_requests
    if rps is None and tpm is None and cap is None:
        return None
    url = spec.base_url
    key = (url, spec.name, None if rps is None else float(rps), tpm, cap)
    with _LOCK:
        limiter = _LIMITERS.get(key)
        if limiter is None:
            limiter = RequestLimiter(
                requests=None if rps is None else _requests_limiter(url, spec.name, float(rps)),
                tokens=None if tpm is None else _token_pacer(url, spec.name, tpm),
                inflight=None if cap is None else _inflight_cap(url, cap),
            )
            _LIMITERS[key] = limiter
        return limiter


# The shared parts, created on first use; called with `_LOCK` held.


def _requests_limiter(url: str | None, model: str, rps: float) -> InMemoryRateLimiter:
    # No burst (`max_bucket_size=1`): calls start at least `1 / rps` apart; it checks
    # often enough not to undercut a high limit.
    key = (url, model, rps)
    if key not in _REQUESTS:
        _REQUESTS[key] = InMemoryRateLimiter(
            requests_per_second=rps, check_every_n_seconds=min(0.1, 0.25 / rps), max_bucket_size=1
        )
    return _REQUESTS[key]


def _token_pacer(url: str | None, model: str, tpm: int) -> TokenPacer:
    key = (url, model, tpm)
    if key not in _TOKENS:
        _TOKENS[key] = TokenPacer(tpm)
    return _TOKENS[key]


def _inflight_cap(url: str | None, cap: int) -> InflightCap:
    key = (url, cap)
    if key not in _INFLIGHT:
        _INFLIGHT[key] = InflightCap(cap)
    return _INFLIGHT[key]
