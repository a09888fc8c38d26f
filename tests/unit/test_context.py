"""The one run context: flat, JSON-friendly, hashable; resolved once; no endpoint or key in it."""

import copy
import dataclasses
import json
import pickle
import warnings
from dataclasses import dataclass
from typing import Any, cast
from uuid import UUID

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.runnables import RunnableConfig
from langchain_openai import ChatOpenAI
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from pydantic import SecretStr, TypeAdapter

import m3rec_graph
from m3rec_graph import (
    ConfigurationError,
    InMemoryTraitCache,
    M3RecContext,
    build_graph,
    context_for,
)
from m3rec_graph.integrations.embed import CHECKPOINT_TYPES
from m3rec_graph.llm import routing
from m3rec_graph.llm.endpoint import endpoint_chat_models
from m3rec_graph.llm.routing import LOCAL_MODEL_NAME, resolve
from m3rec_graph.state import RecInput
from tests.fakes import ScriptedModels, default_responder

REQUEST: dict[str, Any] = {
    "user_id": "u-ctx",
    "history": [{"item_id": "h1", "title": "Red gel nail polish"}, {"item_id": "h2", "title": "Top coat"}],
    "candidates": [{"item_id": f"c{i}", "title": f"Nail product {i}"} for i in range(5)],
}
SECRET = "sk-m3rec-context-SECRET-77c1"
LOCAL_URL = "http://127.0.0.1:54329/v1"
ENDPOINT_WORDS = ("api_key", "base_url", "requests_per_second", "tokens_per_minute", "max_inflight", "timeout")


def test_the_context_is_flat_json_and_hashable_with_every_field_defaulted() -> None:
    ctx = context_for("hybrid", {"mar": "gpt-6-sol"}, efforts={"mar": "medium"}, prompt_overrides={"mar": "x.toml"})
    data = json.loads(json.dumps(dataclasses.asdict(ctx)))
    assert data["routing"] == "hybrid" and data["models"] == {"mar": "gpt-6-sol"}
    assert data["efforts"] == {"mar": "medium"} and data["prompt_overrides"] == {"mar": "x.toml"}
    assert M3RecContext.coerce(data) == ctx and hash(M3RecContext.coerce(data)) == hash(ctx)
    assert pickle.loads(pickle.dumps(ctx)) == ctx and copy.deepcopy(ctx) == ctx
    assert {ctx: 1}[dataclasses.replace(ctx)] == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.seed = 3  # type: ignore[misc]
    with pytest.raises(TypeError, match="read-only"):
        ctx.models["mope"] = "gpt-4o"  # type: ignore[index]
    assert M3RecContext() == M3RecContext.coerce(None) == M3RecContext.coerce({})
    # JSON nulls keep the defaults, as RemoteContext's unset fields did
    assert M3RecContext.coerce({"seed": None, "mar_mode": None, "models": None}) == M3RecContext()


def test_a_dict_context_is_checked_like_the_cli_flags() -> None:
    with pytest.raises(ConfigurationError, match="bad model override 'ranker=gpt-4o'"):
        M3RecContext.coerce({"models": {"ranker": "gpt-4o"}})
    with pytest.raises(ConfigurationError, match="bad reasoning effort 'turbo' for mar"):
        M3RecContext.coerce({"efforts": {"mar": "turbo"}})
    with pytest.raises(ConfigurationError, match="unknown m3rec context field.*colour"):
        M3RecContext.coerce({"colour": "red"})
    with pytest.raises(ConfigurationError, match="mar_chunk_size='10': expected an integer"):
        M3RecContext.coerce({"mar_chunk_size": "10"})
    with pytest.raises(ConfigurationError, match="ablation='no_mope_please'"):
        M3RecContext.coerce({"ablation": "no_mope_please"})
    with pytest.raises(ConfigurationError, match="YYYY-MM-DD"):
        M3RecContext(today="3 Dec")


@dataclass(frozen=True)
class HostContext:
    """Some host's own context type."""

    tenant: str


async def test_a_foreign_context_object_is_refused_before_any_call() -> None:
    models = ScriptedModels(default_responder())
    graph = build_graph(chat_models=models, trait_cache=InMemoryTraitCache())
    with pytest.raises(ConfigurationError, match=r"context of type .*HostContext.*as_node"):
        await graph.ainvoke(cast(RecInput, REQUEST), context=cast(Any, HostContext(tenant="t")))
    assert models.calls == []


