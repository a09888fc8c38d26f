"""Model routing: named presets, per-stage overrides, and the default when no key is set.

This module is the only place that decides which model serves which stage.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from langgraph.runtime import Runtime

from m3rec_graph.context import STAGES, Ablation, M3RecContext, ModelSpec, Stage, StructuredMethod
from m3rec_graph.errors import ConfigurationError
from m3rec_graph.local.server import local_base_url

LOCAL_MODEL_NAME = "smollm2-135m-instruct"

# Output budgets per stage: a profile is ~7 short entries + a summary, traits are
# a handful of phrases, a listwise MAR answer is one short line per candidate.
_MAX_TOKENS: dict[Stage, int] = {"mope": 700, "mote": 300, "mar": 1500}


def openai_model(name: str, stage: Stage) -> ModelSpec:
    """Return the spec of an OpenAI model serving `stage`."""
    # gpt-3.5-turbo has no Structured Outputs; say so instead of letting
    # langchain-openai switch to function calling behind a warning.
    method: StructuredMethod = "function_calling" if name.startswith("gpt-3.5") else "json_schema"
    return ModelSpec(name=name, max_tokens=_MAX_TOKENS[stage], structured_method=method)


def local_model(stage: Stage) -> ModelSpec:
    """Return the spec of the offline default model served on 127.0.0.1."""
    return ModelSpec(
        name=LOCAL_MODEL_NAME,
        max_tokens=_MAX_TOKENS[stage],
        base_url=local_base_url(),
        api_key="local-server-needs-no-key",
        # Requests queue behind the server's few slots while a MOTE fan-out runs.
        timeout_s=600.0,
        max_retries=1,
        tokenizer_model="gpt-4o",
    )


PRESETS: dict[str, dict[Stage, str]] = {
    # The paper's hybrid: cheap encoders (MOPE, MOTE), strong aligner (MAR).
    "hybrid": {"mope": "gpt-3.5-turbo", "mote": "gpt-3.5-turbo", "mar": "gpt-4o"},
    "gpt-4o": {"mope": "gpt-4o", "mote": "gpt-4o", "mar": "gpt-4o"},
    "gpt-3.5": {"mope": "gpt-3.5-turbo", "mote": "gpt-3.5-turbo", "mar": "gpt-3.5-turbo"},
    "gpt-4o-mini": {"mope": "gpt-4o-mini", "mote": "gpt-4o-mini", "mar": "gpt-4o-mini"},
    "local": {"mope": "local", "mote": "local", "mar": "local"},
}
"""Routing presets: stage -> model name (`local` is the offline default on 127.0.0.1)."""


def default_preset() -> str:
    """Return `hybrid` when an OpenAI key is configured, else the offline `local` preset."""
    return "hybrid" if os.environ.get("OPENAI_API_KEY") else "local"


def parse_overrides(pairs: list[str]) -> dict[Stage, str]:
    """Parse `STAGE=MODEL` strings such as `mar=gpt-4o-mini`."""
    overrides: dict[Stage, str] = {}
    for pair in pairs:
        stage, sep, model = pair.partition("=")
        stage = stage.strip().lower()
        if not sep or not model.strip() or stage not in STAGES:
            raise ConfigurationError(
                f"bad model override {pair!r}: expected STAGE=MODEL with STAGE one of {', '.join(STAGES)}"
            )
        overrides[stage] = model.strip()
    return overrides


def _spec_for_name(name: str, stage: Stage) -> ModelSpec:
    if name in ("local", LOCAL_MODEL_NAME):
        return local_model(stage)
    return openai_model(name, stage)


def context_for(
    preset: str | None = None,
    overrides: Mapping[Stage, str] | None = None,
    **settings: object,
) -> M3RecContext:
    """Build a run context from a preset name (default: `default_preset()`) and overrides.

    Args:
        preset: A key of `PRESETS`.
        overrides: Stage -> model name, e.g. `{"mar": "gpt-4o-mini"}`.
        **settings: Other `M3RecContext` fields (`mar_mode`, `seed`, ...).
    """
    name = preset or default_preset()
    if name not in PRESETS:
        raise ConfigurationError(f"unknown routing preset {name!r}; choose one of {', '.join(PRESETS)}")
    names = {**PRESETS[name], **(overrides or {})}
    specs = {stage: _spec_for_name(names[stage], stage) for stage in STAGES}
    routing = name if not overrides else f"{name}+" + ",".join(f"{s}={m}" for s, m in overrides.items())
    ctx = M3RecContext(
        mope_model=specs["mope"], mote_model=specs["mote"], mar_model=specs["mar"], routing=routing
    )
    try:
        return replace(ctx, **settings)  # type: ignore[arg-type]
    except TypeError as exc:
        raise ConfigurationError(f"bad context setting: {exc}") from exc


@dataclass(frozen=True, kw_only=True)
class RemoteContext:
    """The run context in JSON form, for the LangGraph server, Studio and `RemoteGraph` callers.

    The module-level `graph` (the one `langgraph.json` serves) takes this as its
    context schema, so a remote caller sends e.g. `{"routing": "hybrid",
    "models": {"mar": "gpt-4o-mini"}}` (or nothing) and every node sees the
    `M3RecContext` it resolves to. An `M3RecContext` passed from Python still works.
    Unset fields keep the preset's defaults.
    """

    routing: str | None = None
    """A key of `PRESETS`; unset: `default_preset()`."""
    models: dict[str, str] = field(default_factory=dict)
    """Stage -> model name overrides, as `--model STAGE=NAME` on the command line."""
    mar_mode: Literal["listwise", "pointwise"] | None = None
    mar_chunk_size: int | None = None
    max_history_items: int | None = None
    max_schema_retries: int | None = None
    seed: int | None = None
    ablation: Ablation | None = None
    """`no_mope`, `no_mote` or `no_mar` (see `M3RecContext.ablation`); unset: the full pipeline."""

    def resolve(self) -> M3RecContext:
        """Return the `M3RecContext` these settings describe.

        Raises:
            ConfigurationError: Unknown preset or stage.
        """
        overrides = parse_overrides([f"{stage}={model}" for stage, model in self.models.items()])
        names = (
            "mar_mode", "mar_chunk_size", "max_history_items", "max_schema_retries", "seed", "ablation"
        )
        settings = {name: getattr(self, name) for name in names if getattr(self, name) is not None}
        return context_for(self.routing, overrides or None, **settings)


def default_context() -> M3RecContext:
    """Return the context used when a caller passes none."""
    return context_for()


def get_context(runtime: Runtime[M3RecContext]) -> M3RecContext:
    """Return the run's context, or the default routing when none (or a host's) was passed.

    A `RemoteContext` (a server run's JSON context) is resolved. A compiled graph
    embedded as a node in a host graph receives the host's context object, so
    anything else is ignored.
    """
    ctx = runtime.context
    if isinstance(ctx, M3RecContext):
        return ctx
    if isinstance(ctx, RemoteContext):
        return ctx.resolve()
    return default_context()


def uses_local_server(ctx: M3RecContext) -> bool:
    """Return whether any stage of `ctx` is served by the local model server."""
    return any(ctx.model_for(stage).base_url == local_base_url() for stage in STAGES)
