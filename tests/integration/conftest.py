"""A real local model server for the integration tests (started once per session)."""

import socket
from collections.abc import Iterator

import pytest

from m3rec_graph.local.server import local_server


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def local_url() -> Iterator[str]:
    """Start the real SmolLM2 server on a free port and point the `local` preset at it."""
    url = f"http://127.0.0.1:{_free_port()}/v1"
    mp = pytest.MonkeyPatch()
    mp.setenv("M3REC_LOCAL_URL", url)
    try:
        with local_server(url):
            yield url
    finally:
        mp.undo()
