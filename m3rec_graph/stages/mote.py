"""MOTE: one item's motivational traits, stored once per item text, model and prompt.

Valid answers go to the run's store (`runtime.store`, else the process's default
store), or to a deprecated `trait_cache=` passed to `build_graph`. Writes are
best-effort (`stages.remembering`): the traits are this run's answer whether or
not they could be stored.
"""

import logging
from typing import Any

from langgraph.graph.state import CompiledStateGraph
from langgraph.store.base import BaseStore
from pydantic import BaseModel

from m3rec_graph.context import M3RecContext
from m3rec_graph.contracts.schemas import TRAITS_CONTRACT, AnswerContract, TraitsAnswer
from m3rec_graph.llm.factory import ChatModelFactory
from m3rec_graph.prompts.loader import PromptName, load_prompt
from m3rec_graph.stages.fallbacks import neutral_traits
from m3rec_graph.stages.loop import StageDefinition, build_stage_graph
from m3rec_graph.stages.remembering import BestEffortWrites
from m3rec_graph.stages.render import dimensions_block
from m3rec_graph.state import MoteOutput, MoteState, MoteTask
from m3rec_graph.storage.store import resolve_store
from m3rec_graph.storage.traits import StoreTraitMemory, TraitMemory
from m3rec_graph.text.item_text import item_text

logger = logging.getLogger(__name__)


class MoteStage(StageDefinition):
    """Distil an item's text into traits; store valid answers for later runs."""

    stage = "mote"

    def __init__(self, legacy: TraitMemory | None = None) -> None:
        self.legacy = legacy
        """A deprecated `trait_cache=`'s memory; None: the run's store."""
        self._writes = BestEffortWrites(logger, "trait cache")

    def prompt_name(self, state: MoteState) -> PromptName:
        """Return the MOTE prompt."""
        return "mote"

    def variables(self, state: MoteState) -> dict[str, Any]:
        """Render the dimensions and the item's text."""
        item = state["item"]
        return {"dimensions": dimensions_block(), "item": f"[{item.item_id}] {item_text(item)}"}

    def answer_contract(self, state: MoteState) -> AnswerContract:
        """Ask for traits with levels 0-10 (stored as strengths in [0, 1])."""
        return TRAITS_CONTRACT

    def accept(self, state: MoteState, answer: BaseModel, ctx: M3RecContext) -> dict[str, Any]:
        """Return the traits."""
        assert isinstance(answer, TraitsAnswer)
        return {"traits": {state["item"].item_id: answer.to_traits()}}

    async def remember(
        self, state: MoteState, update: dict[str, Any], ctx: M3RecContext, store: BaseStore | None
    ) -> None:
        """Store the traits under the MOTE model and prompt version (best-effort)."""
        item = state["item"]
        memory = self.legacy or StoreTraitMemory(await resolve_store(store))
        write = memory.write(
            item,
            update["traits"][item.item_id],
            model=ctx.model_for("mote").name,
            prompt_version=load_prompt("mote", ctx.prompt_overrides.get("mote")).version,
        )
        await self._writes.run(write, f"the traits of {item.item_id}")

    def fallback(self, state: MoteState, reason: str) -> dict[str, Any]:
        """Use neutral traits (not cached, so the next run tries again) and flag them."""
        item_id = state["item"].item_id
        return {
            "traits": {item_id: neutral_traits("no valid MOTE answer")},
            "degraded": [{"stage": "mote", "item_id": item_id, "reason": reason}],
        }


def build_mote_graph(
    chat_models: ChatModelFactory, legacy: TraitMemory | None = None
) -> CompiledStateGraph[Any, M3RecContext, Any, Any]:
    """Compile MOTE as a graph of its own: one `MoteTask` in, its traits out (the recommender uses `add_stage`)."""
    return build_stage_graph(
        MoteStage(legacy),
        state_schema=MoteState,
        input_schema=MoteTask,
        output_schema=MoteOutput,
        chat_models=chat_models,
    )
