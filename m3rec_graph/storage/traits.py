"""Where the graph keeps MOTE traits: a LangGraph `BaseStore`, or a deprecated trait cache.

Traits belong to the item, not the user, so each item is encoded once across
users and runs. The key covers everything that determines the answer (item id,
a hash of the item's text, the model and the prompt version), so a change of
any of them misses instead of returning stale traits. Only valid LLM answers
are stored; fallbacks are not, so a transient failure is retried next run.

`TraitMemory` is what the graph calls: `StoreTraitMemory` over a `BaseStore`
(the one storage setting: `build_graph(store=...)`, `runtime.store`, `--store`),
or `LegacyTraitMemory` over a `TraitCache` passed as `build_graph(trait_cache=...)`,
which is deprecated. `InMemoryTraitCache` and `SqliteTraitCache` stay for one
release so that code keeps working; langgraph's `InMemoryStore` and `SqliteStore`
replace them (a hand-written SQLite table earns no place next to the store
every LangGraph host already runs).
"""

import asyncio
import hashlib
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

from langgraph.store.base import BaseStore

from m3rec_graph._internal.paths import cache_dir
from m3rec_graph.contracts.schemas import Item, ItemTraits
from m3rec_graph.storage.memory import read_traits, write_traits
from m3rec_graph.text.item_text import text_hash


def trait_cache_key(item: Item, model: str, prompt_version: str) -> str:
    """Return the cache key of `item`'s traits under `model` and a MOTE prompt version."""
    raw = f"{item.item_id}\x1f{text_hash(item)}\x1f{model}\x1f{prompt_version}"
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


class TraitCache(Protocol):
    """Where MOTE traits are kept between users and runs.

    A cache may set `blocking = False` when its methods never block (no disk or
    network): the graph then calls it on the event loop instead of in a worker
    thread. Without the attribute a cache is assumed to block.
    """

    def get_many(self, keys: Iterable[str]) -> dict[str, ItemTraits]:
        """Return the cached traits of those `keys` that are present."""

    def put(self, key: str, item_id: str, traits: ItemTraits) -> None:
        """Store `traits` under `key`."""


def cache_blocks(cache: TraitCache) -> bool:
    """Return whether `cache` may block (then the graph calls it off the event loop)."""
    return bool(getattr(cache, "blocking", True))


class InMemoryTraitCache:
    """A dict-backed cache (tests, notebooks, short-lived hosts)."""

    blocking = False

    def __init__(self) -> None:
        self._data: dict[str, ItemTraits] = {}

    def get_many(self, keys: Iterable[str]) -> dict[str, ItemTraits]:
        """Return the cached traits of those `keys` that are present."""
        return {k: self._data[k] for k in keys if k in self._data}

    def put(self, key: str, item_id: str, traits: ItemTraits) -> None:
        """Store `traits` under `key`."""
        self._data[key] = traits

    def __len__(self) -> int:
        return len(self._data)


def _use_wal(conn: sqlite3.Connection, attempts: int = 50) -> None:
    """Put the file in WAL mode (readers proceed while another process writes) unless it is already.

    WAL is a property of the file, so only the first connection switches it. The switch
    needs the file to itself and fails at once with "database is locked" (the busy timeout
    does not apply) while another connection writes; it is retried briefly.
    """
    for attempt in range(attempts):
        if conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
            return
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.05)


class SqliteTraitCache:
    """A persistent cache in one SQLite file, safe for several threads and processes.

    The file is opened on first use, so building a graph never touches the disk.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self._path = Path(path) if path is not None else None
        self._local = threading.local()
        self._setup_lock = threading.Lock()

    @property
    def path(self) -> Path:
        """The SQLite file (default: `traits.sqlite` in the per-user cache directory)."""
        if self._path is None:
            self._path = cache_dir() / "traits.sqlite"
        return self._path

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            with self._setup_lock:
                _use_wal(conn)
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS traits ("
                    " key TEXT PRIMARY KEY, item_id TEXT NOT NULL, traits TEXT NOT NULL,"
                    " created TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)"
                )
            self._local.conn = conn
        return conn

    def get_many(self, keys: Iterable[str]) -> dict[str, ItemTraits]:
        """Return the cached traits of those `keys` that are present."""
        wanted = list(dict.fromkeys(keys))
        found: dict[str, ItemTraits] = {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._conn().execute(
                f"SELECT key, traits FROM traits WHERE key IN ({marks})", chunk
            )
            for key, payload in rows:
                found[key] = ItemTraits.model_validate_json(payload)
        return found

    def put(self, key: str, item_id: str, traits: ItemTraits) -> None:
        """Store `traits` under `key`."""
        self._conn().execute(
            "INSERT OR REPLACE INTO traits (key, item_id, traits) VALUES (?, ?, ?)",
            (key, item_id, traits.model_dump_json()),
        )

    def __len__(self) -> int:
        (count,) = self._conn().execute("SELECT COUNT(*) FROM traits").fetchone()
        return int(count)


class TraitMemory(Protocol):
    """What the graph reads traits from and writes valid MOTE answers to."""

    async def read(
        self, items: Sequence[Item], *, model: str, prompt_version: str
    ) -> dict[str, ItemTraits]:
        """Return the stored traits of those `items` that have them, by item id."""

    async def write(
        self, item: Item, traits: ItemTraits, *, model: str, prompt_version: str
    ) -> None:
        """Store one validated MOTE answer."""


class StoreTraitMemory:
    """Traits in a LangGraph `BaseStore` (see `m3rec_graph.storage.memory`)."""

    def __init__(self, store: BaseStore) -> None:
        self.store = store

    async def read(
        self, items: Sequence[Item], *, model: str, prompt_version: str
    ) -> dict[str, ItemTraits]:
        """Return the stored traits of those `items` that have them (one `abatch`)."""
        return await read_traits(self.store, items, model=model, prompt_version=prompt_version)

    async def write(
        self, item: Item, traits: ItemTraits, *, model: str, prompt_version: str
    ) -> None:
        """Store one validated MOTE answer."""
        await write_traits(self.store, item, traits, model=model, prompt_version=prompt_version)


class LegacyTraitMemory:
    """Traits in a deprecated `TraitCache` (blocking caches are called in a worker thread)."""

    def __init__(self, cache: TraitCache) -> None:
        self.cache = cache
        self._blocks = cache_blocks(cache)

    async def read(
        self, items: Sequence[Item], *, model: str, prompt_version: str
    ) -> dict[str, ItemTraits]:
        """Return the cached traits of those `items` that have them, by item id."""
        keys = {trait_cache_key(item, model, prompt_version): item.item_id for item in items}
        if self._blocks:
            found = await asyncio.to_thread(self.cache.get_many, list(keys))
        else:
            found = self.cache.get_many(list(keys))
        return {keys[key]: traits for key, traits in found.items()}

    async def write(
        self, item: Item, traits: ItemTraits, *, model: str, prompt_version: str
    ) -> None:
        """Store one validated MOTE answer under its cache key."""
        key = trait_cache_key(item, model, prompt_version)
        if self._blocks:
            await asyncio.to_thread(self.cache.put, key, item.item_id, traits)
        else:
            self.cache.put(key, item.item_id, traits)
