"""The latency-model server: answers take TTFT + tokens / speed, strict rules apply, streams are paced."""

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import openai
import pytest
from langgraph.store.memory import InMemoryStore

from m3rec_graph import build_graph, context_for
from m3rec_graph.llm.endpoint import endpoint_chat_models
from m3rec_graph.llm.tokens import count_text
from m3rec_graph.state import RecInput
from tests.latency_server import LatencyModel, LatencyServer, ModelLatency, serve
from tests.unit.test_langgraph_server import TODAY, beauty_requests

FAST = {
    "gpt-6-luna": ModelLatency(ttft_s=0.05, tokens_per_s=2000.0),
    "gpt-6.1-sol": ModelLatency(ttft_s=0.08, tokens_per_s=1000.0),
}


async def start(latency: LatencyModel) -> tuple[LatencyServer, str, "asyncio.Task[None]"]:
    server = LatencyServer(latency, today=TODAY)
    ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(server, 0, ready))
    port = await ready
    return server, f"http://127.0.0.1:{port}/v1", task


@pytest.fixture
async def fast_server() -> AsyncIterator[tuple[LatencyServer, str]]:
    server, url, task = await start(LatencyModel(FAST, {"none": 0, "low": 200}, 0.0, 0.0))
    yield server, url
    task.cancel()


def test_the_shipped_latency_model_reads_and_cites_every_model() -> None:
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "latency_model.json"
    model = LatencyModel.from_file(path, reasoning_low=1024)
    assert model.reasoning_tokens["low"] == 1024 and model.reasoning_tokens["none"] == 0
    assert model.models["gpt-6-luna"] == ModelLatency(0.74, 130.6)
    raw = json.loads(path.read_text())
    assert all(row["source"] for row in raw["models"].values())


def test_jitter_is_seeded_and_centred_on_the_median() -> None:
    model = LatencyModel(FAST, {}, ttft_sigma=0.3, tokens_per_s_sigma=0.1, seed=3)
    draws = [model.draw("gpt-6-luna", f"body:{n}").ttft_s for n in range(400)]
    assert draws == [model.draw("gpt-6-luna", f"body:{n}").ttft_s for n in range(400)]
    assert sorted(draws)[200] == pytest.approx(0.05, rel=0.1)


async def test_a_reasoning_answer_takes_ttft_plus_reasoning_and_answer_tokens_over_speed(
    fast_server: tuple[LatencyServer, str],
) -> None:
    server, url = fast_server
    client = openai.AsyncOpenAI(base_url=url, api_key="x")
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"], "additionalProperties": False}
    began = time.monotonic()
    answer = await client.chat.completions.create(
        model="gpt-6.1-sol",
        reasoning_effort="low",
        messages=[{"role": "user", "content": "hello"}],
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema, "strict": True}},
    )
    took = time.monotonic() - began
    assert answer.usage is not None and answer.usage.completion_tokens_details is not None
    assert answer.usage.completion_tokens_details.reasoning_tokens == 200
    content = answer.choices[0].message.content or ""
    expected = 0.08 + (200 + count_text(content, "gpt-4o")) / 1000.0
    assert expected <= took < expected + 0.5
    # strict: what OpenAI refuses, this server refuses too (gpt-6.1-sol takes no effort none)
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(
            model="gpt-6.1-sol", reasoning_effort="none", messages=[{"role": "user", "content": "x"}]
        )
    assert server.counts["strict:reasoning_effort_value"] == 1


async def test_a_streamed_answer_is_paced_per_token(fast_server: tuple[LatencyServer, str]) -> None:
    _, url = fast_server
    client = openai.AsyncOpenAI(base_url=url, api_key="x")
    began = time.monotonic()
    arrivals: list[float] = []
    pieces: list[str] = []
    stream = await client.chat.completions.create(
        model="gpt-6-luna",
        reasoning_effort="none",
        messages=[{"role": "system", "content": "You are MOTE"}, {"role": "user", "content": "<item>\n[i1] x\n</item>"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    usage: Any = None
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic() - began)
            pieces.append(chunk.choices[0].delta.content)
        usage = chunk.usage or usage
    assert len(pieces) > 3 and usage is not None
    assert arrivals[0] >= 0.05  # time to first token
    assert arrivals[-1] - arrivals[0] >= (len(pieces) - 1) / 2000.0 * 0.9  # one token per 1/speed


async def test_a_hybrid_recommendation_runs_with_realistic_answer_lengths(
    fast_server: tuple[LatencyServer, str],
) -> None:
    server, url = fast_server
    graph = build_graph(chat_models=endpoint_chat_models(url, api_key="x"), store=InMemoryStore())
    out: dict[str, Any] = await graph.ainvoke(
        cast(RecInput, beauty_requests()[0]), context=context_for("hybrid", today=TODAY)
    )
    assert not out["degraded"] and len(out["ranking"]) == 10
    assert len(out["profile"].summary.split()) == 60  # the size model's summary
    assert len(out["ranking"][0].rationale.split()) == 18
    stages = out["usage"].stages
    assert stages["mar"].calls == 1 and stages["mote"].calls == 10
    assert server.counts["tokens:reasoning"] == 200  # MAR at effort low, one chunk of 10
