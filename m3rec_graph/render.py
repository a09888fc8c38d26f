"""Turn items, profiles and traits into the delimited data blocks the prompts embed.

Item text is untrusted: it is flattened to one line per item, capped per field,
and stripped of anything that looks like one of the prompts' data delimiters,
so an item cannot close its block and speak as an instruction.
"""

import hashlib
import json
import re

from m3rec_graph.schemas import (
    DIMENSION_DESCRIPTIONS,
    Dimension,
    Item,
    ItemTraits,
    MotivationProfile,
)

FIELD_LIMITS = {"title": 200, "brand": 60, "description": 600, "review": 400}
"""Characters kept per text field; longer text is cut with an ellipsis."""
MAX_CATEGORIES = 3

_DELIMITER = re.compile(r"</?\s*(history|item|candidates?|profile)\s*>", re.IGNORECASE)
_SPACE = re.compile(r"\s+")


def clean_text(text: str, limit: int) -> str:
    """Flatten whitespace, remove data delimiters and cut `text` to `limit` characters."""
    flat = _SPACE.sub(" ", _DELIMITER.sub(" ", text)).strip()
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def item_text(item: Item) -> str:
    """Render an item's available text on one line (missing fields are simply left out)."""
    parts: list[str] = []
    if item.title:
        parts.append(clean_text(item.title, FIELD_LIMITS["title"]))
    if item.brand:
        parts.append("brand: " + clean_text(item.brand, FIELD_LIMITS["brand"]))
    cats = [clean_text(c, 120) for c in item.categories if c.strip()][:MAX_CATEGORIES]
    if cats:
        parts.append("category: " + "; ".join(cats))
    if item.description:
        parts.append("description: " + clean_text(item.description, FIELD_LIMITS["description"]))
    if item.review:
        parts.append("review: " + clean_text(item.review, FIELD_LIMITS["review"]))
    return " | ".join(parts)


def text_hash(item: Item) -> str:
    """Return a short hash of everything MOTE reads about `item` (part of the trait cache key)."""
    return hashlib.sha256(item_text(item).encode("utf-8")).hexdigest()[:16]


def dimensions_block() -> str:
    """List the motivation dimensions, one per line."""
    return "\n".join(f"- {dim.value}: {DIMENSION_DESCRIPTIONS[dim]}" for dim in Dimension)


def history_block(history: list[Item]) -> str:
    """Render the history oldest first, one `[item_id] text` line per item."""
    return "\n".join(f"[{item.item_id}] {item_text(item)}" for item in history)


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
