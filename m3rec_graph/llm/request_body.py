"""The Chat Completions request a stage call sends, built by the graph's own ChatOpenAI code path.

The graph sends every stage call through `ChatOpenAI.with_structured_output(schema,
method=spec.structured_method)`'s bound model (`models.structured_call`). langchain-openai decides
there how the schema travels: as a `response_format` of type `json_schema`, or,
for models without Structured Outputs (`gpt-3.5-turbo`, `gpt-4`, `gpt-4-*`), as
one forced function call (`tools` + `tool_choice`). The Batch API file and the
dry-run cost estimate reuse that decision and payload builder instead of
re-implementing them, so they send (and count) what a live run would.
"""

import functools
import json
import warnings
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Literal

from langchain_core.messages import BaseMessage
from langchain_core.runnables import RunnableBinding
from langchain_openai.chat_models.base import BaseChatOpenAI
from pydantic import BaseModel

from m3rec_graph.context import ModelSpec
from m3rec_graph.contracts.schemas import AnswerContract
from m3rec_graph.llm.factory import openai_chat_model, structured_call

SchemaTransport = Literal["json_schema", "function_calling"]

_NO_KEY = "not-used-no-request-is-sent"
SCHEMA_PARAMS = ("response_format", "tools", "tool_choice", "parallel_tool_calls")
"""Request keys that carry the answer schema (what `structured_params` returns)."""


@functools.lru_cache(maxsize=32)
def _payload_model(spec: ModelSpec) -> BaseChatOpenAI:
    """Return a ChatOpenAI for `spec` that is only used to build payloads (never sends)."""
    model = openai_chat_model(replace(spec, api_key=spec.api_key or _NO_KEY))
    if not isinstance(
        model, BaseChatOpenAI
    ):  # pragma: no cover - openai_chat_model builds ChatOpenAI
        raise TypeError(f"expected a ChatOpenAI, got {type(model).__name__}")
    return model


def structured_params(spec: ModelSpec, schema: AnswerContract | type[BaseModel]) -> dict[str, Any]:
    """Return the request parameters that carry `schema` for `spec` (`response_format`, or `tools` + `tool_choice`)."""
    return structured_params_for_json(spec, AnswerContract.of(schema).json_schema())


def structured_params_for_json(spec: ModelSpec, json_schema: dict[str, Any]) -> dict[str, Any]:
    """Like `structured_params`, from an already generated JSON schema."""
    model = _payload_model(spec)
    with warnings.catch_warnings():
        # langchain-openai warns when it switches gpt-3.5-turbo to function calling: expected here.
        warnings.simplefilter("ignore", UserWarning)
        bound = structured_call(model, json_schema, spec.structured_method).request
    if not isinstance(
        bound, RunnableBinding
    ):  # pragma: no cover - guards a langchain-openai change
        raise TypeError(
            "unexpected with_structured_output() shape: cannot read its request parameters"
        )
    return {key: value for key, value in bound.kwargs.items() if not key.startswith("ls_")}


def schema_transport(params: dict[str, Any]) -> SchemaTransport:
    """Return how `params` (from `structured_params`) carry the schema."""
    return "function_calling" if "tools" in params else "json_schema"


def params_text(params: dict[str, Any]) -> str:
    """Return the schema-carrying parameters as compact JSON (what the dry run counts as schema tokens)."""
    return json.dumps(params, separators=(",", ":"), ensure_ascii=False)


def chat_request_body(
    spec: ModelSpec, schema: AnswerContract | type[BaseModel], messages: Sequence[BaseMessage]
) -> dict[str, Any]:
    """Return the Chat Completions request body the graph would send for one stage call."""
    model = _payload_model(spec)
    body: dict[str, Any] = model._get_request_payload(
        list(messages), **structured_params(spec, schema)
    )
    return body


def answer_text(message: dict[str, Any]) -> str | None:
    """Return the JSON answer of a Chat Completions `message` (content, or the forced function call's arguments)."""
    calls = message.get("tool_calls") or []
    if calls:
        function = calls[0].get("function") or {}
        arguments = function.get("arguments")
        return arguments if isinstance(arguments, str) else None
    content = message.get("content")
    return content if isinstance(content, str) else None
