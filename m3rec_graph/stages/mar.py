"""MAR: score how well each candidate's traits align with the profile."""

import json
from collections import Counter
from typing import Any

from langgraph.graph.state import CompiledStateGraph
from pydantic import BaseModel

from m3rec_graph.context import M3RecContext
from m3rec_graph.contracts.schemas import (
    POINTWISE_CONTRACT,
    AlignmentScore,
    AnswerContract,
    Judgement,
    Rationale,
    listwise_contract,
    rationales_contract,
    scores_only_contract,
)
from m3rec_graph.llm.factory import ChatModelFactory
from m3rec_graph.prompts.loader import PromptName
from m3rec_graph.stages.fallbacks import overlap_alignment
from m3rec_graph.stages.loop import StageDefinition, build_stage_graph
from m3rec_graph.stages.render import (
    candidate_line,
    candidate_text_line,
    history_profile_block,
    profile_block,
)
from m3rec_graph.state import MarOutput, MarRationale, MarState, MarTask


def check_covers_exactly(expected: list[str], answered: list[str]) -> str | None:
    """Return why `answered` is not exactly the ids in `expected` (unknown, duplicate, missing)."""
    allowed = set(expected)
    unknown = [i for i in answered if i not in allowed]
    if unknown:
        return f"unknown item_id {unknown[0]!r}: score only the given candidates"
    duplicates = [i for i, n in Counter(answered).items() if n > 1]
    if duplicates:
        return (
            f"item_id {duplicates[0]!r} is scored more than once: score each candidate exactly once"
        )
    missing = [i for i in expected if i not in set(answered)]
    if missing:
        return f"item_id {missing[0]!r} is missing ({len(missing)} missing): score every candidate"
    return None


def answered_ids(raw_text: str, key: str = "scores") -> list[str] | None:
    """Return the keys of `key` (`scores`, `rationales`) in a raw keyed answer, duplicates kept (None if unreadable)."""
    found: list[list[str]] = []

    def keep_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        if any(k == key for k, _ in pairs):
            value = next(v for k, v in pairs if k == key)
            if isinstance(value, _Keys):
                found.append(value.keys_in_order)
        return _Keys(pairs)

    try:
        json.loads(raw_text, object_pairs_hook=keep_pairs)
    except ValueError:
        return None
    return found[0] if found else None


class _Keys(dict[str, Any]):
    """A JSON object that remembers its keys in order, repeats included."""

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        super().__init__(pairs)
        self.keys_in_order = [key for key, _ in pairs]


def _alignment(item_id: str, judgement: Judgement) -> AlignmentScore:
    return AlignmentScore(
        item_id=item_id,
        score=judgement.score / 10,
        matched_motivations=list(dict.fromkeys(judgement.matched)),
        rationale=judgement.rationale.strip(),
        source="llm",
    )


_PROMPTS: dict[str, PromptName] = {
    "listwise": "mar_listwise",
    "pointwise": "mar_pointwise",
    "scores": "mar_scores",
    "rationales": "mar_rationales",
}


class MarStage(StageDefinition):
    """Score a chunk (listwise, or scores only) or a single candidate (pointwise); or explain the top items."""

    stage = "mar"

    def prompt_name(self, state: MarState) -> PromptName:
        """Pick the prompt of the task's mode."""
        return _PROMPTS[state["mode"]]

    def _ids(self, state: MarState) -> list[str]:
        return [c["item"].item_id for c in state["candidates"]]

    def variables(self, state: MarState) -> dict[str, Any]:
        """Render the profile and the candidates (in the shown, shuffled order).

        The `no_mope` ablation puts the raw history in the profile block; `no_mote`
        shows each candidate's text instead of its traits.
        """
        if state.get("raw_item_text"):
            lines = [candidate_text_line(c["item"]) for c in state["candidates"]]
        else:
            lines = [candidate_line(c["item"], c["traits"]) for c in state["candidates"]]
        history = state.get("history")
        profile = (
            history_profile_block(history)
            if history is not None
            else profile_block(state["profile"])
        )
        if state["mode"] == "pointwise":
            return {"profile": profile, "candidate": lines[0]}
        return {
            "profile": profile,
            "candidates": "\n".join(lines),
            "count": len(lines),
        }

    def answer_contract(self, state: MarState) -> AnswerContract:
        """Ask for an answer keyed by every candidate id of the task (or one judgement, pointwise)."""
        mode = state["mode"]
        if mode == "pointwise":
            return POINTWISE_CONTRACT
        if mode == "scores":
            return scores_only_contract(self._ids(state))
        if mode == "rationales":
            return rationales_contract(self._ids(state))
        return listwise_contract(self._ids(state))

    def check(self, state: MarState, answer: BaseModel, raw_text: str) -> str | None:
        """Reject a keyed answer that repeats an id (the schema already rejects unknown/missing)."""
        if state["mode"] == "pointwise":
            return None
        ids = answered_ids(raw_text, "rationales" if state["mode"] == "rationales" else "scores")
        return check_covers_exactly(self._ids(state), ids) if ids is not None else None

    def accept(self, state: MarState, answer: BaseModel, ctx: M3RecContext) -> dict[str, Any]:
        """Normalise the scores to [0, 1] (scores only: no motivations or rationale yet); keep the rationales."""
        if isinstance(answer, Judgement):
            item_id = self._ids(state)[0]
            return {"scores": {item_id: _alignment(item_id, answer)}}
        if state["mode"] == "rationales":
            explained: dict[str, Any] = answer.model_dump(by_alias=True)["rationales"]
            return {
                "rationales": {
                    item_id: MarRationale(rationale=Rationale.model_validate(r), source="llm")
                    for item_id, r in explained.items()
                }
            }
        by_id: dict[str, Any] = answer.model_dump(by_alias=True)["scores"]
        if state["mode"] == "scores":
            return {
                "scores": {
                    item_id: AlignmentScore(
                        item_id=item_id, score=j["score"] / 10, matched_motivations=[], rationale="", source="llm"
                    )
                    for item_id, j in by_id.items()
                }
            }
        return {
            "scores": {
                item_id: _alignment(item_id, Judgement.model_validate(j))
                for item_id, j in by_id.items()
            }
        }

    def fallback(self, state: MarState, reason: str) -> dict[str, Any]:
        """Rank this chunk by weighted dimension overlap and flag it (rationales: the overlap's)."""
        if state["mode"] == "rationales":
            rationales = {}
            for c in state["candidates"]:
                overlap = overlap_alignment(c["item"].item_id, state["profile"], c["traits"])
                rationale = Rationale(matched=overlap.matched_motivations, rationale=overlap.rationale)
                rationales[overlap.item_id] = MarRationale(rationale=rationale, source="fallback")
            return {
                "rationales": rationales,
                "degraded": [{"stage": "mar", "item_id": None, "reason": f"rationales: {reason}"}],
            }
        return {
            "scores": {
                c["item"].item_id: overlap_alignment(
                    c["item"].item_id, state["profile"], c["traits"]
                )
                for c in state["candidates"]
            },
            "degraded": [{"stage": "mar", "item_id": None, "reason": reason}],
        }


def build_mar_graph(
    chat_models: ChatModelFactory,
) -> CompiledStateGraph[Any, M3RecContext, Any, Any]:
    """Compile MAR as a graph of its own: one `MarTask` in, its scores out (the recommender uses `add_stage`)."""
    return build_stage_graph(
        MarStage(),
        state_schema=MarState,
        input_schema=MarTask,
        output_schema=MarOutput,
        chat_models=chat_models,
    )
