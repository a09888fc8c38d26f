"""Private tracing: LangSmith's own hide options, checked against the offline recorder.

`LANGSMITH_HIDE_INPUTS=true` / `LANGSMITH_HIDE_OUTPUTS=true` (or
`Client(hide_inputs=True, hide_outputs=True)`) make the client send `{}` for every
run's inputs and outputs. Metadata (`extra.metadata`) is untouched, and LangChain's
tracer copies each chat model run's token counts into
`extra.metadata.usage_metadata`, so both survive. See docs/privacy.md.
"""

import json
from collections.abc import Iterator
from typing import Any, cast

import pytest
from langchain_core.tracers.langchain import wait_for_all_tracers
from langsmith import Client
from langsmith.run_helpers import tracing_context
from langsmith.utils import get_env_var

import m3rec_graph
from tests.fakes import ScriptedModels, default_responder
from tests.langsmith_recorder import LangSmithRecorder, Run
from tests.unit.test_tracing import REQUEST

FAKE_SECRET = "sk-proj-PRIVACYTEST0123456789abcdefXYZ"
"""An OpenAI-key-like value set in the environment during the run."""

PERSONAL_TEXT = [
    str(item[field])
    for group in ("history", "candidates")
    for item in REQUEST[group]
    for field in ("title", "brand")
    if field in item
]
"""The item titles and history text of the request: none may reach a private trace."""

STAGE_METADATA = (
    "m3rec_stage",
    "m3rec_model",
    "m3rec_routing",
    "m3rec_prompt",
    "m3rec_prompt_version",
    "m3rec_attempt",
)
SCRIPTED_USAGE = {"input_tokens": 100, "output_tokens": 10, "total_tokens": 110}
"""What every `ScriptedChatModel` call reports (tests/fakes.py)."""


@pytest.fixture(autouse=True)
def fresh_env_cache() -> Iterator[None]:
    """`langsmith.utils.get_env_var` is cached: clear it around each test's environment."""
    cached = cast(Any, get_env_var)  # an lru_cache behind typing overloads
    cached.cache_clear()
    yield
    cached.cache_clear()


def metadata(run: Run) -> dict[str, object]:
    meta: dict[str, object] = (run.get("extra") or {}).get("metadata") or {}
    return meta


def content(run: Run) -> str:
    """The run's inputs and outputs as sent, as JSON text."""
    return json.dumps([run.get("inputs"), run.get("outputs")], default=str)


@pytest.mark.parametrize("hide", ["off", "client", "env"])
async def test_hidden_inputs_and_outputs_keep_metadata_and_token_counts(
    hide: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_SECRET)
    for name in ("LANGSMITH_HIDE_INPUTS", "LANGSMITH_HIDE_OUTPUTS"):
        if hide == "env":
            monkeypatch.setenv(name, "true")
        else:
            monkeypatch.delenv(name, raising=False)
    hidden = hide != "off"
    graph = m3rec_graph.build_graph(
        chat_models=ScriptedModels(default_responder()),
        trait_cache=m3rec_graph.InMemoryTraitCache(),
    )

    with LangSmithRecorder() as recorder:
        options = {"hide_inputs": True, "hide_outputs": True} if hide == "client" else {}
        client = Client(api_url=recorder.url, api_key="fake", **options)  # type: ignore[arg-type]
        try:
            with tracing_context(enabled=True, client=client, project_name="m3rec-privacy"):
                result = await graph.ainvoke(REQUEST, context=m3rec_graph.context_for("hybrid"))
            wait_for_all_tracers()
            client.flush(timeout=30)
        finally:
            client.close(timeout=5)
        runs = list(recorder.runs.values())

    assert result["degraded"] == []
    assert len(runs) >= 12, [r.get("name") for r in runs]  # the graph, its nodes and 5 model calls
    tree = recorder.tree(("m3rec_stage",))

    # The secret from the environment never reaches any run, hidden or not.
    everything = json.dumps(runs, default=str)
    assert FAKE_SECRET not in everything
    assert FAKE_SECRET[:12] not in everything

    leaking = {r["name"] for r in runs if any(text in content(r) for text in PERSONAL_TEXT)}
    if not hidden:
        # Without the option, the request's text is in the trace (so the check below can fail).
        assert "m3rec" in leaking and "mope.llm" in leaking, leaking
        return

    # Every run's inputs and outputs are sent as `{}` (or not at all), and no personal
    # text (nor the user id) is anywhere in the trace: not in metadata, names or errors.
    for run in runs:
        assert run.get("inputs") in (None, {}), run["name"]
        assert run.get("outputs") in (None, {}), run["name"]
    assert leaking == set(), tree
    assert [t for t in PERSONAL_TEXT if t in everything] == []
    assert REQUEST["user_id"] not in everything

    # Every LLM-stage run (the chat model's own run, named for the stage) keeps its m3rec_* metadata.
    stage_runs = [r for r in runs if str(r.get("name")).endswith(".llm")]
    assert {r["name"] for r in stage_runs} == {"mope.llm", "mote.llm", "mar.llm"}, tree
    assert len(stage_runs) == 5, tree  # MOPE once, MOTE per candidate (3), MAR once
    chat_runs = [r for r in runs if r.get("run_type") == "llm"]
    assert sorted(r["id"] for r in chat_runs) == sorted(r["id"] for r in stage_runs), tree
    for run in stage_runs:
        meta = metadata(run)
        assert all(key in meta for key in STAGE_METADATA), (run["name"], meta)
    assert {metadata(r)["m3rec_stage"] for r in stage_runs} == {"mope", "mote", "mar"}

    # Token counts survive in the chat model runs' `extra.metadata.usage_metadata`.
    for run in chat_runs:
        assert metadata(run)["usage_metadata"] == SCRIPTED_USAGE, run["name"]
