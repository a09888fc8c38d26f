"""Chat models: the injectable factory, and structured calls that return instead of raising.

Every model is a `ChatOpenAI`, the same code path for OpenAI and for the local
server. Tests and hosts inject their own factory into `build_graph`.
"""

import asyncio
import contextlib
import inspect
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import openai
from langchain_core.exceptions import ModelRefusalError, OutputParserException
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.output_parsers import BaseOutputParser
from langchain_core.outputs import ChatGeneration
from langchain_core.runnables import (
    Runnable,
    RunnableBinding,
    RunnableConfig,
    RunnableGenerator,
    RunnableSequence,
)
from langchain_openai import ChatOpenAI
from langchain_openai.chat_models.base import BaseChatOpenAI
from pydantic import BaseModel, ValidationError

from m3rec_graph.context import ModelSpec, StructuredMethod
from m3rec_graph.contracts.schemas import AnswerContract
from m3rec_graph.llm.rate_limits import RequestLimiter, request_tokens
from m3rec_graph.llm.rate_limits import rate_limiter_for as rate_limiter_for  # re-exported


class ChatModelFactory(Protocol):
    """Builds the chat model for a `ModelSpec` (inject one to share clients or use fakes)."""

    def __call__(self, spec: ModelSpec) -> BaseChatModel:
        """Return the chat model for `spec`."""


_CLIENTS: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[ModelSpec, BaseChatModel]]" = (
    weakref.WeakKeyDictionary()
)


def openai_chat_model(spec: ModelSpec) -> BaseChatModel:
    """Return a `ChatOpenAI` for `spec`, shared per spec within one event loop.

    The async HTTP connection pool belongs to the loop that opened it, and
    langchain-openai shares one default async client per base URL process-wide,
    so a second `asyncio.run` would reuse dead connections ("Event loop is
    closed"). Each loop therefore gets its own models with their own client.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return _new_chat_model(spec)
    per_loop = _CLIENTS.setdefault(loop, {})
    if spec not in per_loop:
        client = openai.DefaultAsyncHttpxClient(timeout=spec.timeout_s)
        per_loop[spec] = _new_chat_model(spec, http_async_client=client)
    return per_loop[spec]


def shared_client_chat_models(client: Any) -> ChatModelFactory:
    """Return a factory whose `ChatOpenAI`s all send through one async HTTP client the caller owns.

    `openai_chat_model` gives each spec its own pool (openai's default: 1,000
    connections, 100 kept alive). A host serving many recommendations at once can
    size one pool for all of them instead, e.g.
    `openai.DefaultAsyncHttpxClient(limits=httpx2.Limits(max_connections=2000))`,
    and observe it (event hooks, trace extensions). The client belongs to the event
    loop it is used on; the models are built once per spec.
    """
    built: dict[ModelSpec, BaseChatModel] = {}

    def build(spec: ModelSpec) -> BaseChatModel:
        if spec not in built:
            built[spec] = _new_chat_model(spec, http_async_client=client)
        return built[spec]

    return build


def _new_chat_model(spec: ModelSpec, **extra: Any) -> BaseChatModel:
    kwargs: dict[str, Any] = {
        "model": spec.name,
        # Every stage call goes to Chat Completions. langchain-openai (1.8) otherwise
        # switches to the Responses API by itself: for gpt-6* whenever tools are sent,
        # always for gpt-5.6-sol, and whenever `reasoning={...}` is passed
        # (`BaseChatOpenAI._use_responses_api`). So this is explicit, and the effort
        # travels as Chat Completions' `reasoning_effort`, never as `reasoning=`.
        "use_responses_api": False,
        "max_tokens": spec.max_tokens,  # sent as max_completion_tokens
        "timeout": spec.timeout_s,
        "max_retries": spec.max_retries,
    }
    # `None` means "do not send": reasoning models refuse temperature above effort
    # `none`, and langchain-openai strips it only for gpt-5* names (validate_temperature).
    if spec.temperature is not None:
        kwargs["temperature"] = spec.temperature
    if spec.reasoning_effort is not None:
        kwargs["reasoning_effort"] = spec.reasoning_effort
    if spec.base_url:
        kwargs["base_url"] = spec.base_url
    if spec.api_key:
        kwargs["api_key"] = spec.api_key
    if spec.tokenizer_model:
        kwargs["tiktoken_model_name"] = spec.tokenizer_model
    limiter = rate_limiter_for(spec)  # shared by the per-loop clients of the same spec
    if limiter is not None:
        kwargs["rate_limiter"] = limiter
    return ChatOpenAI(**kwargs, **extra)


def _request_limits(
    model: BaseChatModel, messages: Sequence[BaseMessage], json_schema: dict[str, Any]
) -> AbstractAsyncContextManager[None]:
    """Return the in-flight slot and token booking `model`'s limiter asks of a request, if any."""
    limiter = model.rate_limiter
    if not isinstance(limiter, RequestLimiter):
        return contextlib.nullcontext()
    tokens = 0
    if limiter.tokens is not None:
        tokenizer, max_tokens = "gpt-4o", None
        if isinstance(model, BaseChatOpenAI):
            tokenizer = model.tiktoken_model_name or model.model_name
            max_tokens = model.max_tokens
        tokens = request_tokens(messages, json_schema, tokenizer=tokenizer, max_tokens=max_tokens)
    return limiter.request(tokens)


