"""Turn items, profiles and traits into the delimited data blocks the prompts embed.

Item text itself (sanitised, capped, hashed) comes from `m3rec_graph.text.item_text`.
"""

import json
from collections.abc import Sequence

from m3rec_graph.contracts.schemas import (
    DIMENSION_DESCRIPTIONS,
    Dimension,
    Item,
    ItemTraits,
    MotivationProfile,
)
from m3rec_graph.text.item_text import clean_text, item_text


def dimensions_block() -> str:
    """List the motivation dimensions, one per line."""
    return "\n".join(f"- {dim.value}: {DIMENSION_DESCRIPTIONS[dim]}" for dim in Dimension)


def history_block(history: list[Item]) -> str:
    """Render the history oldest first, one `[item_id] text` line per item."""
    return "\n".join(f"[{item.item_id}] {item_text(item)}" for item in history)


def previous_profile_block(profile: MotivationProfile, window_ids: Sequence[str]) -> str:
    """Render a stored profile for the incremental MOPE prompt, on the answer's own scale (0-10).

    One compact line per dimension (`aesthetic 9: id1, id2`): the prompt's whole point
    is to be shorter than the history it stands for. Evidence ids that left the
    history window (it slides once `max_history_items` is reached) are dropped: the
    answer may cite only ids of the current window.
    """
    kept = set(window_ids)
    lines = []
    for dim in Dimension:
        entry = profile.dimension(dim)
        evidence = [item_id for item_id in entry.evidence if item_id in kept]
        lines.append(f"{dim.value} {round(entry.strength * 10)}: {', '.join(evidence) or '-'}")
    return "\n".join([*lines, f"summary: {clean_text(profile.summary, 800)}"])


def profile_block(profile: MotivationProfile) -> str:
    """Render a profile compactly: strengths by dimension plus the summary."""
    strengths = {dim.value: round(value, 2) for dim, value in profile.strengths().items()}
    summary = clean_text(profile.summary, 600)
    return f"strengths: {json.dumps(strengths)}\nsummary: {summary}"


def candidate_line(item: Item, traits: ItemTraits) -> str:
    """Render one candidate with its traits, as MAR sees it."""
    strengths = {dim.value: round(value, 2) for dim, value in traits.strengths.as_dict().items()}
    phrases = "; ".join(clean_text(t, 80) for t in traits.traits)
    title = clean_text(item.title or item_text(item), 120)
    return f"[{item.item_id}] {title} | traits: {phrases} | strengths: {json.dumps(strengths)}"


def history_profile_block(history: list[Item]) -> str:
    """Render the raw history where MAR expects a profile (the `no_mope` ablation)."""
    return "purchase history (oldest first):\n" + (history_block(history) or "(none)")


def candidate_text_line(item: Item) -> str:
    """Render one candidate with its item text instead of traits (the `no_mote` ablation)."""
    return f"[{item.item_id}] {item_text(item)}"
