"""Best-effort store writes: a valid answer is this run's result whether or not it could be stored.

A write the storage refuses (a SQLite file locked by another process, a full or
read-only disk, a PostgreSQL server that is down) is logged as a warning once per
kind of failure, and the answer is used all the same (not flagged as degraded:
a later run simply misses and asks again). Anything else a store raises (a
`TypeError`, `sqlite3.ProgrammingError`: a bug) still fails the run.
"""

import logging
import sqlite3
import sys
import threading
from collections.abc import Awaitable

BUG_ERRORS: tuple[type[Exception], ...] = (sqlite3.ProgrammingError, sqlite3.InterfaceError)
"""`sqlite3.Error`s that are the caller's bug (a closed connection, bad bindings): raised."""


def storage_errors() -> tuple[type[Exception], ...]:
    """What a failing store write may raise without failing the recommendation (storage trouble).

    psycopg's errors count only once psycopg is loaded: a store that never imported
    it cannot raise them, and importing it here would load libpq for every user.
    """
    errors: list[type[Exception]] = [sqlite3.Error, OSError]
    if (psycopg := sys.modules.get("psycopg")) is not None:
        errors.append(psycopg.Error)
    if (pool := sys.modules.get("psycopg_pool")) is not None:
        errors.append(pool.PoolTimeout)
    return tuple(errors)


class BestEffortWrites:
    """Run store writes, logging refused ones once per kind of failure."""

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self._logger = logger
        self._what = what
        self._warned: set[str] = set()
        self._lock = threading.Lock()  # graphs may run in several threads

    async def run(self, write: Awaitable[None], subject: str) -> None:
        """Await `write`; on storage trouble log it (a warning the first time per kind) and go on."""
        try:
            await write
        except storage_errors() as exc:
            if isinstance(exc, BUG_ERRORS):
                raise
            kind = f"{type(exc).__name__}: {exc}"
            with self._lock:
                first = kind not in self._warned
                self._warned.add(kind)
            self._logger.log(
                logging.WARNING if first else logging.DEBUG,
                "%s write failed (%s); using %s without storing it%s",
                self._what,
                kind,
                subject,
                "" if not first else " (further failures of this kind are logged at debug level)",
            )
