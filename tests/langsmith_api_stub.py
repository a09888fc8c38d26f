"""A fake LangSmith API on 127.0.0.1 for datasets, examples, experiments, runs and feedback.

It extends `LangSmithRecorder` (which records ingested runs) with the endpoints
`langsmith.aevaluate` and dataset uploads use, so an experiment can run end to
end offline and a test can assert on what LangSmith would have stored:

```python
with LangSmithApiStub() as stub:
    client = Client(api_url=stub.url, api_key="fake")
    ...  # create a dataset, run `aevaluate(..., client=client)`
    client.flush()
    stub.datasets, stub.examples(dataset_id), stub.sessions, stub.feedback, stub.runs
```

Endpoints imitated on top of the recorder's (langsmith 0.15; anything else
answers 404, and every request is recorded in `requests`):

* `GET /datasets?name=`: the datasets called `name` (a list, empty when none);
  `GET /datasets/<id>`: one dataset.
* `POST /datasets`: create a dataset (409 when the name is taken).
* `GET /examples?dataset=&offset=&limit=`: a dataset's examples, oldest first, paginated.
* `POST /examples/bulk`: create examples (a JSON list, each with `dataset_id`).
* `GET /sessions?limit=`: the experiments (projects) so far; the client reads
  the tenant id from the first one. `GET /sessions/<id>`: one of them.
* `POST /sessions`: create an experiment (409 when the name is taken);
  `PATCH /sessions/<id>`: update its metadata, description or end time.
* `POST /feedback`: one feedback record (kept in `feedback`, with the
  multipart ones the recorder collects).
"""

import copy
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.langsmith_recorder import (
    LangSmithRecorder,
    _RecorderHandler,
    _RecorderServer,
    json_object,
)

TENANT_ID = "00000000-0000-4000-8000-0000000000aa"
"""The workspace every stored object belongs to."""

_NOT_FOUND = {"detail": "not found (fake LangSmith)"}


def _now() -> str:
    return datetime.now(UTC).isoformat()


class _StubServer(_RecorderServer):
    """The recorder's server with the stub's handler."""

    recorder: "LangSmithApiStub"

    def __init__(self, address: tuple[str, int], stub: "LangSmithApiStub") -> None:
        super().__init__(address, stub)
        self.RequestHandlerClass = _StubHandler


class _StubHandler(_RecorderHandler):
    """Serves the dataset, example, session and feedback endpoints; defers the rest to the recorder."""

    server: _StubServer

    def do_GET(self) -> None:
        """Serve datasets, examples and sessions; anything else as the recorder does."""
        route, query = self._route(), self._query()
        stub = self.server.recorder
        if route == "/datasets":
            self._read_body()
            names = query.get("name")
            self._reply(200, stub.find_datasets(names[0] if names else None))
        elif route.startswith("/datasets/"):
            self._read_body()
            self._send_found(stub.dataset(route.removeprefix("/datasets/")))
        elif route == "/examples":
            self._read_body()
            offset = int((query.get("offset") or ["0"])[0])
            limit = int((query.get("limit") or ["100"])[0])
            dataset_id = (query.get("dataset") or [""])[0]
            self._reply(200, stub.examples(dataset_id)[offset : offset + limit])
        elif route == "/sessions":
            self._read_body()
            limit = int((query.get("limit") or ["100"])[0])
            self._reply(200, list(stub.sessions.values())[:limit])
        elif route.startswith("/sessions/"):
            self._read_body()
            self._send_found(stub.sessions.get(route.removeprefix("/sessions/")))
        else:
            super().do_GET()

    def do_POST(self) -> None:
        """Create datasets, examples, sessions and feedback; ingest runs as the recorder does."""
        route = self._route()
        if route not in ("/datasets", "/examples/bulk", "/sessions", "/feedback"):
            super().do_POST()
            return
        body = self._read_body()
        stub = self.server.recorder
        try:
            payload = json.loads(body or b"null")
            if route == "/examples/bulk":
                if not isinstance(payload, list) or not all(isinstance(e, dict) for e in payload):
                    raise ValueError("expected a JSON list of example objects")
                self._reply(200, stub.add_examples(payload))
                return
            fields = json_object(body)
        except ValueError as exc:
            self._reply(400, {"detail": f"fake LangSmith could not read the body: {exc!r}"})
            return
        if route == "/datasets":
            created = stub.add_dataset(fields)
        elif route == "/sessions":
            created = stub.add_session(fields)
        else:
            created = stub.add_feedback(fields)
        if created is None:
            self._reply(409, {"detail": "already exists (fake LangSmith)"})
        else:
            self._reply(200, created)

    def do_PATCH(self) -> None:
        """Update a session; anything else as the recorder does."""
        route = self._route()
        if not route.startswith("/sessions/"):
            super().do_PATCH()
            return
        try:
            fields = json_object(self._read_body() or b"{}")
        except ValueError as exc:
            self._reply(400, {"detail": f"fake LangSmith could not read the body: {exc!r}"})
            return
        self._send_found(
            self.server.recorder.update_session(route.removeprefix("/sessions/"), fields)
        )

    def _query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.path).query)

    def _send_found(self, found: dict[str, Any] | None) -> None:
        """Send `found`, or 404 when it is `None`."""
        if found is None:
            self._reply(404, _NOT_FOUND)
        else:
            self._reply(200, found)


