"""One storage setting: a store URL opens one of langgraph's own `BaseStore`s.

    memory:                         InMemoryStore (one process, gone at exit, no TTL)
    sqlite:///relative/path.db      SqliteStore in one file (SQLAlchemy's spelling:
    sqlite:////absolute/path.db     three slashes, then the path)
    postgresql://user@host/db       PostgresStore on a reconnecting psycopg_pool pool
                                    (several processes and machines share it)

The graph reads and writes through `BaseStore.abatch`, whichever store it is
given: this URL's, a host's, or the LangGraph platform's (`runtime.store`).
"""

import asyncio
import atexit
import fcntl
import os
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from langgraph.store.base import BaseStore, Op, Result, TTLConfig
from langgraph.store.memory import InMemoryStore

from m3rec_graph._internal.paths import cache_dir
from m3rec_graph.errors import ConfigurationError

STORE_URL_ENV = "M3REC_STORE_URL"
POOL_TIMEOUT_S = 5.0
SETUP_LOCK_ID = 0x6D33726563  # "m3rec": the advisory lock key of the store's setup
"""The environment variable the CLI reads when `--store` is not given."""


class StoreURLError(ConfigurationError):
    """A store URL has an unknown scheme or no path (CLI exit code 2)."""


def default_store_url() -> str:
    """Return the CLI's default store: a SQLite file in the per-user cache directory."""
    return f"sqlite:///{cache_dir() / 'store.sqlite'}"


def sqlite_path(url: str) -> Path:
    """Return the file a `sqlite:///PATH` URL names (`StoreURLError` when it names none)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise StoreURLError(f"a SQLite store URL is sqlite:///PATH, got {url!r}")
    return Path(unquote(url[len(prefix) :]))


def store_kind(url: str) -> str:
    """Return `memory`, `sqlite` or `postgres` for a store URL, or raise `StoreURLError`."""
    if url == "memory:":
        return "memory"
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        sqlite_path(url)
        return "sqlite"
    if scheme in ("postgresql", "postgres"):
        return "postgres"
    raise StoreURLError(
        f"unknown store URL {url!r}: use memory:, sqlite:///PATH or postgresql://..."
    )


def redacted_url(url: str) -> str:
    """Return `url` with its credentials replaced by `***`, for logs and run records.

    A PostgreSQL URL may carry a password in its user part (`user:PASSWORD@host`) and,
    as libpq allows, in its query (`?password=...`, `?sslpassword=...`): both are hidden.
    Other URLs are returned as given.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        return url
    netloc = parts.netloc
    userinfo, at, hostport = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.partition(':')[0]}:***@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(k, "***" if "password" in k.lower() else v) for k, v in pairs], safe="*"
        )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


@contextmanager
def open_store(url: str, *, ttl: TTLConfig | None = None) -> Iterator[BaseStore]:
    """Open the store `url` names, create its tables, and close it on exit.

    Args:
        url: `memory:`, `sqlite:///PATH` or `postgresql://...`.
        ttl: The store's TTL settings (`default_ttl` in minutes, `refresh_on_read`,
            `sweep_interval_minutes`); `InMemoryStore` has no TTL and ignores them.

    Raises:
        StoreURLError: The URL is not one of those forms.
        ConfigurationError: The database cannot be opened (the message says which).
    """
    kind = store_kind(url)
    with ExitStack() as stack:
        store: BaseStore
        if kind == "memory":
            store = InMemoryStore()
        elif kind == "sqlite":
            store = stack.enter_context(_open_sqlite(sqlite_path(url), ttl))
        else:
            store = stack.enter_context(_open_postgres(url, ttl))
        yield store


