"""The one re-ask mechanism every LLM stage uses, as a small subgraph.

```
START -> ask --(accepted)--> END
          ^ |--(retry: feedback + budget left)--> ask
            |--(exhausted, or provider error after retries)--> fallback -> END
```

`ask` renders the stage prompt (with the last validation error when re-asking),
calls the routed model, parses and domain-checks the answer. Transient provider
errors are retried by the node's `RetryPolicy`; once those are spent, the error
handler sends the task to `fallback`. Authentication and model-not-found
errors are configuration problems and raise `ProviderAuthError`.
"""

import asyncio
from abc import ABC, abstractmethod
from functools import partial
from typing import Any, Literal

from langchain_core.exceptions import (
    ContextOverflowError,
    ModelAPIError,
    ModelAuthenticationError,
    ModelConnectionError,
    ModelInvalidRequestError,
    ModelNotFoundError,
    ModelPermissionDeniedError,
    ModelRateLimitError,
    ModelTimeoutError,
)
from langchain_core.runnables import RunnableConfig
from langgraph.errors import NodeError, NodeTimeoutError
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.types import Command, RetryPolicy
from pydantic import BaseModel

from m3rec_graph.context import M3RecContext, Stage
from m3rec_graph.errors import LocalServerError, ProviderAuthError
from m3rec_graph.local.server import local_base_url
from m3rec_graph.models import ChatModelFactory, ainvoke_structured
from m3rec_graph.prompts import PromptName, StagePrompt, load_prompt
from m3rec_graph.routing import get_context
from m3rec_graph.usage import call_usage

TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    ModelRateLimitError,
    ModelTimeoutError,
    ModelConnectionError,
    ModelAPIError,
    NodeTimeoutError,
)
"""Errors a node retry can fix. Schema failures are re-asked by the loop's edge instead."""

PROVIDER_RETRY = RetryPolicy(
    max_attempts=3, initial_interval=1.0, backoff_factor=2.0, max_interval=20.0, retry_on=TRANSIENT_ERRORS
)

DEGRADABLE_ERRORS: tuple[type[BaseException], ...] = (
    *TRANSIENT_ERRORS,
    ModelInvalidRequestError,
    ContextOverflowError,
)
"""Provider errors that, once retries are spent, degrade the task instead of failing the run."""

FATAL_ERRORS: tuple[type[BaseException], ...] = (
    ModelAuthenticationError,
    ModelPermissionDeniedError,
    ModelNotFoundError,
)


class StageDefinition(ABC):
    """What differs between stages: prompt, answer schema, domain check, result and fallback."""

    stage: Stage

    @abstractmethod
    def prompt_name(self, state: Any) -> PromptName:
        """Return the prompt file this task uses."""

    @abstractmethod
    def variables(self, state: Any) -> dict[str, Any]:
        """Return the prompt variables for this task."""

    @abstractmethod
    def answer_schema(self, state: Any) -> type[BaseModel]:
        """Return the JSON contract the model must answer with (may depend on the task's ids)."""

    def check(self, state: Any, answer: BaseModel, raw_text: str) -> str | None:
        """Return why a schema-valid answer is still wrong for this task, or `None`."""
        return None

    @abstractmethod
    def accept(self, state: Any, answer: BaseModel, ctx: M3RecContext) -> dict[str, Any]:
        """Return the state update for a valid answer."""

    @abstractmethod
    def fallback(self, state: Any, reason: str) -> dict[str, Any]:
        """Return the deterministic update (with a `degraded` entry) when no valid answer came."""


def stage_prompt(definition: StageDefinition, state: Any, ctx: M3RecContext) -> StagePrompt:
    """Return the prompt the task uses, honouring the context's per-prompt overrides."""
    name = definition.prompt_name(state)
    return load_prompt(name, ctx.prompt_overrides.get(name))