class LangSmithApiStub(LangSmithRecorder):
    """`LangSmithRecorder` plus datasets, examples, experiments and feedback (see the module doc).

    The stored objects survive `stop()`, and `start()` can serve them again on a
    new port (a "rerun" against the same workspace).
    """

    thread_name = "langsmith-api-stub"

    def __init__(self, info: Mapping[str, Any] | None = None) -> None:
        """Prepare an empty workspace (not yet listening); `info` as for the recorder."""
        super().__init__(info)
        self._datasets: dict[str, dict[str, Any]] = {}
        self._examples: dict[str, list[dict[str, Any]]] = {}
        self._sessions: dict[str, dict[str, Any]] = {}

    def _make_server(self) -> _StubServer:
        return _StubServer(("127.0.0.1", 0), self)

    # --- storage (called from the server's threads) ----------------------------------------

    def add_dataset(self, fields: Mapping[str, Any]) -> dict[str, Any] | None:
        """Store a new dataset from a `POST /datasets` body; `None` when the name is taken."""
        with self._lock:
            if any(d["name"] == fields.get("name") for d in self._datasets.values()):
                return None
            dataset_id = str(uuid.uuid4())
            extra = fields.get("extra") or {}
            dataset = {
                "id": dataset_id,
                "name": fields["name"],
                "description": fields.get("description"),
                "data_type": fields.get("data_type", "kv"),
                "created_at": _now(),
                "modified_at": _now(),
                "example_count": 0,
                "session_count": 0,
                "metadata": copy.deepcopy(extra.get("metadata")),
                "tenant_id": TENANT_ID,
            }
            self._datasets[dataset_id] = dataset
            self._examples[dataset_id] = []
            return copy.deepcopy(dataset)

    def add_examples(self, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Store examples from a `POST /examples/bulk` body; return them as created."""
        created: list[dict[str, Any]] = []
        with self._lock:
            for body in bodies:
                dataset_id = str(body["dataset_id"])
                if dataset_id not in self._datasets:
                    raise ValueError(f"unknown dataset {dataset_id}")
                example = {
                    "id": str(body.get("id") or uuid.uuid4()),
                    "dataset_id": dataset_id,
                    "inputs": copy.deepcopy(body.get("inputs")),
                    "outputs": copy.deepcopy(body.get("outputs")),
                    "metadata": copy.deepcopy(body.get("metadata")),
                    "created_at": body.get("created_at") or _now(),
                    "modified_at": _now(),
                }
                self._examples[dataset_id].append(example)
                self._datasets[dataset_id]["example_count"] += 1
                self._datasets[dataset_id]["modified_at"] = example["modified_at"]
                created.append(copy.deepcopy(example))
        return created

    def add_session(self, fields: Mapping[str, Any]) -> dict[str, Any] | None:
        """Store a new experiment from a `POST /sessions` body; `None` when the name is taken."""
        with self._lock:
            if any(s["name"] == fields.get("name") for s in self._sessions.values()):
                return None
            session_id = str(fields.get("id") or uuid.uuid4())
            session = {
                "id": session_id,
                "name": fields.get("name"),
                "description": fields.get("description"),
                "extra": copy.deepcopy(fields.get("extra")) or {},
                "reference_dataset_id": fields.get("reference_dataset_id"),
                "start_time": _now(),
                "end_time": None,
                "tenant_id": TENANT_ID,
                "num_examples": fields.get("num_examples"),
                "evaluator_keys": fields.get("evaluator_keys"),
            }
            self._sessions[session_id] = session
            dataset = self._datasets.get(str(session["reference_dataset_id"]))
            if dataset is not None:
                dataset["session_count"] += 1
            return copy.deepcopy(session)

    def update_session(self, session_id: str, fields: Mapping[str, Any]) -> dict[str, Any] | None:
        """Apply a `PATCH /sessions/<id>` body (non-null fields replace); `None` if unknown."""
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                return None
            for key in ("name", "description", "end_time"):
                if fields.get(key) is not None:
                    session[key] = fields[key]
            if fields.get("extra") is not None:
                session["extra"] = {**session["extra"], **copy.deepcopy(fields["extra"])}
            session.setdefault("_patches", 0)
            session["_patches"] += 1
            return copy.deepcopy(session)

    def add_feedback(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Store one feedback record from `POST /feedback`; return it as created."""
        feedback = {"id": str(uuid.uuid4()), "created_at": _now(), "modified_at": _now(), **fields}
        with self._lock:
            self._feedback.append(copy.deepcopy(feedback))
        return feedback

    # --- what is stored --------------------------------------------------------------------

    @property
    def datasets(self) -> dict[str, dict[str, Any]]:
        """A snapshot of the datasets: id -> dataset (with `example_count` and `metadata`)."""
        with self._lock:
            return copy.deepcopy(self._datasets)

    def find_datasets(self, name: str | None) -> list[dict[str, Any]]:
        """Return the datasets called `name` (all of them for `None`)."""
        with self._lock:
            return [
                copy.deepcopy(d)
                for d in self._datasets.values()
                if name is None or d["name"] == name
            ]

    def dataset(self, dataset_id: str) -> dict[str, Any] | None:
        """Return one dataset, or `None`."""
        with self._lock:
            found = self._datasets.get(dataset_id)
            return copy.deepcopy(found) if found else None

    def examples(self, dataset_id: str) -> list[dict[str, Any]]:
        """Return a dataset's examples in creation order (empty for an unknown dataset)."""
        with self._lock:
            return copy.deepcopy(self._examples.get(dataset_id, []))

    @property
    def sessions(self) -> dict[str, dict[str, Any]]:
        """A snapshot of the experiments (tracer sessions): id -> session."""
        with self._lock:
            return copy.deepcopy(self._sessions)
