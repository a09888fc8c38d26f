"""LangGraph's own persistent stores as m3rec will use them for traits and profiles.

Real servers and files only: PostgreSQL from tests/postgres_server.py (a throwaway server
on 127.0.0.1), SQLite in tmp_path. What is pinned here, and what the storage code must
build on:

- `abatch` round-trips PutOp/GetOp on AsyncPostgresStore over an AsyncConnectionPool and
  on AsyncSqliteStore; a PutOp with value None deletes.
- Several OS processes writing at once lose no acknowledged write, on one PostgreSQL
  database and on one SQLite file, after one `setup()` (racing `setup()` from several
  processes on a fresh database fails on both). On SQLite the writers keep reads and
  writes in separate batches: see tests/store_writer.py for why.
- TTL is minutes (a float), `expires_at = write time + ttl`; a raw `PutOp` carries its own
  `ttl` (default None, no expiry) and ignores the store's `default_ttl`, which only
  `put`/`aput` apply. Expired rows are deleted only by `sweep_ttl()` (or the sweeper that
  `start_ttl_sweeper()` starts): until then reads still return them, except on PostgreSQL
  with `omit_expired=True`. SQLite compares against CURRENT_TIMESTAMP, whole seconds, so it
  sweeps up to a second late. PostgreSQL keeps `ttl_minutes` as an INT: a refresh on read
  uses the TTL rounded to whole minutes.
- Refresh on read differs: PostgreSQL refreshes whenever the op asks (`refresh_ttl`,
  default True, and `get` asks unless `refresh_on_read` is False); SQLite refreshes only
  when the store's config says `refresh_on_read=True`.
- `forget`: search + delete per namespace prefix, paged (search returns 10 by default),
  segment-exact (`u1` does not match `u10`), other users untouched.
- A server restart: with `check=check_connection` on the pool the first call after the
  restart succeeds; without it, a stale pooled connection fails one call with
  OperationalError. Nothing acknowledged before a clean or a crash restart is lost. While
  the server is down a call waits up to the pool's `timeout`, then raises PoolTimeout.
"""

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import Any, Literal

import psycopg
import pytest
from langgraph.store.base import BaseStore, GetOp, Item, PutOp, TTLConfig
from langgraph.store.postgres import AsyncPostgresStore, PostgresStore
from langgraph.store.sqlite import AsyncSqliteStore, SqliteStore
from psycopg_pool import PoolTimeout

from tests.postgres_server import PostgresServer, async_store_pool, store_pool

REPO = Path(__file__).resolve().parents[2]
TTL_SECONDS = 1.0
TTL_MINUTES = TTL_SECONDS / 60  # the stores take TTLs in minutes, as floats

Backend = Literal["sqlite", "postgres"]
BACKENDS = [pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)]


@asynccontextmanager
async def open_async_store(
    backend: Backend, request: pytest.FixtureRequest, tmp_path: Path, ttl: TTLConfig | None = None
) -> AsyncIterator[BaseStore]:
    """The async store of `backend`, set up, on a fresh database or file."""
    if backend == "postgres":
        url: str = request.getfixturevalue("postgres_url")
        async with async_store_pool(url) as pool:
            pg = AsyncPostgresStore(pool, ttl=ttl)
            await pg.setup()
            yield pg
    else:
        async with AsyncSqliteStore.from_conn_string(str(tmp_path / "store.db"), ttl=ttl) as lite:
            await lite.setup()
            yield lite


def raw_sql(backend: Backend, request: pytest.FixtureRequest, tmp_path: Path, query: str) -> list[tuple[Any, ...]]:
    """Run `query` on the store's own database, outside the store (autocommit)."""
    if backend == "postgres":
        with psycopg.connect(request.getfixturevalue("postgres_url"), autocommit=True) as conn:
            cur = conn.execute(query)
            return cur.fetchall() if cur.description else []
    with closing(sqlite3.connect(tmp_path / "store.db", isolation_level=None)) as lite:
        return lite.execute(query).fetchall()


# --- PutOp/GetOp through abatch ------------------------------------------------------------

TRAITS = {"motivations": ["gift for my sister", "café-grade espresso ☕"], "scores": {"price": 0.8, "brand": 0.2}}


