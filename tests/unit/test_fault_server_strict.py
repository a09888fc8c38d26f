"""The fault server's strict mode: OpenAI's documented Chat Completions rules, one test a rule.

Each refusal is checked the way a client sees it (status, `error.type`, `error.param`,
`error.code`), over plain HTTP to 127.0.0.1; then valid requests for every model the
table serves, reasoning tokens in `usage`, the cut-off when reasoning eats the budget,
the model list and its lifecycle on a pinned `today`, and what `ChatOpenAI` really sends.
"""

import ast
import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from langchain_core.exceptions import ModelInvalidRequestError
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from tests import openai_rules
from tests.fault_server import FaultConfig, FaultRates, FaultServer, strict_schema_problem
from tests.openai_rules import MODELS, served_models

TODAY = "2026-12-03"

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"answer": {"type": "string"}, "score": {"type": "integer"}},
    "required": ["answer", "score"],
    "additionalProperties": False,
}
JSON_SCHEMA_FORMAT: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {"name": "Pick", "strict": True, "schema": SCHEMA},
}
TOOL: dict[str, Any] = {
    "type": "function",
    "function": {"name": "pick", "parameters": SCHEMA, "strict": True},
}


def body(model: str, **extra: Any) -> dict[str, Any]:
    """Return a minimal chat-completions request (a non-m3rec prompt: strict mode answers any)."""
    return {"model": model, "messages": [{"role": "user", "content": "Pick one."}], **extra}


def post(
    server: FaultServer, payload: dict[str, Any], path: str = "/chat/completions"
) -> tuple[int, Any]:
    response = httpx.post(f"{server.url}{path}", json=payload, timeout=5.0)
    return response.status_code, response.json()


def get(server: FaultServer, path: str) -> tuple[int, Any]:
    response = httpx.get(f"{server.url}{path}", timeout=5.0)
    return response.status_code, response.json()


def strict_server(today: str = TODAY, **config: Any) -> FaultServer:
    return FaultServer(FaultConfig(strict=True, today=today, **config))


@pytest.fixture(scope="module")
def shared_server() -> Iterator[FaultServer]:
    with strict_server() as running:  # one server for the module: stopping one takes ~0.5 s
        yield running


@pytest.fixture
def server(shared_server: FaultServer) -> FaultServer:
    shared_server.reset()  # each test reads only its own counts
    return shared_server


