"""A fault-injecting OpenAI-compatible chat-completions server on 127.0.0.1.

It stands in front of a scripted answerer that returns valid JSON for every
m3rec stage (told apart by the system prompt: "You are MOPE/MOTE/MAR"), built
from the JSON schema the client sends in `response_format`, so the answers
always follow the contract the graph asked for. A configurable, seeded share of
requests is answered with a fault instead:

| kind | what the client receives |
|---|---|
| `malformed_json` | 200, `finish_reason` "stop", text that is not JSON |
| `wrong_answer` | 200, JSON that breaks the contract: an unknown, duplicate or missing id, or an out-of-range score |
| `truncated` | 200, half the answer, `finish_reason` "length" |
| `empty` | 200, empty content |
| `rate_limited` | 429 with `Retry-After` |
| `server_error` | 500 or 503 |
| `slow` | the answer only after `slow_s` (set it past the client's timeout) |
| `dropped` | the connection closes without a response |

Which request gets a fault is drawn from a hash of (seed, request body, how many
times this exact body was seen), so a run is reproducible however requests
interleave: a transport retry of the same body gets a fresh draw, a re-ask (a new
body, carrying the error text) too. Independently, the server has its own
limits, each answered with 429 and `Retry-After` when exceeded, like a provider's:

| setting | limit | counted as |
|---|---|---|
| `rate_limit_rps` | requests per second (token bucket, `rate_limit_burst`) | `over_limit` |
| `rate_limit_tpm` | tokens per minute: prompt + schema + `max_tokens`, booked on arrival (token bucket, `rate_limit_tpm_burst`) | `over_tpm` |
| `max_in_flight` | requests being worked on at once (admitted, not yet answered) | `over_inflight` |

`latency_s` makes every admitted request take that long, as a model would, so
that requests overlap.

By default the server takes any model name (tests use "fault-model") and any
parameter. With `strict=True` it checks every chat-completions request against its
own table of OpenAI's documented rules (`tests/openai_rules.py`, never the package's
registry) before anything else (limits, faults, the key), on the date `today`, and
answers a violation as OpenAI does, `{"error": {"message", "type", "param", "code"}}`
(counted as `strict:<rule>`):

| the request | status | `param` | `code` |
|---|---|---|---|
| an unknown model, or one past its shutdown date on `today` | 404 | null | `model_not_found` |
| `max_tokens` to a reasoning model | 400 | `max_tokens` | `unsupported_parameter` |
| `reasoning_effort` to a non-reasoning model (any value) | 400 | null | null |
| an effort the model does not take on Chat Completions | 400 | `reasoning_effort` | `unsupported_value` |
| `temperature`/`top_p` other than 1 at an effort that forbids them (no `reasoning_effort`: the model's default) | 400 | `temperature`/`top_p` | `unsupported_value` |
| `logprobs`/`top_logprobs` there | 400 | `logprobs`/`top_logprobs` | `unsupported_parameter` |
| a `json_schema` response format to a model without Structured Outputs | 400 | null | null |
| a `strict` schema breaking the strict rules (every object: all properties `required`, `additionalProperties: false`; through `$defs`, `anyOf`, `items`) | 400 | `response_format` / `tools[i].function.parameters` | `invalid_json_schema` / `invalid_function_parameters` |
| function `tools` at an effort that refuses them | 400 | `reasoning_effort` | null |
| POST /v1/responses (the package never uses it) or any other unknown route | 404 | null | null |

A request that passes is answered as in the default mode (faults included), and a
reasoning model first spends `reasoning_tokens[effort]` tokens: `usage` reports them in
`completion_tokens` and `completion_tokens_details.reasoning_tokens` (counted as
`tokens:reasoning`), and when reasoning plus answer exceed `max_completion_tokens`
the answer is cut off as a real model's is: `finish_reason` "length", the content
partial or empty. A prompt that is not an m3rec stage gets an instance of its
schema. GET /v1/models lists the table's models served on `today` with `id`,
`object`, `created`, `owned_by` and `shutdown_date`. In both modes every request is
counted by its path (`path:/v1/chat/completions`, `path:/v1/responses`, ...).

```python
with FaultServer(FaultConfig(rates=FaultRates.spread(0.3), seed=1)) as server:
    spec = ModelSpec(name="fault-model", base_url=server.url, api_key="x", timeout_s=1.0)
    ...
server.counts()   # {"requests": ..., "ok": ..., "malformed_json": ..., "over_limit": ...}

with FaultServer(FaultConfig(strict=True, today="2026-12-03")) as server:
    ...           # "gpt-6-luna" at reasoning_effort "none" with temperature 0: 200
```
"""

import calendar
import hashlib
import json
import re
import socket
import sys
import threading
import time
import zlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from tests import openai_rules
from tests.loopback import LoopbackServer
from tests.openai_rules import EFFORTS, ModelRule

