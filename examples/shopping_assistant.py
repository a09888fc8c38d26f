"""A shopping assistant that answers "what should I buy next?" by calling m3rec as a tool.

    python examples/shopping_assistant.py             # offline: everything on the local model
    python examples/shopping_assistant.py --user 2    # another Amazon Beauty shopper

The assistant is a small LangGraph tool-calling loop (assistant -> tools -> assistant).
Its one tool is m3rec (`as_tool`), which looks the shopper's item ids up in a catalog
and answers with the top products and a one-line reason each.

Offline (no OPENAI_API_KEY), both m3rec and the assistant run on the local
SmolLM2-135M server, started here and stopped at the end. That model cannot
call tools, so the loop makes the first call for it (like `tool_choice`) and the
model only writes the reply; with a key the assistant is gpt-6-luna and decides
itself. The 135M model ranks close to chance: this shows the wiring, not quality.
"""

import argparse
import asyncio
import json
from contextlib import nullcontext
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolCall,
    ToolMessage,
)
from langchain_core.tools import BaseTool
from langchain_openai import ChatOpenAI
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.prebuilt import ToolNode, tools_condition

from m3rec_graph import context_for, local_server
from m3rec_graph.cli.demo import load_cases
from m3rec_graph.integrations.embed import TOOL_NAME, as_tool
from m3rec_graph.llm.local_endpoint import local_base_url
from m3rec_graph.llm.routing import LOCAL_MODEL_NAME, default_preset, uses_local_server
from m3rec_graph.storage.catalog import InMemoryCatalog

QUESTION = "What should I buy next?"
REPLY_PROMPT = (
    "You are a friendly shopping assistant for a beauty store. Using only the recommender's "
    "answer, reply in two or three sentences: name the top products and say why they suit the shopper."
)


class ShopperState(MessagesState):
    """The conversation plus what the shop knows about the shopper (item ids)."""

    history: list[str]
    """What they bought, oldest first."""
    shortlist: list[str]
    """What the shop could offer next (e.g. from search or "new in")."""


def system_prompt(state: ShopperState) -> str:
    return (
        "You are a friendly shopping assistant for a beauty store. To suggest products, call "
        f"{TOOL_NAME} with the shopper's history and the shortlist below (item ids), then answer "
        "in two or three sentences: name the top products and say why they suit the shopper.\n"
        f"Shopper's purchases, oldest first: {json.dumps(state['history'])}\n"
        f"Shortlist: {json.dumps(state['shortlist'])}"
    )


def build_assistant(
    model: BaseChatModel, tool: BaseTool, *, call_tool_first: bool = False
) -> CompiledStateGraph[Any, Any, Any, Any]:
    """Compile the assistant loop.

    Args:
        model: The assistant's chat model.
        tool: m3rec as a tool (`as_tool(catalog=...)`).
        call_tool_first: Make the first tool call for a model that cannot call tools.
    """
    with_tools = model.bind_tools([tool])

    async def assistant(state: ShopperState) -> dict[str, list[BaseMessage]]:
        if not call_tool_first:
            messages = [SystemMessage(system_prompt(state)), *state["messages"]]
            return {"messages": [await with_tools.ainvoke(messages)]}
        results = [m for m in state["messages"] if isinstance(m, ToolMessage)]
        if not results:  # the first turn: call m3rec for the model
            args = {"history": state["history"], "candidates": state["shortlist"]}
            call = ToolCall(name=tool.name, args=args, id="call-m3rec-1", type="tool_call")
            return {"messages": [AIMessage(content="", tool_calls=[call])]}
        # A model without tool support gets the result as plain text (no tool messages).
        question = next(m.text for m in state["messages"] if isinstance(m, HumanMessage))
        prompt = [
            SystemMessage(REPLY_PROMPT),
            HumanMessage(f"{question}\n\nThe recommender answered:\n{results[-1].text}"),
        ]
        return {"messages": [await model.ainvoke(prompt)]}

    builder = StateGraph(ShopperState)
    builder.add_node("assistant", assistant)
    builder.add_node("tools", ToolNode([tool]))
    builder.add_edge(START, "assistant")
    builder.add_conditional_edges("assistant", tools_condition, ["tools", END])
    builder.add_edge("tools", "assistant")
    return builder.compile()


def assistant_model() -> tuple[BaseChatModel, bool]:
    """Return the assistant's model and whether the loop must call the tool for it."""
    if default_preset() == "local":
        local = ChatOpenAI(
            model=LOCAL_MODEL_NAME, base_url=local_base_url(), api_key="local", temperature=0.0,
            max_tokens=160, timeout=600,
        )
        return local, True
    # gpt-6-luna calls functions on Chat Completions only at reasoning effort none, where
    # temperature is allowed too (https://developers.openai.com/api/docs/models/gpt-6-luna).
    return ChatOpenAI(
        model="gpt-6-luna", use_responses_api=False, reasoning_effort="none", temperature=0.0
    ), False


async def ask(
    assistant: CompiledStateGraph[Any, Any, Any, Any], history: list[str], shortlist: list[str]
) -> list[BaseMessage]:
    """Ask the assistant the question; return the whole conversation."""
    state = {"messages": [HumanMessage(QUESTION)], "history": history, "shortlist": shortlist}
    result = await assistant.ainvoke(state)
    messages: list[BaseMessage] = result["messages"]
    return messages


def report(messages: list[BaseMessage], titles: dict[str, str]) -> None:
    """Print the conversation, and the ranking the tool returned (its artifact)."""
    print(f"shopper: {QUESTION}")
    for message in messages:
        if isinstance(message, AIMessage) and message.tool_calls:
            for call in message.tool_calls:
                print(f"  [assistant calls {call['name']}: {len(call['args'].get('candidates', []))} candidates]")
        elif isinstance(message, ToolMessage):
            if message.status == "error":
                print(f"  [tool error: {message.text}]")
                continue
            answer = json.loads(message.text)
            print(f"  [{message.name} answered: shopper = {answer['shopper']}]")
            for entry in answer["recommendations"]:
                print(f"    {entry['rank']}. ({entry['score']:.1f}) {titles.get(entry['item_id'], entry['item_id'])}")
                print(f"       {entry['why']}")
        elif isinstance(message, AIMessage):
            print(f"assistant: {message.text.strip()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--user", type=int, default=0, help="which shipped demo shopper (0-2)")
    parser.add_argument("--k", type=int, default=3, help="how many products the tool returns")
    args = parser.parse_args()

    case = load_cases()[args.user]
    catalog = InMemoryCatalog([*case["history"], *case["candidates"]])
    titles = {item["item_id"]: item.get("title") or item["item_id"] for item in case["candidates"]}
    ctx = context_for()  # the default routing: `local` without OPENAI_API_KEY
    tool = as_tool(context=ctx, catalog=catalog, k=args.k)
    model, call_tool_first = assistant_model()
    assistant = build_assistant(model, tool, call_tool_first=call_tool_first)
    history = [item["item_id"] for item in case["history"]]
    shortlist = [item["item_id"] for item in case["candidates"]]

    print(f"Beauty shopper {case['user_id']}: {len(history)} purchases, {len(shortlist)} products "
          f"on the shortlist; m3rec routing '{ctx.routing}'\n")
    with local_server() if uses_local_server(ctx) or call_tool_first else nullcontext():
        messages = asyncio.run(ask(assistant, history, shortlist))
    report(messages, titles)


if __name__ == "__main__":
    main()
