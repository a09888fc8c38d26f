"""Model routing: named presets, per-stage overrides, and the default when no key is set.

This module is the only place that decides which model serves which stage. A run
context (`M3RecContext`) names a preset, per-stage models and efforts; `resolve`
turns it into each stage's `ModelSpec` once per distinct context and process
(cached on the hashable context), never on every node call. The specs' endpoint
and key come from here and the environment (the local server's URL, else
`OPENAI_BASE_URL` / `OPENAI_API_KEY` read by `ChatOpenAI`), never from the context.
"""

import datetime as dt
import functools
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from langgraph.runtime import Runtime

from m3rec_graph.context import EFFORTS, STAGES, Effort, M3RecContext, ModelSpec, Stage
from m3rec_graph.errors import ConfigurationError
from m3rec_graph.llm.local_endpoint import local_base_url
from m3rec_graph.llm.registry import check_lifecycle, model_info, registry, resolve_effort
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
            raise ConfigurationError(
                "the local model is not a reasoning model: it takes no reasoning effort"
            )
        return local_model(stage)
    return openai_model(name, stage, effort, explicit_effort=effort is not None)


@dataclass(frozen=True, kw_only=True)
class ResolvedRouting:
    """What a run context resolves to: the routing label and each stage's `ModelSpec`."""

    label: str
    """The preset, plus any overrides (`hybrid+mar=gpt-4o-mini`): recorded in traces and usage."""
    mope: ModelSpec
    mote: ModelSpec
    mar: ModelSpec

    def spec(self, stage: Stage) -> ModelSpec:
        """Return the spec routed to `stage`."""
        specs = {"mope": self.mope, "mote": self.mote, "mar": self.mar}
        return specs[stage]


def resolve(ctx: M3RecContext) -> ResolvedRouting:
    """Return the model specs `ctx` routes each stage to, resolved once per distinct context (cached).

    Every routed model is checked against the registry's lifecycle when a context is
    first resolved: past its shutdown date it is refused, within 30 days of it a
    `ModelDeprecationWarning` is issued. The cache is keyed on the context and on
    what it leaves to the environment and to this module's tables (the default
    preset, today's date, the local server's URL, the preset's models, the default
    efforts), so a changed `OPENAI_API_KEY`, `M3REC_TODAY` or `M3REC_LOCAL_URL` is seen.

    Raises:
        ConfigurationError: An unknown preset, a retired model (`ModelRetiredError`), a
            Responses-only model, or an effort a model refuses.
    """
    preset = ctx.routing or default_preset()
    tables = (tuple(PRESETS.get(preset, {}).items()), tuple(DEFAULT_EFFORTS.items()))
    return _resolve(ctx, preset, registry_today(ctx.today), local_base_url(), tables)


@functools.lru_cache(maxsize=1024)
def _resolve(
    ctx: M3RecContext, preset: str, on: dt.date, local_url: str, tables: object
) -> ResolvedRouting:
    names = _check(ctx, preset, on)
    specs = {stage: _spec_for_name(names[stage], stage, ctx.efforts.get(stage)) for stage in STAGES}
    overrides = [f"{stage}={ctx.models[stage]}" for stage in STAGES if stage in ctx.models]
    label = preset if not overrides else f"{preset}+" + ",".join(overrides)
    return ResolvedRouting(label=label, mope=specs["mope"], mote=specs["mote"], mar=specs["mar"])


def _check(ctx: M3RecContext, preset: str, on: dt.date) -> dict[Stage, str]:
    """Return each stage's model name; refuse an unknown preset or a retired model (warn near shutdown)."""
    if preset not in PRESETS:
        raise ConfigurationError(
            f"unknown routing preset {preset!r}; choose one of {', '.join(PRESETS)}"
        )
    names: dict[Stage, str] = {**PRESETS[preset], **ctx.models}
    for model in sorted({names[stage] for stage in STAGES} - {"local", LOCAL_MODEL_NAME}):
        check_lifecycle(model, on, allow_retired=ctx.allow_retired)
    return names


def context_for(
    preset: str | None = None,
    overrides: Mapping[Stage, str] | None = None,
    *,
    efforts: Mapping[Stage, Effort] | None = None,
    allow_retired: bool = False,
    today: dt.date | str | None = None,
    **settings: Any,
) -> M3RecContext:
    """Build a run context from a preset name (default: `default_preset()`) and overrides, and check it now.

    The context records the preset by name (the default is fixed when this is called)
    and the overrides; `resolve` turns it into model specs. Every routed model is
    checked against the registry's lifecycle here, before any call: past its shutdown
    date it is refused, within 30 days of it a `ModelDeprecationWarning` is issued.

    Args:
        preset: A key of `PRESETS`.
        overrides: Stage -> model name, e.g. `{"mar": "gpt-6-sol"}`.
        efforts: Stage -> reasoning effort, e.g. `{"mar": "medium"}` (default: `DEFAULT_EFFORTS`,
            moved to the nearest effort each model accepts).
        allow_retired: Let a model past its shutdown date run, against an endpoint that
            still serves it (a local mirror, a proxy).
        today: The date lifecycle checks use, kept in the context (default: `registry.today()`
            when the run resolves it, which reads `M3REC_TODAY`).
        **settings: Other `M3RecContext` fields (`mar_mode`, `seed`, ...).

    Raises:
        ConfigurationError: An unknown preset, stage or setting, a retired model
            (`ModelRetiredError`), a Responses-only model, or an effort a model refuses.
    """
    name = preset or default_preset()
    day = today.isoformat() if isinstance(today, dt.date) else today
    try:
        ctx = M3RecContext(
            routing=name,
            models=dict(overrides or {}),
            efforts=dict(efforts or {}),
            allow_retired=allow_retired,
            today=day,
            **settings,
        )
    except TypeError as exc:
        raise ConfigurationError(f"bad context setting: {exc}") from exc
    _check(ctx, name, registry_today(ctx.today))  # uncached: warns on every call near a shutdown
    resolve(ctx)
    return ctx


def default_context() -> M3RecContext:
    """Return the context used when a caller passes none: every default (`M3RecContext()`)."""
    return M3RecContext()


def get_context(runtime: Runtime[M3RecContext]) -> M3RecContext:
    """Return the run's context: the `M3RecContext` passed, the one a dict validates into, or the defaults.

    Cheap (no resolution: `resolve` caches that per context).

    Raises:
        ConfigurationError: A foreign context object, e.g. a host graph's own context
            reaching a compiled m3rec graph added directly as its node (use `as_node`).
    """
    return M3RecContext.coerce(runtime.context)


def uses_local_server(ctx: M3RecContext) -> bool:
    """Return whether any stage of `ctx` is served by the local model server."""
    routed = resolve(ctx)
    return any(routed.spec(stage).base_url == local_base_url() for stage in STAGES)


if TYPE_CHECKING:
    RemoteContext = M3RecContext
    """Deprecated: the JSON run context is `M3RecContext` itself."""


def __getattr__(name: str) -> Any:
    if name == "RemoteContext":
        warnings.warn(
            "RemoteContext is deprecated: M3RecContext is the one run context and takes the same JSON "
            "(routing, models, efforts, ...); RemoteContext(...).resolve() is the context itself",
            DeprecationWarning,
            stacklevel=2,
        )
        return M3RecContext
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
