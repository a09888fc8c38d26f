"""MOPE: the user's motivational profile from their history."""

from typing import Any

from langgraph.graph.state import CompiledStateGraph
from pydantic import BaseModel

from m3rec_graph.context import M3RecContext
from m3rec_graph.contracts.schemas import AnswerContract, profile_contract, profile_from_answer
from m3rec_graph.llm.factory import ChatModelFactory
from m3rec_graph.prompts.loader import PromptName
from m3rec_graph.stages.fallbacks import fallback_profile
from m3rec_graph.stages.loop import StageDefinition, build_stage_graph
from m3rec_graph.stages.render import dimensions_block, history_block
from m3rec_graph.state import MopeOutput, MopeState, MopeTask


class MopeStage(StageDefinition):
    """Profile a user on the fixed motivational schema, citing history items as evidence."""

    stage = "mope"

    def prompt_name(self, state: MopeState) -> PromptName:
        """Return the MOPE prompt."""
        return "mope"

    def variables(self, state: MopeState) -> dict[str, Any]:
        """Render the dimensions and the history."""
        return {"dimensions": dimensions_block(), "history": history_block(state["history"])}

    def answer_contract(self, state: MopeState) -> AnswerContract:
        """Ask for the profile with evidence ids restricted to this history (validation rejects any other)."""
        return profile_contract([item.item_id for item in state["history"]])

    def accept(self, state: MopeState, answer: BaseModel, ctx: M3RecContext) -> dict[str, Any]:
        """Store the validated profile."""
        return {"profile": profile_from_answer(answer)}

    def fallback(self, state: MopeState, reason: str) -> dict[str, Any]:
        """Infer the profile from the history's text and flag it."""
        return {
            "profile": fallback_profile(state["history"]),
            "degraded": [{"stage": "mope", "item_id": None, "reason": reason}],
        }


def build_mope_graph(chat_models: ChatModelFactory) -> CompiledStateGraph[Any, M3RecContext, Any, Any]:
    """Compile MOPE as a graph of its own: one `MopeTask` in, the profile out (the recommender uses `add_stage`)."""
    return build_stage_graph(
        MopeStage(),
        state_schema=MopeState,
        input_schema=MopeTask,
        output_schema=MopeOutput,
        chat_models=chat_models,
    )
