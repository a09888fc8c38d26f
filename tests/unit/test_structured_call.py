"""`llm.factory.structured_call`: langchain-openai's structured-output steps, or its include-raw chain."""

import importlib.metadata
import json
from typing import Any

import httpx
import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.output_parsers import JsonOutputParser
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import (
    Runnable,
    RunnableBinding,
    RunnableGenerator,
    RunnableLambda,
    RunnableParallel,
    RunnableSequence,
    RunnableWithFallbacks,
)
from langchain_core.runnables.passthrough import RunnableAssign
from langchain_openai import ChatOpenAI

from m3rec_graph.context import StructuredMethod
from m3rec_graph.contracts.schemas import TraitsAnswer
from m3rec_graph.llm.factory import ainvoke_structured, structured_call
from tests.fakes import traits_answer

MESSAGES = [HumanMessage("You are MOTE <item>[i] x</item>")]
USAGE = {"input_tokens": 12, "output_tokens": 3, "total_tokens": 15}


class OneAnswer(BaseChatModel):
    """Answers every call with the same message."""

    answer: AIMessage

    @property
    def _llm_type(self) -> str:
        return "one-answer"

    def _generate(
        self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self.answer)])

    def with_structured_output(
        self, schema: Any, *, include_raw: bool = False, **kwargs: Any
    ) -> Runnable[Any, Any]:
        return self | JsonOutputParser()


class IncludeRawOnly(OneAnswer):
    """Structured output that is not `model | parser`: the graph must use langchain's include-raw chain."""

    def with_structured_output(
        self, schema: Any, *, include_raw: bool = False, **kwargs: Any
    ) -> Runnable[Any, Any]:
        def parse(message: AIMessage) -> dict[str, Any]:
            return {
                "raw": message,
                "parsed": JsonOutputParser().parse(message.text),
                "parsing_error": None,
            }

        return RunnableLambda(lambda messages: self.invoke(messages)) | RunnableLambda(parse)


def test_chat_openai_splits_into_its_bound_request_and_its_parser() -> None:
    model = ChatOpenAI(model="gpt-4o", api_key="sk-test")
    call = structured_call(model, TraitsAnswer.model_json_schema(), "json_schema")
    assert call.parser is not None
    assert call.request.kwargs["response_format"]["type"] == "json_schema"  # type: ignore[attr-defined]


async def test_a_model_without_the_usual_shape_keeps_the_include_raw_chain() -> None:
    model = IncludeRawOnly(
        answer=AIMessage(content=json.dumps(traits_answer()), usage_metadata=USAGE)
    )
    assert structured_call(model, TraitsAnswer.model_json_schema(), "json_schema").parser is None
    answer = await ainvoke_structured(
        model, TraitsAnswer, MESSAGES, method="json_schema", config={}
    )
    assert isinstance(answer.parsed, TraitsAnswer) and answer.raw is not None


async def test_a_refusal_is_an_error_that_keeps_the_raw_message() -> None:
    refused = AIMessage(
        content="", additional_kwargs={"refusal": "I can't help with that."}, usage_metadata=USAGE
    )
    answer = await ainvoke_structured(
        OneAnswer(answer=refused), TraitsAnswer, MESSAGES, method="json_schema", config={}
    )
    assert answer.parsed is None and answer.error == "the model refused: I can't help with that."
    assert answer.raw is refused


async def test_a_content_filter_stop_is_a_refusal() -> None:
    filtered = AIMessage(
        content='{"strengths"', response_metadata={"finish_reason": "content_filter"}
    )
    answer = await ainvoke_structured(
        OneAnswer(answer=filtered), TraitsAnswer, MESSAGES, method="json_schema", config={}
    )
    assert answer.error is not None and answer.error.startswith("the model refused")


# --------------------------------------------------------------------------- langchain-openai's own steps

LANGCHAIN_OPENAI = importlib.metadata.version("langchain-openai")
BINDING = "_ChatModelBinding"


def steps_of(runnable: Any) -> Any:
    """The shape of a runnable: its steps' types (and generators' names), nested as composed."""
    if isinstance(runnable, RunnableSequence):
        return [steps_of(step) for step in runnable.steps]
    if isinstance(runnable, RunnableParallel):
        return {key: steps_of(step) for key, step in runnable.steps__.items()}
    if isinstance(runnable, RunnableAssign):
        return ("assign", steps_of(runnable.mapper))
    if isinstance(runnable, RunnableWithFallbacks):
        fallbacks = [steps_of(f) for f in runnable.fallbacks]
        return ("fallbacks", steps_of(runnable.runnable), fallbacks, runnable.exception_key)
    if isinstance(runnable, RunnableBinding):
        return (type(runnable).__name__, type(runnable.bound).__name__, sorted(runnable.kwargs))
    if isinstance(runnable, RunnableGenerator):
        return ("RunnableGenerator", runnable.name)
    return type(runnable).__name__