def assert_error(
    answer: tuple[int, Any],
    status: int,
    param: str | None,
    code: str | None,
    message: str | None = None,
) -> dict[str, Any]:
    got_status, payload = answer
    assert got_status == status, payload
    error: dict[str, Any] = payload["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert (error["param"], error["code"]) == (param, code), error
    if message is not None:
        assert error["message"] == message
    return error


# --- the table ---------------------------------------------------------------------------------


def test_every_row_cites_its_source_and_models_are_unique() -> None:
    assert len({rule.model for rule in MODELS}) == len(MODELS)
    for rule in MODELS:
        assert rule.source.startswith("https://"), rule.model
        assert not rule.reasoning or (rule.default_effort in rule.efforts), rule.model
        assert set(rule.efforts) <= set(openai_rules.EFFORTS)
    for name, error in openai_rules.ERRORS.items():
        assert error.source.startswith("https://"), name


def test_the_rule_table_never_imports_the_package() -> None:
    with open(openai_rules.__file__, encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {name for name in imported if name.split(".")[0] in {"m3rec_graph", "tests"}}


def test_supported_values_read_like_openai() -> None:
    assert openai_rules.supported_values(("low", "medium", "high", "xhigh")) == (
        "'low', 'medium', 'high', and 'xhigh'"
    )
    assert openai_rules.supported_values(("low", "high")) == "'low' and 'high'"


# --- one test a rule -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model", ["fault-model", "gpt-7-nova", "gpt-4", "o1", "gpt-4.1-nano", "gpt-3.5-turbo"]
)
def test_an_unknown_or_shut_down_model_is_not_found(server: FaultServer, model: str) -> None:
    assert_error(
        post(server, body(model)),
        404,
        None,
        "model_not_found",
        f"The model `{model}` does not exist or you do not have access to it.",
    )
    assert server.counts()["strict:model_not_found"] == 1


def test_lifecycle_follows_the_pinned_today() -> None:
    for today, status in (("2026-12-03", 200), ("2027-01-13", 200), ("2027-01-14", 404)):
        with strict_server(today) as server:
            assert post(server, body("gpt-4o"))[0] == status, today
    for today, status in (("2026-12-10", 200), ("2026-12-11", 404)):
        with strict_server(today) as server:
            assert post(server, body("gpt-5"))[0] == status, today
    with strict_server("2026-10-22") as server:
        assert post(server, body("gpt-3.5-turbo"))[0] == 200


def test_json_schema_on_a_model_without_structured_outputs_is_refused() -> None:
    with strict_server("2026-10-01") as server:  # gpt-3.5-turbo is still served then
        assert_error(
            post(server, body("gpt-3.5-turbo", response_format=JSON_SCHEMA_FORMAT)), 400, None, None
        )
        assert server.counts()["strict:json_schema_unsupported"] == 1
        status, payload = post(
            server,
            body(
                "gpt-3.5-turbo",
                tools=[TOOL],
                tool_choice={"type": "function", "function": {"name": "pick"}},
            ),
        )
        assert (
            status == 200 and payload["choices"][0]["message"]["tool_calls"]
        )  # function calling is fine
        assert (
            post(server, body("gpt-3.5-turbo", response_format={"type": "json_object"}))[0] == 200
        )


@pytest.mark.parametrize(
    ("model", "extra"),
    [
        ("gpt-6-luna", {"reasoning_effort": "low", "temperature": 0}),
        ("gpt-6-luna", {"temperature": 0}),  # no effort: the default (medium) forbids it too
        ("gpt-6-sol", {"reasoning_effort": "high", "temperature": 0.2}),
        ("gpt-5.6-terra", {"temperature": 0}),
        ("gpt-6.1-sol", {"temperature": 0}),
        ("gpt-6-astra", {"reasoning_effort": "xhigh", "temperature": 0.7}),
        ("gpt-5", {"temperature": 0}),
    ],
)
def test_temperature_at_an_effort_that_forbids_it_is_refused(
    server: FaultServer, model: str, extra: dict[str, Any]
) -> None:
    value = json.dumps(extra["temperature"])
    assert_error(
        post(server, body(model, **extra)),
        400,
        "temperature",
        "unsupported_value",
        f"Unsupported value: 'temperature' does not support {value} with this model. Only the default (1) value is supported.",
    )


def test_the_other_sampling_controls_are_refused_there_too(server: FaultServer) -> None:
    assert_error(post(server, body("gpt-6-luna", top_p=0.5)), 400, "top_p", "unsupported_value")
    assert_error(
        post(server, body("gpt-6-luna", logprobs=True)), 400, "logprobs", "unsupported_parameter"
    )
    assert_error(
        post(server, body("gpt-6-luna", top_logprobs=2)),
        400,
        "top_logprobs",
        "unsupported_parameter",
    )
    assert (
        server.counts()["strict:sampling_value"] == 1
        and server.counts()["strict:sampling_parameter"] == 2
    )


def test_sampling_controls_pass_at_effort_none_at_the_default_value_and_on_non_reasoning_models(
    server: FaultServer,
) -> None:
    assert (
        post(
            server,
            body("gpt-6-luna", reasoning_effort="none", temperature=0, top_p=0.9, logprobs=True),
        )[0]
        == 200
    )
    assert post(server, body("gpt-5.6-sol", reasoning_effort="none", temperature=0.0))[0] == 200
    assert (
        post(server, body("gpt-6.1-sol", temperature=1))[0] == 200
    )  # the default value is accepted
    assert (
        post(server, body("gpt-4o", temperature=0, top_p=0.3, logprobs=True, top_logprobs=3))[0]
        == 200
    )


@pytest.mark.parametrize(
    ("model", "effort", "supported"),
    [
        ("gpt-6-astra", "none", "'low', 'medium', 'high', and 'xhigh'"),
        ("gpt-6-astra", "max", "'low', 'medium', 'high', and 'xhigh'"),
        ("gpt-6.1-sol", "none", "'low', 'medium', 'high', and 'xhigh'"),
        ("gpt-6.1-sol", "minimal", "'low', 'medium', 'high', and 'xhigh'"),
        ("gpt-6.1-sol", "max", "'low', 'medium', 'high', and 'xhigh'"),
        ("gpt-6-luna", "minimal", "'none', 'low', 'medium', 'high', 'xhigh', and 'max'"),
        ("gpt-5.6-luna", "minimal", "'none', 'low', 'medium', 'high', 'xhigh', and 'max'"),
        ("gpt-5", "none", "'minimal', 'low', 'medium', and 'high'"),
        ("o3", "xhigh", "'low', 'medium', and 'high'"),
    ],
)
def test_an_effort_the_model_does_not_take_is_refused(
    server: FaultServer, model: str, effort: str, supported: str
) -> None:
    assert_error(
        post(server, body(model, reasoning_effort=effort)),
        400,
        "reasoning_effort",
        "unsupported_value",
        f"Unsupported value: '{effort}' is not supported with the '{model}' model. Supported values are: {supported}.",
    )


@pytest.mark.parametrize(
    ("model", "effort"),
    [
        ("gpt-6-luna", "max"),
        ("gpt-6-luna", "none"),
        ("gpt-6-sol", "xhigh"),
        ("gpt-5.6-sol", "max"),
        ("gpt-6-astra", "low"),
        ("gpt-6.1-sol", "xhigh"),
        ("gpt-5-mini", "minimal"),
    ],
)
def test_an_effort_the_model_takes_is_answered(
    server: FaultServer, model: str, effort: str
) -> None:
    assert (
        post(server, body(model, reasoning_effort=effort, max_completion_tokens=100_000))[0] == 200
    )


@pytest.mark.parametrize("effort", ["none", "low", "medium"])
@pytest.mark.parametrize("model", ["gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini"])
def test_reasoning_effort_on_a_non_reasoning_model_is_refused(
    server: FaultServer, model: str, effort: str
) -> None:
    assert_error(
        post(server, body(model, reasoning_effort=effort)),
        400,
        None,
        None,
        "Unrecognized request argument supplied: reasoning_effort",
    )


@pytest.mark.parametrize(
    ("model", "extra"),
    [
        ("gpt-6-luna", {"reasoning_effort": "low"}),
        ("gpt-6-luna", {}),  # no effort: the default (medium) refuses tools
        ("gpt-6-sol", {"reasoning_effort": "max"}),
        ("gpt-5.6-luna", {}),
        ("gpt-6-astra", {"reasoning_effort": "low"}),  # no effort lets Astra call tools
    ],
)
def test_function_tools_at_an_effort_that_refuses_them(
    server: FaultServer, model: str, extra: dict[str, Any]
) -> None:
    assert_error(
        post(server, body(model, tools=[TOOL], **extra)),
        400,
        "reasoning_effort",
        None,
        f"Function tools with reasoning_effort are not supported for {model} in /v1/chat/completions. "
        "To use function tools, use /v1/responses or set reasoning_effort to 'none'.",
    )


def test_function_tools_on_a_responses_only_model_get_the_responses_wording(
    server: FaultServer,
) -> None:
    error = assert_error(
        post(server, body("gpt-6.1-sol", tools=[TOOL])), 400, "reasoning_effort", None
    )
    assert error["message"] == (
        "Function tools with reasoning_effort are not supported for gpt-6.1-sol in /v1/chat/completions. "
        "Please use /v1/responses instead."
    )
    assert server.counts()["strict:function_tools_responses_only"] == 1


def test_function_tools_pass_at_effort_none_and_on_models_that_allow_them(
    server: FaultServer,
) -> None:
    forced = {"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "pick"}}}
    for model, extra in (
        ("gpt-6-luna", {"reasoning_effort": "none"}),
        ("gpt-5.6-terra", {"reasoning_effort": "none"}),
        ("gpt-4o", {}),
        ("o3", {}),
        ("gpt-5", {"reasoning_effort": "high"}),
    ):
        status, payload = post(
            server, body(model, **forced, **extra, max_completion_tokens=100_000)
        )
        assert status == 200, (model, payload)
        call = payload["choices"][0]["message"]["tool_calls"][0]["function"]
        assert call["name"] == "pick" and set(json.loads(call["arguments"])) == {"answer", "score"}


@pytest.mark.parametrize(
    "model", ["gpt-6-luna", "gpt-6.1-sol", "gpt-6-astra", "gpt-5.6-sol", "gpt-5-nano", "o3"]
)
def test_max_tokens_on_a_reasoning_model_is_refused(server: FaultServer, model: str) -> None:
    assert_error(
        post(server, body(model, max_tokens=50)),
        400,
        "max_tokens",
        "unsupported_parameter",
        "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.",
    )
    assert post(server, body(model, max_completion_tokens=100_000))[0] == 200


def test_max_tokens_is_still_fine_on_a_non_reasoning_model(server: FaultServer) -> None:
    assert post(server, body("gpt-4o", max_tokens=500))[0] == 200


def with_schema(schema: dict[str, Any], strict: bool = True) -> dict[str, Any]:
    return {
        "type": "json_schema",
        "json_schema": {"name": "Broken", "strict": strict, "schema": schema},
    }


def closed(properties: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
        **extra,
    }


ADDITIONAL = "'additionalProperties' is required to be supplied and to be false."


@pytest.mark.parametrize(
    ("schema", "context", "problem"),
    [
        (
            {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
            "()",
            ADDITIONAL,
        ),
        (
            closed({"a": {"type": "string"}, "b": {"type": "integer"}}, required=["a"]),
            "()",
            "'required' is required to be supplied and to be an array including every key in properties. Missing 'b'.",
        ),
        (
            closed(
                {
                    "inner": {
                        "type": "object",
                        "properties": {"x": {"type": "string"}},
                        "required": ["x"],
                    }
                }
            ),
            "('properties', 'inner')",
            ADDITIONAL,
        ),
        (
            closed({"rows": {"type": "array", "items": {"type": "object", "properties": {}}}}),
            "('properties', 'rows', 'items')",
            ADDITIONAL,
        ),
        (
            closed(
                {
                    "pick": {
                        "anyOf": [
                            {"type": "null"},
                            {
                                "type": "object",
                                "properties": {"y": {"type": "integer"}},
                                "additionalProperties": False,
                            },
                        ]
                    }
                }
            ),
            "('properties', 'pick', 'anyOf', 1)",
            "'required' is required to be supplied and to be an array including every key in properties. Missing 'y'.",
        ),
        (
            closed(
                {"item": {"$ref": "#/$defs/Item"}},
                **{
                    "$defs": {
                        "Item": {
                            "type": "object",
                            "properties": {"id": {"type": "string"}},
                            "required": ["id"],
                        }
                    }
                },
            ),
            "('$defs', 'Item')",
            ADDITIONAL,
        ),
    ],
)
def test_a_strict_schema_that_breaks_the_strict_rules_is_refused(
    server: FaultServer, schema: dict[str, Any], context: str, problem: str
) -> None:
    assert_error(
        post(
            server,
            body("gpt-6-luna", response_format=with_schema(schema), max_completion_tokens=100_000),
        ),
        400,
        "response_format",
        "invalid_json_schema",
        f"Invalid schema for response_format 'Broken': In context={context}, {problem}",
    )
    # the same schema without `strict: true` is only a hint: answered
    assert (
        post(
            server,
            body(
                "gpt-6-luna",
                response_format=with_schema(schema, strict=False),
                max_completion_tokens=100_000,
            ),
        )[0]
        == 200
    )


def test_a_strict_function_schema_that_breaks_the_rules_is_refused(server: FaultServer) -> None:
    loose = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    tools = [
        TOOL,
        {"type": "function", "function": {"name": "loose", "parameters": loose, "strict": True}},
    ]
    assert_error(
        post(server, body("gpt-4o", tools=tools)),
        400,
        "tools[1].function.parameters",
        "invalid_function_parameters",
        f"Invalid schema for function 'loose': In context=(), {ADDITIONAL}",
    )
    tools[1]["function"]["strict"] = False
    assert post(server, body("gpt-4o", tools=tools))[0] == 200


def test_strict_schema_checker_accepts_what_pydantic_and_openai_emit() -> None:
    class Inner(BaseModel):
        x: str

    class Outer(BaseModel):
        inner: Inner
        rows: list[Inner]
        maybe: Inner | None

    from openai.lib._pydantic import to_strict_json_schema

    assert strict_schema_problem(to_strict_json_schema(Outer)) is None
    assert (
        strict_schema_problem(Outer.model_json_schema()) is not None
    )  # pydantic alone is not strict


def test_the_responses_api_is_not_found_in_strict_mode_and_every_path_is_counted() -> None:
    with strict_server() as server:
        assert_error(
            post(server, {"model": "gpt-6-luna", "input": "hi"}, "/responses"),
            404,
            None,
            None,
            "Invalid URL (POST /v1/responses)",
        )
        post(server, body("gpt-4o"))
        get(server, "/models")
        counts = server.counts()
    assert counts["path:/v1/responses"] == 1 and counts["strict:invalid_url"] == 1
    assert counts["path:/v1/chat/completions"] == 1 and counts["path:/v1/models"] == 1
    with FaultServer() as lenient:  # the default mode counts paths too, and keeps its own 404
        status, payload = post(lenient, {"input": "hi"}, "/responses")
        assert status == 404 and payload["error"]["message"] == "not found"
        assert lenient.counts()["path:/v1/responses"] == 1


def test_rules_are_checked_before_the_faults_and_limits() -> None:
    with strict_server(rates=FaultRates.only("server_error"), required_key="sk-right") as faulty:
        assert post(faulty, body("gpt-6-luna", reasoning_effort="low", temperature=0))[0] == 400
        assert (
            post(faulty, body("gpt-6-luna", reasoning_effort="none"))[0] == 401
        )  # valid: then the key
        counts = faulty.counts()
    assert (
        counts["strict:sampling_value"] == 1
        and counts["requests"] == 2
        and "server_error" not in counts
    )


# --- valid requests, reasoning tokens, the cut-off ----------------------------------------------


@pytest.mark.parametrize("model", [rule.model for rule in served_models(TODAY)])
def test_a_valid_request_for_every_served_model_is_answered(
    server: FaultServer, model: str
) -> None:
    status, payload = post(
        server, body(model, response_format=JSON_SCHEMA_FORMAT, max_completion_tokens=100_000)
    )
    assert status == 200, payload
    choice = payload["choices"][0]
    assert choice["finish_reason"] == "stop" and payload["model"] == model
    assert set(json.loads(choice["message"]["content"])) == {"answer", "score"}


def test_current_models_are_all_served_today() -> None:
    served = {rule.model for rule in served_models(TODAY)}
    current = {
        "gpt-6-luna",
        "gpt-6-sol",
        "gpt-6.1-sol",
        "gpt-6-astra",
        "gpt-5.6-luna",
        "gpt-5.6-terra",
        "gpt-5.6-sol",
    }
    assert current | {"gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-5", "o3"} <= served
    assert not served & {
        "gpt-3.5-turbo",
        "gpt-4",
        "gpt-4-turbo",
        "o1",
        "o3-mini",
        "o4-mini",
        "gpt-4.1-nano",
    }


def usage_of(
    server: FaultServer, model: str, **extra: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    status, payload = post(server, body(model, response_format=JSON_SCHEMA_FORMAT, **extra))
    assert status == 200, payload
    return payload["usage"], payload["choices"][0]


def test_reasoning_tokens_show_in_usage(server: FaultServer) -> None:
    usage, choice = usage_of(
        server, "gpt-6-luna", reasoning_effort="low", max_completion_tokens=4000
    )
    answer = len(choice["message"]["content"]) // 4 + 1
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 256
    assert usage["completion_tokens"] == 256 + answer
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    default, _ = usage_of(server, "gpt-6-astra", max_completion_tokens=4000)  # no effort: medium
    assert default["completion_tokens_details"]["reasoning_tokens"] == 1024
    none, _ = usage_of(server, "gpt-6-luna", reasoning_effort="none")
    plain, _ = usage_of(server, "gpt-4o")
    assert (
        none["completion_tokens_details"]["reasoning_tokens"]
        == 0
        == plain["completion_tokens_details"]["reasoning_tokens"]
    )
    assert server.counts()["tokens:reasoning"] == 256 + 1024


def test_reasoning_tokens_are_configurable() -> None:
    with strict_server(reasoning_tokens={"low": 7}) as server:
        usage, _ = usage_of(server, "gpt-6-luna", reasoning_effort="low")
        high, _ = usage_of(server, "gpt-6-luna", reasoning_effort="high")
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 7
    assert (
        high["completion_tokens_details"]["reasoning_tokens"] == 4096
    )  # not configured: the default
    with pytest.raises(ValueError):
        FaultConfig(reasoning_tokens={"ultra": 5})
    with pytest.raises(ValueError):
        FaultConfig(today="3 December 2026")


def test_reasoning_that_eats_the_budget_leaves_an_empty_answer_cut_off(server: FaultServer) -> None:
    usage, choice = usage_of(
        server, "gpt-6-luna", reasoning_effort="high", max_completion_tokens=1000
    )
    assert choice["finish_reason"] == "length" and choice["message"]["content"] == ""
    assert (
        usage["completion_tokens"] == 1000 == usage["completion_tokens_details"]["reasoning_tokens"]
    )
    usage, choice = usage_of(
        server, "gpt-6-luna", max_completion_tokens=1024
    )  # default medium: 1024
    assert choice["finish_reason"] == "length" and choice["message"]["content"] == ""


def test_reasoning_that_leaves_too_little_cuts_the_answer_partway() -> None:
    with strict_server(reasoning_tokens={"low": 5}) as server:
        _, full = usage_of(server, "gpt-6-luna", reasoning_effort="none")
        usage, choice = usage_of(
            server, "gpt-6-luna", reasoning_effort="low", max_completion_tokens=10
        )
    content = choice["message"]["content"]
    assert choice["finish_reason"] == "length"
    assert (
        content
        and full["message"]["content"].startswith(content)
        and content != full["message"]["content"]
    )
    assert (
        usage["completion_tokens"] == 10
        and usage["completion_tokens_details"]["reasoning_tokens"] == 5
    )


def test_a_forced_tool_call_is_cut_off_the_same_way(server: FaultServer) -> None:
    forced = {"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "pick"}}}
    status, payload = post(
        server, body("gpt-5", reasoning_effort="high", max_completion_tokens=4100, **forced)
    )
    assert status == 200
    choice = payload["choices"][0]
    assert choice["finish_reason"] == "length"
    with pytest.raises(json.JSONDecodeError):
        json.loads(choice["message"]["tool_calls"][0]["function"]["arguments"])


def test_an_m3rec_prompt_still_gets_its_stage_answer(server: FaultServer) -> None:
    request = {
        "model": "gpt-6-luna",
        "reasoning_effort": "none",
        "messages": [
            {"role": "system", "content": "You are MOTE, the item encoder."},
            {"role": "user", "content": "<item>[a1]</item>"},
        ],
        "response_format": JSON_SCHEMA_FORMAT,
    }
    assert post(server, request)[0] == 200
    assert server.counts()["stage:mote"] == 1


# --- GET /v1/models ------------------------------------------------------------------------------


def test_the_model_list_carries_the_shutdown_dates_of_the_models_served_today(
    server: FaultServer,
) -> None:
    status, payload = get(server, "/models")
    assert status == 200 and payload["object"] == "list"
    models = {m["id"]: m for m in payload["data"]}
    assert set(models) == {rule.model for rule in served_models(TODAY)}
    for entry in models.values():
        assert set(entry) == {"id", "object", "created", "owned_by", "shutdown_date"}
        assert (
            entry["object"] == "model" and isinstance(entry["created"], int) and entry["owned_by"]
        )
    assert models["gpt-4o"]["shutdown_date"] == "2027-01-14"
    assert models["gpt-5"]["shutdown_date"] == models["o3"]["shutdown_date"] == "2026-12-11"
    assert models["gpt-6-luna"]["shutdown_date"] is None
    assert "gpt-4" not in models
    status, one = get(server, "/models/gpt-4o")
    assert status == 200 and one == models["gpt-4o"]
    assert_error(get(server, "/models/gpt-4"), 404, None, "model_not_found")


def test_the_model_list_follows_the_pinned_today() -> None:
    with strict_server("2027-01-14") as server:
        ids = {m["id"] for m in get(server, "/models")[1]["data"]}
    assert "gpt-6-luna" in ids and not ids & {
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4.1",
        "gpt-4.1-mini",
        "gpt-5",
        "o3",
    }
    with strict_server("2026-10-01") as server:
        ids = {m["id"] for m in get(server, "/models")[1]["data"]}
    assert {"gpt-3.5-turbo", "o1", "gpt-4o"} <= ids


def test_the_default_mode_is_unchanged() -> None:
    with FaultServer() as server:
        status, payload = post(
            server,
            {
                "model": "fault-model",
                "messages": [{"role": "system", "content": "You are MOTE"}],
                "max_tokens": 50,
                "temperature": 0,
                "reasoning_effort": "high",
                "response_format": JSON_SCHEMA_FORMAT,
            },
        )
        assert status == 200 and "completion_tokens_details" not in payload["usage"]
        assert get(server, "/models") == (
            200,
            {"object": "list", "data": [{"id": "fault-model", "object": "model"}]},
        )
        assert post(server, body("gpt-6-luna"))[0] == 400  # not an m3rec prompt, as before
        assert not any(key.startswith("strict:") for key in server.counts())


# --- what ChatOpenAI sends ------------------------------------------------------------------------


class Pick(BaseModel):
    answer: str
    score: int


def chat(server: FaultServer, effort: str) -> ChatOpenAI:
    return ChatOpenAI(
        model="gpt-6-luna",
        base_url=server.url,
        api_key="x",
        use_responses_api=False,
        reasoning_effort=effort,
        temperature=0,
        max_tokens=50,
        max_retries=0,
    )


async def test_chat_openai_at_effort_none_with_temperature_is_answered() -> None:
    with strict_server(record_bodies=True) as server:
        picked = (
            await chat(server, "none")
            .with_structured_output(Pick, method="json_schema")
            .ainvoke("Pick one.")
        )
        sent = server.bodies()[0]
    assert isinstance(picked, Pick)
    # what langchain-openai puts on the wire: max_completion_tokens, a strict json_schema, the effort
    assert sent["max_completion_tokens"] == 50 and "max_tokens" not in sent
    assert sent["reasoning_effort"] == "none" and sent["temperature"] == 0
    assert sent["response_format"]["json_schema"]["strict"] is True


async def test_chat_openai_at_effort_low_with_temperature_is_refused() -> None:
    with strict_server() as server:
        with pytest.raises(openai.BadRequestError) as raised:
            await (
                chat(server, "low")
                .with_structured_output(Pick, method="json_schema")
                .ainvoke("Pick one.")
            )
        assert server.counts()["strict:sampling_value"] == 1
    assert isinstance(
        raised.value, ModelInvalidRequestError
    )  # langchain-openai raises both at once
    assert raised.value.status_code == 400 and raised.value.code == "unsupported_value"
    assert raised.value.param == "temperature"
