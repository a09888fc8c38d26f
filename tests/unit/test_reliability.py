"""Provider faults through the real `ChatOpenAI` path, against the fault-injecting server.

Each fault kind is checked where it lands (the client's error mapping, or the
structured-answer parsing), then the graph end to end: all-transport-fault runs
degrade without raising after the OpenAI client's retries (the only retries: a
stage call makes `max_retries + 1` HTTP attempts, not more), and the soak
script's quick mode (30% of requests faulted across every kind, plus the
rate-limit experiment) keeps every ranking valid.
"""

import asyncio
import json
import math
from typing import Any, cast

import httpx
import pytest
from langchain_core.exceptions import (
    ModelAPIError,
    ModelConnectionError,
    ModelRateLimitError,
    ModelTimeoutError,
)
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI

from benchmarks.soak import (
    CallCounter,
    SoakSettings,
    graph_for_server,
    make_requests,
    render_markdown,
    run_soak,
    soak_context,
)
from m3rec_graph import ModelSpec
from m3rec_graph.context import StructuredMethod
from m3rec_graph.contracts.schemas import TraitsAnswer, listwise_contract
from m3rec_graph.errors import ConfigurationError
from m3rec_graph.llm.factory import ainvoke_structured, openai_chat_model, rate_limiter_for
from m3rec_graph.llm.usage import call_usage
from tests.fault_server import (
    FAULT_KINDS,
    FaultConfig,
    FaultRates,
    FaultServer,
    instance_of,
    valid_answer,
    wrong_answer,
)

MOTE_MESSAGES = [
    SystemMessage("You are MOTE, the item encoder of a product recommender."),
    HumanMessage("<item>\n[a1] Lip balm\n</item>"),
]


def serve(kind: str | None, **config: Any) -> FaultServer:
    rates = FaultRates.only(kind) if kind else FaultRates()
    return FaultServer(FaultConfig(rates=rates, retry_after_s=0.05, slow_s=0.6, **config))


def chat(server: FaultServer, **kw: Any) -> ChatOpenAI:
    settings: dict[str, Any] = {"timeout": 0.3, "max_retries": 0, **kw}
    return ChatOpenAI(model="fault-model", base_url=server.url, api_key="sk-test", **settings)


async def structured(server: FaultServer, method: StructuredMethod = "json_schema", **kw: Any) -> Any:
    return await ainvoke_structured(chat(server, **kw), TraitsAnswer, MOTE_MESSAGES, method=method, config={})


# --- the scripted answerer ---------------------------------------------------------------------


def test_answerer_follows_the_schema_of_every_stage() -> None:
    ids = ["b2", "a1", "c3"]
    schema = listwise_contract(ids).json_schema()
    prompt = "You are MAR\n<candidates>\n[b2] x\n[a1] y\n[c3] z\n</candidates>"
    answer = valid_answer("mar", prompt, schema)
    assert list(answer["scores"]) == ids  # the shown order
    listwise_contract(ids).validate_answer(answer)
    TraitsAnswer.model_validate(instance_of(TraitsAnswer.model_json_schema()))
    with pytest.raises(ValueError, match="differ"):
        valid_answer("mar", prompt.replace("[c3]", "[zz]"), schema)


@pytest.mark.parametrize("draw", range(4))
def test_wrong_mar_answers_break_the_contract(draw: int) -> None:
    ids = ["a1", "b2"]
    model = listwise_contract(ids)
    answer = instance_of(model.json_schema())
    variant, text = wrong_answer("mar", answer, draw)
    if variant == "duplicate_id":
        assert text.count('"a1"') == 2  # only the raw text shows it; json.loads keeps one
    else:
        with pytest.raises(ValueError):
            model.validate_answer(json.loads(text))


