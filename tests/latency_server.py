"""A strict OpenAI-compatible chat-completions server paced by a provider latency model.

The fault server's rules and answerer (`tests/fault_server.py`: OpenAI's documented
request rules from `tests/openai_rules.py`, schema-driven answers, reasoning tokens
counted in `usage`), served on an asyncio loop so that thousands of concurrent
requests cost sleeps, not threads. Every admitted request takes

    ttft + (reasoning tokens + answer tokens) / tokens_per_s

per model (`benchmarks/latency_model.json`), each of `ttft` and `tokens_per_s`
multiplied by a seeded log-normal jitter drawn from a hash of (seed, body, how often
this body was seen), so runs repeat however requests interleave. A streamed request
(`"stream": true`) gets server-sent events: the first content chunk after
`ttft + reasoning / tokens_per_s`, then one token per `1 / tokens_per_s`.

Answers have realistic lengths: the schema's valid instance is filled with the dry
run's typical answers (`m3rec_graph.cost.estimate`: MOPE's 60-word summary and two
evidence ids per dimension, MOTE's four trait phrases, MAR's two matched dimensions
and 18-word rationale), and counted with tiktoken (o200k_base).

No faults: this server measures time, `FaultServer` measures robustness.

Run it in its own process (the benchmark does, so its CPU is the server's alone):

    python -m tests.latency_server --model-file benchmarks/latency_model.json --reasoning-low 256
    # prints "listening http://127.0.0.1:PORT/v1" and serves until killed

Each response carries `openai-processing-ms` (the time the model took, as OpenAI
sends it), which the client subtracts to find its own connection-pool wait.
"""

import argparse
import asyncio
import hashlib
import json
import math
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from m3rec_graph.contracts.schemas import Dimension
from m3rec_graph.cost.estimate import (
    OutputAssumptions,
    compact_json,
    typical_judgement,
    typical_profile_answer,
    typical_traits_answer,
)
from m3rec_graph.llm.tokens import count_text, text_encoder
from tests.fault_server import (
    completion_limit,
    effective_effort,
    instance_of,
    openai_error,
    score_of,
    spend_budget,
    stage_of,
    strict_violation,
    valid_answer,
)

TOKENIZER = "gpt-4o"
"""o200k_base, the encoding Artificial Analysis counts output speed in."""


@dataclass(frozen=True)
class ModelLatency:
    """One model's public medians."""

    ttft_s: float
    tokens_per_s: float


@dataclass(frozen=True)
class LatencyModel:
    """What each answer costs in time: per-model medians, reasoning per effort, jitter."""

    models: dict[str, ModelLatency]
    reasoning_tokens: dict[str, int]
    ttft_sigma: float = 0.3
    tokens_per_s_sigma: float = 0.1
    seed: int = 0

    @classmethod
    def from_file(cls, path: Path, *, reasoning_low: int | None = None, seed: int = 0) -> "LatencyModel":
        """Read `benchmarks/latency_model.json`; `reasoning_low` overrides the tokens of effort `low`."""
        data = json.loads(path.read_text(encoding="utf-8"))
        models = {
            name: ModelLatency(float(row["ttft_s"]), float(row["tokens_per_s"]))
            for name, row in data["models"].items()
        }
        reasoning = {k: int(v) for k, v in data["reasoning_tokens"].items() if isinstance(v, int)}
        if reasoning_low is not None:
            reasoning["low"] = reasoning_low
        jitter = data.get("jitter", {})
        return cls(
            models,
            reasoning,
            float(jitter.get("ttft_sigma", 0.3)),
            float(jitter.get("tokens_per_s_sigma", 0.1)),
            seed,
        )

    def draw(self, model: str, key: str) -> ModelLatency:
        """Return this request's jittered TTFT and speed (`key`: body hash and occurrence)."""
        base = self.models.get(model)
        if base is None:
            raise KeyError(f"no latency figures for model {model!r}")
        roll = hashlib.sha256(f"{self.seed}:{key}".encode()).digest()
        z1, z2 = _normal(roll[:8], roll[8:16]), _normal(roll[16:24], roll[24:32])
        return ModelLatency(
            base.ttft_s * math.exp(self.ttft_sigma * z1),
            base.tokens_per_s * math.exp(self.tokens_per_s_sigma * z2),
        )