async def test_a_run_resolves_its_context_once(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[tuple[str, str]] = []
    spec_for_name = routing._spec_for_name

    def counting(name: str, stage: Any, effort: Any) -> Any:
        built.append((name, stage))
        return spec_for_name(name, stage, effort)

    monkeypatch.setattr(routing, "_spec_for_name", counting)
    ctx = M3RecContext(routing="hybrid", seed=918_273)  # a context no other test resolved
    models = ScriptedModels(default_responder())
    graph = build_graph(chat_models=models, trait_cache=InMemoryTraitCache())
    await graph.ainvoke(cast(RecInput, REQUEST), context=ctx)
    await graph.ainvoke(cast(RecInput, REQUEST), context=cast(Any, dataclasses.asdict(ctx)))  # its JSON: the same entry
    assert len(models.calls) == 7 + 2  # MOPE, 5 x MOTE, MAR; then MOPE, MAR (traits cached): 9 stage calls ...
    assert sorted(stage for _, stage in built) == ["mar", "mope", "mote"]  # ... one resolution
    assert resolve(ctx) is resolve(M3RecContext(routing="hybrid", seed=918_273))


def test_the_resolution_follows_the_environment_it_depends_on(monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = M3RecContext()  # routing unset: default_preset() when resolved
    monkeypatch.setenv("M3REC_LOCAL_URL", LOCAL_URL)
    assert resolve(ctx).mar.name == LOCAL_MODEL_NAME and resolve(ctx).mar.base_url == LOCAL_URL
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    assert resolve(ctx).label == "hybrid" and resolve(ctx).mar.name == "gpt-6.1-sol"


async def test_no_key_or_endpoint_reaches_the_context_run_metadata_or_checkpoints(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The context travels into run metadata (the server mirrors it) and checkpoints: it names models only."""
    monkeypatch.setenv("M3REC_LOCAL_URL", LOCAL_URL)
    local = context_for("local")
    assert local.model_for("mar").base_url == LOCAL_URL  # routing has the endpoint ...
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    hybrid = context_for()  # the default with a key
    assert hybrid.routing == "hybrid"

    class Metadata(BaseCallbackHandler):
        def __init__(self) -> None:
            self.seen: list[dict[str, Any]] = []

        def on_chain_start(
            self, serialized: Any, inputs: Any, *, run_id: UUID, metadata: dict[str, Any] | None = None, **kw: Any
        ) -> None:
            self.seen.append(dict(metadata or {}))

        def on_chat_model_start(
            self, serialized: Any, messages: Any, *, run_id: UUID, metadata: dict[str, Any] | None = None, **kw: Any
        ) -> None:
            self.seen.append(dict(metadata or {}))

    recorder = Metadata()
    saver = InMemorySaver(serde=JsonPlusSerializer(allowed_msgpack_modules=CHECKPOINT_TYPES))
    graph = build_graph(
        chat_models=ScriptedModels(default_responder()), trait_cache=InMemoryTraitCache(), checkpointer=saver
    )
    config: RunnableConfig = {"configurable": {"thread_id": "ctx"}, "callbacks": [recorder]}
    seen_contexts: list[M3RecContext] = []
    contexts: list[Any] = [None, {}, hybrid, local]
    for context in contexts:  # a default run, its JSON form, and two presets
        out = await graph.ainvoke(cast(RecInput, REQUEST), config, context=context)
        assert len(out["ranking"]) == len(REQUEST["candidates"])
        seen_contexts.append(M3RecContext.coerce(context))

    dumps = [json.dumps(dataclasses.asdict(ctx)) for ctx in (M3RecContext(), *seen_contexts)]
    dumps.append(TypeAdapter(M3RecContext).dump_json(hybrid).decode())
    dumps.append(json.dumps(recorder.seen, default=repr))
    for checkpoint in saver.list(None):
        dumps.append(repr((checkpoint.checkpoint, checkpoint.metadata, checkpoint.config)))
    assert recorder.seen and len(dumps) > 6
    for text in dumps:
        assert SECRET not in text and LOCAL_URL not in text and "127.0.0.1" not in text
        assert not any(word in text for word in ENDPOINT_WORDS), text[:300]
    # ... and a served graph cannot even be sent one: the server keeps only the schema's fields
    schema: dict[str, Any] = m3rec_graph.graph.get_context_jsonschema() or {}
    fields = set(schema["properties"])
    assert fields == {f.name for f in dataclasses.fields(M3RecContext)}
    assert not any(word in name for name in fields for word in ENDPOINT_WORDS)


def test_endpoints_keys_and_limits_come_from_the_factory() -> None:
    spec = context_for("hybrid").model_for("mar")
    assert spec.base_url is None and spec.api_key is None and spec.requests_per_second is None
    factory = endpoint_chat_models(
        "http://127.0.0.1:9/v1", api_key="sk-factory", timeout_s=3.0, max_retries=0, requests_per_second=4
    )
    model = cast(ChatOpenAI, factory(spec))
    assert model.openai_api_base == "http://127.0.0.1:9/v1" and model.max_retries == 0
    assert isinstance(model.openai_api_key, SecretStr) and model.openai_api_key.get_secret_value() == "sk-factory"
    assert model.rate_limiter is not None and model.model_name == "gpt-6.1-sol"
    assert model.reasoning_effort == spec.reasoning_effort  # what routing resolved is kept


def test_remote_context_is_a_deprecated_alias_of_the_one_context() -> None:
    with pytest.warns(DeprecationWarning, match="RemoteContext is deprecated"):
        from m3rec_graph import RemoteContext
    with pytest.warns(DeprecationWarning, match="RemoteContext is deprecated"):
        from m3rec_graph.llm.routing import RemoteContext as FromRouting
    assert RemoteContext is FromRouting is M3RecContext
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert m3rec_graph.graph.context_schema is M3RecContext
        assert "RemoteContext" not in m3rec_graph.__all__  # `import *` stays quiet
    with pytest.warns(DeprecationWarning, match=r"resolve\(\) is deprecated"):
        assert RemoteContext(routing="gpt-4o").resolve() == M3RecContext(routing="gpt-4o")
