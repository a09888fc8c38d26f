"""A fake LangSmith API on 127.0.0.1 that records the runs a LangSmith client ingests.

Tests point a `langsmith.Client` at the recorder instead of the real service and
then assert on the run tree exactly as LangSmith would have received it: names,
parent links, tags, metadata, inputs and outputs.

```python
with LangSmithRecorder() as recorder:
    client = Client(api_url=recorder.url, api_key="fake")
    with tracing_context(enabled=True, client=client, project_name="tests"):
        ...  # run the code under test
    client.flush()
    root = recorder.one("my-graph")
```

Endpoints imitated (anything else answers 404, a body it cannot read 400; every
request is recorded in `requests`):

* `GET /info`: server capabilities. The default answer advertises no
  `batch_ingest_config` and no zstd support, so the client uses its own
  defaults and plain multipart ingestion. (A partial `batch_ingest_config`
  crashes the client's background thread and makes `flush()` hang.)
* `POST /runs/multipart`: form-data parts named `post.<id>`, `patch.<id>`,
  `post.<id>.<field>` (inputs, outputs, extra, ...), `attachment.<id>.<name>`
  and `feedback.<id>`; the body may be zstd- or gzip-compressed
  (`Content-Encoding`) and chunked.
* `POST /runs/batch`: `{"post": [...], "patch": [...]}`.
* `POST /runs`: one run.
* `PATCH /runs/<id>`: an update of one run.

All the parts sent for one run id are merged into one dict (see `runs`).
"""

import copy
import gzip
import json
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import zstandard

from tests.loopback import LoopbackServer

Run = dict[str, Any]
"""A recorded run: the LangSmith run fields (`id`, `name`, `run_type`, `parent_run_id`, ...)."""

DEFAULT_INFO: Mapping[str, Any] = {"version": "0.0.0-fake", "instance_flags": {}}
"""The `/info` answer: no `batch_ingest_config`, no zstd flag (plain multipart ingestion)."""

_BOUNDARY_RE = re.compile(r'boundary=(?:"([^"]+)"|([^;\s]+))', re.IGNORECASE)
_PART_NAME_RE = re.compile(r'(?:^|;)\s*name="([^"]*)"', re.IGNORECASE)


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request the recorder received."""

    method: str
    path: str
    content_type: str | None
    content_encoding: str | None
    status: int
    """The status the recorder answered with."""


def merge_into(target: dict[str, Any], update: Mapping[str, Any]) -> None:
    """Merge `update` into `target` in place.

    Nested dicts merge recursively, so a patch's `extra` or `outputs` adds to
    what the post sent. A `None` never overwrites a value already present
    (patches repeat fields such as `parent_run_id` as `null`).
    """
    for key, value in update.items():
        current = target.get(key)
        if value is None and key in target:
            continue
        if isinstance(value, Mapping) and isinstance(current, dict):
            merge_into(current, value)
        else:
            target[key] = copy.deepcopy(value)


def parse_multipart(content_type: str, body: bytes) -> list[tuple[str, bytes]]:
    """Split a `multipart/form-data` body into `(part name, part bytes)` pairs.

    Raises:
        ValueError: The content type has no boundary.
    """
    match = _BOUNDARY_RE.search(content_type)
    if match is None:
        raise ValueError(f"multipart body without a boundary: {content_type!r}")
    delimiter = b"\r\n--" + (match.group(1) or match.group(2)).encode("latin-1")
    # With a CRLF in front, every delimiter (the first one too) reads "\r\n--boundary".
    sections = (b"\r\n" + body).split(delimiter)
    parts: list[tuple[str, bytes]] = []
    for section in sections[1:]:
        if section.startswith(b"--"):  # the closing delimiter
            break
        head, _, content = section.partition(b"\r\n\r\n")
        name = ""
        for line in head.decode("latin-1").split("\r\n"):
            header, _, value = line.partition(":")
            if header.strip().lower() == "content-disposition":
                found = _PART_NAME_RE.search(value)
                name = found.group(1) if found else ""
        parts.append((name, content))
    return parts


def json_object(data: bytes) -> dict[str, Any]:
    """Parse `data` as a JSON object.

    Raises:
        ValueError: It is not JSON, or not an object.
    """
    value = json.loads(data)
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {type(value).__name__}")
    return value


def decode_body(body: bytes, content_encoding: str | None) -> bytes:
    """Undo a `zstd` or `gzip` content encoding (anything else is returned as is)."""
    encoding = (content_encoding or "").strip().lower()
    if encoding == "zstd":
        # The client streams one frame of unknown size; accept several frames too.
        decompressor = zstandard.ZstdDecompressor().decompressobj(read_across_frames=True)
        return decompressor.decompress(body)
    if encoding == "gzip":
        return gzip.decompress(body)
    return body


class _RecorderServer(ThreadingHTTPServer):
    """The HTTP server, holding a reference to the recorder its handlers report to."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], recorder: "LangSmithRecorder") -> None:
        super().__init__(address, _RecorderHandler)
        self.recorder = recorder