def _normal(a: bytes, b: bytes) -> float:
    """A standard normal from two 8-byte uniforms (Box-Muller)."""
    u1 = (int.from_bytes(a, "big") + 1) / (2**64 + 1)
    u2 = int.from_bytes(b, "big") / 2**64
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2 * math.pi * u2)


# --- realistic answers ------------------------------------------------------------------------

_SIZES = OutputAssumptions()
_MATCHED = [Dimension.AESTHETIC.value, Dimension.QUALITY.value]


def _evidence_ids(schema: dict[str, Any]) -> list[str]:
    """Return the history ids a MOPE schema lets evidence cite (its `enum`/`const`)."""
    items = schema.get("$defs", {}).get("ProfileDimension", {}).get("properties", {}).get("evidence", {}).get("items", {})
    if "enum" in items:
        return [str(i) for i in items["enum"]]
    return [str(items["const"])] if "const" in items else []


def realistic_answer(stage: str | None, prompt: str, schema: dict[str, Any]) -> dict[str, Any]:
    """Return a valid answer of typical length for the request (the fault server's, filled in)."""
    if stage is None:
        generic = instance_of(schema)
        return generic if isinstance(generic, dict) else {}
    answer = valid_answer(stage, prompt, schema)
    if stage == "mope":
        return typical_profile_answer(_evidence_ids(schema), _SIZES)
    if stage == "mote":
        return typical_traits_answer(_SIZES)
    judgement = typical_judgement(_SIZES)
    for key in ("scores", "rationales"):
        entries = answer.get(key)
        if isinstance(entries, dict):
            filled: dict[str, Any] = {}
            for item_id, entry in entries.items():
                filled[item_id] = {
                    name: (score_of(item_id) if name == "score" else judgement[name])
                    for name in entry
                    if name in judgement
                }
            answer[key] = filled
    if "rationale" in answer:  # pointwise
        answer.update({k: v for k, v in judgement.items() if k != "score"})
    return answer


# --- the server -------------------------------------------------------------------------------


@dataclass
class LatencyServer:
    """The asyncio server (`serve()` runs it; `python -m tests.latency_server` in a process of its own)."""

    latency: LatencyModel
    today: str = "2026-12-03"
    counts: Counter[str] = field(default_factory=Counter)
    _seen: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one keep-alive connection until the client closes it."""
        self.counts["connections"] += 1
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                method, path, _ = line.decode("latin-1").split(" ", 2)
                headers: dict[str, str] = {}
                while True:
                    raw = await reader.readline()
                    if raw in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = raw.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length") or 0))
                await self.respond(method, path, body, writer)
                if headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            return
        finally:
            writer.close()

    async def respond(self, method: str, path: str, body: bytes, writer: asyncio.StreamWriter) -> None:
        """Answer one request: GET /stats (POST /stats/reset: the peak starts over), or a chat completion."""
        if method == "GET" and path.rstrip("/").endswith("/stats"):
            await _send(writer, 200, {**self.counts, "in_flight": self.in_flight})
            return
        if method == "POST" and path.rstrip("/").endswith("/stats/reset"):  # a new benchmark row
            self.counts["peak_in_flight"] = self.in_flight
            await _send(writer, 200, {"reset": True})
            return
        if method != "POST" or not path.rstrip("/").endswith("/chat/completions"):
            await _send(writer, *openai_error("invalid_url", method=method, path=path))
            return
        started = time.monotonic()
        self.in_flight += 1
        self.counts["requests"] += 1
        self.counts["peak_in_flight"] = max(self.counts["peak_in_flight"], self.in_flight)
        try:
            await self._complete(body, writer, started)
        finally:
            self.in_flight -= 1

    async def _complete(self, body: bytes, writer: asyncio.StreamWriter, started: float) -> None:
        request = json.loads(body)
        refused = strict_violation(request, self.today)
        if refused is not None:
            rule, values = refused
            self.counts[f"strict:{rule}"] += 1
            await _send(writer, *openai_error(rule, **values))
            return
        prompt = "\n".join(str(m.get("content") or "") for m in request["messages"])
        stage = stage_of(prompt)
        schema = _schema(request)
        text = compact_json(realistic_answer(stage, prompt, schema))
        model = str(request["model"])
        effort = effective_effort(request)
        reasoning = self.latency.reasoning_tokens.get(effort, 0) if effort else 0
        text, finish, _, reasoning = spend_budget(text, "stop", reasoning, completion_limit(request))
        answer_tokens = count_text(text, TOKENIZER) if text else 0
        digest = hashlib.sha256(body).hexdigest()
        self._seen[digest] += 1
        speed = self.latency.draw(model, f"{digest}:{self._seen[digest]}")
        prompt_tokens = count_text(prompt, TOKENIZER) + 3 * len(request["messages"])
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": reasoning + answer_tokens,
            "total_tokens": prompt_tokens + reasoning + answer_tokens,
            "completion_tokens_details": {"reasoning_tokens": reasoning},
        }
        self.counts[f"stage:{stage}"] += 1
        self.counts["tokens:completion"] += reasoning + answer_tokens
        self.counts["tokens:reasoning"] += reasoning
        first = speed.ttft_s + reasoning / speed.tokens_per_s
        await asyncio.sleep(first)
        if request.get("stream"):
            await self._stream(writer, model, text, finish, usage, speed.tokens_per_s, started)
            return
        await asyncio.sleep(answer_tokens / speed.tokens_per_s)
        payload = {
            "id": f"chatcmpl-latency-{digest[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "finish_reason": finish,
                    "logprobs": None,
                }
            ],
            "usage": usage,
        }
        processing = {"openai-processing-ms": f"{(time.monotonic() - started) * 1000:.1f}"}
        await _send(writer, 200, payload, processing)

    async def _stream(
        self,
        writer: asyncio.StreamWriter,
        model: str,
        text: str,
        finish: str,
        usage: dict[str, Any],
        tokens_per_s: float,
        started: float,
    ) -> None:
        """Send the answer as server-sent events, one token per chunk at the model's speed."""
        processing = f"{(time.monotonic() - started) * 1000:.1f}"
        head = (
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
            f"openai-processing-ms: {processing}\r\n\r\n"
        )
        writer.write(head.encode())
        pieces = _token_pieces(text)
        for n, piece in enumerate(pieces):
            if n:
                await asyncio.sleep(1 / tokens_per_s)
            chunk = {
                "id": "chatcmpl-latency",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
            }
            _write_chunk(writer, f"data: {json.dumps(chunk)}\n\n")
            await writer.drain()
        last = {
            "id": "chatcmpl-latency",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "delta": {}, "finish_reason": finish}],
            "usage": usage,
        }
        _write_chunk(writer, f"data: {json.dumps(last)}\n\n")
        _write_chunk(writer, "data: [DONE]\n\n")
        writer.write(b"0\r\n\r\n")
        await writer.drain()


