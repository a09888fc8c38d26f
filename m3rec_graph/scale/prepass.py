"""The MOTE pre-pass as one graph run per chunk of items: MOTE's own nodes, fanned out with `Send`.

One run of the standalone MOTE graph per item costs a whole graph invocation each
(~2 ms of CPU with an instant model, against ~0.8 ms for a MOTE task inside a
recommendation); fanning a chunk's items out from one run costs what the
recommender's own fan-out does. The stage (`MoteStage`: prompt, re-asks,
fallback) is the recommender's, unchanged; only its trait writes are gathered
(`BufferedTraits`) and stored in one `abatch` per run instead of one per item, since
a store round trip per item costs more than the graph's CPU for it.
"""

import operator
from typing import Annotated, Any

from langgraph.graph import START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.store.base import BaseStore
from langgraph.types import Send
from typing_extensions import TypedDict

from m3rec_graph.context import M3RecContext
from m3rec_graph.contracts.schemas import Item, ItemTraits
from m3rec_graph.llm.factory import ChatModelFactory
from m3rec_graph.llm.usage import CallUsage
from m3rec_graph.stages.loop import add_stage
from m3rec_graph.stages.mote import MoteStage
from m3rec_graph.state import Degradation, MoteTask, merge_dicts
from m3rec_graph.storage.memory import write_many_traits
from m3rec_graph.storage.traits import StoreTraitMemory, TraitMemory


class PrepassInput(TypedDict):
    """The items of one pre-pass run (distinct, none stored)."""

    items: list[Item]


class PrepassState(PrepassInput, total=False):
    """The run's results: every MOTE task's traits, usage and degradations, merged."""

    traits: Annotated[dict[str, ItemTraits], merge_dicts]
    usage_log: Annotated[list[CallUsage], operator.add]
    degraded: Annotated[list[Degradation], operator.add]


class BufferedTraits(StoreTraitMemory):
    """A `TraitMemory` whose writes wait in a buffer until `flush` stores them in one `abatch`.

    Reads go straight to the store (`StoreTraitMemory.read`). Several runs may share it:
    `flush` stores whatever is buffered, whichever run wrote it, so nothing is written twice.
    """

    def __init__(self, store: BaseStore) -> None:
        """Buffer writes meant for `store`."""
        super().__init__(store)
        self._pending: dict[tuple[str, str], list[tuple[Item, ItemTraits]]] = {}

    async def write(
        self, item: Item, traits: ItemTraits, *, model: str, prompt_version: str
    ) -> None:
        """Buffer one validated MOTE answer."""
        self._pending.setdefault((model, prompt_version), []).append((item, traits))

    async def flush(self) -> None:
        """Store everything buffered (one `abatch` per MOTE model and prompt version)."""
        pending, self._pending = self._pending, {}
        for (model, version), entries in pending.items():
            await write_many_traits(self.store, entries, model=model, prompt_version=version)


def _send_items(state: PrepassInput) -> list[Send]:
    return [Send("mote", MoteTask(item=item)) for item in state["items"]]


def build_prepass_graph(
    chat_models: ChatModelFactory, memory: TraitMemory
) -> CompiledStateGraph[Any, M3RecContext, Any, Any]:
    """Compile the pre-pass: `{"items": [...]}` in, one MOTE task per item, traits written to `memory`."""
    builder = StateGraph(PrepassState, context_schema=M3RecContext, input_schema=PrepassInput)
    add_stage(builder, MoteStage(memory), then="__end__", chat_models=chat_models)
    builder.add_conditional_edges(START, _send_items, ["mote"])
    return builder.compile(name="mote_prepass")
