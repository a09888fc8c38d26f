"""How an item reads: one sanitised, capped line of text, the same for every consumer.

MOTE reads it, the trait cache keys on its hash, the text baseline compares it.

Item text is untrusted: it is flattened to one line per item, capped per field
(in characters, then in tokens), and stripped of control characters and of
anything that looks like one of the prompts' data delimiters, so an item cannot
close its block and speak as an instruction. `truncations` says which fields of
an item were cut.
"""

import functools
import hashlib
import re

from m3rec_graph._internal.bpe import encoding_for
from m3rec_graph.contracts.schemas import Item

FIELD_LIMITS = {"title": 200, "brand": 60, "description": 600, "review": 400}
"""Characters kept per text field; longer text is cut with an ellipsis."""
FIELD_TOKEN_LIMITS = {"title": 100, "brand": 30, "description": 300, "review": 200}
"""Tokens (tiktoken `o200k_base`) kept per field after the character cap.

Half a token per allowed character: ordinary prose (4+ characters a token) never
reaches it; dense text (emoji, CJK, symbol or base64 runs) is cut to it, so a
field's cost is bounded in tokens, not only in characters.
"""
CATEGORY_CHARS, CATEGORY_TOKENS = 120, 60
MAX_CATEGORIES = 6
# Flat category term lists (e.g. Sports: root, section, ..., leaf) run to 4-6 terms and
# the most specific comes last, so a cap of 3 would drop the leaf.
TOKENIZER_MODEL = "gpt-4o"

_DELIMITER = re.compile(
    r"[<＜﹤]\s*[/／]?\s*(history|item|candidates?|profile)\b[^<>＜＞﹤﹥]*[>＞﹥]", re.IGNORECASE
)
"""A prompt data tag, also spaced (`< /item>`), with attributes (`<item id=1>`) or fullwidth (`＜/item＞`)."""
_SPACE = re.compile(r"\s+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_BIDI_OVERRIDE = re.compile(r"[\u202a-\u202e\u2066-\u2069]")
"""Bidi embeddings, overrides and isolates: they reorder how text displays, never what it says."""


def _strip_delimiters(text: str) -> str:
    # Until none is left: removing `<item>` from `<<item>/item>` would leave `< /item>`.
    while True:
        stripped = _DELIMITER.sub(" ", text)
        if stripped == text:
            return text
        text = stripped


_MEMO_MAX_CHARS = 4096
"""Texts up to this length are cleaned once and remembered (item text recurs across users and stages)."""


def _cut(text: str, limit: int, token_limit: int | None) -> tuple[str, bool]:
    if len(text) <= _MEMO_MAX_CHARS:  # longer ones are rare, and would pin their memory in the memo
        return _cut_memo(text, limit, token_limit)
    return _cut_text(text, limit, token_limit)


@functools.lru_cache(maxsize=8192)  # at most 32 MiB of text even if every entry is long
def _cut_memo(text: str, limit: int, token_limit: int | None) -> tuple[str, bool]:
    return _cut_text(text, limit, token_limit)


def _cut_text(text: str, limit: int, token_limit: int | None) -> tuple[str, bool]:
    if not text.isascii():  # lone surrogates (undecodable bytes) cannot be sent or hashed
        text = text.encode("utf-8", errors="replace").decode("utf-8")
    flat = _strip_delimiters(_BIDI_OVERRIDE.sub("", _CONTROL.sub(" ", text)))
    flat = _SPACE.sub(" ", flat).strip()
    cut = len(flat) > limit
    if cut:
        flat = flat[: limit - 1].rstrip() + "…"
    # A token is at least one byte, so short text needs no tokenizer.
    if token_limit is not None and len(flat.encode("utf-8")) > token_limit:
        encoding = encoding_for(TOKENIZER_MODEL)
        tokens = encoding.encode(flat, disallowed_special=())
        if len(tokens) > token_limit:
            kept = encoding.decode_bytes(tokens[: token_limit - 1]).decode("utf-8", errors="ignore")
            flat, cut = kept.rstrip() + "…", True
    return flat, cut


def clean_text(text: str, limit: int, token_limit: int | None = None) -> str:
    """Flatten whitespace, remove control characters and data delimiters, and cut `text`.

    It keeps at most `limit` characters and, when given, `token_limit` tokens;
    cut text ends with an ellipsis.
    """
    return _cut(text, limit, token_limit)[0]


def _fields(item: Item) -> list[tuple[str, str, int, int]]:
    """(name, raw text, character cap, token cap) of every text field `item_text` renders."""
    fields = [
        (name, value, FIELD_LIMITS[name], FIELD_TOKEN_LIMITS[name])
        for name, value in (("title", item.title), ("brand", item.brand))
        if value
    ]
    cats = [c for c in item.categories if c.strip()][:MAX_CATEGORIES]
    fields.extend(
        (f"categories.{n}", c, CATEGORY_CHARS, CATEGORY_TOKENS) for n, c in enumerate(cats)
    )
    fields.extend(
        (name, value, FIELD_LIMITS[name], FIELD_TOKEN_LIMITS[name])
        for name, value in (("description", item.description), ("review", item.review))
        if value
    )
    return fields


def item_text(item: Item) -> str:
    """Render an item's available text on one line (missing fields are simply left out)."""
    cleaned = {
        name: clean_text(value, limit, tokens) for name, value, limit, tokens in _fields(item)
    }
    parts: list[str] = []
    if "title" in cleaned:
        parts.append(cleaned["title"])
    if "brand" in cleaned:
        parts.append("brand: " + cleaned["brand"])
    cats = [text for name, text in cleaned.items() if name.startswith("categories.")]
    if cats:
        parts.append("category: " + "; ".join(cats))
    parts.extend(
        f"{name}: {cleaned[name]}" for name in ("description", "review") if name in cleaned
    )
    return " | ".join(parts)


def truncations(item: Item) -> list[str]:
    """Say which text fields `item_text` cut, e.g. `["description: 200000 -> 600 characters"]`.

    The graph can record these next to the result; rendering never fails on long text.
    """
    notes = []
    for name, value, limit, token_limit in _fields(item):
        text, cut = _cut(value, limit, token_limit)
        if cut:
            notes.append(f"{name}: {len(value)} -> {len(text)} characters")
    return notes


def text_hash(item: Item) -> str:
    """Return a short hash of everything MOTE reads about `item` (part of the trait cache key)."""
    return hashlib.sha256(item_text(item).encode("utf-8")).hexdigest()[:16]
