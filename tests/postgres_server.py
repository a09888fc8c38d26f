"""A real, throwaway PostgreSQL server on 127.0.0.1 for the store tests (no mocks, no network).

`postgres_server` (session scope) runs Debian's own binaries: `initdb` into a fresh temp
directory, then `postgres` on a free port of 127.0.0.1 with its unix socket inside that
directory, and removes everything at the end. `postgres_url` (function scope) hands each
test a fresh empty database on it. `PostgresServer.restart()` stops and starts the same
data directory on the same port, for the tests of what survives a restart.

The binaries are found through `M3REC_PG_BIN`, else the newest `/usr/lib/postgresql/*/bin`
(Debian's `postgresql` package, which `make postgres` installs), else `pg_config --bindir`.
Without them the fixture fails and says to run `make postgres`; it skips only when
`M3REC_SKIP_POSTGRES=1` asks for that explicitly, so a CI that lost its install step is red.

`initdb` and `postgres` refuse to run as root, and CI runs as root: then both run as the
unprivileged `nobody` (the temp directory is chowned to it); as any other user they run
directly. `fsync` is off: the tests restart the server but never the machine, and a
process crash (`restart(mode="immediate")`) loses nothing the OS already holds.
"""

import itertools
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import psycopg
import pytest
from psycopg import AsyncConnection, Connection, sql
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool, ConnectionPool

SKIP_ENV = "M3REC_SKIP_POSTGRES"
BIN_ENV = "M3REC_PG_BIN"
USER = "m3rec"
DBNAME = "m3rec"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0

StopMode = Literal["fast", "immediate"]
# pg_ctl's shutdown modes are these signals to the postmaster: fast = SIGINT (roll back
# open transactions, checkpoint, exit), immediate = SIGQUIT (exit at once, like a crash;
# the next start replays the WAL).
_STOP_SIGNALS: dict[StopMode, signal.Signals] = {"fast": signal.SIGINT, "immediate": signal.SIGQUIT}


# What (Async)PostgresStore needs of every connection: its own from_conn_string sets these.
STORE_CONNECTION_KWARGS: dict[str, object] = {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}


def async_store_pool(
    url: str, *, check: bool = True, min_size: int = 1, max_size: int = 4, timeout: float = 10.0
) -> AsyncConnectionPool[AsyncConnection[DictRow]]:
    """An unopened pool for `AsyncPostgresStore(pool)` (open it with `async with`).

    `check=True` sets `check=AsyncConnectionPool.check_connection`: every checkout first
    runs an empty query and replaces a dead connection, so the first store call after a
    server restart succeeds instead of raising `psycopg.OperationalError` (without it,
    each stale pooled connection fails one call before the pool replaces it). A call made
    while the server is down waits up to `timeout` seconds for a connection, then raises
    `psycopg_pool.PoolTimeout`.
    """
    return AsyncConnectionPool(
        url,
        connection_class=AsyncConnection[DictRow],
        kwargs=STORE_CONNECTION_KWARGS,
        min_size=min_size,
        max_size=max_size,
        check=AsyncConnectionPool.check_connection if check else None,
        timeout=timeout,
        open=False,
    )


def store_pool(
    url: str, *, check: bool = True, min_size: int = 1, max_size: int = 4, timeout: float = 10.0
) -> ConnectionPool[Connection[DictRow]]:
    """The sync twin of `async_store_pool`, for `PostgresStore(pool)` (open it with `with`)."""
    return ConnectionPool(
        url,
        connection_class=Connection[DictRow],
        kwargs=STORE_CONNECTION_KWARGS,
        min_size=min_size,
        max_size=max_size,
        check=ConnectionPool.check_connection if check else None,
        timeout=timeout,
        open=False,
    )


def _has_server_binaries(bindir: Path) -> bool:
    return all((bindir / name).is_file() and os.access(bindir / name, os.X_OK) for name in ("initdb", "postgres"))


def find_postgres_bindir() -> Path | None:
    """The directory holding `initdb` and `postgres`, or None when PostgreSQL is not installed."""
    override = os.environ.get(BIN_ENV)
    if override:
        return Path(override) if _has_server_binaries(Path(override)) else None

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", path.parent.name))

    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    for bindir in debian:
        if (bindir / "pg_ctl").exists() and _has_server_binaries(bindir):
            return bindir
    pg_config = shutil.which("pg_config")
    if pg_config:
        result = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        bindir = Path(result.stdout.strip())
        if result.returncode == 0 and _has_server_binaries(bindir):
            return bindir
    return None


