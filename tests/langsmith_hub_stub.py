"""A fake LangSmith prompt hub on 127.0.0.1: the endpoints `Client.push_prompt` / `pull_prompt` use.

```python
with PromptHubStub() as hub:
    client = Client(api_url=hub.url, api_key="fake")
    client.push_prompt("m3rec-mar", object=template, commit_tags=["staging"])
    client.pull_prompt("m3rec-mar:staging")
```

Endpoints imitated (langsmith 0.15; anything else answers 404 and is recorded):

* `GET /info`, `GET /settings`: server and workspace (no tenant handle: private prompts, owner `-`).
* `GET /repos/<owner>/<name>`: a prompt's metadata (404 when it does not exist).
* `POST /repos/`: create a prompt; `PATCH /repos/<owner>/<name>`: update its metadata.
* `GET /commits/<owner>/<name>/?limit=&offset=`: its commits, newest first.
* `POST /commits/<owner>/<name>`: a new commit (`{"parent_commit", "manifest"}`); like the
  real hub it answers 409 when the manifest equals the latest commit's.
* `POST /repos/<owner>/<name>/tags`: tag a commit (`{"tag_name", "commit_id"}`); a tag moves.
* `GET /commits/<owner>/<name>/<ref>`: the manifest at `latest`, a tag, or a commit hash (prefix).
"""

import copy
import hashlib
import json
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.loopback import LoopbackServer

NOW = "2026-11-25T00:00:00+00:00"
TENANT = "00000000-0000-4000-8000-000000000001"


@dataclass
class Commit:
    id: str
    commit_hash: str
    manifest: dict[str, Any]
    parent: str | None
    description: str | None