class _RecorderHandler(BaseHTTPRequestHandler):
    """Answers one request and hands the payload to the recorder."""

    server: _RecorderServer

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet."""

    def do_GET(self) -> None:
        """Serve `/info`; anything else is unknown."""
        self._read_body()
        if self._route() == "/info":
            self._reply(200, dict(self.server.recorder.info))
        else:
            self._reply(404, {"detail": "not found (fake LangSmith)"})

    def do_POST(self) -> None:
        """Ingest runs from `/runs/multipart`, `/runs/batch` or `/runs`."""
        body = self._read_body()
        route = self._route()
        if route not in ("/runs/multipart", "/runs/batch", "/runs"):
            self._reply(404, {"detail": "not found (fake LangSmith)"})
            return
        try:
            self._ingest(route, body)
        except (ValueError, KeyError) as exc:  # a malformed body: tell the test
            self._reply(400, {"detail": f"fake LangSmith could not read the body: {exc!r}"})
            return
        self._reply(202, {})

    def do_PATCH(self) -> None:
        """Ingest an update from `PATCH /runs/<id>`."""
        body = self._read_body()
        prefix, _, run_id = self._route().rpartition("/")
        if prefix != "/runs" or not run_id:
            self._reply(404, {"detail": "not found (fake LangSmith)"})
            return
        try:
            self.server.recorder.ingest_run("patch", run_id, json_object(body or b"{}"))
        except ValueError as exc:
            self._reply(400, {"detail": f"fake LangSmith could not read the body: {exc!r}"})
            return
        self._reply(202, {})

    def _ingest(self, route: str, body: bytes) -> None:
        """Hand a POSTed body to the recorder, by endpoint."""
        recorder = self.server.recorder
        if route == "/runs/multipart":
            recorder.ingest_multipart(self.headers.get("Content-Type", ""), body)
        elif route == "/runs/batch":
            batch = json_object(body or b"{}")
            for operation in ("post", "patch"):
                for run in batch.get(operation) or []:
                    if not isinstance(run, dict):
                        raise ValueError(f"a {operation} entry is not a JSON object")
                    recorder.ingest_run(operation, str(run["id"]), run)
        else:
            run = json_object(body)
            recorder.ingest_run("post", str(run["id"]), run)

    def _route(self) -> str:
        """Return the request path without query string or trailing slash."""
        return urlsplit(self.path).path.rstrip("/") or "/"

    def _read_body(self) -> bytes:
        """Read the whole body (by Content-Length, or chunked) and undo its content encoding."""
        if self.headers.get("Transfer-Encoding", "").strip().lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size_line = self.rfile.readline().split(b";", 1)[0].strip()
                size = int(size_line or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailer headers
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()  # the CRLF after each chunk
            body = b"".join(chunks)
        else:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
        return decode_body(body, self.headers.get("Content-Encoding"))

    def _reply(self, status: int, payload: Any) -> None:
        """Send a JSON answer and record the request."""
        self.server.recorder.record_request(
            RecordedRequest(
                method=self.command,
                path=self.path,
                content_type=self.headers.get("Content-Type"),
                content_encoding=self.headers.get("Content-Encoding"),
                status=status,
            )
        )
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class LangSmithRecorder(LoopbackServer):
    """A fake LangSmith API on 127.0.0.1 (random port) that records ingested runs.

    Use `start()`/`stop()` or `with LangSmithRecorder() as recorder:`. Point a
    client at it with `Client(api_url=recorder.url, api_key="fake")`, and call
    `client.flush()` before reading `runs`: the client sends in the background.
    """

    def __init__(self, info: Mapping[str, Any] | None = None) -> None:
        """Prepare a recorder (not yet listening).

        Args:
            info: The `GET /info` answer (default `DEFAULT_INFO`). Pass
                `{"version": ..., "instance_flags": {"zstd_compression_enabled": True}}`
                to make the client send zstd-compressed multipart bodies.
        """
        super().__init__()
        self.info: Mapping[str, Any] = copy.deepcopy(
            dict(info if info is not None else DEFAULT_INFO)
        )
        self._lock = threading.Lock()
        self._runs: dict[str, Run] = {}
        self._feedback: list[dict[str, Any]] = []
        self._requests: list[RecordedRequest] = []
        self._unrecognised: list[str] = []

    thread_name = "langsmith-recorder"

    def _make_server(self) -> _RecorderServer:
        return _RecorderServer(("127.0.0.1", 0), self)

    @property
    def url(self) -> str:
        """The base URL to pass as `Client(api_url=...)`."""
        return self.root_url

    # --- ingestion (called from the server's threads) --------------------------------------

    def record_request(self, request: RecordedRequest) -> None:
        """Remember one HTTP request."""
        with self._lock:
            self._requests.append(request)

    def ingest_run(self, operation: str, run_id: str, fields: Mapping[str, Any]) -> None:
        """Merge the fields of one `post` or `patch` operation into the run `run_id`."""
        self._merge(run_id, fields, operation)

    def ingest_multipart(self, content_type: str, body: bytes) -> None:
        """Ingest every part of a `/runs/multipart` body.

        `post.<id>` / `patch.<id>` carry an operation's main fields, and
        `post.<id>.<field>` one more field of it (inputs, outputs, extra, ...).
        """
        for name, content in parse_multipart(content_type, body):
            kind, _, rest = name.partition(".")
            run_id, _, field = rest.partition(".")
            if kind in ("post", "patch") and run_id:
                value = json.loads(content) if content else None
                if field:
                    self._merge(run_id, {field: value}, None)
                elif isinstance(value, Mapping):
                    self._merge(run_id, value, kind)
                else:
                    self._note_unrecognised(name)
            elif kind == "attachment" and run_id and field:
                with self._lock:
                    run = self._runs.setdefault(run_id, {"id": run_id, "_operations": []})
                    run.setdefault("attachments", {})[field] = content
            elif kind == "feedback":
                with self._lock:
                    self._feedback.append(json.loads(content))
            else:
                self._note_unrecognised(name)

    def _merge(self, run_id: str, fields: Mapping[str, Any], operation: str | None) -> None:
        """Merge `fields` into the run `run_id`, counting `operation` when it is a new one."""
        with self._lock:
            run = self._runs.setdefault(run_id, {"id": run_id, "_operations": []})
            merge_into(run, fields)
            if operation is not None:
                run["_operations"].append(operation)

    def _note_unrecognised(self, part_name: str) -> None:
        with self._lock:
            self._unrecognised.append(part_name)

    # --- what was recorded -----------------------------------------------------------------

    @property
    def runs(self) -> dict[str, Run]:
        """A snapshot of the recorded runs: run id -> merged run.

        Each run holds the post and patch fields merged (`inputs`, `outputs`,
        `extra` included), plus `_operations`: the operations seen for it, in
        order, e.g. `["post", "patch"]`.
        """
        with self._lock:
            return copy.deepcopy(self._runs)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every HTTP request received, in order."""
        with self._lock:
            return list(self._requests)

    @property
    def feedback(self) -> list[dict[str, Any]]:
        """Feedback records that arrived in multipart bodies."""
        with self._lock:
            return copy.deepcopy(self._feedback)

    @property
    def unrecognised_parts(self) -> list[str]:
        """Names of multipart parts the recorder did not understand (expected: none)."""
        with self._lock:
            return list(self._unrecognised)

    # --- queries ---------------------------------------------------------------------------

    def by_name(self, name: str) -> list[Run]:
        """Return the runs called `name`, in start order (by `dotted_order`)."""
        return _in_start_order(r for r in self.runs.values() if r.get("name") == name)

    def one(self, name: str) -> Run:
        """Return the only run called `name`.

        Raises:
            AssertionError: There is not exactly one.
        """
        found = self.by_name(name)
        if len(found) != 1:
            raise AssertionError(f"expected one run named {name!r}, found {len(found)}")
        return found[0]

    def roots(self) -> list[Run]:
        """Return the runs without a parent, in start order."""
        return _in_start_order(r for r in self.runs.values() if not r.get("parent_run_id"))

    def children(self, run: Run | str, name: str | None = None) -> list[Run]:
        """Return the direct children of `run` (a run or its id), optionally only those called `name`."""
        run_id = run if isinstance(run, str) else str(run["id"])
        return _in_start_order(
            r
            for r in self.runs.values()
            if str(r.get("parent_run_id")) == run_id and (name is None or r.get("name") == name)
        )

    def parent(self, run: Run) -> Run | None:
        """Return the parent of `run`, or `None` for a root (or a parent never recorded)."""
        parent_id = run.get("parent_run_id")
        return self.runs.get(str(parent_id)) if parent_id else None

    def ancestors(self, run: Run) -> list[Run]:
        """Return the parent, grandparent, ... of `run`, nearest first."""
        return _ancestors(run, self.runs)

    def is_descendant(self, run: Run, ancestor: Run) -> bool:
        """Return whether `ancestor` is above `run` in the tree."""
        return any(a["id"] == ancestor["id"] for a in self.ancestors(run))

    def descendants(self, run: Run, name: str | None = None) -> list[Run]:
        """Return every run below `run`, optionally only those called `name`, in start order."""
        runs = self.runs
        return _in_start_order(
            r
            for r in runs.values()
            if (name is None or r.get("name") == name)
            and any(a["id"] == run["id"] for a in _ancestors(r, runs))
        )

    def tree(self, metadata_keys: tuple[str, ...] = ()) -> str:
        """Render the run tree, one run per line, indented by depth (for failure messages).

        Args:
            metadata_keys: Metadata entries to show next to each run.
        """
        runs = self.runs
        kids: dict[str, list[Run]] = {}
        for run in runs.values():
            parent = run.get("parent_run_id")
            key = str(parent) if parent and str(parent) in runs else ""
            kids.setdefault(key, []).append(run)
        lines: list[str] = []

        def walk(parent_id: str, depth: int) -> None:
            for run in _in_start_order(kids.get(parent_id, [])):
                metadata = (run.get("extra") or {}).get("metadata") or {}
                shown = {k: metadata[k] for k in metadata_keys if k in metadata}
                lines.append(
                    f"{'  ' * depth}- {run.get('name')} [{run.get('run_type')}]"
                    + (f" {shown}" if shown else "")
                )
                walk(str(run["id"]), depth + 1)

        walk("", 0)
        return "\n".join(lines)


def _ancestors(run: Run, runs: Mapping[str, Run]) -> list[Run]:
    """Return the recorded ancestors of `run` in `runs`, nearest first."""
    chain: list[Run] = []
    seen = {str(run["id"])}
    parent_id = run.get("parent_run_id")
    while parent_id and str(parent_id) in runs and str(parent_id) not in seen:
        parent = runs[str(parent_id)]
        seen.add(str(parent_id))
        chain.append(parent)
        parent_id = parent.get("parent_run_id")
    return chain


def _in_start_order(runs: Iterable[Run]) -> list[Run]:
    """Sort runs by `dotted_order` (start time, then id, along the path from the root)."""
    return sorted(runs, key=lambda r: (str(r.get("dotted_order") or ""), str(r["id"])))
