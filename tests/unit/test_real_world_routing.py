"""Every routing preset against a server that enforces OpenAI's documented rules (strict mode).

The strict fault server (tests/fault_server.py + its own rule table, tests/openai_rules.py)
refuses what OpenAI refuses: retired models, temperature above effort `none`, efforts a
model does not take, `max_tokens` on reasoning models, tools where refused. A preset that
sends any of it fails here with a 4xx, as it would for a user with a real key.
"""

import json
from pathlib import Path
from typing import Any, cast

import pytest

from m3rec_graph import InMemoryTraitCache, build_graph, context_for
from m3rec_graph.cli.app import main
from m3rec_graph.errors import ProviderRequestError
from m3rec_graph.llm.routing import PRESETS
from m3rec_graph.state import RecInput
from tests.fault_server import FaultConfig, FaultServer

TODAY = "2026-12-03"
REQUEST: dict[str, Any] = {
    "user_id": "u1",
    "history": [{"item_id": "h1", "title": "Red gel nail polish"}, {"item_id": "h2", "title": "Top coat"}],
    "candidates": [{"item_id": f"c{i}", "title": f"Nail product {i}"} for i in range(4)],
}


def strict(**config: Any) -> FaultServer:
    return FaultServer(FaultConfig(strict=True, today=TODAY, **config))


@pytest.mark.parametrize("preset", [p for p in PRESETS if p not in ("local", "paper")])
async def test_every_current_preset_runs_against_openai_rules_with_no_4xx(
    preset: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with strict() as server:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)
        graph = build_graph(trait_cache=InMemoryTraitCache())
        out = await graph.ainvoke(cast(RecInput, REQUEST), context=context_for(preset, today=TODAY))
        counts = server.counts()
    assert out["degraded"] == [], out["degraded"]
    assert sorted(r.item_id for r in out["ranking"]) == [f"c{i}" for i in range(4)]
    assert not [k for k in counts if k.startswith(("status:4", "strict:"))], counts
    # one API for every call: the URL path each preset hits is pinned
    assert counts["path:/v1/chat/completions"] == counts["requests"] == out["usage"].total.calls
    reasoning = out["usage"].stages["mar"].reasoning_tokens
    effort = context_for(preset, today=TODAY).mar_model.reasoning_effort
    assert (reasoning > 0) == (effort not in (None, "none"))  # billed as output, counted in cost


def test_the_paper_preset_exits_2_naming_the_replacement_and_makes_no_call(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "request.json"
    path.write_text(json.dumps(REQUEST))
    with strict() as server:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)
        with pytest.raises(SystemExit) as exit_info:
            main(["recommend", "--request", str(path), "--routing", "paper", "--no-cache"])
        assert server.counts().get("requests", 0) == 0
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert "gpt-3.5-turbo was shut down on 2026-10-23" in err and "gpt-5.6-terra" in err


async def test_a_provider_that_refuses_every_request_is_an_error_not_a_degradation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # --allow-retired past the shutdown: the strict server answers 404 model_not_found every time
    with strict() as server:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)
        graph = build_graph(trait_cache=InMemoryTraitCache())
        ctx = context_for("paper", allow_retired=True, today=TODAY)
        with pytest.raises(ProviderRequestError, match="gpt-3.5-turbo"):
            await graph.ainvoke(cast(RecInput, REQUEST), context=ctx)
        assert server.counts().get("status:404", 0) >= 1


def test_a_refused_request_exits_2_in_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "request.json"
    path.write_text(json.dumps(REQUEST))
    with strict() as server:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)
        with pytest.raises(SystemExit) as exit_info:
            main(["recommend", "--request", str(path), "--routing", "paper", "--allow-retired", "--no-cache"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "refused the request" in err and "Traceback" not in err