@dataclass(frozen=True)
class StructuredAnswer:
    """The outcome of one structured call: a parsed answer, or why there is none."""

    parsed: BaseModel | None
    error: str | None
    raw: AIMessage | None
    cut_off: bool = False
    """The answer hit the token limit (its output tokens are the whole budget)."""


def describe_validation_error(exc: ValidationError, limit: int = 4) -> str:
    """Summarise a pydantic error as `path: message` items a model can act on."""
    items = []
    for err in exc.errors()[:limit]:
        where = ".".join(str(p) for p in err["loc"]) or "answer"
        items.append(f"{where}: {err['msg']}")
    more = f"; and {exc.error_count() - limit} more" if exc.error_count() > limit else ""
    return "; ".join(items) + more


_CUT_OFF = "the answer was cut off at the token limit; answer more concisely"


def _cut_off_message(exc: openai.LengthFinishReasonError) -> AIMessage | None:
    """Return the cut-off answer with the provider's token usage, which the error still carries."""
    completion = exc.completion
    usage = completion.usage
    if usage is None:  # a streamed completion: the provider sent no usage
        return None
    text = completion.choices[0].message.content if completion.choices else None
    details = usage.completion_tokens_details
    reasoning = (details.reasoning_tokens or 0) if details is not None else 0
    return AIMessage(
        content=text or "",
        usage_metadata={
            "input_tokens": usage.prompt_tokens,
            "output_tokens": usage.completion_tokens,  # reasoning included: billed as output
            "total_tokens": usage.total_tokens,
            "output_token_details": {"reasoning": reasoning},
        },
    )


def _refused(exc: ModelRefusalError) -> str:
    return f"the model refused: {str(exc)[:200]}"


