"""MOTE: one item's motivational traits, cached once per item text, model and prompt."""

from typing import Any

from langgraph.graph.state import CompiledStateGraph
from pydantic import BaseModel

from m3rec_graph.cache import TraitCache, cache_blocks
from m3rec_graph.context import M3RecContext
from m3rec_graph.fallbacks import neutral_traits
from m3rec_graph.models import ChatModelFactory
from m3rec_graph.prompts import PromptName
from m3rec_graph.render import dimensions_block, item_text
from m3rec_graph.schemas import TRAITS_CONTRACT, AnswerContract, TraitsAnswer
from m3rec_graph.stages.loop import StageDefinition, build_stage_graph
from m3rec_graph.state import MoteOutput, MoteState, MoteTask


class MoteStage(StageDefinition):
    """Distil an item's text into traits; store valid answers in the trait cache."""

    stage = "mote"

    def __init__(self, cache: TraitCache) -> None:
        self.cache = cache
        self.accept_blocks = cache_blocks(cache)

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
        """Cache and return the traits."""
        assert isinstance(answer, TraitsAnswer)
        traits = answer.to_traits()
        self.cache.put(state["cache_key"], state["item"].item_id, traits)
        return {"traits": {state["item"].item_id: traits}}

    def fallback(self, state: MoteState, reason: str) -> dict[str, Any]:
        """Use neutral traits (not cached, so the next run tries again) and flag them."""
        item_id = state["item"].item_id
        return {
            "traits": {item_id: neutral_traits("no valid MOTE answer")},
            "degraded": [{"stage": "mote", "item_id": item_id, "reason": reason}],
        }


def build_mote_graph(
    chat_models: ChatModelFactory, cache: TraitCache
) -> CompiledStateGraph[Any, M3RecContext, Any, Any]:
    """Compile MOTE as a graph of its own: one `MoteTask` in, its traits out (the recommender uses `add_stage`)."""
    return build_stage_graph(
        MoteStage(cache),
        state_schema=MoteState,
        input_schema=MoteTask,
        output_schema=MoteOutput,
        chat_models=chat_models,
    )
