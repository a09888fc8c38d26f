"""MOPE: the user's motivational profile from their history.

A valid profile is stored in the run's store under everything that determines
it (`profile_key`), so a later run for the same shopper, history window and MOPE
settings reads it instead of calling MOPE (`graph.prepare`). When the history only
grew by a few items, the task carries the stored profile of the shorter window and
MOPE reads that profile plus the new items only (`stages.incremental`), with the
same answer contract, validation and re-asks. Writes are best-effort; fallback
profiles are never stored.
"""

import logging
from typing import Any

from langgraph.graph.state import CompiledStateGraph
from langgraph.store.base import BaseStore
from pydantic import BaseModel

from m3rec_graph.context import M3RecContext
from m3rec_graph.contracts.schemas import (
    AnswerContract,
    Item,
    profile_contract,
    profile_from_answer,
)
from m3rec_graph.llm.factory import ChatModelFactory
from m3rec_graph.prompts.loader import PromptName, load_prompt
from m3rec_graph.stages.fallbacks import fallback_profile
from m3rec_graph.stages.loop import StageDefinition, build_stage_graph, stage_prompt
from m3rec_graph.stages.remembering import BestEffortWrites
from m3rec_graph.stages.render import dimensions_block, history_block, previous_profile_block
from m3rec_graph.state import MopeOutput, MopeState, MopeTask
from m3rec_graph.storage.memory import ProfileKey, write_profile
from m3rec_graph.storage.store import resolve_store

logger = logging.getLogger(__name__)

DEFAULT_PROFILE_TTL_DAYS = 30.0
"""How long a stored profile is served (a shopper's motivations drift; a history change misses anyway)."""


def profile_key(user_id: str, window: list[Item], ctx: M3RecContext) -> ProfileKey:
    """Return the key of the profile MOPE writes for this history window under `ctx`'s MOPE settings."""
    spec = ctx.model_for("mope")
    return ProfileKey.of(
        user_id,
        window,
        model=spec.name,
        effort=spec.reasoning_effort,
        prompt_version=load_prompt("mope", ctx.prompt_overrides.get("mope")).version,
        ablation=ctx.ablation,
    )


class MopeStage(StageDefinition):
    """Profile a user on the fixed motivational schema, citing history items as evidence."""

    stage = "mope"

    def __init__(
        self,
        *,
        remember_profiles: bool = True,
        profile_ttl_days: float | None = DEFAULT_PROFILE_TTL_DAYS,
    ) -> None:
        self.remember_profiles = remember_profiles
        """Store valid profiles (off for a deprecated `trait_cache=` graph, which keeps the old behaviour)."""
        self.profile_ttl_days = profile_ttl_days
        self._writes = BestEffortWrites(logger, "profile store")

    def prompt_name(self, state: MopeState) -> PromptName:
        """Return the MOPE prompt: the incremental one when updating a stored profile."""
        return "mope_incremental" if "incremental" in state else "mope"

    def variables(self, state: MopeState) -> dict[str, Any]:
        """Render the dimensions and the history, or the stored profile and only the new items."""
        history = state["history"]
        base = state.get("incremental")
        if base is None:
            return {"dimensions": dimensions_block(), "history": history_block(history)}
        ids = [item.item_id for item in history]
        return {
            "dimensions": dimensions_block(),
            "profile": previous_profile_block(base["profile"], ids),
            "new_items": history_block(history[-base["new_items"] :]),
            # the old items are cited by id only: their text is what the increment saves
            "allowed_ids": ", ".join(dict.fromkeys(ids)),
        }

    def answer_contract(self, state: MopeState) -> AnswerContract:
        """Ask for the profile with evidence ids restricted to this history (validation rejects any other)."""
        return profile_contract([item.item_id for item in state["history"]])

    def accept(self, state: MopeState, answer: BaseModel, ctx: M3RecContext) -> dict[str, Any]:
        """Store the validated profile."""
        return {"profile": profile_from_answer(answer)}

    async def remember(
        self, state: MopeState, update: dict[str, Any], ctx: M3RecContext, store: BaseStore | None
    ) -> None:
        """Store the valid profile under its window's key, with the profile TTL (best-effort).

        An incremental answer is marked with the incremental prompt's version, so it is
        served only while that prompt is unchanged and incremental memory is on.
        """
        if not self.remember_profiles:
            return
        key = profile_key(state["user_id"], state["history"], ctx)
        ttl = None if self.profile_ttl_days is None else self.profile_ttl_days * 24 * 60
        base = state.get("incremental")
        write = write_profile(
            await resolve_store(store),
            key,
            update["profile"],
            ttl_minutes=ttl,
            incremental_version=None if base is None else stage_prompt(self, state, ctx).version,
            increments=0 if base is None else base["increments"],
        )
        await self._writes.run(write, f"the profile of {state['user_id']}")

    def fallback(self, state: MopeState, reason: str) -> dict[str, Any]:
        """Infer the profile from the history's text and flag it."""
        return {
            "profile": fallback_profile(state["history"]),
            "degraded": [{"stage": "mope", "item_id": None, "reason": reason}],
        }


def build_mope_graph(
    chat_models: ChatModelFactory,
) -> CompiledStateGraph[Any, M3RecContext, Any, Any]:
    """Compile MOPE as a graph of its own: one `MopeTask` in, the profile out (the recommender uses `add_stage`)."""
    return build_stage_graph(
        MopeStage(),
        state_schema=MopeState,
        input_schema=MopeTask,
        output_schema=MopeOutput,
        chat_models=chat_models,
    )
