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
    Dimension,
    Item,
    profile_contract,
    profile_from_answer,
)
from m3rec_graph.llm.factory import ChatModelFactory
from m3rec_graph.llm.tokens import count_messages
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


def evidence_ids(state: MopeState) -> list[str]:
    """Return the history ids a MOPE answer for this task may cite as evidence, in window order."""
    history = state["history"]
    base = state.get("incremental")
    if base is None:
        return [item.item_id for item in history]
    new_ids = {item.item_id for item in history[-base["new_items"] :]}
    shown = new_ids | {i for dim in Dimension for i in base["profile"].dimension(dim).evidence}
    return list(dict.fromkeys(item.item_id for item in history if item.item_id in shown))


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


def prompt_tokens(state: MopeState, ctx: M3RecContext) -> int:
    """Count the prompt MOPE sends for this task (full or incremental), as `call_usage` counts it.

    The answer schema is left out: an incremental task's is the full one's or smaller.
    """
    stage = MopeStage(remember_profiles=False)
    spec = ctx.model_for("mope")
    messages = stage_prompt(stage, state, ctx).format(**stage.variables(state))
    return count_messages(messages, spec.tokenizer_model or spec.name)


def incremental_saving(task: MopeState, ctx: M3RecContext) -> int:
    """Return the prompt tokens an incremental task saves against profiling its whole window.

    Negative when the stored profile is longer than the old items' text it stands for
    (a short history of short titles): `graph.prepare` then re-profiles in full.
    """
    full = MopeState(user_id=task["user_id"], history=task["history"])
    return prompt_tokens(full, ctx) - prompt_tokens(task, ctx)


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
        return {
            "dimensions": dimensions_block(),
            "profile": previous_profile_block(base["profile"], [item.item_id for item in history]),
            "new_items": history_block(history[-base["new_items"] :]),
        }

    def answer_contract(self, state: MopeState) -> AnswerContract:
        """Ask for the profile with evidence ids restricted to this history (validation rejects any other).

        An incremental task may cite the ids its prompt shows: the stored profile's
        evidence still in the window, and the new items (it never sees the other old items).
        """
        return profile_contract(evidence_ids(state))

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
