"""The one re-ask mechanism every LLM stage uses: two nodes of the parent graph per stage.

```
Send(stage, task) -> stage --(accepted)--> join (collect_traits / rank)
                 ^    |--(retry: Send(stage, task + feedback), budget left)
                      |--(exhausted, or provider error after retries)--> Send(stage_fallback) -> join
```

The `stage` node (`mope`, `mote`, `mar`) renders the stage prompt (with the last
validation error when re-asking), calls the routed model, parses and
domain-checks the answer. A rejected answer re-sends the task to the same node
with the error appended to its `feedback`; once `max_schema_retries` re-asks are
spent, the task goes to `<stage>_fallback`. Transient provider errors are retried
by the OpenAI client (the one owner of retries, honouring `Retry-After`); once
those are spent, the node's error handler sends the task to the fallback. Authentication errors raise `ProviderAuthError`; a request
the provider refuses as invalid (400, 404 model_not_found) raises
`ProviderRequestError`: both are configuration problems no retry can fix.

Each task carries its own re-ask state (`feedback`) in its `Send` payload, so the
tasks of one fan-out run as plain nodes of the parent graph: no nested graph run
per task, which cost more CPU than everything else the graph does (see
docs/benchmarks.md). Only a finished task (accepted or fallen back) goes on to the
join, and the join checks that every result is in: while a re-ask is still
pending it runs, finds a result missing, and does nothing (`defer=True` does not
help here: LangGraph 1.2 decides a run is about to end without counting pending
`Send` tasks, so a deferred join would run next to the re-ask).
"""

from abc import ABC, abstractmethod
from functools import partial
from typing import Any

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
from langgraph.errors import NodeError
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.store.base import BaseStore
from langgraph.types import Command, Send
from pydantic import BaseModel

from m3rec_graph.context import M3RecContext, Stage
from m3rec_graph.contracts.schemas import AnswerContract
from m3rec_graph.errors import LocalServerError, ProviderAuthError, ProviderRequestError
from m3rec_graph.llm.factory import ChatModelFactory, ainvoke_structured
from m3rec_graph.llm.local_endpoint import local_base_url
from m3rec_graph.llm.routing import get_context
from m3rec_graph.llm.usage import call_usage
from m3rec_graph.prompts.loader import PromptName, StagePrompt, load_prompt

DEGRADABLE_ERRORS: tuple[type[BaseException], ...] = (
    ModelRateLimitError,
    ModelTimeoutError,
    ModelConnectionError,
    ModelAPIError,
    ContextOverflowError,
)
"""Provider errors that degrade the task instead of failing the run: another call could succeed.

They reach the graph after the OpenAI client's own retries (`ModelSpec.max_retries`,
with backoff that honours `Retry-After`), which are the only retries: the stage
nodes have no `RetryPolicy`, so a call makes at most `max_retries + 1` HTTP
attempts. A hung provider ends in the client's timeout (`ModelSpec.timeout_s`),
a `ModelTimeoutError`, and so degrades too. A context overflow is this task's
input being too long, not a broken configuration."""

INVALID_REQUEST_ERRORS: tuple[type[BaseException], ...] = (
    ModelInvalidRequestError,
    ModelNotFoundError,
)
"""The provider refused the request itself (400 invalid_request_error, 404 model_not_found).

Every call of the run would be refused alike (a parameter the model rejects, a
retired model), so this is a configuration error: `ProviderRequestError` with the
provider's message, exit code 2 in the CLI, an error message in the tool."""

