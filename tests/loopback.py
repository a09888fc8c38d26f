"""The lifecycle every fake HTTP service of the tests shares: serve on 127.0.0.1 in a daemon thread."""

import threading
from abc import ABC, abstractmethod
from http.server import ThreadingHTTPServer
from types import TracebackType
from typing import Self


class LoopbackServer(ABC):
    """Start/stop (or `with`) a `ThreadingHTTPServer` bound to a free port of 127.0.0.1."""

    thread_name = "loopback-server"

    def __init__(self) -> None:
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @abstractmethod
    def _make_server(self) -> ThreadingHTTPServer:
        """Return the bound (not yet serving) HTTP server."""

    def _on_stop(self) -> None:  # noqa: B027 - an optional hook, empty by default
        """Release anything a handler may be waiting on (called before shutdown)."""

    def start(self) -> Self:
        """Bind a free port and serve in a daemon thread; return `self`."""
        if self._server is not None:
            raise RuntimeError(f"{type(self).__name__} is already running")
        self._server = self._make_server()
        self._thread = threading.Thread(target=self._server.serve_forever, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket (what was recorded stays readable)."""
        server, thread = self._server, self._thread
        self._server, self._thread = None, None
        self._on_stop()
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def root_url(self) -> str:
        """`http://127.0.0.1:<port>` of the running server."""
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not running: call start() or use `with`")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"
