"""Lifecycle of the local model server: start on demand, reuse a running one, stop what we started."""

import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from m3rec_graph._internal.paths import cache_dir
from m3rec_graph.errors import LocalServerError
from m3rec_graph.llm.local_endpoint import local_base_url
from m3rec_graph.local.model import ensure_model


def _root(base_url: str) -> str:
    parts = urlsplit(base_url)
    return f"{parts.scheme}://{parts.netloc}"


def is_healthy(base_url: str, timeout_s: float = 1.0) -> bool:
    """Return whether a llama.cpp server answers `/health` at `base_url`."""
    try:
        with urllib.request.urlopen(f"{_root(base_url)}/health", timeout=timeout_s) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _listening(base_url: str) -> bool:
    """Return whether something accepts TCP connections at `base_url`'s host and port."""
    parts = urlsplit(base_url)
    if parts.hostname is None or parts.port is None:
        return False
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=0.5):
            return True
    except OSError:
        return False


def _healthy_within(base_url: str, seconds: float) -> bool:
    """Poll `/health` until it answers or `seconds` pass."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if is_healthy(base_url, timeout_s=min(5.0, max(0.1, deadline - time.monotonic()))):
            return True
        time.sleep(0.2)
    return False


@dataclass(frozen=True, kw_only=True)
class ServerSettings:
    """How the local server runs. Defaults suit a 2-core machine (see docs/local-model.md)."""

    n_parallel: int = 2
    """Parallel slots (continuous batching): the graph fans MOTE calls out concurrently."""
    n_ctx: int = 8192
    """Total KV cache, split evenly across the slots."""
    n_threads: int = field(default_factory=lambda: os.cpu_count() or 2)
    """All cores: 1.45x faster per recommendation than cores-1 on an idle 2-core machine
    (docs/local-model.md). On a busy machine pass fewer (`m3rec serve --threads 1`):
    llama.cpp's threads spin-wait, and with other jobs on both cores decoding fell
    from ~90 to under 3 tokens/s here."""
    startup_timeout_s: float = 60.0
    busy_wait_s: float = 30.0
    """How long to wait for `/health` from a process already listening on the port: a
    server busy on both cores here left `/health` unanswered for 5 s at a time."""


class LocalServer:
    """A local server process this package started."""

    def __init__(self, process: subprocess.Popen[bytes], base_url: str, log_path: Path) -> None:
        self.process = process
        self.base_url = base_url
        self.log_path = log_path

    def stop(self) -> None:
        """Terminate the server process and wait for it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_server(
    base_url: str | None = None, settings: ServerSettings | None = None
) -> LocalServer:
    """Start the local server at `base_url` and wait until it answers."""
    url = base_url or local_base_url()
    cfg = settings or ServerSettings()
    host_port = urlsplit(url)
    if host_port.hostname not in ("127.0.0.1", "localhost") or host_port.port is None:
        raise LocalServerError(f"the local server must listen on 127.0.0.1:<port>, not {url}")
    if importlib.util.find_spec("xllamacpp") is None:
        raise LocalServerError(
            "the local server needs the `local` extra: pip install 'm3rec-graph[local]'"
        )
    model = ensure_model()
    log_path = cache_dir() / "local-server.log"
    args = [
        str(model),
        str(host_port.port),
        str(cfg.n_parallel),
        str(cfg.n_ctx),
        str(cfg.n_threads),
    ]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "m3rec_graph.local._serve", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    server = LocalServer(process, url, log_path)
    deadline = time.monotonic() + cfg.startup_timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-800:]
            raise LocalServerError(f"local server exited with code {process.returncode}:\n{tail}")
        if is_healthy(url, timeout_s=0.5):
            return server
        time.sleep(0.2)
    server.stop()
    raise LocalServerError(
        f"local server did not answer on {url} within {cfg.startup_timeout_s:.0f} s"
    )


@contextmanager
def local_server(
    base_url: str | None = None, settings: ServerSettings | None = None
) -> Iterator[str]:
    """Yield the URL of a healthy local server: reuse a running one, or start one and stop it after.

    Raises:
        LocalServerError: Something listens on the port but does not answer `/health`
            within `busy_wait_s` (starting a second server there would fail), or the
            server could not start.
    """
    url = base_url or local_base_url()
    cfg = settings or ServerSettings()
    if is_healthy(url) or (_listening(url) and _healthy_within(url, cfg.busy_wait_s)):
        yield url
        return
    if _listening(url):
        raise LocalServerError(
            f"a process listens on {_root(url)} but did not answer /health within"
            f" {cfg.busy_wait_s:.0f} s (a local server busy on every core?); wait for it,"
            " or point M3REC_LOCAL_URL at another port"
        )
    server = start_server(url, settings)
    try:
        yield url
    finally:
        server.stop()