async def check_round_trip(store: BaseStore) -> None:
    ns = ("users", "u1", "traits")
    assert await store.abatch([PutOp(ns, "B00A", TRAITS), PutOp(ns, "B00B", {"n": 1})]) == [None, None]
    got = await store.abatch([GetOp(ns, "B00A"), GetOp(ns, "B00B"), GetOp(ns, "missing"), GetOp(("users", "u2", "traits"), "B00A")])
    first, second, missing, other_user = got
    assert isinstance(first, Item) and isinstance(second, Item)
    assert (first.namespace, first.key, first.value) == (ns, "B00A", TRAITS)
    assert second.value == {"n": 1}
    assert missing is None and other_user is None
    # Last write wins inside one batch and across batches; value None deletes.
    await store.abatch([PutOp(ns, "B00B", {"n": 2}), PutOp(ns, "B00B", {"n": 3})])
    await store.abatch([PutOp(ns, "B00A", None)])
    gone, third = await store.abatch([GetOp(ns, "B00A"), GetOp(ns, "B00B")])
    assert gone is None
    assert isinstance(third, Item) and third.value == {"n": 3}
    assert third.updated_at >= second.updated_at


@pytest.mark.postgres
async def test_async_postgres_store_abatch_round_trip_over_pool(postgres_url: str) -> None:
    async with async_store_pool(postgres_url) as pool:
        store = AsyncPostgresStore(pool)
        await store.setup()
        await check_round_trip(store)
    # Durable: a new pool and store on the same database see the surviving item.
    async with async_store_pool(postgres_url) as pool:
        [item] = await AsyncPostgresStore(pool).abatch([GetOp(("users", "u1", "traits"), "B00B")])
        assert isinstance(item, Item) and item.value == {"n": 3}


async def test_async_sqlite_store_abatch_round_trip(tmp_path: Path) -> None:
    path = str(tmp_path / "store.db")
    async with AsyncSqliteStore.from_conn_string(path) as store:
        await store.setup()
        await check_round_trip(store)
    async with AsyncSqliteStore.from_conn_string(path) as store:
        [item] = await store.abatch([GetOp(("users", "u1", "traits"), "B00B")])
        assert isinstance(item, Item) and item.value == {"n": 3}


# --- two OS processes writing at once -------------------------------------------------------

WRITERS = 2
WRITES_EACH = 100