def test_fault_draws_are_reproducible_and_near_the_rate() -> None:
    server = FaultServer(FaultConfig(rates=FaultRates.spread(0.3), seed=3))
    draws = [server._draw(f"body {n}".encode())[0] for n in range(4000)]
    again = FaultServer(FaultConfig(rates=FaultRates.spread(0.3), seed=3))
    assert draws == [again._draw(f"body {n}".encode())[0] for n in range(4000)]
    share = sum(d is not None for d in draws) / len(draws)
    assert 0.27 < share < 0.33
    assert set(draws) == {None, *FAULT_KINDS}
    # the same body seen again gets a fresh draw (a retry is not doomed to the same fault)
    repeats = [server._draw(b"same body")[0] for _ in range(200)]
    assert len(set(repeats)) > 2
    with pytest.raises(ValueError):
        FaultRates(slow=0.7, dropped=0.7)


# --- each fault kind through ChatOpenAI ----------------------------------------------------------


async def test_a_fault_free_server_answers_valid_json_and_counts() -> None:
    with serve(None) as server:
        answer = await structured(server)
        assert answer.error is None and isinstance(answer.parsed, TraitsAnswer)
        assert answer.raw is not None and answer.raw.usage_metadata
        assert server.counts()["requests"] == 1 and server.counts()["ok"] == 1
        assert server.counts()["stage:mote"] == 1


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("rate_limited", ModelRateLimitError),
        ("server_error", ModelAPIError),
        ("slow", ModelTimeoutError),
        ("dropped", ModelConnectionError),
    ],
)
async def test_transport_faults_raise_the_provider_neutral_errors(kind: str, error: type[Exception]) -> None:
    with serve(kind) as server:
        with pytest.raises(error):
            await structured(server)
        assert server.faults()[kind] == 1


async def test_the_client_retries_transport_faults_and_honours_retry_after() -> None:
    with serve("rate_limited") as server:
        with pytest.raises(ModelRateLimitError):
            await structured(server, max_retries=2)
        assert server.counts()["requests"] == 3
    async with httpx.AsyncClient() as client:
        with serve("rate_limited") as server:
            response = await client.post(
                f"{server.url}/chat/completions", json={"messages": [{"role": "system", "content": "You are MOTE"}]}
            )
    assert response.status_code == 429 and response.headers["Retry-After"] == "0.05"


@pytest.mark.parametrize(
    ("kind", "variant", "message"),
    [
        ("malformed_json", 0, "not valid JSON"),  # prose before the JSON
        ("malformed_json", 1, "not valid JSON"),  # single quotes
        ("malformed_json", 2, "Field required"),  # cut short: the lenient parser completes it
        ("truncated", 0, "cut off at the token limit"),
        ("empty", 0, "not valid JSON"),
        ("wrong_answer", 0, "greater than or equal to 0"),
        ("wrong_answer", 1, "traits: Field required"),
    ],
)
@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
async def test_answer_faults_come_back_as_errors_not_exceptions(
    kind: str, variant: int, message: str, method: StructuredMethod
) -> None:
    if method == "function_calling" and (kind, variant) == ("malformed_json", 2):
        message = "not valid JSON"  # langchain parses tool arguments strictly: nothing is completed
    if method == "function_calling" and kind == "empty":
        message = "Field required"  # langchain reads empty tool arguments as {}
    with serve(kind, variant=variant) as server:
        answer = await structured(server, method)
    assert answer.parsed is None and answer.error
    assert message in answer.error
    assert answer.cut_off == (kind == "truncated")
    assert answer.raw is not None  # kept for its token usage


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
async def test_a_valid_answer_is_parsed_for_both_schema_transports(method: StructuredMethod) -> None:
    with serve(None, record_bodies=True) as server:
        answer = await structured(server, method)
        body = server.bodies()[-1]
    assert answer.error is None and isinstance(answer.parsed, TraitsAnswer)
    assert answer.raw is not None and answer.raw.usage_metadata
    # The request carries the schema the way langchain-openai sends it for the method.
    assert ("tools" in body) == (method == "function_calling")
    assert ("response_format" in body) == (method == "json_schema")


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
async def test_a_cut_off_answer_keeps_the_providers_token_usage(method: StructuredMethod) -> None:
    # The cut-off error still carries the completion: its usage is exact, not a tiktoken estimate.
    with serve("truncated") as server:
        answer = await structured(server, method)
    assert answer.cut_off and answer.raw is not None
    usage = call_usage("mote", "m", None, MOTE_MESSAGES, answer.raw, accepted=False)
    assert not usage["estimated"]
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert answer.raw.text or answer.raw.invalid_tool_calls  # the half answer, for the trace


