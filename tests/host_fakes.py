"""A scripted tool-calling chat model for host agents (the assistant that calls m3rec).

`ScriptedHostModel` answers from a `HostScript`: a function of the conversation so
far that returns the next `AIMessage` (a tool call, or the final text). It records
every conversation it saw, and `bind_tools` records the tools it was given.
"""

import json
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool

HostScript = Callable[[list[BaseMessage]], AIMessage]


class ScriptedHostModel(BaseChatModel):
    """A host chat model driven by a script; `bind_tools` keeps the model itself."""

    script: Any
    conversations: list[list[BaseMessage]] = []
    tools: list[str] = []

    @property
    def _llm_type(self) -> str:
        return "scripted-host"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.conversations.append(list(messages))
        message: AIMessage = self.script(list(messages))
        return ChatResult(generations=[ChatGeneration(message=message)])

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        self.tools.extend(t.name for t in tools if isinstance(t, BaseTool))
        return self


def call_then_answer(tool_name: str, args: dict[str, Any], *, retry_args: dict[str, Any] | None = None) -> HostScript:
    """Call `tool_name` with `args`; after an error result call again with `retry_args`; then answer.

    The final answer names the tool's top item (by title), as a real host model would.
    """

    def script(messages: list[BaseMessage]) -> AIMessage:
        results = [m for m in messages if isinstance(m, ToolMessage)]
        if not results:
            return AIMessage(content="", tool_calls=[{"name": tool_name, "args": args, "id": "call-1"}])
        last = results[-1]
        if last.status == "error":
            if retry_args is None or len(results) > 1:
                return AIMessage(content=f"Sorry, the recommender failed: {last.text}")
            return AIMessage(content="", tool_calls=[{"name": tool_name, "args": retry_args, "id": "call-2"}])
        top = json.loads(last.text)["recommendations"][0]
        return AIMessage(content=f"Buy next: {top['title']} ({top['item_id']}). Why: {top['why']}")

    return script
