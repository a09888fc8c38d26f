"""`local_server`: reuse a server on the port, wait for a busy one, never start a second one there."""

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from m3rec_graph.errors import LocalServerError
from m3rec_graph.local import server as lifecycle
from m3rec_graph.local.server import ServerSettings, local_server


@pytest.fixture
def no_start(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    started: list[str] = []

    def refuse(url: str, settings: ServerSettings | None = None) -> None:
        started.append(url)
        raise AssertionError("a second server was started on a taken port")

    monkeypatch.setattr(lifecycle, "start_server", refuse)
    return started


@pytest.fixture
def silent_listener() -> Iterator[str]:
    """A port that accepts connections and never answers (a server whose HTTP thread is starved)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    sock.close()


def test_a_port_that_never_answers_is_a_clear_error_not_a_second_server(
    silent_listener: str, no_start: list[str]
) -> None:
    with pytest.raises(LocalServerError, match="did not answer /health within 1 s"):
        with local_server(silent_listener, ServerSettings(busy_wait_s=1.0)):
            pass
    assert no_start == []


def test_a_server_that_answers_late_is_reused(no_start: list[str]) -> None:
    answered = threading.Event()

    class Health(BaseHTTPRequestHandler):
        calls = 0

        def do_GET(self) -> None:
            Health.calls += 1
            if Health.calls < 3:  # busy: the first health checks fail
                self.send_response(503)
                self.end_headers()
                return
            answered.set()
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b'{"status":"ok"}')

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
        with local_server(url, ServerSettings(busy_wait_s=10.0)) as got:
            assert got == url
        assert answered.is_set() and no_start == []
    finally:
        httpd.shutdown()