@contextmanager
def _open_sqlite(path: Path, ttl: TTLConfig | None) -> Iterator[BaseStore]:
    from langgraph.store.sqlite import SqliteStore  # noqa: PLC0415  (sqlite3 only when asked for)

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with SqliteStore.from_conn_string(str(path), ttl=ttl) as store:
            # Two processes running `setup()` on a fresh file race on its migrations
            # ("duplicate column name"): one at a time, behind a lock file.
            with path.with_name(path.name + ".setup-lock").open("a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                store.setup()
            if ttl:
                store.sweep_ttl()  # short CLI runs never reach a sweeper interval
            yield store
    except OSError as exc:
        raise ConfigurationError(f"cannot open the SQLite store {path}: {exc}") from exc


@contextmanager
def _open_postgres(url: str, ttl: TTLConfig | None) -> Iterator[BaseStore]:
    # Imported here: psycopg loads libpq, which a SQLite or in-memory user never needs.
    import psycopg  # noqa: PLC0415
    from langgraph.store.postgres import PostgresStore  # noqa: PLC0415
    from psycopg.rows import DictRow, dict_row  # noqa: PLC0415
    from psycopg_pool import ConnectionPool  # noqa: PLC0415

    kwargs: dict[str, Any] = {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}
    # `check` tests a connection before lending it, so a pool outlives a server restart:
    # connections broken by the restart are replaced instead of failing the next call.
    # `timeout`: a store call waits at most this long for a connection while the server
    # is down, then fails (trait writes are best-effort; a run is not held for 30 s).
    pool = ConnectionPool[psycopg.Connection[DictRow]](
        url,
        min_size=1,
        max_size=8,
        kwargs=kwargs,
        connection_class=psycopg.Connection[DictRow],
        check=ConnectionPool.check_connection,
        timeout=POOL_TIMEOUT_S,
        open=False,
        name="m3rec-store",
    )
    try:
        pool.open(wait=True, timeout=10.0)
    except psycopg.Error as exc:
        pool.close()
        raise ConfigurationError(f"cannot reach the PostgreSQL store: {exc}") from exc
    try:
        store = PostgresStore(pool, ttl=ttl)
        # Concurrent `setup()`s on a fresh database collide on the migration tables
        # (UniqueViolation): a session advisory lock runs them one at a time.
        with pool.connection() as conn:
            # Polled, not a blocking pg_advisory_lock: the setup's CREATE INDEX CONCURRENTLY
            # waits for every open statement, so a waiter blocked in one would deadlock it.
            while not _try_setup_lock(conn):
                time.sleep(0.05)
            try:
                store.setup()
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (SETUP_LOCK_ID,))
        if ttl:
            store.sweep_ttl()
        yield store
    finally:
        pool.close()


async def run_ops(store: BaseStore, ops: Iterable[Op]) -> list[Result]:
    """Run `ops` in one `abatch`; a sync-only store (`SqliteStore`) runs `batch` in a worker thread."""
    ops = list(ops)
    try:
        return await store.abatch(ops)
    except NotImplementedError:
        # SqliteStore has no async batch (use AsyncSqliteStore for that); its sync
        # `batch` is thread-safe (one connection behind a lock).
        return await asyncio.to_thread(store.batch, ops)


def label(text: str) -> str:
    """Make `text` a valid namespace label: langgraph refuses periods (and NUL) in labels.

    Model names (`gpt-6.1-sol`) and user ids may contain periods, so `%` and `.` are
    percent-encoded; the mapping is reversible, so two texts never share a label.
    """
    if not text:
        raise ConfigurationError("a store namespace label cannot be empty")
    return text.replace("%", "%25").replace(".", "%2E").replace("\x00", "%00")


_default: tuple[ExitStack, BaseStore] | None = None
_default_lock = threading.Lock()


def default_store() -> BaseStore:
    """Return the process's default store, opened on first use: `$M3REC_STORE_URL`, else SQLite in the cache directory.

    A graph compiled without a store and run outside the LangGraph platform (which
    supplies `runtime.store`) keeps its traits and profiles here, as the CLI does.
    The first call opens a file or a connection pool and blocks: async callers run
    it in a worker thread. The store stays open until the process exits.
    """
    global _default
    with _default_lock:
        if _default is None:
            stack = ExitStack()
            store = stack.enter_context(
                open_store(os.environ.get(STORE_URL_ENV) or default_store_url())
            )
            atexit.register(stack.close)
            _default = (stack, store)
        return _default[1]


def default_store_opened() -> bool:
    """Return whether `default_store()` has opened its store (later calls do not block)."""
    return _default is not None


async def resolve_store(store: BaseStore | None) -> BaseStore:
    """Return the run's store, else the process's default store (opened off the event loop)."""
    if store is not None:
        return store
    if default_store_opened():
        return default_store()
    return await asyncio.to_thread(default_store)


def _try_setup_lock(conn: Any) -> bool:
    row = conn.execute("SELECT pg_try_advisory_lock(%s) AS ok", (SETUP_LOCK_ID,)).fetchone()
    return bool(row and row["ok"])
