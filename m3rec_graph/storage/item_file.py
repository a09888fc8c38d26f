"""Read item files in the dataset format (`items.jsonl`, one JSON object per item).

The evaluation datasets and the JSONL/SQLite catalogues read the same format, so
the parsing lives once, here, below both.
"""

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from m3rec_graph._internal.jsonl import json_lines
from m3rec_graph.contracts.schemas import Item
from m3rec_graph.errors import DatasetError


def require_file(path: Path) -> None:
    """Raise `DatasetError` naming `path` when it is not a file."""
    if not path.is_file():
        raise DatasetError(f"dataset file not found: {path}")


def load_items(path: Path, *, use_keywords: bool) -> dict[str, Item]:
    """Read an `items.jsonl` file in the dataset format into items keyed by id.

    Raises:
        DatasetError: The file is missing, or a row is malformed (the message names the line).
    """
    require_file(path)
    items: dict[str, Item] = {}
    with path.open(encoding="utf-8") as handle:
        for where, row in json_lines(handle, path, DatasetError):
            if not isinstance(row, dict):
                raise DatasetError(f"{where}: expected a JSON object, got {type(row).__name__}")
            item = _item_from_row(row, where, use_keywords=use_keywords)
            if item.item_id in items:
                raise DatasetError(f"{where}: duplicate item_id {item.item_id!r}")
            items[item.item_id] = item
    return items


def _text(row: dict[str, Any], key: str, where: str) -> str | None:
    value = row.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise DatasetError(f"{where}: field {key!r} must be a string or null")
    return value.strip() or None


def _strings(value: Any, key: str, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DatasetError(f"{where}: field {key!r} must be a list of strings or null")
    return [v.strip() for v in value if v.strip()]


def _categories(row: dict[str, Any], where: str) -> list[str]:
    paths = row.get("categories")
    names: list[str] = []
    if paths:
        if not isinstance(paths, list):
            raise DatasetError(f"{where}: field 'categories' must be a list of category paths")
        for category_path in paths:
            # The first element of each path is the root (e.g. "Beauty"), shared by all items.
            parts = _strings(category_path, "categories", where)[1:]
            if parts:
                names.append(" > ".join(parts))
    else:
        terms = row.get("category_terms")
        if terms:
            names = _strings(terms, "category_terms", where)
    return list(dict.fromkeys(names))


def _keywords(row: dict[str, Any], where: str) -> str | None:
    value = row.get("keywords")
    if isinstance(value, list):
        return " ".join(_strings(value, "keywords", where)) or None
    return _text(row, "keywords", where)


def _item_from_row(row: dict[str, Any], where: str, *, use_keywords: bool) -> Item:
    item_id = row.get("item_id")
    if isinstance(item_id, int) and not isinstance(item_id, bool):
        item_id = str(item_id)
    if not isinstance(item_id, str) or not item_id.strip():
        raise DatasetError(f"{where}: missing or invalid 'item_id'")
    title = _text(row, "title", where)
    if title is None and use_keywords:
        title = _keywords(row, where)
    try:
        return Item(
            item_id=item_id,
            title=title,
            brand=_text(row, "brand", where),
            categories=_categories(row, where),
            description=_text(row, "description", where),
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "item"
        raise DatasetError(f"{where}: {field}: {first['msg']}") from None