def _describe_parsing_error(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        return describe_validation_error(exc)
    if isinstance(exc, OutputParserException):
        cause = exc.__cause__
        if isinstance(cause, ValidationError):
            return describe_validation_error(cause)
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"the answer is not valid JSON for the schema ({text[:200]})"


MessageStep = Callable[[Iterator[BaseMessage]], Iterator[BaseMessage]]
"""A step of a structured-output chain between the model and its parser (langchain-openai's `_check_refusal`)."""


@dataclass(frozen=True)
class StructuredCall:
    """How one structured request goes out: `with_structured_output`'s own steps, run one by one.

    For ChatOpenAI (langchain-openai 1.8.1, checked in
    `tests/unit/test_structured_call.py`) `with_structured_output(schema, method=...)` is
    `bound model | RunnableGenerator(_check_refusal) | output parser`: `request` is the
    model bound to `response_format` (or to a forced tool call), `steps` the library's
    refusal check (a refusal block in `content_blocks`, or a content-filter stop, raises
    `ModelRefusalError`), `parser` its output parser. `ainvoke_structured` sends `request`
    and then applies `steps` and `parser` to the raw message itself, exactly as the
    chain would, which keeps one traced LLM run per call instead of the include-raw
    chain's eight nested runnables, each with its own callback set-up (the graph's
    largest per-call cost), and keeps the raw message (`include_raw`'s `raw`), so
    token usage and the text the validate-and-re-ask edge quotes survive a refusal
    or a parsing failure.
    """

    request: Runnable[Any, Any]
    parser: BaseOutputParser[Any] | None
    """None: `request` is the include-raw chain, answering `{"raw", "parsed", "parsing_error"}`."""
    json_schema: dict[str, Any]
    """The answer's JSON schema, as sent."""
    steps: tuple[MessageStep, ...] = ()
    """The chain's steps between `request` and `parser`, in order (langchain-openai: its refusal check)."""


def _message_step(step: Runnable[Any, Any]) -> MessageStep | None:
    """Return the generator function a `RunnableGenerator` step runs, if it has a sync one."""
    if not isinstance(step, RunnableGenerator):
        return None
    transform = getattr(step, "_transform", None)  # what `RunnableGenerator.invoke` streams through
    return transform if inspect.isgeneratorfunction(transform) else None


def _apply_steps(steps: Sequence[MessageStep], message: BaseMessage) -> BaseMessage:
    """Run `steps` on one message as the chain's `invoke` would (each step's chunks added up)."""
    for step in steps:
        final: BaseMessage | None = None
        for chunk in step(iter([message])):
            final = chunk if final is None else final + chunk  # type: ignore[assignment]
        if final is None:
            raise OutputParserException("the structured-output chain dropped the answer")
        message = final
    return message


def _check_standard_refusal(messages: Iterator[BaseMessage]) -> Iterator[BaseMessage]:
    """The refusal check for chat models whose structured output is not langchain-openai's.

    A host's or a test's model (`model | parser`) brings no check of its own, so this
    reads langchain-core's provider-neutral refusal: a `refusal` block in
    `content_blocks` (`ModelRefusalError`'s own contract), a Chat Completions
    `refusal` field (which `content_blocks` lists only on messages tagged as
    OpenAI's), or a content-filter stop.
    """
    for message in messages:
        for block in message.content_blocks:
            if block["type"] == "refusal":
                if text := block.get("refusal"):
                    raise ModelRefusalError(str(text), raw_message=message)
                raise ModelRefusalError(raw_message=message)
        refusal = message.additional_kwargs.get("refusal")
        if refusal:
            raise ModelRefusalError(str(refusal), raw_message=message)
        if message.response_metadata.get("finish_reason") == "content_filter":
            raise ModelRefusalError(
                "the provider's content filter stopped the answer", raw_message=message
            )
        yield message


def structured_call(
    model: BaseChatModel, json_schema: dict[str, Any], method: StructuredMethod
) -> StructuredCall:
    """Split `model.with_structured_output(json_schema, method=...)` into its steps.

    The chain must be `bound model | generator steps... | output parser`; any other
    shape keeps langchain's include-raw chain, which runs every step itself.
    Models other than ChatOpenAI also get `_check_standard_refusal` before the parser.
    """
    chain = model.with_structured_output(json_schema, method=method)
    if (
        isinstance(chain, RunnableSequence)
        and isinstance(chain.first, (BaseChatModel, RunnableBinding))
        and isinstance(chain.last, BaseOutputParser)
    ):
        steps = [_message_step(step) for step in chain.middle]
        if all(step is not None for step in steps):
            checks = tuple(step for step in steps if step is not None)
            if not isinstance(model, BaseChatOpenAI):
                checks += (_check_standard_refusal,)
            return StructuredCall(chain.first, chain.last, json_schema, checks)
    return StructuredCall(
        model.with_structured_output(json_schema, method=method, include_raw=True),
        None,
        json_schema,
    )


_STRUCTURED_CACHE_SIZE = 64
_structured: "OrderedDict[tuple[int, type[BaseModel], str], tuple[BaseChatModel, StructuredCall]]" = OrderedDict()


def _structured_call_for(
    model: BaseChatModel, contract: AnswerContract, method: StructuredMethod
) -> StructuredCall:
    """Return `structured_call(...)` for `contract`, built once per model, answer model and method.

    Binding the schema costs a fifth of a stage call with an instant model.
    Entries hold their model, so an `id()` is never reused while cached (and the
    cache is bounded).
    """
    if contract.per_task:  # one schema per task: caching would only pin it
        return structured_call(model, contract.json_schema(), method)
    key = (id(model), contract.model, method)
    hit = _structured.get(key)
    if hit is not None and hit[0] is model:
        _structured.move_to_end(key)
        return hit[1]
    call = structured_call(model, contract.json_schema(), method)
    _structured[key] = (model, call)
    if len(_structured) > _STRUCTURED_CACHE_SIZE:
        _structured.popitem(last=False)
    return call


async def ainvoke_structured(
    model: BaseChatModel,
    schema: AnswerContract | type[BaseModel],
    messages: Sequence[BaseMessage],
    *,
    method: StructuredMethod,
    config: RunnableConfig,
) -> StructuredAnswer:
    """Ask `model` for a `schema` answer; a bad answer comes back as an error string, not an exception.

    The model gets the schema's JSON schema (so a constrained decoder can
    enforce it) and the answer is validated here with pydantic, which keeps the
    provider's raw message, and so its token usage, even when validation fails.
    Provider errors (rate limits, 5xx, timeouts, auth) still raise: the graph's
    retry policy and error handlers own those.

    This is the one place stage calls go out, so it also applies the model's
    in-flight cap and token budget (`rate_limits.RequestLimiter.request`);
    the requests-per-second limit is applied by the chat model itself.
    """
    contract = AnswerContract.of(schema)
    call = _structured_call_for(model, contract, method)
    try:
        async with _request_limits(model, messages, call.json_schema):
            out = await call.request.ainvoke(list(messages), config=config)
    except openai.LengthFinishReasonError as exc:
        return StructuredAnswer(None, _CUT_OFF, _cut_off_message(exc), cut_off=True)
    except ModelRefusalError as exc:
        return StructuredAnswer(None, _refused(exc), None)
    except OutputParserException as exc:
        return StructuredAnswer(None, _describe_parsing_error(exc), None)
    if call.parser is None:
        raw = out.get("raw") if isinstance(out, dict) else None
        raw_message = raw if isinstance(raw, AIMessage) else None
        error = out.get("parsing_error") if isinstance(out, dict) else None
        parsed = out.get("parsed") if isinstance(out, dict) else None
    else:
        raw_message = out if isinstance(out, AIMessage) else None
        error, parsed = None, None
        try:
            checked = _apply_steps(call.steps, out)  # the library's refusal check
        except ModelRefusalError as exc:
            return StructuredAnswer(None, _refused(exc), raw_message)
        if (
            raw_message is not None
            and raw_message.response_metadata.get("finish_reason") == "length"
        ):
            # A cut-off forced function call (json_schema answers raise LengthFinishReasonError instead).
            return StructuredAnswer(None, _CUT_OFF, raw_message, cut_off=True)
        try:
            parsed = call.parser.parse_result([ChatGeneration(message=checked)])
        except (OutputParserException, ModelRefusalError, ValueError) as exc:
            error = exc  # langchain-core's JSON and tool parsers check for refusal blocks too
    if isinstance(error, ModelRefusalError):  # the include-raw chain reports its refusal check here
        return StructuredAnswer(None, _refused(error), raw_message)
    if error is not None:
        return StructuredAnswer(None, _describe_parsing_error(error), raw_message)
    if parsed is None:
        text = raw_message.text.strip() if raw_message is not None else ""
        if (
            raw_message is not None and raw_message.invalid_tool_calls
        ):  # the call's arguments are not JSON
            text = str(raw_message.invalid_tool_calls[0].get("args") or "").strip()
        if text:  # the lenient JSON parser gave up on it (e.g. a stray closing brace)
            return StructuredAnswer(
                None, f"the answer is not valid JSON: {text[:120]!r}", raw_message
            )
        return StructuredAnswer(None, "the answer was empty", raw_message)
    try:
        return StructuredAnswer(contract.validate_answer(parsed), None, raw_message)
    except ValidationError as exc:
        return StructuredAnswer(None, describe_validation_error(exc), raw_message)
