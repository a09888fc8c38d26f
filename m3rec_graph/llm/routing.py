"""Model routing: named presets, per-stage overrides, and the default when no key is set.

This module is the only place that decides which model serves which stage.
"""

import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from langgraph.runtime import Runtime

from m3rec_graph.context import STAGES, Ablation, M3RecContext, ModelSpec, Stage
from m3rec_graph.errors import ConfigurationError
from m3rec_graph.llm.local_endpoint import local_base_url
from m3rec_graph.llm.registry import (
    EFFORTS,
    Effort,
    check_lifecycle,
    model_info,
    registry,
    resolve_effort,
)
from m3rec_graph.llm.registry import today as registry_today

LOCAL_MODEL_NAME = "smollm2-135m-instruct"

# Answer budgets per stage, before any reasoning allowance: a profile is ~7 short
# entries + a summary, traits are a handful of phrases, a listwise MAR answer is
# one short line per candidate.
_MAX_TOKENS: dict[Stage, int] = {"mope": 700, "mote": 300, "mar": 1500}

DEFAULT_EFFORTS: dict[Stage, Effort] = {"mope": "none", "mote": "none", "mar": "low"}
"""Each stage's reasoning effort unless overridden. The paper's split, on reasoning models:
the encoders (MOPE, MOTE) extract and summarise, which needs no reasoning (and `none`
keeps temperature 0 and the cheapest tokens); MAR compares a profile with candidates,
where a little reasoning is what the strong tier is paid for. A model that refuses a
default (gpt-6.1-sol takes no `none`) gets its nearest accepted effort
(`registry.resolve_effort`); an explicit override must be accepted as is."""


def openai_model(
    name: str, stage: Stage, effort: Effort | None = None, *, explicit_effort: bool = False
) -> ModelSpec:
    """Return the spec of an OpenAI (or OpenAI-compatible) model serving `stage`.

    Everything model-specific comes from the model registry: the structured-output
    method, the reasoning effort it accepts, whether temperature may be sent at that
    effort, and the reasoning allowance added to the stage's answer budget.

    Raises:
        ConfigurationError: A Responses-only model (m3rec calls Chat Completions), or an
            explicit effort the model refuses.
    """
    info = model_info(name)
    if info.api != "chat_completions":
        raise ConfigurationError(
            f"{name} is served on the Responses API only; m3rec sends every stage call to "
            "Chat Completions: route a Chat Completions model instead"
        )
    requested = effort if effort is not None else DEFAULT_EFFORTS[stage]
    resolved = resolve_effort(name, requested, explicit=explicit_effort)
    return ModelSpec(
        name=name,
        temperature=0.0 if info.temperature_allowed(resolved) else None,
        max_tokens=_MAX_TOKENS[stage] + registry().allowance(resolved),
        reasoning_effort=resolved,
        structured_method=info.structured_output,
    )


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
    # The paper's idea on today's models: a cheap tier for the encoders (MOPE, MOTE)
    # and a strong tier for the aligner (MAR). gpt-6.1-sol rather than gpt-6-sol: same
    # price, and OpenAI's deployment checklist names it the Sol model for new work
    # (gpt-6-sol is superseded); it reasons at `low` at least, which MAR gets anyway.
    "hybrid": {"mope": "gpt-6-luna", "mote": "gpt-6-luna", "mar": "gpt-6.1-sol"},
    # The paper's own routing (GPT-3.5 encoders, GPT-4o aligner). gpt-3.5-turbo shut
    # down on 2026-10-23 and gpt-4o shuts down on 2027-01-14: refused unless
    # --allow-retired, for an endpoint that still serves them.
    "paper": {"mope": "gpt-3.5-turbo", "mote": "gpt-3.5-turbo", "mar": "gpt-4o"},
    # The paper's all-strong baseline (its ~87% saving is `paper` against this).
    # Served until 2027-01-14, warned within 30 days of it.
    "gpt-4o": {"mope": "gpt-4o", "mote": "gpt-4o", "mar": "gpt-4o"},
    "gpt-6-luna": {"mope": "gpt-6-luna", "mote": "gpt-6-luna", "mar": "gpt-6-luna"},
    "gpt-6.1-sol": {"mope": "gpt-6.1-sol", "mote": "gpt-6.1-sol", "mar": "gpt-6.1-sol"},
    "gpt-6-astra": {"mope": "gpt-6-astra", "mote": "gpt-6-astra", "mar": "gpt-6-astra"},
    "local": {"mope": "local", "mote": "local", "mar": "local"},
}
"""Routing presets: stage -> model name (`local` is the offline default on 127.0.0.1)."""