def run_writers(backend: Backend, target: str) -> list[dict[str, Any]]:
    """Start WRITERS `tests.store_writer` processes together; return every acknowledged write.

    Also checks that the writers' write phases overlapped in time (they did run at once).
    """
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "tests.store_writer", backend, target]
    procs = [
        subprocess.Popen(
            [*cmd, str(writer), str(WRITES_EACH)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env,
        )
        for writer in range(WRITERS)
    ]
    try:
        for proc in procs:  # all connected and set up before any writes
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            if line != "ready":
                proc.kill()
                pytest.fail(f"a writer did not start: {line!r}\n{proc.communicate()[1]}")
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        acked: list[dict[str, Any]] = []
        spans: list[list[float]] = []
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, f"a writer failed (exit {proc.returncode}):\n{err}"
            lines = [json.loads(line) for line in out.splitlines()]
            spans.append(lines[-1]["span"])
            acked += lines[:-1]
        assert max(began for began, _ in spans) < min(ended for _, ended in spans), f"no overlap: {spans}"
        return acked
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


async def check_all_acked_readable(store: BaseStore, acked: list[dict[str, Any]]) -> None:
    assert len(acked) == WRITERS * WRITES_EACH  # every writer finished every write
    stored = {item.key: item.value for item in await store.asearch(("shared",), limit=10 * len(acked))}
    assert stored == {write["key"]: write["value"] for write in acked}
    [hot] = await store.abatch([GetOp(("hot",), "last")])
    assert isinstance(hot, Item) and hot.value in [write["value"] for write in acked]


@pytest.mark.postgres
async def test_processes_writing_at_once_to_one_postgres_store(postgres_url: str) -> None:
    async with async_store_pool(postgres_url) as pool:
        store = AsyncPostgresStore(pool)
        await store.setup()  # once, before the writers: setup() is not safe to race
        acked = await asyncio.to_thread(run_writers, "postgres", postgres_url)
        await check_all_acked_readable(store, acked)


async def test_processes_writing_at_once_to_one_sqlite_file(tmp_path: Path) -> None:
    path = str(tmp_path / "store.db")
    async with AsyncSqliteStore.from_conn_string(path) as store:
        await store.setup()
    acked = await asyncio.to_thread(run_writers, "sqlite", path)
    async with AsyncSqliteStore.from_conn_string(path) as store:
        await check_all_acked_readable(store, acked)


# --- TTL -----------------------------------------------------------------------------------

def sweep_until_gone(sweep: Callable[[], int], *, deadline_s: float = 5.0) -> tuple[int, float]:
    """Call `sweep` every 50 ms until it deletes something; return (deleted, seconds waited)."""
    began = time.monotonic()
    while time.monotonic() - began < deadline_s:
        deleted = sweep()
        if deleted:
            return deleted, time.monotonic() - began
        time.sleep(0.05)
    return 0, time.monotonic() - began


def check_ttl_expiry(store: BaseStore, sweep: Callable[[], int]) -> None:
    ns = ("users", "u1", "profile")
    written = time.monotonic()
    store.put(ns, "short", {"v": 1})  # the store's default_ttl: TTL_MINUTES
    store.put(ns, "long", {"v": 2}, ttl=10)
    store.put(ns, "forever", {"v": 3}, ttl=None)
    store.batch([PutOp(ns, "raw", {"v": 4})])  # a raw PutOp: its own ttl (None), not default_ttl
    assert sweep() == 0  # nothing is due yet
    deleted, _ = sweep_until_gone(sweep)
    assert deleted == 1
    assert time.monotonic() - written >= TTL_SECONDS  # not before its TTL
    assert store.get(ns, "short") is None
    assert {item.key for item in store.search(ns)} == {"long", "forever", "raw"}


def test_sqlite_store_ttl_expires_on_sweep(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with SqliteStore.from_conn_string(str(path), ttl={"default_ttl": TTL_MINUTES}) as store:
        store.setup()
        began = time.monotonic()
        check_ttl_expiry(store, store.sweep_ttl)
        # SQLite compares its expires_at (Python's now + ttl, microseconds) with CURRENT_TIMESTAMP
        # (whole seconds): an item goes in the first sweep after the second it expires in
        # (+1 s at most; the rest is slack for a busy machine).
        assert time.monotonic() - began < TTL_SECONDS + 2.5
    with closing(sqlite3.connect(path)) as lite:
        rows = lite.execute("SELECT key, ttl_minutes FROM store ORDER BY key").fetchall()
    assert rows == [("forever", None), ("long", 10.0), ("raw", None)]


@pytest.mark.postgres
def test_postgres_store_ttl_expires_on_sweep(postgres_url: str) -> None:
    with store_pool(postgres_url) as pool:
        store = PostgresStore(pool, ttl={"default_ttl": TTL_MINUTES})
        store.setup()
        with psycopg.connect(postgres_url) as conn:
            store.put(("probe",), "k", {"v": 0})
            [(lifetime,)] = conn.execute("SELECT expires_at - created_at FROM store").fetchall()
            assert lifetime.total_seconds() == TTL_SECONDS  # NOW() + ttl, exactly
            store.delete(("probe",), "k")
        check_ttl_expiry(store, store.sweep_ttl)


@pytest.mark.postgres
async def test_postgres_store_keeps_ttl_minutes_as_an_integer(postgres_url: str) -> None:
    """The first expiry honours a fractional TTL; a refresh on read uses it rounded to whole minutes.

    PostgresStore's `ttl_minutes` column is INT (SQLite's is REAL): a TTL of 1.4 minutes
    expires 84 s after the write, but a read that refreshes it sets 60 s from the read,
    and a sub-minute TTL refreshed on read (rounded to 0) expires at that read.
    """
    async with async_store_pool(postgres_url) as pool:
        store = AsyncPostgresStore(pool, ttl={"refresh_on_read": True})
        await store.setup()
        await store.aput(("u",), "k", {"v": 1}, ttl=1.4)
        await store.aput(("u",), "sub", {"v": 2}, ttl=TTL_MINUTES)
        query = "SELECT key, ttl_minutes, extract(epoch FROM expires_at - now()) FROM store ORDER BY key"
        with psycopg.connect(postgres_url, autocommit=True) as conn:  # now(): each query's own
            (_, ttl, left), (_, sub_ttl, sub_left) = conn.execute(query).fetchall()
            assert (ttl, sub_ttl) == (1, 0)
            assert 80 < left <= 84 and sub_left <= TTL_SECONDS  # 1.4 and 1/60 minutes from the write
            assert await store.aget(("u",), "k") is not None and await store.aget(("u",), "sub") is not None
            (_, _, left), (_, _, sub_left) = conn.execute(query).fetchall()
            assert 55 < left <= 60 and sub_left <= 0  # refreshed to 1 minute; "sub" to 0: due now
        assert await store.sweep_ttl() == 1


async def test_expired_items_are_read_until_swept_on_sqlite(tmp_path: Path) -> None:
    """SQLite ignores `omit_expired`: an expired, unswept item is still returned."""
    async with AsyncSqliteStore.from_conn_string(str(tmp_path / "store.db"), ttl={"omit_expired": True}) as store:
        await store.aput(("u",), "k", {"v": 1}, ttl=TTL_MINUTES)
        await asyncio.sleep(TTL_SECONDS + 1.1)  # past expires_at and past its CURRENT_TIMESTAMP second
        assert await store.aget(("u",), "k", refresh_ttl=False) is not None
        assert await store.sweep_ttl() == 1
        assert await store.aget(("u",), "k") is None


@pytest.mark.postgres
async def test_omit_expired_hides_unswept_items_on_postgres(postgres_url: str) -> None:
    async with async_store_pool(postgres_url) as pool:
        hiding = AsyncPostgresStore(pool, ttl={"omit_expired": True})
        showing = AsyncPostgresStore(pool)
        await hiding.setup()
        await hiding.aput(("u",), "k", {"v": 1}, ttl=TTL_MINUTES)
        await asyncio.sleep(TTL_SECONDS + 0.2)
        assert await hiding.aget(("u",), "k") is None
        assert await hiding.asearch(("u",)) == []
        assert await showing.aget(("u",), "k", refresh_ttl=False) is not None  # still in the table
        assert await hiding.sweep_ttl() == 1


# Whether a read pushes expires_at out again, by backend, the store's refresh_on_read
# setting (None: not set) and how the read is made: aget() or a raw GetOp (refresh_ttl=True
# by default). Checked without sleeping: expires_at is first set far in the past by hand.
REFRESH_CASES = [
    ("postgres", None, "aget", True),
    ("postgres", True, "aget", True),
    ("postgres", False, "aget", False),
    ("postgres", False, "GetOp", True),  # PostgreSQL follows the op, not the config
    ("sqlite", None, "aget", False),  # SQLite refreshes only when the config says so
    ("sqlite", True, "aget", True),
    ("sqlite", False, "aget", False),
    ("sqlite", False, "GetOp", False),
]


@pytest.mark.parametrize(
    ("backend", "refresh_on_read", "read", "refreshed"),
    [pytest.param(*case, marks=[pytest.mark.postgres] if case[0] == "postgres" else []) for case in REFRESH_CASES],
)
async def test_refresh_on_read(
    backend: Backend,
    refresh_on_read: bool | None,
    read: str,
    refreshed: bool,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:
    ttl: TTLConfig = {} if refresh_on_read is None else {"refresh_on_read": refresh_on_read}
    async with open_async_store(backend, request, tmp_path, ttl=ttl) as store:
        await store.aput(("u",), "k", {"v": 1}, ttl=10)
        raw_sql(backend, request, tmp_path, "UPDATE store SET expires_at = '2000-01-01 00:00:00'")
        item: object
        if read == "aget":
            item = await store.aget(("u",), "k")
        else:
            [item] = await store.abatch([GetOp(("u",), "k")])
        assert isinstance(item, Item) and item.value == {"v": 1}
        [(expires_at,)] = raw_sql(backend, request, tmp_path, "SELECT expires_at FROM store")
        assert (str(expires_at)[:4] != "2000") is refreshed, expires_at


# --- forget: delete everything under a namespace prefix ------------------------------------

async def forget(store: BaseStore, prefix: tuple[str, ...], *, page: int = 100) -> int:
    """Delete every item in `prefix` and below, page by page; return how many."""
    deleted = 0
    while items := await store.asearch(prefix, limit=page, refresh_ttl=False):
        await store.abatch([PutOp(item.namespace, item.key, None) for item in items])
        deleted += len(items)
    return deleted


@pytest.mark.parametrize("backend", BACKENDS)
async def test_forget_deletes_one_users_namespaces_only(
    backend: Backend, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    async with open_async_store(backend, request, tmp_path) as store:
        u1 = [PutOp(("users", "u1", "traits"), f"B{i:03}", {"t": i}) for i in range(25)]
        u1 += [PutOp(("users", "u1", "profile"), "current", {"p": "u1"}), PutOp(("users", "u1"), "meta", {"m": 1})]
        others = [PutOp(("users", "u10", "traits"), f"B{i:03}", {"t": i}) for i in range(3)]  # "u1" is a string prefix of it
        others += [PutOp(("users", "u2", "traits"), "B000", {"t": 0}), PutOp(("users", "u2", "profile"), "current", {"p": "u2"})]
        await store.abatch(u1 + others)
        assert len(await store.asearch(("users", "u1"))) == 10  # search's default limit: forget must page

        assert await forget(store, ("users", "u1"), page=7) == len(u1)

        assert await store.asearch(("users", "u1"), limit=100) == []
        assert await store.alist_namespaces(prefix=("users", "u1")) == []
        remaining = await store.asearch(("users",), limit=100)
        assert sorted((i.namespace, i.key, i.value) for i in remaining) == sorted((o.namespace, o.key, o.value) for o in others)
        assert await forget(store, ("users", "u1")) == 0  # forgetting twice is harmless


# --- a PostgreSQL restart under a live pool ------------------------------------------------

NS = ("users", "u1", "traits")


async def write_items(store: BaseStore, keys: list[str]) -> None:
    await asyncio.gather(*(store.abatch([PutOp(NS, key, {"key": key})]) for key in keys))


@pytest.mark.postgres
@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_checked_pool_rides_out_a_server_restart(
    mode: Literal["fast", "immediate"], postgres_server: PostgresServer, postgres_url: str
) -> None:
    """With check=check_connection the first call after a restart succeeds; nothing acknowledged is lost.

    `fast` is a clean shutdown (pg_ctl's default), `immediate` a crash: the next start
    replays the WAL.
    """
    before = [f"before-{i}" for i in range(20)]
    after = [f"after-{i}" for i in range(20)]
    async with async_store_pool(postgres_url, min_size=2, max_size=2) as pool:
        store = AsyncPostgresStore(pool)
        await store.setup()
        await write_items(store, before)  # acknowledged: abatch returned
        made = pool.get_stats()["connections_num"]

        await asyncio.to_thread(postgres_server.restart, mode)

        began = time.monotonic()
        await store.abatch([PutOp(NS, after[0], {"key": after[0]})])  # the very first call: no error
        first_call = time.monotonic() - began
        await write_items(store, after[1:])
        assert pool.get_stats()["connections_num"] >= made + 1  # the stale connections were replaced
        assert first_call < 5.0
        assert sorted(item.key for item in await store.asearch(NS, limit=100)) == sorted(before + after)


@pytest.mark.postgres
async def test_unchecked_pool_fails_one_call_per_stale_connection_after_a_restart(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    """Why the pool needs `check`: without it a stale connection fails the next call, then is replaced."""
    async with async_store_pool(postgres_url, check=False, min_size=1, max_size=1) as pool:
        store = AsyncPostgresStore(pool)
        await store.setup()
        await store.abatch([PutOp(NS, "before", {"v": 1})])

        await asyncio.to_thread(postgres_server.restart)

        with pytest.raises(psycopg.OperationalError):
            await store.abatch([PutOp(NS, "lost", {"v": 2})])  # not acknowledged: it raised
        await store.abatch([PutOp(NS, "after", {"v": 3})])  # the pool made a new connection
        assert sorted(item.key for item in await store.asearch(NS)) == ["after", "before"]


@pytest.mark.postgres
def test_sync_postgres_store_on_a_checked_pool_rides_out_a_restart(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    with store_pool(postgres_url, min_size=2, max_size=2) as pool:
        store = PostgresStore(pool)
        store.setup()
        store.put(NS, "before", {"v": 1})
        postgres_server.restart()
        store.put(NS, "after", {"v": 2})
        assert [item.key for item in store.search(NS)] == ["after", "before"]


@pytest.mark.postgres
async def test_a_call_while_the_server_is_down_waits_at_most_the_pool_timeout(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    """The pool's `timeout` bounds how long a store call blocks on a dead server; it then reconnects by itself."""
    async with async_store_pool(postgres_url, min_size=1, max_size=1, timeout=1.0) as pool:
        store = AsyncPostgresStore(pool)
        await store.setup()
        await store.abatch([PutOp(NS, "before", {"v": 1})])
        postgres_server.stop()
        try:
            began = time.monotonic()
            with pytest.raises(PoolTimeout):
                await store.abatch([PutOp(NS, "while-down", {"v": 2})])
            assert 0.9 < time.monotonic() - began < 3.0
        finally:
            postgres_server.start()
        await pool.wait(timeout=15)  # reconnects with a backoff of 1, 2, 4... s between attempts
        await store.abatch([PutOp(NS, "after", {"v": 3})])
        assert sorted(item.key for item in await store.asearch(NS)) == ["after", "before"]