def _token_pieces(text: str) -> list[str]:
    """Split `text` into its o200k tokens' text (what one streamed chunk carries)."""
    encoding = text_encoder(TOKENIZER).encoding
    tokens = encoding.encode(text, disallowed_special=())
    return [encoding.decode([token]) for token in tokens] or [""]


def _write_chunk(writer: asyncio.StreamWriter, data: str) -> None:
    raw = data.encode()
    writer.write(f"{len(raw):x}\r\n".encode() + raw + b"\r\n")


def _schema(request: dict[str, Any]) -> dict[str, Any]:
    spec = (request.get("response_format") or {}).get("json_schema") or {}
    schema = spec.get("schema") if isinstance(spec, dict) else None
    return schema if isinstance(schema, dict) else {"type": "object", "properties": {}}


async def _send(
    writer: asyncio.StreamWriter, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
) -> None:
    data = json.dumps(payload).encode()
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    head = f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n{extra}\r\n"
    writer.write(head.encode() + data)
    await writer.drain()


async def serve(server: LatencyServer, port: int = 0, ready: "asyncio.Future[int] | None" = None) -> None:
    """Listen on 127.0.0.1:`port` (0: a free one) until cancelled; report the port through `ready`."""
    text_encoder(TOKENIZER)  # load the BPE file now, not inside the first request's time
    listener = await asyncio.start_server(server.handle, "127.0.0.1", port, backlog=4096)
    bound = int(listener.sockets[0].getsockname()[1])
    if ready is not None:
        ready.set_result(bound)
    else:
        sys.stdout.write(f"listening http://127.0.0.1:{bound}/v1\n")
        sys.stdout.flush()
    async with listener:
        await listener.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model-file", type=Path, default=Path("benchmarks/latency_model.json"))
    parser.add_argument("--reasoning-low", type=int, default=None, help="reasoning tokens at effort low")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    latency = LatencyModel.from_file(args.model_file, reasoning_low=args.reasoning_low, seed=args.seed)
    try:
        asyncio.run(serve(LatencyServer(latency), args.port))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