AUTH_ERRORS: tuple[type[BaseException], ...] = (
    ModelAuthenticationError,
    ModelPermissionDeniedError,
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
    def answer_contract(self, state: Any) -> AnswerContract:
        """Return the contract the model must answer in (may depend on the task's ids)."""

    def check(self, state: Any, answer: BaseModel, raw_text: str) -> str | None:
        """Return why a schema-valid answer is still wrong for this task, or `None`."""
        return None

    @abstractmethod
    def accept(self, state: Any, answer: BaseModel, ctx: M3RecContext) -> dict[str, Any]:
        """Return the state update for a valid answer."""

    @abstractmethod
    def fallback(self, state: Any, reason: str) -> dict[str, Any]:
        """Return the deterministic update (with a `degraded` entry) when no valid answer came."""

    async def remember(
        self, state: Any, update: dict[str, Any], ctx: M3RecContext, store: BaseStore | None
    ) -> None:
        """Store a valid answer's result for later runs (default: nothing to store).

        `store` is the run's `runtime.store` (None when the graph has none). Only
        valid answers get here; fallbacks are never stored.
        """
        return None


def stage_prompt(definition: StageDefinition, state: Any, ctx: M3RecContext) -> StagePrompt:
    """Return the prompt the task uses, honouring the context's per-prompt overrides."""
    name = definition.prompt_name(state)
    return load_prompt(name, ctx.prompt_overrides.get(name))


def fallback_node(stage: Stage) -> str:
    """Return the name of the node that produces `stage`'s deterministic result."""
    return f"{stage}_fallback"


async def ask(
    state: dict[str, Any],
    runtime: Runtime[M3RecContext],
    *,
    definition: StageDefinition,
    chat_models: ChatModelFactory,
    then: str,
) -> Command[Any]:
    """Call the stage's model once; accept the answer, or re-send the task with why it failed."""
    ctx = get_context(runtime)
    spec = ctx.model_for(definition.stage)
    prompt = stage_prompt(definition, state, ctx)
    feedback: list[str] = state.get("feedback", [])
    attempt = len(feedback) + 1
    messages = prompt.format(
        **definition.variables(state), feedback=feedback[-1] if feedback else ""
    )
    call_config: RunnableConfig = {
        "run_name": f"{definition.stage}.llm",
        "tags": [f"m3rec:{definition.stage}"],
        "metadata": {
            "m3rec_stage": definition.stage,
            "m3rec_model": spec.name,
            "m3rec_routing": ctx.routing_label,
            "m3rec_prompt": prompt.name,
            "m3rec_prompt_version": prompt.version,
            "m3rec_attempt": attempt,
        },
    }
    answer = await ainvoke_structured(
        chat_models(spec),
        definition.answer_contract(state),
        messages,
        method=spec.structured_method,
        config=call_config,
    )
    error = answer.error
    if error is None and answer.parsed is not None:
        error = definition.check(state, answer.parsed, answer.raw.text if answer.raw else "")
    usage = call_usage(
        definition.stage,
        spec.name,
        spec.tokenizer_model,
        messages,
        answer.raw,
        accepted=error is None,
    )
    if answer.cut_off and usage["estimated"]:  # no provider count: the answer used the whole budget
        usage["output_tokens"] = spec.max_tokens
    if error is None and answer.parsed is not None:
        update = definition.accept(state, answer.parsed, ctx)
        await definition.remember(state, update, ctx, runtime.store)
        return Command(update={**update, "usage_log": [usage]}, goto=then)
    retry = {**state, "feedback": [*feedback, error or "no answer"]}
    target = (
        definition.stage
        if len(feedback) < ctx.max_schema_retries
        else fallback_node(definition.stage)
    )
    return Command(update={"usage_log": [usage]}, goto=Send(target, retry))


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
) -> Command[Any]:
    """After retries: degrade on provider trouble; raise a clear error on bad configuration."""
    exc = error.error
    spec = get_context(runtime).model_for(definition.stage)
    if isinstance(exc, AUTH_ERRORS):
        raise ProviderAuthError(
            f"{definition.stage}: the model provider rejected the credentials: {exc}"
        ) from exc
    if isinstance(exc, INVALID_REQUEST_ERRORS):
        raise ProviderRequestError(
            f"{definition.stage}: the model provider refused the request for {spec.name} "
            f"(reasoning_effort={spec.reasoning_effort}, temperature={spec.temperature}): {exc}"
        ) from exc
    if isinstance(exc, ModelConnectionError) and spec.base_url == local_base_url():
        raise LocalServerError(
            f"the local model server at {spec.base_url} is not reachable: start it with `m3rec serve`"
        ) from exc
    if not isinstance(exc, DEGRADABLE_ERRORS):
        raise exc
    reason = f"provider error after retries: {type(exc).__name__}: {str(exc)[:200]}"
    feedback: list[str] = state.get("feedback", [])
    return Command(
        goto=Send(fallback_node(definition.stage), {**state, "feedback": [*feedback, reason]})
    )


def add_stage(
    builder: StateGraph[Any, Any, Any, Any],
    definition: StageDefinition,
    *,
    then: str,
    chat_models: ChatModelFactory,
) -> None:
    """Add a stage's ask node (the target of `Send(stage, task)`) and its fallback node to `builder`.

    A task that finishes (accepted, or fallen back) goes on to `then`, which must
    itself wait until every task's result is in (re-asks may still be pending).
    """
    stage = definition.stage
    fallback = fallback_node(stage)
    builder.add_node(
        stage,
        partial(ask, definition=definition, chat_models=chat_models, then=then),
        error_handler=partial(on_provider_error, definition=definition),
        destinations=(stage, fallback, then),  # Command targets: partial() hides the annotation
    )
    builder.add_node(fallback, partial(fall_back, definition=definition))
    builder.add_edge(fallback, then)


def build_stage_graph(
    definition: StageDefinition,
    *,
    state_schema: type[Any],
    input_schema: type[Any],
    output_schema: type[Any],
    chat_models: ChatModelFactory,
) -> CompiledStateGraph[Any, M3RecContext, Any, Any]:
    """Compile one stage on its own: one task in, its result (and usage, degradations) out.

    The recommender adds its stages to its own graph with `add_stage`; this is for
    running a stage by itself (tests, tools), with the same nodes and loop.
    """
    builder = StateGraph(
        state_schema,
        context_schema=M3RecContext,
        input_schema=input_schema,
        output_schema=output_schema,
    )
    add_stage(builder, definition, then=END, chat_models=chat_models)
    builder.add_conditional_edges(
        START, partial(_send_task, stage=definition.stage), [definition.stage]
    )
    return builder.compile(name=definition.stage)


def _send_task(task: dict[str, Any], *, stage: Stage) -> Send:
    return Send(stage, dict(task))