FAULT_KINDS: tuple[str, ...] = (
    "malformed_json",
    "wrong_answer",
    "truncated",
    "empty",
    "rate_limited",
    "server_error",
    "slow",
    "dropped",
)
"""Every fault kind, in the order `FaultRates` lists them."""

DEFAULT_REASONING_TOKENS: dict[str, int] = {
    "none": 0,
    "minimal": 64,
    "low": 256,
    "medium": 1024,
    "high": 4096,
    "xhigh": 8192,
    "max": 16384,
}
"""Strict mode: what a reasoning model spends thinking at each effort, unless configured."""

STAGE_MARKERS = {"You are MOPE": "mope", "You are MOTE": "mote", "You are MAR": "mar"}
_ID_LINE = re.compile(r"^\[([^\]]+)\]", flags=re.MULTILINE)


@dataclass(frozen=True)
class FaultRates:
    """The share of requests answered with each fault (their sum is the faulted share)."""

    malformed_json: float = 0.0
    wrong_answer: float = 0.0
    truncated: float = 0.0
    empty: float = 0.0
    rate_limited: float = 0.0
    server_error: float = 0.0
    slow: float = 0.0
    dropped: float = 0.0

    def __post_init__(self) -> None:
        if any(getattr(self, kind) < 0 for kind in FAULT_KINDS) or self.total > 1.0 + 1e-9:
            raise ValueError(f"fault rates must be >= 0 and sum to at most 1: {self}")

    @property
    def total(self) -> float:
        """The share of requests that get some fault."""
        return float(sum(getattr(self, kind) for kind in FAULT_KINDS))

    @classmethod
    def spread(cls, total: float, kinds: tuple[str, ...] = FAULT_KINDS) -> "FaultRates":
        """Return `total` split evenly over `kinds`."""
        unknown = set(kinds) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds: {sorted(unknown)}")
        return cls(**{kind: total / len(kinds) for kind in kinds})

    @classmethod
    def only(cls, kind: str, rate: float = 1.0) -> "FaultRates":
        """Return `rate` of one fault kind and nothing else."""
        return cls.spread(rate, (kind,))


@dataclass(frozen=True)
class FaultConfig:
    """How the server misbehaves."""

    rates: FaultRates = field(default_factory=FaultRates)
    seed: int = 0
    retry_after_s: float = 1.0
    """The `Retry-After` of a 429 (fractional seconds are sent as is; the OpenAI client honours them)."""
    slow_s: float = 2.0
    """How long a `slow` fault stalls before answering: set it past the client's timeout."""
    rate_limit_rps: float | None = None
    """The server's own limit: requests per second beyond it get 429 (`over_limit`)."""
    rate_limit_burst: float = 1.0
    """How many requests the limit lets through at once after a quiet spell."""
    record_bodies: bool = False
    """Keep every request body (for tests that inspect prompts and schemas)."""
    variant: int | None = None
    """Pick this variant of a malformed or wrong answer (and 500 vs 503) instead of a seeded one."""
    required_key: str | None = None
    """Answer 401 (echoing the key masked, as OpenAI does) unless the bearer token is this."""
    delay_s: float = 0.0
    """Hold every chat-completions request this long before answering (0: answer at once),
    so a client process can be killed while a batch is in the middle."""
    rate_limit_tpm: float | None = None
    """The server's tokens-per-minute limit. A request costs its prompt tokens (as its
    `usage` reports them), its answer schema (`response_format` or `tools`, 4 characters
    a token) and its `max_tokens`, booked when it arrives (a provider admits a request
    before generating anything); beyond the budget: 429 (`over_tpm`)."""
    rate_limit_tpm_burst: float | None = None
    """How many tokens the TPM bucket holds after a quiet spell (`None`: 10 seconds' worth).
    A request costing more than this is never admitted."""
    max_in_flight: int | None = None
    """How many admitted requests the server works on at once; one more gets 429 (`over_inflight`)."""
    latency_s: float = 0.0
    """How long every admitted request takes before its answer (or fault) goes out."""
    strict: bool = False
    """Check every request against OpenAI's documented Chat Completions rules
    (`tests/openai_rules.py`) before anything else, and answer a violation with OpenAI's
    error; report reasoning tokens; GET /v1/models lists the models served on `today`."""
    today: str = "2026-12-03"
    """The server's date (YYYY-MM-DD) for model lifecycles in strict mode: a model is gone
    from its shutdown date on. Fixed, never the wall clock (tests pin their own)."""
    reasoning_tokens: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_REASONING_TOKENS))
    """Strict mode: the tokens a reasoning model spends thinking at each effort before the
    answer (an effort missing here takes its `DEFAULT_REASONING_TOKENS`)."""

    def __post_init__(self) -> None:
        date.fromisoformat(self.today)  # raises on anything but YYYY-MM-DD
        unknown = set(self.reasoning_tokens) - set(EFFORTS)
        if unknown or any(n < 0 for n in self.reasoning_tokens.values()):
            raise ValueError(f"reasoning_tokens takes efforts {EFFORTS} and counts >= 0: {dict(self.reasoning_tokens)}")

    def reasoning_budget(self, effort: str | None) -> int:
        """Return the reasoning tokens spent at `effort` (`None`, a non-reasoning model: 0)."""
        if effort is None:
            return 0
        return int(self.reasoning_tokens.get(effort, DEFAULT_REASONING_TOKENS.get(effort, 0)))