def default_preset() -> str:
    """Return `hybrid` when an OpenAI key is configured, else the offline `local` preset."""
    return "hybrid" if os.environ.get("OPENAI_API_KEY") else "local"


def parse_overrides(pairs: list[str]) -> dict[Stage, str]:
    """Parse `STAGE=MODEL` strings such as `mar=gpt-6-sol`."""
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


def parse_efforts(pairs: list[str]) -> dict[Stage, Effort]:
    """Parse `STAGE=EFFORT` strings such as `mar=medium`."""
    efforts: dict[Stage, Effort] = {}
    for stage, value in parse_overrides(pairs).items():
        if value not in EFFORTS:
            raise ConfigurationError(
                f"bad reasoning effort {value!r} for {stage}: expected one of {', '.join(EFFORTS)}"
            )
        efforts[stage] = value
    return efforts


def _spec_for_name(name: str, stage: Stage, effort: Effort | None) -> ModelSpec:
    if name in ("local", LOCAL_MODEL_NAME):
        if effort is not None:
            raise ConfigurationError("the local model is not a reasoning model: it takes no reasoning effort")
        return local_model(stage)
    return openai_model(name, stage, effort, explicit_effort=effort is not None)


def context_for(
    preset: str | None = None,
    overrides: Mapping[Stage, str] | None = None,
    *,
    efforts: Mapping[Stage, Effort] | None = None,
    allow_retired: bool = False,
    today: dt.date | str | None = None,
    **settings: object,
) -> M3RecContext:
    """Build a run context from a preset name (default: `default_preset()`) and overrides.

    Every routed model is checked against the registry's lifecycle before any call:
    past its shutdown date it is refused, within 30 days of it a
    `ModelDeprecationWarning` is issued.

    Args:
        preset: A key of `PRESETS`.
        overrides: Stage -> model name, e.g. `{"mar": "gpt-6-sol"}`.
        efforts: Stage -> reasoning effort, e.g. `{"mar": "medium"}` (default: `DEFAULT_EFFORTS`,
            moved to the nearest effort each model accepts).
        allow_retired: Let a model past its shutdown date run, against an endpoint that
            still serves it (a local mirror, a proxy).
        today: The date lifecycle checks use (default: `registry.today()`, which reads
            `M3REC_TODAY`).
        **settings: Other `M3RecContext` fields (`mar_mode`, `seed`, ...).

    Raises:
        ConfigurationError: An unknown preset or stage, a retired model
            (`ModelRetiredError`), a Responses-only model, or an effort a model refuses.
    """
    name = preset or default_preset()
    if name not in PRESETS:
        raise ConfigurationError(f"unknown routing preset {name!r}; choose one of {', '.join(PRESETS)}")
    names = {**PRESETS[name], **(overrides or {})}
    on = registry_today(today)
    for model in {names[stage] for stage in STAGES} - {"local", LOCAL_MODEL_NAME}:
        check_lifecycle(model, on, allow_retired=allow_retired)
    chosen = dict(efforts or {})
    specs = {stage: _spec_for_name(names[stage], stage, chosen.get(stage)) for stage in STAGES}
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
    "models": {"mar": "gpt-6-sol"}, "efforts": {"mar": "medium"}}` (or nothing) and every node sees the
    `M3RecContext` it resolves to. An `M3RecContext` passed from Python still works.
    Unset fields keep the preset's defaults.
    """

    routing: str | None = None
    """A key of `PRESETS`; unset: `default_preset()`."""
    models: dict[str, str] = field(default_factory=dict)
    """Stage -> model name overrides, as `--model STAGE=NAME` on the command line."""
    efforts: dict[str, str] = field(default_factory=dict)
    """Stage -> reasoning effort, as `--effort STAGE=EFFORT` on the command line."""
    allow_retired: bool = False
    """Let a model past its shutdown date run (see `context_for`)."""
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
        efforts = parse_efforts([f"{stage}={effort}" for stage, effort in self.efforts.items()])
        return context_for(
            self.routing, overrides or None, efforts=efforts or None, allow_retired=self.allow_retired, **settings
        )


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
