"""One writer OS process of the concurrent-store tests (tests/unit/test_langgraph_stores.py).

    python -m tests.store_writer {postgres URL | sqlite PATH} WRITER COUNT

Opens the store the way the app will (AsyncPostgresStore over a checked pool, or
AsyncSqliteStore on the file; the parent has already run `setup()`), prints `ready`, waits
for a line on stdin so every writer starts at once, then writes COUNT items of its own
plus the shared hot key, reads each of its own items back, and prints one JSON line per
acknowledged write (only after `abatch` returned), then a last line with the wall-clock
span of its writes. Any error ends it with a traceback and exit status 1.

On PostgreSQL each write batch also reads the hot key (GetOp + PutOps in one `abatch`, as
AsyncBatchedBaseStore merges an `aget` and an `aput` of the same tick). On SQLite reads
and writes go in separate batches: a batch that reads before it writes runs in one
deferred transaction, and when another process holds the write lock SQLite answers
"database is locked" at once instead of waiting (its deadlock rule; seen in about 1 batch
in 5 with three writers, worse in WAL mode).
"""

import asyncio
import json
import sys
import time

from langgraph.store.base import BaseStore, GetOp, Item, PutOp
from langgraph.store.postgres import AsyncPostgresStore
from langgraph.store.sqlite import AsyncSqliteStore

from tests.postgres_server import async_store_pool

SHARED = ("shared",)
HOT = ("hot",)
TASKS = 4  # concurrent coroutines per process (they share the process's pool or connection)


async def _write(store: BaseStore, writer: int, task: int, count: int) -> None:
    mixed = isinstance(store, AsyncPostgresStore)
    for i in range(task, count, TASKS):
        key = f"w{writer}-{i}"
        value = {"writer": writer, "i": i, "text": f"trait {i} of writer {writer}"}
        reads = [GetOp(HOT, "last")] if mixed else []
        await store.abatch([*reads, PutOp(SHARED, key, value), PutOp(HOT, "last", value)])
        [got] = await store.abatch([GetOp(SHARED, key)])
        if not isinstance(got, Item) or got.value != value:
            raise AssertionError(f"read-your-write failed for {key}: {got!r}")
        print(json.dumps({"key": key, "value": value}), flush=True)  # noqa: T201 - the parent reads it


async def _run(store: BaseStore, writer: int, count: int) -> None:
    print("ready", flush=True)  # noqa: T201
    await asyncio.to_thread(sys.stdin.readline)
    began = time.time()
    await asyncio.gather(*(_write(store, writer, task, count) for task in range(TASKS)))
    print(json.dumps({"span": [began, time.time()]}), flush=True)  # noqa: T201


async def main(backend: str, target: str, writer: int, count: int) -> None:
    if backend == "postgres":
        async with async_store_pool(target) as pool:
            await _run(AsyncPostgresStore(pool), writer, count)
    elif backend == "sqlite":
        async with AsyncSqliteStore.from_conn_string(target) as store:
            await _run(store, writer, count)
    else:
        raise SystemExit(f"unknown backend {backend!r}")


if __name__ == "__main__":
    backend, target, writer, count = sys.argv[1:]
    asyncio.run(main(backend, target, int(writer), int(count)))