# --- the scripted answerer ----------------------------------------------------------------


def stage_of(prompt: str) -> str | None:
    """Return the m3rec stage a prompt belongs to, or `None` if it is not an m3rec prompt."""
    for marker, stage in STAGE_MARKERS.items():
        if marker in prompt:
            return stage
    return None


def last_block(prompt: str, tag: str) -> str:
    """Return the text of the last `<tag>...</tag>` block (the system message names the tags too)."""
    if f"<{tag}>" not in prompt:
        return ""
    return prompt.rsplit(f"<{tag}>", 1)[1].split(f"</{tag}>", 1)[0]


def candidate_ids(prompt: str) -> list[str]:
    """Return the `[id]` lines of the last `<candidates>` block, in the order shown."""
    return _ID_LINE.findall(last_block(prompt, "candidates"))


def score_of(item_id: str) -> int:
    """Return a deterministic, id-dependent MAR score in 0-10 (so rankings are not all ties)."""
    return zlib.crc32(item_id.encode("utf-8")) % 11


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        ref = schema["$ref"]
        if not isinstance(ref, str) or not ref.startswith("#/"):
            raise ValueError(f"unsupported $ref {ref!r}")
        node: Any = root
        for part in ref[2:].split("/"):
            node = node[part]
        schema = node
    if "anyOf" in schema:  # Optional[...] and friends: take the first branch
        return _resolve(schema["anyOf"][0], root)
    if "allOf" in schema and len(schema["allOf"]) == 1:
        return _resolve(schema["allOf"][0], root)
    return schema


def instance_of(
    schema: dict[str, Any], root: dict[str, Any] | None = None, path: tuple[str, ...] = ()
) -> Any:
    """Return a value that validates against `schema` (the subset pydantic emits).

    Integers take the middle of their range, except MAR scores (`score` under an
    id, or at the top of a pointwise answer), which come from `score_of`.
    Objects carry every required property; arrays hold `minItems` values (at
    least one when an `enum` gives something meaningful to pick).
    """
    root = schema if root is None else root
    schema = _resolve(schema, root)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        props: dict[str, Any] = schema.get("properties", {})
        required = schema.get("required", list(props))
        return {key: instance_of(props[key], root, (*path, key)) for key in required}
    if kind == "array":
        items = _resolve(schema.get("items", {}), root)
        low = int(schema.get("minItems", 0))
        high = int(schema.get("maxItems", max(low, 3)))
        if "enum" in items:
            options = items["enum"]
            count = min(max(low, 1), high, len(options))
            return list(options[:count]) if count >= low else [options[0]] * low
        return [
            instance_of(items, root, (*path, str(n))) if items.get("type") != "string" else f"phrase {n + 1}"
            for n in range(max(low, 0))
        ]
    if kind == "integer":
        low = int(schema.get("minimum", 0))
        high = int(schema.get("maximum", low + 10))
        if path and path[-1] == "score":
            item = path[-2] if len(path) >= 2 else "pointwise"
            return min(high, max(low, score_of(item)))
        return (low + high) // 2
    if kind == "number":
        return float(schema.get("minimum", 0.0))
    if kind == "boolean":
        return True
    if kind == "string":
        text = "fits the shopper's motivations"
        max_length = schema.get("maxLength")
        return text[: int(max_length)] if max_length else text
    return None


def valid_answer(stage: str, prompt: str, schema: dict[str, Any]) -> dict[str, Any]:
    """Return a valid answer for `stage`: the schema's instance, with MAR scores keyed by the shown ids.

    For a listwise MAR prompt the ids are the `[id]` lines of the last
    `<candidates>` block; they must be exactly the schema's required `scores`
    keys (the graph builds the schema from the same ids), or the prompt and the
    contract disagree and this raises.
    """
    answer = instance_of(schema)
    if not isinstance(answer, dict):
        raise ValueError(f"the {stage} schema does not describe an object")
    if stage == "mar" and isinstance(answer.get("scores"), dict):
        shown = candidate_ids(prompt)
        if sorted(shown) != sorted(answer["scores"]):
            raise ValueError(f"MAR prompt ids {shown} differ from the schema's {sorted(answer['scores'])}")
        answer["scores"] = {item_id: answer["scores"][item_id] for item_id in shown}
    return answer