async def ask(
    state: dict[str, Any],
    runtime: Runtime[M3RecContext],
    *,
    definition: StageDefinition,
    chat_models: ChatModelFactory,
) -> dict[str, Any]:
    """Call the stage's model once; accept the answer or record why it failed."""
    ctx = get_context(runtime)
    spec = ctx.model_for(definition.stage)
    prompt = stage_prompt(definition, state, ctx)
    feedback: list[str] = state.get("feedback", [])
    attempt = len(feedback) + 1
    messages = prompt.format(**definition.variables(state), feedback=feedback[-1] if feedback else "")
    call_config: RunnableConfig = {
        "run_name": f"{definition.stage}.llm",
        "tags": [f"m3rec:{definition.stage}"],
        "metadata": {
            "m3rec_stage": definition.stage,
            "m3rec_model": spec.name,
            "m3rec_routing": ctx.routing,
            "m3rec_prompt": prompt.name,
            "m3rec_prompt_version": prompt.version,
            "m3rec_attempt": attempt,
        },
    }
    answer = await ainvoke_structured(
        chat_models(spec),
        definition.answer_schema(state),
        messages,
        method=spec.structured_method,
        config=call_config,
    )
    error = answer.error
    if error is None and answer.parsed is not None:
        error = definition.check(state, answer.parsed, answer.raw.text if answer.raw else "")
    usage = call_usage(
        definition.stage, spec.name, spec.tokenizer_model, messages, answer.raw, accepted=error is None
    )
    if answer.cut_off:
        usage["output_tokens"] = spec.max_tokens
    if error is None and answer.parsed is not None:
        # accept() may write the trait cache (SQLite): run it off the event loop.
        update = await asyncio.to_thread(definition.accept, state, answer.parsed, ctx)
        return {**update, "usage_log": [usage], "outcome": "accepted"}
    outcome = "exhausted" if len(feedback) >= ctx.max_schema_retries else "retry"
    return {"feedback": [error or "no answer"], "usage_log": [usage], "outcome": outcome}


def route_after_ask(state: dict[str, Any]) -> Literal["ask", "fallback", "__end__"]:
    """Re-ask while budget is left, fall back when it is spent, stop on a valid answer."""
    outcome = state.get("outcome")
    if outcome == "accepted":
        return "__end__"
    return "ask" if outcome == "retry" else "fallback"


async def fall_back(state: dict[str, Any], *, definition: StageDefinition) -> dict[str, Any]:
    """Produce the stage's deterministic result and flag it as degraded."""
    feedback: list[str] = state.get("feedback", [])
    return definition.fallback(state, feedback[-1] if feedback else "no valid answer")


async def on_provider_error(
    state: dict[str, Any],
    error: NodeError,
    runtime: Runtime[M3RecContext],
    *,
    definition: StageDefinition,
) -> Command[Literal["fallback"]]:
    """After retries: degrade on provider trouble; raise a clear error on bad configuration."""
    exc = error.error
    if isinstance(exc, FATAL_ERRORS):
        raise ProviderAuthError(f"{definition.stage}: the model provider rejected the request: {exc}") from exc
    spec = get_context(runtime).model_for(definition.stage)
    if isinstance(exc, ModelConnectionError) and spec.base_url == local_base_url():
        raise LocalServerError(
            f"the local model server at {spec.base_url} is not reachable: start it with `m3rec serve`"
        ) from exc
    if not isinstance(exc, DEGRADABLE_ERRORS):
        raise exc
    reason = f"provider error after retries: {type(exc).__name__}: {str(exc)[:200]}"
    return Command(goto="fallback", update={"feedback": [reason]})


def build_stage_graph(
    definition: StageDefinition,
    *,
    state_schema: type[Any],
    input_schema: type[Any],
    output_schema: type[Any],
    chat_models: ChatModelFactory,
) -> CompiledStateGraph[Any, M3RecContext, Any, Any]:
    """Compile a stage's ask / re-ask / fallback subgraph."""
    builder = StateGraph(
        state_schema, context_schema=M3RecContext, input_schema=input_schema, output_schema=output_schema
    )
    builder.add_node(
        "ask",
        partial(ask, definition=definition, chat_models=chat_models),
        retry_policy=PROVIDER_RETRY,
        error_handler=partial(on_provider_error, definition=definition),
    )
    builder.add_node("fallback", partial(fall_back, definition=definition))
    builder.add_edge(START, "ask")
    builder.add_conditional_edges("ask", route_after_ask, ["ask", "fallback", END])
    builder.add_edge("fallback", END)
    return builder.compile(name=definition.stage)
