"""Item catalogs: resolve item ids to `Item`s, so a host can pass ids instead of full items.

A catalog is anything with `get_many(item_ids) -> list[Item]` (`Catalog`). Three
ship here: `InMemoryCatalog` (a dict), `JsonlCatalog` (an `items.jsonl` in the
dataset format of `m3rec_graph.evaluation.datasets`) and `SqliteCatalog` (one table of
item JSON, for catalogs too large to keep in memory). Unknown ids raise
`UnknownItemError`, naming them.
"""

import json
import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pydantic import ValidationError

from m3rec_graph.contracts.schemas import Item
from m3rec_graph.errors import ConfigurationError, InvalidRequestError, M3RecError
from m3rec_graph.storage.item_file import load_items

ItemRef = str | Item | Mapping[str, Any]
"""An item as a host may pass it: an id to look up, an `Item`, or an item mapping."""


class UnknownItemError(M3RecError, LookupError):
    """Some item ids are not in the catalog (`missing` lists them, in the order asked)."""

    def __init__(self, missing: Sequence[str]) -> None:
        self.missing = list(missing)
        shown = ", ".join(repr(i) for i in self.missing[:5])
        more = f" and {len(self.missing) - 5} more" if len(self.missing) > 5 else ""
        super().__init__(f"unknown item id(s) {shown}{more}: not in the catalog")


@runtime_checkable
class Catalog(Protocol):
    """Resolves item ids to items."""

    def get_many(self, item_ids: Sequence[str]) -> list[Item]:
        """Return the items of `item_ids`, in the same order.

        Raises:
            UnknownItemError: Some ids are not in the catalog (all of them are named).
        """


class InMemoryCatalog:
    """A dict-backed catalog (tests, notebooks, small shops)."""

    def __init__(self, items: Iterable[Item | Mapping[str, Any]] = ()) -> None:
        """Index `items` by id (a later item with the same id replaces an earlier one)."""
        self._items: dict[str, Item] = {}
        self.add(items)

    def add(self, items: Iterable[Item | Mapping[str, Any]]) -> None:
        """Add or replace items."""
        for value in items:
            item = value if isinstance(value, Item) else Item.model_validate(value)
            self._items[item.item_id] = item

    def get_many(self, item_ids: Sequence[str]) -> list[Item]:
        """Return the items of `item_ids`, in order; raise `UnknownItemError` for unknown ids."""
        missing = [i for i in item_ids if i not in self._items]
        if missing:
            raise UnknownItemError(missing)
        return [self._items[i] for i in item_ids]

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._items


class JsonlCatalog:
    """The items of an `items.jsonl` file in the dataset format, read on first use.

    Rows are parsed exactly as `m3rec_graph.evaluation.datasets.load_dataset` parses them
    (category paths lose their root, null fields are left out), so a catalog
    and a dataset built from the same file give the same `Item`s.
    """

    def __init__(self, path: str | Path, *, use_keywords: bool = False) -> None:
        """Remember `path` (a file, or a dataset directory holding `items.jsonl`).

        Args:
            path: The JSONL file, or a dataset directory holding `items.jsonl`.
            use_keywords: Use the `keywords` field as the title of untitled items.
        """
        location = Path(path)
        self.path = location / "items.jsonl" if location.is_dir() else location
        self._use_keywords = use_keywords
        self._catalog: InMemoryCatalog | None = None
        self._lock = threading.Lock()

    def _loaded(self) -> InMemoryCatalog:
        with self._lock:
            if self._catalog is None:
                items = load_items(self.path, use_keywords=self._use_keywords)
                self._catalog = InMemoryCatalog(items.values())
            return self._catalog

    def get_many(self, item_ids: Sequence[str]) -> list[Item]:
        """Return the items of `item_ids`, in order.

        Raises:
            UnknownItemError: Some ids are not in the file.
            DatasetError: The file is missing or has a malformed row.
        """
        return self._loaded().get_many(item_ids)

    def __len__(self) -> int:
        return len(self._loaded())


class SqliteCatalog:
    """Items stored as JSON in one SQLite table (`item_id TEXT PRIMARY KEY, item TEXT`).

    Each lookup opens its own connection, so one catalog serves several threads.
    Build the file with `SqliteCatalog.write` (for example from a `JsonlCatalog`).
    """

    _BATCH = 500  # ids per query (SQLite's default limit on host parameters is 999+)

    def __init__(self, path: str | Path, *, table: str = "items") -> None:
        """Use the table `table` of the SQLite file `path` (it must exist)."""
        if not table.isidentifier():
            raise ValueError(f"table name must be an identifier, got {table!r}")
        self.path = Path(path)
        self.table = table

    @classmethod
    def write(
        cls, path: str | Path, items: Iterable[Item | Mapping[str, Any]], *, table: str = "items"
    ) -> "SqliteCatalog":
        """Create (or extend) the table at `path` with `items` and return the catalog."""
        catalog = cls(path, table=table)
        rows = []
        for value in items:
            item = value if isinstance(value, Item) else Item.model_validate(value)
            rows.append((item.item_id, item.model_dump_json(exclude_none=True)))
        with sqlite3.connect(catalog.path) as conn:
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {table} (item_id TEXT PRIMARY KEY, item TEXT NOT NULL)"
            )
            conn.executemany(f"INSERT OR REPLACE INTO {table} (item_id, item) VALUES (?, ?)", rows)
        return catalog

    def get_many(self, item_ids: Sequence[str]) -> list[Item]:
        """Return the items of `item_ids`, in order; raise `UnknownItemError` for unknown ids."""
        if not self.path.is_file():
            raise ConfigurationError(f"catalog database not found: {self.path}")
        wanted = list(dict.fromkeys(item_ids))
        found: dict[str, Item] = {}
        uri = f"{self.path.resolve().as_uri()}?mode=ro"
        with sqlite3.connect(uri, uri=True) as conn:
            for start in range(0, len(wanted), self._BATCH):
                batch = wanted[start : start + self._BATCH]
                marks = ",".join("?" * len(batch))
                query = f"SELECT item_id, item FROM {self.table} WHERE item_id IN ({marks})"
                for item_id, data in conn.execute(query, batch):
                    found[item_id] = _item_from_json(item_id, data)
        missing = [i for i in item_ids if i not in found]
        if missing:
            raise UnknownItemError(missing)
        return [found[i] for i in item_ids]


def _item_from_json(item_id: str, data: str) -> Item:
    try:
        return Item.model_validate(json.loads(data))
    except (ValueError, ValidationError) as exc:
        raise M3RecError(f"catalog row {item_id!r} is not a valid item: {exc}") from None


def resolve_items(refs: Sequence[ItemRef], catalog: Catalog | None) -> list[Item]:
    """Turn ids, `Item`s and item mappings into `Item`s, looking ids up in `catalog` in one call.

    Raises:
        UnknownItemError: An id is not in the catalog.
        InvalidRequestError: Ids were given but there is no catalog to resolve them.
        pydantic.ValidationError: An item mapping is not a valid item.
    """
    ids = [ref.strip() for ref in refs if isinstance(ref, str)]
    if ids and catalog is None:
        raise InvalidRequestError(
            f"got item id(s) such as {ids[0]!r} but no catalog to look them up: pass full items"
        )
    looked_up = iter(catalog.get_many(ids)) if ids and catalog is not None else iter(())
    items: list[Item] = []
    for ref in refs:
        if isinstance(ref, str):
            items.append(next(looked_up))
        elif isinstance(ref, Item):
            items.append(ref)
        else:
            items.append(Item.model_validate(dict(ref)))
    return items