SCHEMA_KWARGS = {
    "json_schema": ["ls_structured_output_format", "response_format"],
    "function_calling": ["ls_structured_output_format", "parallel_tool_calls", "tool_choice", "tools"],
}
PARSER = {"json_schema": "JsonOutputParser", "function_calling": "JsonOutputKeyToolsParser"}


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_the_structured_output_chain_has_the_steps_the_graph_runs(method: StructuredMethod) -> None:
    """Pins langchain-openai's `with_structured_output` chains (checked on 1.8.1): an upgrade
    that changes their steps fails here, before `structured_call` silently drops one."""
    model = ChatOpenAI(model="gpt-4o", api_key="sk-test", use_responses_api=False)
    schema = TraitsAnswer.model_json_schema()
    request = (BINDING, "ChatOpenAI", SCHEMA_KWARGS[method])
    checked = [("RunnableGenerator", "_check_refusal"), PARSER[method]]
    why = f"langchain-openai {LANGCHAIN_OPENAI} changed with_structured_output(method={method!r})"

    assert steps_of(model.with_structured_output(schema, method=method)) == [request, *checked], why
    assert steps_of(model.with_structured_output(schema, method=method, include_raw=True)) == [
        {"raw": request},
        (
            "fallbacks",
            ("assign", {"parsed": ["RunnableLambda", *checked], "parsing_error": "RunnableLambda"}),
            [("assign", {"parsed": "RunnableLambda"})],
            "parsing_error",
        ),
    ], why

    # `structured_call` keeps every one of them: the include-raw chain's request, and its
    # `parsed` branch after `itemgetter("raw")`: the refusal check, then the parser.
    call = structured_call(model, schema, method)
    raw_chain = model.with_structured_output(schema, method=method, include_raw=True)
    assert isinstance(raw_chain, RunnableSequence) and isinstance(raw_chain.first, RunnableParallel)
    raw_request = raw_chain.first.steps__["raw"]
    assert isinstance(call.request, RunnableBinding) and isinstance(raw_request, RunnableBinding)
    assert call.request.kwargs == raw_request.kwargs
    with_fallbacks = raw_chain.last
    assert isinstance(with_fallbacks, RunnableWithFallbacks)
    assign = with_fallbacks.runnable
    assert isinstance(assign, RunnableAssign)
    parsed = assign.mapper.steps__["parsed"]
    assert isinstance(parsed, RunnableSequence)
    assert [RunnableGenerator(step) for step in call.steps] == parsed.middle  # same functions
    assert type(call.parser) is type(parsed.last)


class ContentBlockRefusal(ChatOpenAI):
    """A ChatOpenAI whose answer is a refusal content part (the Responses API's `refusal` item)."""

    async def _agenerate(
        self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        refused = AIMessage(
            content=[{"type": "refusal", "refusal": "I can't help with that."}],
            usage_metadata=USAGE,
            response_metadata={"model_provider": "openai", "finish_reason": "stop"},
        )
        return ChatResult(generations=[ChatGeneration(message=refused)])


async def test_a_refusal_only_in_content_blocks_is_a_refusal() -> None:
    model = ContentBlockRefusal(model="gpt-4o", api_key="sk-test", use_responses_api=False)
    answer = await ainvoke_structured(model, TraitsAnswer, MESSAGES, method="json_schema", config={})
    assert answer.parsed is None and answer.error == "the model refused: I can't help with that."
    assert answer.raw is not None and answer.raw.usage_metadata == USAGE
    # Nowhere but in the content blocks: `additional_kwargs` has no `refusal`.
    assert "refusal" not in answer.raw.additional_kwargs
    assert [b["type"] for b in answer.raw.content_blocks] == ["refusal"]

    # The same for a chat model that is not langchain-openai's (langchain-core's standard block).
    fake = OneAnswer(answer=AIMessage(content=[{"type": "refusal", "refusal": "No."}]))
    answer = await ainvoke_structured(fake, TraitsAnswer, MESSAGES, method="json_schema", config={})
    assert answer.error == "the model refused: No." and answer.raw is not None


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
async def test_a_chat_completions_refusal_is_caught_by_langchain_openais_check(
    method: StructuredMethod,
) -> None:
    """The wire format: Chat Completions' `message.refusal`, one request, the raw message kept."""
    paths: list[str] = []

    def reply(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        message = {"role": "assistant", "content": None, "refusal": "I can't help with that."}
        return httpx.Response(
            200,
            json={
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 0,
                "model": "gpt-4o",
                "choices": [{"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}],
                "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
            },
        )

    model = ChatOpenAI(
        model="gpt-4o",
        api_key="sk-test",
        base_url="http://provider.test/v1",
        use_responses_api=False,
        max_retries=0,
        http_async_client=httpx.AsyncClient(transport=httpx.MockTransport(reply)),
    )
    answer = await ainvoke_structured(model, TraitsAnswer, MESSAGES, method=method, config={})
    assert paths == ["/v1/chat/completions"]
    assert answer.parsed is None and answer.error == "the model refused: I can't help with that."
    assert answer.raw is not None and answer.raw.usage_metadata is not None
    assert answer.raw.usage_metadata["input_tokens"] == 12
