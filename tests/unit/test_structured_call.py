"""`models.structured_call`: the bound model and its parser, or langchain's include-raw chain."""

import json
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.output_parsers import JsonOutputParser
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable, RunnableLambda
from langchain_openai import ChatOpenAI

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