def wrong_answer(stage: str, answer: dict[str, Any], draw: int) -> tuple[str, str]:
    """Return (variant, JSON text) of an answer that is valid JSON but breaks the contract."""
    if stage == "mar" and isinstance(answer.get("scores"), dict):
        scores: dict[str, Any] = dict(answer["scores"])
        ids = list(scores)
        variant = ("unknown_id", "duplicate_id", "missing_id", "score_out_of_range")[draw % 4]
        if variant == "unknown_id":
            scores["zz-not-a-candidate"] = scores[ids[0]]
        elif variant == "missing_id":
            scores.pop(ids[-1])
        elif variant == "score_out_of_range":
            scores[ids[0]] = {**scores[ids[0]], "score": 42}
        else:  # a repeated key is legal JSON text; only the raw answer shows it
            entries = [f"{json.dumps(i)}: {json.dumps(v)}" for i, v in scores.items()]
            entries.append(f"{json.dumps(ids[0])}: {json.dumps(scores[ids[0]])}")
            return variant, '{"scores": {' + ", ".join(entries) + "}}"
        return variant, json.dumps({**answer, "scores": scores})
    if stage == "mar":  # pointwise
        return "score_out_of_range", json.dumps({**answer, "score": 11})
    if stage == "mope":
        variant = ("unknown_evidence_id", "strength_out_of_range", "missing_dimension")[draw % 3]
        broken = json.loads(json.dumps(answer))
        if variant == "unknown_evidence_id":
            broken["value"]["evidence"] = ["zz-not-in-history"]
        elif variant == "strength_out_of_range":
            broken["quality"]["strength"] = 17
        else:
            broken.pop("social", None)
        return variant, json.dumps(broken)
    variant = ("strength_out_of_range", "missing_traits")[draw % 2]
    broken = json.loads(json.dumps(answer))
    if variant == "strength_out_of_range" and isinstance(broken.get("strengths"), dict):
        broken["strengths"]["value"] = -3
    else:
        broken.pop("traits", None)
    return variant, json.dumps(broken)