@dataclass
class Repo:
    handle: str
    description: str
    readme: str
    tags: list[str]
    is_public: bool
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    commits: list[Commit] = field(default_factory=list)
    """Oldest first."""
    commit_tags: dict[str, str] = field(default_factory=dict)
    """Tag -> commit id."""

    def as_json(self) -> dict[str, Any]:
        return {
            "repo_handle": self.handle,
            "description": self.description,
            "readme": self.readme,
            "id": self.id,
            "tenant_id": TENANT,
            "created_at": NOW,
            "updated_at": NOW,
            "is_public": self.is_public,
            "is_archived": False,
            "tags": self.tags,
            "owner": None,
            "full_name": self.handle,
            "num_likes": 0,
            "num_downloads": 0,
            "num_views": 0,
            "last_commit_hash": self.commits[-1].commit_hash if self.commits else None,
            "num_commits": len(self.commits),
        }

    def find(self, ref: str) -> Commit | None:
        if not self.commits:
            return None
        if ref == "latest":
            return self.commits[-1]
        if ref in self.commit_tags:
            return next(c for c in self.commits if c.id == self.commit_tags[ref])
        return next((c for c in reversed(self.commits) if c.commit_hash.startswith(ref)), None)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], stub: "PromptHubStub") -> None:
        super().__init__(address, _Handler)
        self.stub = stub


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        return json.loads(raw) if raw else None

    def _reply(self, status: int, payload: Any) -> None:
        self.server.stub.requests.append((self.command, urlsplit(self.path).path, status))
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self) -> tuple[list[str], dict[str, list[str]]]:
        parts = urlsplit(self.path)
        return [p for p in parts.path.split("/") if p], parse_qs(parts.query)

    def do_GET(self) -> None:
        self._body()
        self._reply(*self._get())

    def do_POST(self) -> None:
        self._reply(*self._post(self._body() or {}))

    def do_PATCH(self) -> None:
        self._reply(*self._patch(self._body() or {}))

    def _get(self) -> tuple[int, Any]:
        parts, query = self._route()
        stub = self.server.stub
        with stub.lock:
            if parts == ["info"]:
                return (200, {"version": "0.0.0-fake", "instance_flags": {}})
            if parts == ["settings"]:
                return (
                    200, {"id": TENANT, "display_name": "fake", "created_at": NOW, "tenant_handle": None}
                )
            if len(parts) == 3 and parts[0] == "repos":
                repo = stub.repos.get(parts[2])
                if repo is None:
                    return (404, {"detail": "Repo not found"})
                return (200, {"repo": repo.as_json()})
            if len(parts) in (3, 4) and parts[0] == "commits":
                repo = stub.repos.get(parts[2])
                if repo is None:
                    return (404, {"detail": "Repo not found"})
                if len(parts) == 3:
                    offset = int(query.get("offset", ["0"])[0])
                    limit = int(query.get("limit", ["100"])[0] or 100)
                    newest = list(reversed(repo.commits))[offset : offset + limit]
                    commits = [
                        {"id": c.id, "commit_hash": c.commit_hash, "manifest_id": None, "created_at": NOW}
                        for c in newest
                    ]
                    return (200, {"commits": commits, "total": len(repo.commits)})
                commit = repo.find(parts[3])
                if commit is None:
                    return (404, {"detail": f"Commit {parts[3]} not found"})
                return (
                    200,
                    {"commit_hash": commit.commit_hash, "manifest": copy.deepcopy(commit.manifest), "examples": []},
                )
        return (404, {"detail": "not found (fake LangSmith hub)"})

    def _post(self, body: dict[str, Any]) -> tuple[int, Any]:
        parts, _ = self._route()
        stub = self.server.stub
        with stub.lock:
            if parts == ["repos"]:
                handle = body["repo_handle"]
                if handle in stub.repos:
                    return (409, {"detail": "Repo already exists"})
                created = Repo(
                    handle=handle,
                    description=body.get("description", ""),
                    readme=body.get("readme", ""),
                    tags=list(body.get("tags") or []),
                    is_public=bool(body.get("is_public")),
                )
                stub.repos[handle] = created
                return (200, {"repo": created.as_json()})
            if len(parts) == 4 and parts[0] == "repos" and parts[3] == "tags":
                repo = stub.repos.get(parts[2])
                if repo is None or not any(c.id == body.get("commit_id") for c in repo.commits):
                    return (404, {"detail": "Repo or commit not found"})
                repo.commit_tags[body["tag_name"]] = body["commit_id"]
                return (200, {"tag_name": body["tag_name"], "commit_id": body["commit_id"]})
            if len(parts) == 3 and parts[0] == "commits":
                repo = stub.repos.get(parts[2])
                if repo is None:
                    return (404, {"detail": "Repo not found"})
                manifest = body["manifest"]
                if repo.commits and repo.commits[-1].manifest == manifest:
                    return (409, {"detail": "Nothing to commit: prompt has not changed since latest commit"})
                digest = hashlib.sha256(
                    json.dumps([len(repo.commits), manifest], sort_keys=True).encode()
                ).hexdigest()[:8]
                commit = Commit(str(uuid.uuid4()), digest, manifest, body.get("parent_commit"), body.get("description"))
                repo.commits.append(commit)
                return (200, {"commit": {"id": commit.id, "commit_hash": commit.commit_hash}})
        return (404, {"detail": "not found (fake LangSmith hub)"})

    def _patch(self, body: dict[str, Any]) -> tuple[int, Any]:
        parts, _ = self._route()
        stub = self.server.stub
        with stub.lock:
            if len(parts) == 3 and parts[0] == "repos" and parts[2] in stub.repos:
                repo = stub.repos[parts[2]]
                repo.description = body.get("description", repo.description)
                repo.readme = body.get("readme", repo.readme)
                repo.tags = list(body.get("tags", repo.tags))
                return (200, repo.as_json())
        return (404, {"detail": "not found (fake LangSmith hub)"})


class PromptHubStub(LoopbackServer):
    """The fake hub on a free 127.0.0.1 port; `repos` holds what was pushed."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str, int]] = []
        """(method, path, status) of every request."""

    def _make_server(self) -> _Server:
        return _Server(("127.0.0.1", 0), self)

    @property
    def url(self) -> str:
        """The hub's base URL (`Client(api_url=...)`)."""
        return self.root_url
