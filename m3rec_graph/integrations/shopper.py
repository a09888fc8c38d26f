"""A second tool for a host agent: what drives a shopper, from the profile m3rec stored for them.

```python
tools = [as_tool(catalog=catalog), as_shopper_tool(store=store)]
```

The recommendation tool stores each shopper's validated MOPE profile
(`storage.memory`). This tool reads the most recently stored one back, so an
assistant can answer "what does this shopper care about?" or pick candidates to
rank, without a model call. It never runs MOPE: a shopper with no stored profile
(never recommended for, expired, or forgotten) gets `"shopper_profile": null` and a
note saying so.
"""

import asyncio
import json
from collections.abc import Callable
from typing import Any

from langchain_core.tools import BaseTool, StructuredTool, ToolException
from langgraph.store.base import BaseStore
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from m3rec_graph.errors import M3RecError
from m3rec_graph.llm.factory import describe_validation_error
from m3rec_graph.state import M3RecGraph
from m3rec_graph.storage.memory import stored_profile_summary
from m3rec_graph.storage.store import resolve_store

SHOPPER_TOOL_NAME = "describe_shopper"
SHOPPER_TOOL_DESCRIPTION = (
    "Tell what drives a shopper's buying (their motivations: function, quality, looks, self-care, "
    "social, value, convenience), from the profile kept from earlier recommendations for them. "
    "Pass their user_id. Returns JSON with `shopper_profile`, a short paragraph, or null when "
    "nothing is stored yet. Makes no recommendation."
)
NO_PROFILE_NOTE = (
    "no profile is stored for this shopper (never recommended for, expired, or forgotten): "
    "a recommendation with their purchase history stores one"
)


class DescribeShopperArgs(BaseModel):
    """Arguments of the shopper tool."""

    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(min_length=1, description="The shopper's id, as passed to the recommendation tool.")


async def shopper_answer(store: BaseStore, user_id: str) -> dict[str, Any]:
    """Return the tool's JSON-able answer: the stored profile summary, or null with a note."""
    summary = await stored_profile_summary(store, user_id)
    answer: dict[str, Any] = {"user_id": user_id, "shopper_profile": summary}
    if summary is None:
        answer["note"] = NO_PROFILE_NOTE
    return answer


def as_shopper_tool(
    graph: M3RecGraph | None = None,
    *,
    store: BaseStore | None = None,
    name: str = SHOPPER_TOOL_NAME,
    description: str = SHOPPER_TOOL_DESCRIPTION,
) -> BaseTool:
    """Return a LangChain tool that tells a host agent what drives a shopper (no model call).

    Args:
        graph: The graph the recommendation tool runs; its store is read when `store`
            is not given.
        store: The store m3rec keeps profiles in (the one passed to `build_graph(store=...)`).
            Default: `graph`'s store, else the process default (`$M3REC_STORE_URL`, else
            the SQLite file in the cache directory), as a graph compiled without one uses.
        name: The tool name the model sees.
        description: The tool description the model sees.
    """
    fixed = store if store is not None else (graph.store if graph is not None else None)

    async def describe(user_id: str) -> str:
        try:
            answer = await shopper_answer(await resolve_store(fixed), user_id)
        except M3RecError as exc:  # a bad user id label, an unreachable store URL
            raise ToolException(f"{type(exc).__name__}: {exc}") from exc
        return json.dumps(answer, ensure_ascii=False, separators=(",", ":"))

    def describe_sync(user_id: str) -> str:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(describe(user_id))
        raise ToolException(f"{name} was called synchronously inside an event loop: use ainvoke")

    return StructuredTool.from_function(
        func=describe_sync,
        coroutine=describe,
        name=name,
        description=description,
        args_schema=DescribeShopperArgs,
        handle_tool_error=_tool_error,
        handle_validation_error=_argument_error(name),
    )


def _tool_error(exc: ToolException) -> str:
    return f"Error: {exc}"


def _argument_error(tool_name: str) -> Callable[[Any], str]:
    def describe(exc: Any) -> str:
        detail = describe_validation_error(exc) if isinstance(exc, ValidationError) else str(exc)
        return f'Error: invalid arguments for {tool_name}: {detail}. Expected {{"user_id": "..."}}.'

    return describe
