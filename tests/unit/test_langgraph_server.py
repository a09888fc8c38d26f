"""The deployed graph: `langgraph dev` serves `langgraph.json`, hosts call it remotely.

The server runs in a subprocess on 127.0.0.1 with the default routing (`local`,
no OpenAI key), pointed at `tests.fault_server.FaultServer` (an OpenAI-compatible
fake that answers every stage with JSON built from the request's `json_schema`,
no faults) instead of the real local model. A `sitecustomize` in the subprocess
refuses and records any connection or name lookup beyond the loopback, so the
test also proves the server never reaches the internet.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

from m3rec_graph import InMemoryTraitCache, build_graph
from m3rec_graph.embed import CHECKPOINT_TYPES
from m3rec_graph.errors import ConfigurationError
from m3rec_graph.routing import LOCAL_MODEL_NAME, RemoteContext, context_for
from m3rec_graph.state import RecInput
from tests.fakes import ScriptedModels, default_responder
from tests.fault_server import FaultServer

ROOT = Path(__file__).parents[2]
LANGGRAPH_CLI = Path(sys.executable).parent / "langgraph"
HISTORY = [
    {"item_id": "h1", "title": "Red gel nail polish", "categories": ["Makeup > Nails"]},
    {"item_id": "h2", "title": "Holographic glitter top coat", "brand": "Sparkle"},
]
CANDIDATES = [
    {"item_id": "c1", "title": "Pastel pink nail polish set"},
    {"item_id": "c2", "title": "Glass nail file"},
    {"item_id": "c3", "title": "Shimmer lip gloss"},
    {"item_id": "c4", "title": "Cuticle oil pen"},
    {"item_id": "c5", "title": "Travel manicure kit"},
]
REQUEST: dict[str, Any] = {"user_id": "u-remote", "history": HISTORY, "candidates": CANDIDATES}

NET_GUARD = '''
"""Refuse and record network access beyond the loopback (installed by the test)."""
import os, socket, sys

_LOG = os.environ["M3REC_NET_GUARD_LOG"]
_LOCAL = {"127.0.0.1", "::1", "localhost", "0.0.0.0", "::", ""}
sys.modules["uvloop"] = None  # uvloop connects in C, past this guard: use asyncio's loop


def _refuse(what):
    with open(_LOG, "a") as log:
        log.write(what + "\\n")
    raise OSError(101, f"network access refused by the test: {what}")


_connect, _connect_ex, _getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo


def connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and str(address[0]) not in _LOCAL:
        _refuse(f"connect {address!r}")
    return _connect(self, address)


def connect_ex(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and str(address[0]) not in _LOCAL:
        _refuse(f"connect {address!r}")
    return _connect_ex(self, address)


def getaddrinfo(host, *args, **kwargs):
    name = host.decode() if isinstance(host, bytes) else str(host or "")
    if name not in _LOCAL and not name.startswith("127."):
        _refuse(f"getaddrinfo {name!r}")
    return _getaddrinfo(host, *args, **kwargs)


socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = connect, connect_ex, getaddrinfo
'''


# --------------------------------------------------------------------------- the served context


@pytest.mark.parametrize(
    ("context", "models_used"),
    [
        (None, {LOCAL_MODEL_NAME}),  # no context: the default routing (no key -> local)
        ({}, {LOCAL_MODEL_NAME}),  # what the server passes when the caller sends none
        ({"routing": "hybrid", "models": {"mar": "gpt-4o-mini"}}, {"gpt-3.5-turbo", "gpt-4o-mini"}),
        (RemoteContext(routing="gpt-4o"), {"gpt-4o"}),
        (context_for("gpt-3.5"), {"gpt-3.5-turbo"}),  # an M3RecContext from Python still works
    ],
)
async def test_served_graph_takes_json_contexts(context: Any, models_used: set[str]) -> None:
    models = ScriptedModels(default_responder())
    graph = build_graph(chat_models=models, trait_cache=InMemoryTraitCache(), context_schema=RemoteContext)
    out = await graph.ainvoke(cast(RecInput, REQUEST), context=context)
    assert len(out["ranking"]) == len(CANDIDATES)
    assert {name for name, _, _ in models.calls} == models_used


async def test_served_graph_rejects_a_bad_remote_context() -> None:
    graph = build_graph(chat_models=ScriptedModels(default_responder()), context_schema=RemoteContext)
    with pytest.raises(ConfigurationError, match="unknown routing preset 'gpt-5'"):
        await graph.ainvoke(cast(RecInput, REQUEST), context=cast(Any, {"routing": "gpt-5"}))
    with pytest.raises(ConfigurationError, match="bad model override"):
        await graph.ainvoke(cast(RecInput, REQUEST), context=cast(Any, {"models": {"ranker": "gpt-4o"}}))


def test_langgraph_json_serves_the_module_level_graph() -> None:
    config = json.loads((ROOT / "langgraph.json").read_text())
    assert config["graphs"]["m3rec"]["path"] == "./m3rec_graph/graph.py:graph"
    from m3rec_graph.graph import graph

    schema: Any = graph.context_schema  # typed as M3RecContext for Python callers
    assert schema is RemoteContext
    allowed = [tuple(pair) for pair in config["checkpointer"]["serde"]["allowed_msgpack_modules"]]
    assert allowed == CHECKPOINT_TYPES


# --------------------------------------------------------------------------- langgraph dev


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path, timeout_s: float = 120.0) -> None:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if process.poll() is not None:
            raise AssertionError(f"langgraph dev exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/ok", timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    raise AssertionError(f"langgraph dev did not answer within {timeout_s} s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def fake_llm() -> Iterator[FaultServer]:
    with FaultServer() as server:
        yield server


@pytest.fixture
def langgraph_dev(tmp_path: Path, fake_llm: FaultServer) -> Iterator[tuple[str, Path]]:
    """Run `langgraph dev` on the repo's `langgraph.json`; yield its URL and the network-guard log."""
    pytest.importorskip("langgraph_api", reason="needs langgraph-cli[inmem]")
    if not LANGGRAPH_CLI.exists():
        pytest.skip("needs the langgraph CLI (langgraph-cli[inmem])")
    # The server resolves graph paths against, and keeps its state (.langgraph_api/) in,
    # its working directory: a scratch copy of the repo root's layout.
    workdir = tmp_path / "app"
    workdir.mkdir()
    shutil.copy(ROOT / "langgraph.json", workdir / "langgraph.json")
    (workdir / "m3rec_graph").symlink_to(ROOT / "m3rec_graph", target_is_directory=True)
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(NET_GUARD)
    guard_log = tmp_path / "network-attempts.log"
    guard_log.touch()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "LANGSMITH_", "LANGCHAIN_"))}
    env.update(
        M3REC_LOCAL_URL=fake_llm.url,  # the `local` preset's endpoint
        M3REC_CACHE_DIR=str(tmp_path / "cache"),  # never mix fake traits into the real cache
        M3REC_NET_GUARD_LOG=str(guard_log),
        PYTHONPATH=os.pathsep.join([str(guard), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        LANGGRAPH_NO_VERSION_CHECK="true",  # else it asks PyPI for a newer langgraph-api
        LANGGRAPH_CLI_NO_ANALYTICS="1",  # else it posts usage analytics
        LANGSMITH_TRACING="false",
        LANGCHAIN_TRACING_V2="false",
    )
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "langgraph-dev.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(LANGGRAPH_CLI), "dev", "--no-browser", "--no-reload", "--host", "127.0.0.1",
                "--port", str(port),
            ],
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        _wait_until_up(url, process, log)
        yield url, guard_log
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


class HostState(TypedDict, total=False):
    """A host graph that calls the deployed m3rec as one of its nodes."""

    user_id: str
    history: list[dict[str, Any]]
    candidates: list[dict[str, Any]]
    ranking: list[dict[str, Any]]


def assert_valid_ranking(ranking: list[dict[str, Any]]) -> None:
    assert sorted(r["item_id"] for r in ranking) == sorted(c["item_id"] for c in CANDIDATES)
    assert [r["rank"] for r in ranking] == list(range(1, len(CANDIDATES) + 1))
    scores = [r["score"] for r in ranking]
    assert scores == sorted(scores, reverse=True) and all(0.0 <= s <= 1.0 for s in scores)
    assert all(r["source"] == "llm" and r["rationale"] for r in ranking)


async def test_langgraph_dev_round_trip(langgraph_dev: tuple[str, Path], fake_llm: FaultServer) -> None:
    from langgraph.pregel.remote import RemoteGraph
    from langgraph_sdk import get_client

    url, guard_log = langgraph_dev
    client = get_client(url=url)
    assistants = await client.assistants.search(graph_id="m3rec")
    assert [a["graph_id"] for a in assistants] == ["m3rec"]

    # 1. the SDK, streaming: progress events, per-item updates and the final state
    custom: list[str] = []
    updated: list[str] = []
    final: dict[str, Any] = {}
    async for part in client.runs.stream(
        None, "m3rec", input=REQUEST, stream_mode=["custom", "updates", "values"]
    ):
        assert part.event != "error", part.data
        if part.event == "custom":
            custom.append(part.data["m3rec"])
        elif part.event == "updates":
            updated.extend(part.data)
        elif part.event == "values":
            final = part.data
    assert custom == ["started", "profile_ready", "items_encoded", "ranking_ready"]
    assert updated.count("mote") == len(CANDIDATES)
    assert_valid_ranking(final["ranking"])
    assert final["degraded"] == []
    first = fake_llm.counts()
    assert first["stage:mope"] == 1 and first["stage:mote"] == len(CANDIDATES) and first["stage:mar"] == 1

    # 2. RemoteGraph as a node of a host graph (m3rec's default routing on the server)
    remote = RemoteGraph("m3rec", url=url)
    builder = StateGraph(HostState)
    builder.add_node("m3rec", remote)
    builder.add_edge(START, "m3rec")
    builder.add_edge("m3rec", END)
    out = await builder.compile().ainvoke(cast(HostState, REQUEST))
    assert_valid_ranking(out["ranking"])
    second = fake_llm.counts()
    assert second["stage:mote"] == first["stage:mote"]  # traits cached by the server
    assert second["stage:mar"] == first["stage:mar"] + 1  # one listwise chunk

    # 3. a remote context: pointwise MAR, one call per candidate
    out = await remote.ainvoke(REQUEST, context={"mar_mode": "pointwise", "seed": 7})
    assert_valid_ranking(out["ranking"])
    third = fake_llm.counts()
    assert third["stage:mar"] == second["stage:mar"] + len(CANDIDATES)
    assert fake_llm.faults() == dict.fromkeys(fake_llm.faults(), 0)

    assert guard_log.read_text() == "", "the server tried to reach the network"