def malformed_json(text: str, draw: int) -> str:
    """Return text that is not JSON (but looks like what a sloppy model says)."""
    variants = (
        "Sure! Here is the JSON you asked for:\n" + text,
        text.replace('"', "'"),
        text[: max(1, len(text) // 3)],
        text + "\n}",
    )
    return variants[draw % len(variants)]


# --- the server -----------------------------------------------------------------------------


class _TokenBucket:
    """One of the server's own limits: `rate` units per second, at most `burst` at once."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, max(1.0, burst)
        self.tokens, self.last = self.burst, time.monotonic()

    def take(self, amount: float = 1.0) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= amount:
            self.tokens -= amount
            return True
        return False


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def __init__(self, owner: "FaultServer") -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.owner = owner

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (timeout, cancelled run) is expected; anything else is printed."""
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    admitted = False
    """The request being handled passed the server's limits and counts as working."""

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""

    def do_GET(self) -> None:
        """Answer `/v1/models` (some clients probe it); anything else is unknown."""
        owner = self.server.owner
        path = owner.count_path(self.path)
        if owner.config.strict:
            status, payload = owner.strict_get(path)
            self._send(status, payload)
        elif path.rstrip("/").endswith("/models"):
            self._send(200, {"object": "list", "data": [{"id": "fault-model", "object": "model"}]})
        else:
            self._send(404, {"error": {"message": "not found", "type": "invalid_request_error"}})

    def do_POST(self) -> None:
        """Answer a chat completion, or misbehave."""
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        owner = self.server.owner
        path = owner.count_path(self.path)
        if not path.rstrip("/").endswith("/chat/completions"):
            if owner.config.strict:  # /v1/responses included: the package never calls it
                status, payload = owner.refusal("invalid_url", method="POST", path=path)
                self._send(status, payload)
            else:
                self._send(404, {"error": {"message": "not found", "type": "invalid_request_error"}})
            return
        owner.handle(self, body)

    def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.server.owner.finish_work(self)  # the answer is ready: the server is done with it
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True  # the client gave up (a `slow` fault): nothing to do

    def _drop(self) -> None:
        self.server.owner.finish_work(self)
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class FaultServer(LoopbackServer):
    """The fault-injecting server (start/stop, or use as a context manager)."""

    def __init__(self, config: FaultConfig | None = None) -> None:
        super().__init__()
        self.config = config or FaultConfig()
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._seen: Counter[str] = Counter()
        self._bodies: list[dict[str, Any]] = []
        self._authorizations: Counter[str] = Counter()
        self._in_flight = 0
        self._working = 0
        self._bucket = (
            _TokenBucket(self.config.rate_limit_rps, self.config.rate_limit_burst)
            if self.config.rate_limit_rps
            else None
        )
        tpm = self.config.rate_limit_tpm
        self._tpm_bucket = (
            _TokenBucket(tpm / 60.0, self.config.rate_limit_tpm_burst or tpm / 6.0) if tpm else None
        )
        self._stopping = threading.Event()

    thread_name = "fault-server"

    def _make_server(self) -> _Server:
        self._stopping.clear()
        return _Server(self)

    def _on_stop(self) -> None:
        self._stopping.set()  # release stalled `slow` answers

    @property
    def url(self) -> str:
        """The base URL for `ModelSpec(base_url=...)` (OpenAI style, ending in `/v1`)."""
        return f"{self.root_url}/v1"

    # --- what happened -------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Return the counters: `requests`, `ok`, each fault kind, `over_limit`, `over_tpm`,
        `over_inflight`, `stage:<name>`, `variant:<wrong answer kind>`, `status:<code>`,
        `path:<request path>` (every request, any method), `strict:<rule>` (strict-mode
        refusals, by `openai_rules.ERRORS` name), `tokens:*` (`tokens:booked`: what the TPM
        limit counted of the admitted requests; `tokens:reasoning`: strict mode's reasoning
        tokens, also inside `tokens:completion`), `peak_in_flight` (every request) and
        `peak_admitted` (past the limits)."""
        with self._lock:
            return dict(self._counts)

    def faults(self) -> dict[str, int]:
        """Return how many requests got each fault kind (zeros included)."""
        counts = self.counts()
        return {kind: counts.get(kind, 0) for kind in FAULT_KINDS}

    def bodies(self) -> list[dict[str, Any]]:
        """Return the recorded request bodies (with `record_bodies=True`)."""
        with self._lock:
            return list(self._bodies)

    def authorizations(self) -> dict[str, int]:
        """Return how often each `Authorization` header value arrived (with `record_bodies=True`)."""
        with self._lock:
            return dict(self._authorizations)

    def reset(self) -> None:
        """Forget counts, bodies and headers (the fault draws continue)."""
        with self._lock:
            self._counts.clear()
            self._bodies.clear()
            self._authorizations.clear()

    # --- answering -----------------------------------------------------------------------

    def _count(self, *keys: str, tokens: dict[str, int] | None = None) -> None:
        with self._lock:
            for key in keys:
                self._counts[key] += 1
            for key, value in (tokens or {}).items():
                self._counts[f"tokens:{key}"] += value

    def count_path(self, raw_path: str) -> str:
        """Count a request by its path (without the query) and return the path."""
        path = urlsplit(raw_path).path
        self._count(f"path:{path}")
        return path

    def refusal(self, rule: str, **values: Any) -> tuple[int, dict[str, Any]]:
        """Count a strict-mode refusal and return its (status, OpenAI error body)."""
        status, payload = openai_error(rule, **values)
        self._count(f"strict:{rule}", f"status:{status}")
        return status, payload

    def strict_get(self, path: str) -> tuple[int, dict[str, Any]]:
        """Answer a strict-mode GET: the model list (or one model) as of `today`, else an unknown URL."""
        today = self.config.today
        trimmed = path.rstrip("/")
        if trimmed.endswith("/models"):
            self._count("status:200")
            return 200, {"object": "list", "data": [model_object(r) for r in openai_rules.served_models(today)]}
        if "/models/" in trimmed:
            model = trimmed.rsplit("/models/", 1)[1]
            rule = openai_rules.rule_for(model)
            if rule is None or not openai_rules.served(rule, today):
                return self.refusal("model_not_found", model=model)
            self._count("status:200")
            return 200, model_object(rule)
        return self.refusal("invalid_url", method="GET", path=path)

    def _draw(self, body: bytes) -> tuple[str | None, int]:
        """Return the fault kind for this request (or `None`) and a number for picking variants."""
        digest = hashlib.sha256(body).hexdigest()
        with self._lock:
            self._seen[digest] += 1
            occurrence = self._seen[digest]
        roll = hashlib.sha256(f"{self.config.seed}:{digest}:{occurrence}".encode()).digest()
        uniform = int.from_bytes(roll[:8], "big") / 2**64
        draw = int.from_bytes(roll[8:12], "big")
        edge = 0.0
        for kind in FAULT_KINDS:
            edge += getattr(self.config.rates, kind)
            if uniform < edge:
                return kind, draw
        return None, draw

    def _admit(self, handler: _Handler, tokens: int) -> str | None:
        """Admit a request costing `tokens` (it then counts as working), or name the limit it hits."""
        config = self.config
        with self._lock:
            if config.max_in_flight is not None and self._working >= config.max_in_flight:
                return "over_inflight"
            if self._bucket is not None and not self._bucket.take():
                return "over_limit"
            if self._tpm_bucket is not None and not self._tpm_bucket.take(tokens):
                return "over_tpm"
            self._working += 1
            handler.admitted = True
            self._counts["tokens:booked"] += tokens
            self._counts["peak_admitted"] = max(self._counts["peak_admitted"], self._working)
            return None

    def finish_work(self, handler: _Handler) -> None:
        """Stop counting `handler`'s request as working (before its answer goes out; idempotent).

        Released before the response is written, so a client that holds a slot
        until it has read the answer never sees the server still counting it.
        """
        with self._lock:
            if handler.admitted:
                handler.admitted = False
                self._working -= 1

    def handle(self, handler: _Handler, body: bytes) -> None:
        """Answer one chat-completions request (and track how many are in flight at once)."""
        with self._lock:
            self._in_flight += 1
            self._counts["peak_in_flight"] = max(self._counts["peak_in_flight"], self._in_flight)
        try:
            self._handle(handler, body)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _handle(self, handler: _Handler, body: bytes) -> None:
        try:
            request = json.loads(body)
            messages = request["messages"]
            prompt = "\n".join(str(m.get("content") or "") for m in messages)
        except (ValueError, KeyError, TypeError, AttributeError):
            self._count("requests", "status:400")
            handler._send(400, {"error": {"message": "unreadable request body", "type": "invalid_request_error"}})
            return
        stage = stage_of(prompt)
        self._count("requests", f"stage:{stage}")
        if self.config.record_bodies:
            with self._lock:
                self._bodies.append(request)
                self._authorizations[handler.headers.get("Authorization", "")] += 1
        if self.config.strict:  # OpenAI validates the request before anything else
            refused = strict_violation(request, self.config.today)
            if refused is not None:
                rule, values = refused
                handler._send(*self.refusal(rule, **values))
                return
        if self.config.delay_s > 0:  # counted (and recorded) on arrival, answered after the delay
            self._stopping.wait(self.config.delay_s)
        max_tokens = int(request.get("max_tokens") or request.get("max_completion_tokens") or 1024)
        prompt_tokens = len(prompt) // 4 + 3 * len(messages)
        limit = self._admit(handler, prompt_tokens + _schema_tokens(request) + max_tokens)
        if limit is not None:
            self._count(limit, "status:429")
            kind = "tokens" if limit == "over_tpm" else "requests"
            handler._send(
                429,
                {"error": {"message": f"rate limit: too many {kind}", "type": kind, "code": "rate_limit_exceeded"}},
                {"Retry-After": f"{self.config.retry_after_s:g}"},
            )
            return
        try:
            if self.config.latency_s > 0:
                self._stopping.wait(self.config.latency_s)
            self._answer(handler, body, request, stage, prompt, prompt_tokens, max_tokens)
        finally:
            self.finish_work(handler)

    def _answer(
        self,
        handler: _Handler,
        body: bytes,
        request: dict[str, Any],
        stage: str | None,
        prompt: str,
        prompt_tokens: int,
        max_tokens: int,
    ) -> None:
        """Answer an admitted request: 401 without the key, else the scripted answer or its fault."""
        retry_after = {"Retry-After": f"{self.config.retry_after_s:g}"}
        bearer = handler.headers.get("Authorization", "").removeprefix("Bearer ")
        if self.config.required_key is not None and bearer != self.config.required_key:
            self._count("status:401")
            masked = f"{bearer[:3]}{'*' * 8}{bearer[-4:]}" if len(bearer) > 8 else "***"
            handler._send(
                401,
                {"error": {"message": f"Incorrect API key provided: {masked}.", "type": "invalid_request_error", "code": "invalid_api_key"}},
            )
            return
        strict = self.config.strict
        if stage is None and not strict:
            self._count("status:400")
            handler._send(400, {"error": {"message": "not an m3rec prompt", "type": "invalid_request_error"}})
            return
        fault, draw = self._draw(body)
        if self.config.variant is not None:
            draw = self.config.variant
        schema = _response_schema(request)
        try:
            if stage is None:  # strict mode answers any prompt: its schema's instance
                generic = instance_of(schema)
                answer = generic if isinstance(generic, dict) else {}
            else:
                answer = valid_answer(stage, prompt, schema)
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            self._count("status:400", "answerer_error")
            handler._send(400, {"error": {"message": f"scripted answerer: {exc}", "type": "invalid_request_error"}})
            return
        text = json.dumps(answer)
        finish_reason = "stop"

        if fault == "rate_limited":
            self._count(fault, "status:429")
            handler._send(
                429,
                {"error": {"message": "Rate limit reached (injected)", "type": "requests", "code": "rate_limit_exceeded"}},
                retry_after,
            )
            return
        if fault == "server_error":
            status = (500, 503)[draw % 2]
            self._count(fault, f"status:{status}")
            handler._send(status, {"error": {"message": "The server had an error (injected)", "type": "server_error"}})
            return
        if fault == "dropped":
            self._count(fault)
            handler._drop()
            return
        if fault == "slow":
            self._count(fault)
            self._stopping.wait(self.config.slow_s)
        elif fault == "malformed_json":
            text = malformed_json(text, draw)
        elif fault == "wrong_answer":
            variant, text = wrong_answer(stage or "generic", answer, draw)
            self._count(f"variant:{variant}")
        elif fault == "truncated":
            text, finish_reason = text[: len(text) // 2], "length"
        elif fault == "empty":
            text = ""
        if fault is not None and fault != "slow":
            self._count(fault)
        reasoning_tokens = 0
        if strict:  # a reasoning model thinks first; what is left of the budget is the answer's
            reasoning_tokens = self.config.reasoning_budget(effective_effort(request))
            text, finish_reason, answer_tokens, reasoning_tokens = spend_budget(
                text, finish_reason, reasoning_tokens, completion_limit(request)
            )
            completion_tokens = reasoning_tokens + answer_tokens
        else:
            completion_tokens = max_tokens if finish_reason == "length" else len(text) // 4 + 1
        self._count(
            "ok" if fault is None else "answered_with_fault",
            "status:200",
            tokens={
                "prompt": prompt_tokens,
                "completion": completion_tokens,
                **({"reasoning": reasoning_tokens} if strict else {}),
                **({"faulted": prompt_tokens + completion_tokens} if fault else {}),
            },
        )
        message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
        tool = _forced_tool(request)
        if tool is not None:  # function calling: the answer is the forced call's arguments
            message = {
                "role": "assistant",
                "content": None,
                "refusal": None,
                "tool_calls": [
                    {"id": f"call_fault_{draw}", "type": "function", "function": {"name": tool, "arguments": text}}
                ],
            }
            finish_reason = "tool_calls" if finish_reason == "stop" else finish_reason
        handler._send(
            200,
            {
                "id": f"chatcmpl-fault-{draw}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": str(request.get("model", "fault-model")),
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "finish_reason": finish_reason,
                        "logprobs": None,
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                    **(
                        {"completion_tokens_details": {"reasoning_tokens": reasoning_tokens}}
                        if strict
                        else {}
                    ),
                },
            },
        )


# --- strict mode: OpenAI's rules (the table is tests/openai_rules.py) ------------------------

SchemaPath = tuple[str | int, ...]


def openai_error(rule: str, **values: Any) -> tuple[int, dict[str, Any]]:
    """Return (status, body) of the refusal `rule` (an `openai_rules.ERRORS` name), filled with `values`."""
    error = openai_rules.ERRORS[rule]
    param = error.param.format(**values) if error.param is not None else None
    return error.status, {
        "error": {"message": error.message.format(**values), "type": error.type, "param": param, "code": error.code}
    }


def model_object(rule: ModelRule) -> dict[str, Any]:
    """Return a model as GET /v1/models lists it (`created` from the row's approximate release date)."""
    created = calendar.timegm(date.fromisoformat(rule.released).timetuple())
    return {
        "id": rule.model,
        "object": "model",
        "created": created,
        "owned_by": "system",
        "shutdown_date": rule.shutdown_date,
    }


def effective_effort(request: dict[str, Any]) -> str | None:
    """Return the effort a request runs at: its `reasoning_effort`, else the model's default
    (`None`: not a reasoning model, or a model the table does not know)."""
    rule = openai_rules.rule_for(str(request.get("model", "")))
    if rule is None or not rule.reasoning:
        return None
    asked = request.get("reasoning_effort")
    return str(asked) if asked is not None else rule.default_effort


def completion_limit(request: dict[str, Any]) -> int | None:
    """Return the request's output budget (`max_completion_tokens`, or a legacy `max_tokens`), if any."""
    limit = request.get("max_completion_tokens")
    if limit is None:
        limit = request.get("max_tokens")
    return int(limit) if limit is not None else None


def spend_budget(text: str, finish_reason: str, reasoning: int, limit: int | None) -> tuple[str, str, int, int]:
    """Return (text, finish_reason, answer tokens, reasoning tokens) once reasoning has spent its share.

    The answer costs `len(text) // 4 + 1` tokens (nothing when empty). When reasoning
    plus answer exceed `limit` the answer is cut where the budget ends, as a real
    reasoning model's is: `finish_reason` "length", the content partial, or empty when
    reasoning took everything.
    """
    answer = len(text) // 4 + 1 if text else 0
    if limit is None or reasoning + answer <= limit:
        return text, finish_reason, answer, reasoning
    reasoning = min(reasoning, limit)
    left = limit - reasoning
    return text[: max(0, left - 1) * 4], "length", left, reasoning


def strict_schema_problem(schema: Any, path: SchemaPath = ()) -> tuple[SchemaPath, str] | None:
    """Return (where, what) of the first break of OpenAI's strict-schema rules, or `None`.

    Every object (a `type` "object", or `properties`) must set `additionalProperties:
    false` and list every property in `required`; checked recursively through
    `properties`, `items`, `anyOf`, `$defs` and `definitions`.
    """
    if not isinstance(schema, dict):
        return None
    kind = schema.get("type")
    is_object = kind == "object" or (isinstance(kind, list) and "object" in kind) or "properties" in schema
    raw_properties = schema.get("properties")
    properties: dict[str, Any] = raw_properties if isinstance(raw_properties, dict) else {}
    problems = openai_rules.STRICT_SCHEMA_PROBLEMS
    if is_object:
        if schema.get("additionalProperties") is not False:
            return path, problems["additionalProperties"]
        required = schema.get("required")
        listed = set(required) if isinstance(required, list) else set()
        missing = [key for key in properties if key not in listed]
        if missing:
            return path, problems["required"].format(key=missing[0])
    for key, sub in properties.items():
        found = strict_schema_problem(sub, (*path, "properties", key))
        if found:
            return found
    if isinstance(schema.get("items"), dict):
        found = strict_schema_problem(schema["items"], (*path, "items"))
        if found:
            return found
    for index, sub in enumerate(schema.get("anyOf") or []):
        found = strict_schema_problem(sub, (*path, "anyOf", index))
        if found:
            return found
    for defs in ("$defs", "definitions"):
        for name, sub in (schema.get(defs) or {}).items():
            found = strict_schema_problem(sub, (*path, defs, name))
            if found:
                return found
    return None


def strict_violation(request: dict[str, Any], today: str) -> tuple[str, dict[str, Any]] | None:
    """Return (rule, values) of the first OpenAI rule `request` breaks on `today`, or `None`.

    Checked in this order: the model (known, still served), `max_tokens`, the effort,
    sampling controls at that effort, the response format, the function tools.
    """
    model = str(request.get("model", ""))
    rule = openai_rules.rule_for(model)
    if rule is None or not openai_rules.served(rule, today):
        return "model_not_found", {"model": model}
    if rule.reasoning and request.get("max_tokens") is not None:
        return "max_tokens", {}
    asked = request.get("reasoning_effort")
    if asked is not None:
        if not rule.reasoning:
            return "reasoning_effort_unrecognized", {}
        if asked not in rule.efforts:
            supported = openai_rules.supported_values(rule.efforts)
            return "reasoning_effort_value", {"value": asked, "model": model, "supported": supported}
    effort = (str(asked) if asked is not None else rule.default_effort) if rule.reasoning else None
    if rule.sampling_efforts is not None and effort not in rule.sampling_efforts:
        for param in ("temperature", "top_p"):
            value = request.get(param)
            if value is not None and value != 1:
                return "sampling_value", {"param": param, "value": json.dumps(value)}
        if request.get("logprobs"):
            return "sampling_parameter", {"param": "logprobs"}
        if request.get("top_logprobs") is not None:
            return "sampling_parameter", {"param": "top_logprobs"}
    response_format = request.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        if not rule.structured_outputs:
            return "json_schema_unsupported", {}
        spec = response_format.get("json_schema") or {}
        if isinstance(spec, dict) and spec.get("strict") is True:
            found = strict_schema_problem(spec.get("schema"))
            if found:
                where, problem = found
                return "invalid_json_schema", {"name": spec.get("name", ""), "context": repr(where), "problem": problem}
    tools = [t for t in request.get("tools") or [] if isinstance(t, dict) and t.get("type") == "function"]
    if tools and rule.tools_efforts is not None and effort not in rule.tools_efforts:
        wording = "function_tools_responses_only" if rule.tools_wording == "responses_only" else "function_tools_effort"
        return wording, {"model": model}
    for index, tool in enumerate(request.get("tools") or []):
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and function.get("strict") is True:
            found = strict_schema_problem(function.get("parameters"))
            if found:
                where, problem = found
                values = {"name": function.get("name", ""), "context": repr(where), "problem": problem}
                return "invalid_function_parameters", {**values, "index": index}
    return None


def _schema_tokens(request: dict[str, Any]) -> int:
    """Return the tokens of the answer schema a request carries (compact JSON, 4 characters a token)."""
    carried = [request.get("tools"), _response_schema(request) if request.get("response_format") else None]
    return sum(len(json.dumps(part, separators=(",", ":"))) // 4 for part in carried if part)


def _response_schema(request: dict[str, Any]) -> dict[str, Any]:
    """Return the answer's JSON schema: `response_format`'s, the forced tool's parameters, or an empty object."""
    response_format = request.get("response_format")
    if isinstance(response_format, dict):
        spec = response_format.get("json_schema")
        if isinstance(spec, dict) and isinstance(spec.get("schema"), dict):
            schema: dict[str, Any] = spec["schema"]
            return schema
    tools = request.get("tools")
    if _forced_tool(request) is not None and isinstance(tools, list):
        parameters: dict[str, Any] = tools[0]["function"]["parameters"]
        return parameters
    return {"type": "object", "properties": {}}


def _forced_tool(request: dict[str, Any]) -> str | None:
    """Return the function a request forces the model to call (`tool_choice`), if any."""
    choice = request.get("tool_choice")
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name")
        return str(name) if name else None
    return None

