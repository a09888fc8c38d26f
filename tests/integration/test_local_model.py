"""The whole graph against the real offline model (SmolLM2-135M behind llama.cpp's server).

These check structure, not quality: the 135M model ranks near chance
(docs/local-model.md), so no metric threshold is asserted. Every run asks for
`fusion="off"`: the offline preset's default fusion weighs text similarity only and makes
no model call (tests/unit/test_fuse_stage.py), and these tests are about the model's path.
"""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from langgraph.store.memory import InMemoryStore

from m3rec_graph import build_graph, context_for, open_store
from m3rec_graph.cli.demo import load_cases
from m3rec_graph.contracts.schemas import Item
from m3rec_graph.llm.factory import openai_chat_model
from m3rec_graph.prompts.loader import load_prompt
from m3rec_graph.stages.fallbacks import fallback_profile, neutral_traits
from m3rec_graph.stages.mar import build_mar_graph
from m3rec_graph.storage.memory import trait_namespace

pytestmark = pytest.mark.integration


def _request(case: dict[str, Any], n_candidates: int) -> dict[str, Any]:
    return {
        "user_id": case["user_id"],
        "history": case["history"],
        "candidates": case["candidates"][:n_candidates],
    }


async def test_one_recommendation_end_to_end(local_url: str, tmp_path: Path) -> None:
    case = load_cases()[0]
    request = _request(case, 8)
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    ctx = context_for("local", fusion="off")
    with open_store(url) as store:
        graph = build_graph(store=store)
        out: dict[str, Any] = await graph.ainvoke(request, context=ctx)  # type: ignore[call-overload]
        mote = ctx.model_for("mote").name
        version = load_prompt("mote").version
        stored = store.search(trait_namespace(mote, version), limit=100)
    ids = [r.item_id for r in out["ranking"]]
    assert sorted(ids) == sorted(c["item_id"] for c in request["candidates"])
    assert all(0.0 <= r.score <= 1.0 and r.rationale for r in out["ranking"])
    usage = out["usage"]
    assert usage.stages["mope"].models == ["smollm2-135m-instruct"]
    assert usage.stages["mote"].calls >= 8  # one per uncached item (+ re-asks)
    assert usage.total.input_tokens > 0 and usage.total.estimated_calls == 0
    assert len(stored) + sum(d["stage"] == "mote" for d in out["degraded"]) == 8

    # the CLI on the same candidates reuses the server and the store: no MOTE call for a stored
    # item, and no MOPE call when the profile was stored (a fallback profile is never stored)
    path = tmp_path / "request.json"
    path.write_text(json.dumps(request))
    done = subprocess.run(
        [sys.executable, "-m", "m3rec_graph.cli", "recommend", "--request", str(path),
         "--routing", "local", "--fusion", "off", "--store", url, "--k", "3"],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert len(printed["ranking"]) == 3
    assert printed["usage"]["stages"]["mote"]["calls"] == len(
        [d for d in out["degraded"] if d["stage"] == "mote"]
    )
    profile_stored = not any(d["stage"] == "mope" for d in out["degraded"])
    assert (printed["usage"]["stages"]["mope"]["calls"] == 0) == profile_stored


async def test_mar_scores_twenty_candidates_validly(local_url: str) -> None:
    case = load_cases()[0]
    items = [Item.model_validate(c) for c in case["candidates"][:20]]
    assert len(items) == 20
    profile = fallback_profile([Item.model_validate(h) for h in case["history"]])
    task = {
        "profile": profile,
        "candidates": [{"item": item, "traits": neutral_traits("test")} for item in items],
        "mode": "listwise",
    }
    mar = build_mar_graph(openai_chat_model)
    out: dict[str, Any] = await mar.ainvoke(task, context=context_for("local", fusion="off"))
    assert out["degraded"] == [], out["degraded"]  # valid directly or after re-asks
    assert sorted(out["scores"]) == sorted(item.item_id for item in items)
    assert all(s.source == "llm" for s in out["scores"].values())


async def test_second_run_hits_the_stored_traits(local_url: str) -> None:
    case = load_cases()[1]
    request = _request(case, 4)
    graph = build_graph(store=InMemoryStore())
    first: dict[str, Any] = await graph.ainvoke(request, context=context_for("local", fusion="off"))  # type: ignore[call-overload]
    second: dict[str, Any] = await graph.ainvoke(request, context=context_for("local", fusion="off"))  # type: ignore[call-overload]
    cached = 4 - sum(d["stage"] == "mote" for d in first["degraded"])
    assert second["usage"].stages["mote"].calls == 4 - cached


def test_server_exits_when_the_process_that_started_it_is_killed(tmp_path: Path) -> None:
    """A CLI killed with SIGKILL cannot stop its server; the server must notice and exit."""
    import signal
    import socket
    import time

    from m3rec_graph.local.server import is_healthy

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    script = (
        "import time; from m3rec_graph.local.server import start_server; "
        f"start_server({url!r}); print('up', flush=True); time.sleep(600)"
    )
    starter = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert starter.stdout is not None and starter.stdout.readline().strip() == "up"
    assert is_healthy(url)
    starter.send_signal(signal.SIGKILL)
    starter.wait(10)
    deadline = time.monotonic() + 15
    while is_healthy(url, timeout_s=0.5) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not is_healthy(url)
