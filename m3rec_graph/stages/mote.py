"""MOTE: one item's motivational traits, cached once per item text, model and prompt.

Writing the trait cache is best-effort: the traits are this run's answer whether or
not they could be stored. A write the cache's storage refuses (a SQLite file locked
by another process, a full or read-only disk) is logged as a warning, once per kind
of failure, and the valid traits are used all the same (not flagged as degraded;
the item is simply encoded again by a later run that misses the cache). A cache that
raises anything else (a `TypeError`, `sqlite3.ProgrammingError`: a bug) still fails.
"""

import logging
import sqlite3
import threading
from typing import Any

from langgraph.graph.state import CompiledStateGraph
from pydantic import BaseModel

from m3rec_graph.context import M3RecContext
from m3rec_graph.contracts.schemas import TRAITS_CONTRACT, AnswerContract, TraitsAnswer
from m3rec_graph.llm.factory import ChatModelFactory
from m3rec_graph.prompts.loader import PromptName
from m3rec_graph.stages.fallbacks import neutral_traits
from m3rec_graph.stages.loop import StageDefinition, build_stage_graph
from m3rec_graph.stages.render import dimensions_block
from m3rec_graph.state import MoteOutput, MoteState, MoteTask
from m3rec_graph.storage.traits import TraitCache, cache_blocks
from m3rec_graph.text.item_text import item_text

logger = logging.getLogger(__name__)

CACHE_WRITE_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, OSError)
"""What a failing cache write may raise without failing the recommendation (storage trouble)."""
CACHE_BUG_ERRORS: tuple[type[Exception], ...] = (sqlite3.ProgrammingError, sqlite3.InterfaceError)
"""`sqlite3.Error`s that are the caller's bug (a closed connection, bad bindings): raised."""


class MoteStage(StageDefinition):
    """Distil an item's text into traits; store valid answers in the trait cache."""

    stage = "mote"

    def __init__(self, cache: TraitCache) -> None:
        self.cache = cache
        self.accept_blocks = cache_blocks(cache)
        self._warned: set[str] = set()
        self._warned_lock = threading.Lock()  # accept() may run in several worker threads

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
        """Return the traits, after caching them if the cache takes them (best-effort)."""
        assert isinstance(answer, TraitsAnswer)
        traits = answer.to_traits()
        item_id = state["item"].item_id
        try:
            self.cache.put(state["cache_key"], item_id, traits)
        except CACHE_WRITE_ERRORS as exc:
            if isinstance(exc, CACHE_BUG_ERRORS):
                raise
            self._warn_write_failed(item_id, exc)
        return {"traits": {item_id: traits}}

    def _warn_write_failed(self, item_id: str, exc: Exception) -> None:
        """Log a failed cache write: a warning the first time for each kind, then at debug level."""
        kind = f"{type(exc).__name__}: {exc}"
        with self._warned_lock:
            first = kind not in self._warned
            self._warned.add(kind)
        logger.log(
            logging.WARNING if first else logging.DEBUG,
            "trait cache write failed (%s); using the traits of %s without caching them%s",
            kind,
            item_id,
            "" if not first else " (further failures of this kind are logged at debug level)",
        )

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