async def test_json_with_trailing_garbage_is_reported_as_invalid_json() -> None:
    with serve("malformed_json", variant=3) as server:
        answer = await structured(server)
    assert answer.error and "not valid JSON" in answer.error


# --- the graph -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rate_limited", "server_error", "slow", "dropped"])
async def test_every_call_failing_degrades_every_stage_without_raising(kind: str) -> None:
    # Only `slow` needs the client to time out; a short timeout elsewhere made a loaded machine's
    # late requests time out before the server counted them (CI flake).
    timeout_s = 0.3 if kind == "slow" else 5.0
    # One client retry: 429s wait the server's Retry-After (0.05 s), 5xx and the rest ~0.5 s.
    settings = SoakSettings(candidates=5, history=2, timeout_s=timeout_s, max_retries=1)
    request = make_requests(settings, users=1)[0]
    with serve(kind) as server:
        graph = graph_for_server(server.url, settings)
        out = await graph.ainvoke(request, context=soak_context(settings))
        requests = server.counts()["requests"]
    ids = [c["item_id"] for c in request["candidates"]]
    assert sorted(r.item_id for r in out["ranking"]) == sorted(ids)
    assert {d["stage"] for d in out["degraded"]} == {"mope", "mote", "mar"}
    assert all(d["reason"].startswith("provider error after retries") for d in out["degraded"])
    assert all(r.source == "fallback" for r in out["ranking"])
    # MOPE + 5 MOTE + 1 MAR chunk, each sent max_retries + 1 times by the OpenAI client, once by the graph
    assert requests == 7 * (settings.max_retries + 1)


async def test_a_failing_call_makes_max_retries_plus_one_attempts_not_nine() -> None:
    # Client retries (max_retries=2) and graph retries (RetryPolicy, 3 attempts) used to stack:
    # 3 x 3 = 9 HTTP attempts per stage call. The client is now the one owner of retries.
    settings = SoakSettings(candidates=5, history=2, timeout_s=5.0, max_retries=2)
    request = make_requests(settings, users=1)[0]
    counter = CallCounter()
    with serve("server_error") as server:
        graph = graph_for_server(server.url, settings)
        out = await graph.ainvoke(request, {"callbacks": [counter]}, context=soak_context(settings))
        counts = server.counts()
    calls = {"mope": 1, "mote": 5, "mar": 1}  # one MAR chunk of 5
    assert dict(counter.invocations) == calls  # the graph called each stage once: no node retries
    assert dict(counter.provider_errors) == calls
    assert {stage: counts[f"stage:{stage}"] for stage in calls} == {stage: 3 * n for stage, n in calls.items()}
    assert counts["requests"] == counts["server_error"] == 7 * 3  # not 7 x 9 = 63
    assert sorted((d["stage"], d["item_id"]) for d in out["degraded"]) == sorted(
        [("mope", None), ("mar", None), *(("mote", c["item_id"]) for c in request["candidates"])]
    )
    assert all(d["reason"].startswith("provider error after retries: ") for d in out["degraded"])


async def test_answer_faults_on_every_call_spend_the_reask_budget_then_degrade() -> None:
    settings = SoakSettings(candidates=3, history=2, timeout_s=1.0, max_retries=0)
    request = make_requests(settings, users=1)[0]
    with serve("wrong_answer") as server:
        out = await graph_for_server(server.url, settings).ainvoke(request, context=soak_context(settings))
        counts = server.counts()
    assert counts["requests"] == (1 + 3 + 1) * 3  # first try + 2 re-asks per task
    assert sorted(r.item_id for r in out["ranking"]) == sorted(c["item_id"] for c in request["candidates"])
    assert {d["stage"] for d in out["degraded"]} == {"mope", "mote", "mar"}
    assert out["usage"].total.wasted_tokens == out["usage"].total.input_tokens + out["usage"].total.output_tokens