def _require_bindir() -> Path:
    bindir = find_postgres_bindir()
    if bindir is not None:
        return bindir
    where = f"{BIN_ENV}={os.environ[BIN_ENV]!r} has no initdb/postgres" if os.environ.get(BIN_ENV) else (
        "no /usr/lib/postgresql/*/bin/pg_ctl and no `pg_config --bindir` with initdb/postgres"
    )
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"PostgreSQL server binaries not found ({where}); skipped because {SKIP_ENV}=1")
    pytest.fail(
        f"PostgreSQL server binaries not found ({where}). Run `make postgres` (as root it installs "
        f"Debian's `postgresql` package), point {BIN_ENV} at a bin directory with initdb and postgres, "
        f"or set {SKIP_ENV}=1 to skip these tests on purpose.",
        pytrace=False,
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One PostgreSQL cluster in a temp directory, served on 127.0.0.1:`port`.

    `url` is `postgresql://m3rec@127.0.0.1:PORT/m3rec` (trust authentication, loopback only).
    """

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="m3rec-pg-", dir=self._parent_dir()))
        self.datadir = self.root / "data"
        self.sockdir = self.root / "sock"
        self.logfile = self.root / "postgres.log"
        self.port = 0
        self.initdb_seconds = 0.0
        self.start_seconds = 0.0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: int | None = None
        self._names = itertools.count(1)
        self._as_user: pwd.struct_passwd | None = pwd.getpwnam("nobody") if os.geteuid() == 0 else None
        self.sockdir.mkdir()
        if self._as_user is not None:
            for path in (self.root, self.sockdir):
                os.chown(path, self._as_user.pw_uid, self._as_user.pw_gid)

    @staticmethod
    def _parent_dir() -> str | None:
        # As root the server runs as `nobody`, who must be able to reach the directory.
        parent = Path(tempfile.gettempdir())
        if os.geteuid() == 0 and not all(os.stat(p).st_mode & 0o001 for p in (parent, *parent.parents)):
            return "/tmp"
        return None

    @property
    def url(self) -> str:
        """The URL of the session's database `m3rec`."""
        return self.url_for(DBNAME)

    def url_for(self, dbname: str) -> str:
        """The URL of database `dbname` on this server."""
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{dbname}"

    @property
    def running(self) -> bool:
        """Whether the postmaster process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def _env(self) -> dict[str, str]:
        # No inherited PG* variables: the server and initdb see only what is set here.
        return {"PATH": f"{self.bindir}:/usr/bin:/bin", "LC_ALL": "C", "LANG": "C", "TZ": "UTC"}

    @property
    def _uid(self) -> int | None:
        return None if self._as_user is None else self._as_user.pw_uid

    @property
    def _gid(self) -> int | None:
        return None if self._as_user is None else self._as_user.pw_gid

    @property
    def _groups(self) -> list[int] | None:
        return None if self._as_user is None else []

    def log_tail(self, lines: int = 30) -> str:
        """The last lines the server logged (for failure messages)."""
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def initdb(self) -> None:
        """Create the cluster: superuser `m3rec`, trust auth, UTF-8, C locale, no fsync."""
        began = time.monotonic()
        result = subprocess.run(
            [
                str(self.bindir / "initdb"),
                "-D", str(self.datadir),
                "-U", USER,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            ],
            capture_output=True,
            text=True,
            check=False,
            cwd=self.root,
            env=self._env(),
            user=self._uid,
            group=self._gid,
            extra_groups=self._groups,
        )
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        self.initdb_seconds = time.monotonic() - began

    def start(self) -> None:
        """Start the postmaster (a free port the first time, the same port after) and wait until it answers."""
        if self.running:
            raise RuntimeError("PostgreSQL is already running")
        began = time.monotonic()
        first = self.port == 0
        for _attempt in range(3 if first else 1):
            if first:
                self.port = _free_port()
            if self._log is None:
                self._log = os.open(self.logfile, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            self._proc = subprocess.Popen(
                [
                    str(self.bindir / "postgres"),
                    "-D", str(self.datadir),
                    "-p", str(self.port),
                    "-k", str(self.sockdir),
                    "-c", "listen_addresses=127.0.0.1",
                    "-c", "fsync=off",
                    "-c", "full_page_writes=off",
                    "-c", "max_connections=100",
                    "-c", "shared_buffers=32MB",
                    "-c", "logging_collector=off",
                ],
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=self._log,
                cwd=self.root,
                env=self._env(),
                user=self._uid,
                group=self._gid,
                extra_groups=self._groups,
            )
            if self._wait_ready():
                self.start_seconds = time.monotonic() - began
                return
            if "could not bind" not in self.log_tail():
                break
        raise RuntimeError(f"PostgreSQL did not start on 127.0.0.1:{self.port}:\n{self.log_tail()}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if not self.running:
                return False
            try:
                with psycopg.connect(self.url_for("postgres"), connect_timeout=2):
                    return True
            except psycopg.OperationalError:
                time.sleep(0.05)
        self.stop(mode="immediate")
        return False

    def stop(self, mode: StopMode = "fast") -> None:
        """Stop the postmaster; `immediate` is a crash as far as the data directory can tell."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(_STOP_SIGNALS[mode])
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT)

    def restart(self, mode: StopMode = "fast") -> None:
        """Stop (`fast`: clean shutdown; `immediate`: crash) and start again on the same data dir and port."""
        self.stop(mode=mode)
        self.start()

    def create_database(self) -> str:
        """A fresh empty database on this server; returns its URL."""
        name = f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url_for("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url_for(name)

    def drop_database(self, url: str) -> None:
        """Drop a database made by `create_database` (its open connections are terminated)."""
        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.url_for("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def close(self) -> None:
        """Stop the server and remove its directory."""
        try:
            self.stop()
        finally:
            if self._log is not None:
                os.close(self._log)
                self._log = None
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A running throwaway PostgreSQL server for the whole session (fails if not installed)."""
    server = PostgresServer(_require_bindir())
    try:
        server.initdb()
        server.start()
        with psycopg.connect(server.url_for("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DBNAME)))
        yield server
    finally:
        server.close()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The URL of a fresh empty database on the session's server, dropped after the test."""
    url = postgres_server.create_database()
    try:
        yield url
    finally:
        if postgres_server.running:
            postgres_server.drop_database(url)