async def test_quick_soak_keeps_every_ranking_valid_under_30_percent_faults() -> None:
    settings = SoakSettings.quick()
    report = await run_soak(settings, "python -m benchmarks.soak --quick")
    faults = report.faults

    assert faults.exceptions == []
    assert faults.valid_rankings == faults.users == settings.users
    assert faults.faulted_requests > 0
    assert 0.15 < faults.faulted_requests / faults.http_requests < 0.45
    assert sum(1 for n in faults.faults.values() if n) >= 6  # most kinds occur even in a small run
    # the layers add up: every invocation is a first try or a re-ask (the graph retries nothing),
    # every provider error the client gave up on degraded its task, and the client's retries
    # are the only extra HTTP requests, at most max_retries per invocation
    assert faults.undegraded_provider_errors == 0
    assert faults.total_invocations == faults.total_tasks + faults.reasks
    assert faults.http_requests == faults.total_invocations + faults.transport_retries
    assert faults.http_requests <= faults.total_invocations * (settings.max_retries + 1)
    assert faults.transport_retries > 0 and faults.reasks > 0
    assert faults.wasted_tokens > 0

    # rate limiting: the client-side limiter keeps the server's 429s away
    unlimited, limited = report.unlimited, report.limited
    assert unlimited.over_limit_429 > 10
    assert limited.over_limit_429 <= max(2, unlimited.over_limit_429 // 10)
    assert limited.ok and unlimited.exceptions == []

    doc = render_markdown(report)
    assert "| users with a valid ranking" in doc and "## Rate limiting" in doc
    assert f"the OpenAI client's only, `max_retries={settings.max_retries}`" in doc
    assert f"so at most {settings.max_retries + 1} HTTP attempts per stage call" in doc
    assert "no `RetryPolicy` on the stage nodes" in doc


# --- the rate limiter ----------------------------------------------------------------------------


def test_rate_limiter_is_shared_per_model_and_endpoint() -> None:
    base = ModelSpec(name="m", base_url="http://127.0.0.1:9/v1", api_key="sk-x", requests_per_second=5)
    assert rate_limiter_for(ModelSpec(name="m")) is None
    limiter = rate_limiter_for(base)
    assert limiter is not None and limiter.requests_per_second == 5
    # stages differ in max_tokens but share the provider's limit
    assert rate_limiter_for(ModelSpec(name="m", base_url=base.base_url, requests_per_second=5, max_tokens=9)) is limiter
    assert rate_limiter_for(ModelSpec(name="other", base_url=base.base_url, requests_per_second=5)) is not limiter

    async def model_in_a_fresh_loop() -> Any:
        return openai_chat_model(base)

    first, second = asyncio.run(model_in_a_fresh_loop()), asyncio.run(model_in_a_fresh_loop())
    assert first is not second  # one client per event loop, as before
    assert cast(ChatOpenAI, first).rate_limiter is limiter is cast(ChatOpenAI, second).rate_limiter
    assert cast(ChatOpenAI, openai_chat_model(ModelSpec(name="m", api_key="sk-x"))).rate_limiter is None


@pytest.mark.parametrize("bad", [0, -1.0, math.nan, math.inf, True])
def test_rate_limit_must_be_a_positive_number(bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="requests_per_second"):
        ModelSpec(name="m", requests_per_second=bad)


async def test_rate_limiter_spaces_requests() -> None:
    settings = SoakSettings(candidates=4, history=1, timeout_s=2.0)
    request = make_requests(settings, users=1)[0]
    with serve(None, record_bodies=False) as server:
        graph = graph_for_server(server.url, settings, requests_per_second=20.0)
        ctx = soak_context(settings)
        loop_time = asyncio.get_running_loop().time
        started = loop_time()
        await graph.ainvoke(request, context=ctx)
        elapsed = loop_time() - started
        requests = server.counts()["requests"]
    assert requests == 1 + 4 + 1
    assert elapsed >= (requests - 1) / 20.0 * 0.9
