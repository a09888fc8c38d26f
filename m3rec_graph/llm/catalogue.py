"""`m3rec models`: what each routed model is, by the registry and (with a key) by the provider.

The registry is dated data; the provider's `GET /v1/models` carries each model's
`shutdown_date` (YYYY-MM-DD or null, per OpenAI's deprecations page,
https://developers.openai.com/api/docs/deprecations), so with a key the listing
also shows what the provider says today and flags any disagreement. Without a
key, or when the endpoint does not answer within a few seconds, the registry
alone is shown and the listing says so.
"""

import datetime as dt
import os
from dataclasses import dataclass

import openai

from m3rec_graph.llm.registry import ModelInfo, model_info, registry, today

PROVIDER_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class ModelRow:
    """One line of `m3rec models`."""

    info: ModelInfo
    routed_by: tuple[str, ...]
    """`preset:stage` entries that route this model."""
    status: str
    provider_listed: bool | None = None
    """Whether `GET /v1/models` lists it (`None`: not asked)."""
    provider_shutdown: str | None = None


@dataclass(frozen=True)
class ModelListing:
    """The rows, the date they assume, and what the provider said."""

    rows: list[ModelRow]
    today: dt.date
    provider_note: str


def _routed() -> dict[str, list[str]]:
    from m3rec_graph.llm.routing import LOCAL_MODEL_NAME, PRESETS  # noqa: PLC0415 - routing imports this layer

    routed: dict[str, list[str]] = {}
    for preset, stages in PRESETS.items():
        for stage, name in stages.items():
            routed.setdefault(LOCAL_MODEL_NAME if name == "local" else name, []).append(
                f"{preset}:{stage}"
            )
    return routed


def provider_models(
    timeout_s: float = PROVIDER_TIMEOUT_S,
) -> tuple[dict[str, str | None] | None, str]:
    """Return model id -> shutdown_date from the provider's `GET /v1/models`, and a note.

    `None` (with the reason in the note) when no key is set or the call fails:
    the listing then stands on the registry alone.
    """
    if not os.environ.get("OPENAI_API_KEY"):
        return None, "no OPENAI_API_KEY: registry only (the provider's GET /v1/models was not read)"
    try:
        client = openai.OpenAI(timeout=timeout_s, max_retries=0)
        listed = {m.id: _shutdown_date(m) for m in client.models.list()}
    except openai.OpenAIError as exc:
        return (
            None,
            f"GET /v1/models failed ({type(exc).__name__}: {str(exc)[:120]}): registry only",
        )
    return listed, f"GET /v1/models at {client.base_url} listed {len(listed)} models"


def _shutdown_date(model: object) -> str | None:
    extra = getattr(model, "model_extra", None) or {}
    value = extra.get("shutdown_date")
    return str(value) if value else None


def list_models(
    *, every: bool = False, check_provider: bool = True, on: dt.date | None = None
) -> ModelListing:
    """Return the routed models (or, with `every`, every registry model) and their status on `on`."""
    day = on or today()
    routed = _routed()
    names = list(registry().models) if every else list(routed)
    provider, note = (
        provider_models() if check_provider else (None, "provider not asked (--offline)")
    )
    rows = []
    for name in names:
        info = model_info(name)
        rows.append(
            ModelRow(
                info=info,
                routed_by=tuple(routed.get(name, [])),
                status=info.status(day) if info.known else "unknown",
                provider_listed=None if provider is None else name in provider,
                provider_shutdown=None if provider is None else provider.get(name),
            )
        )
    return ModelListing(rows=rows, today=day, provider_note=note)


def _efforts(info: ModelInfo) -> str:
    if info.reasoning is None:
        return "no reasoning"
    return f"{','.join(info.reasoning.efforts)} (default {info.reasoning.default})"


def _provider(row: ModelRow) -> str:
    if row.provider_listed is None:
        return ""
    if not row.provider_listed:
        return " | provider: not listed"
    registry_date = row.info.shutdown.isoformat() if row.info.shutdown else None
    flag = "" if row.provider_shutdown == registry_date else " (differs from the registry!)"
    return f" | provider shutdown_date: {row.provider_shutdown or 'none'}{flag}"


def format_models(listing: ModelListing) -> str:
    """Render a listing as text, one block per model."""
    reg = registry()
    lines = [
        f"models as of {listing.today.isoformat()} (registry taken {reg.taken}; M3REC_TODAY=YYYY-MM-DD sets the date)",
        listing.provider_note,
        "",
    ]
    for row in listing.rows:
        info = row.info
        shutdown = info.shutdown.isoformat() if info.shutdown else "none announced"
        replacement = f", replacement {info.replacement}" if info.replacement else ""
        price = (
            f"${info.price.input:g} in / ${info.price.output:g} out per 1M (taken {info.price.taken})"
            if info.price
            else "no price (cost null)"
        )
        lines.append(f"{info.name}: {row.status}; shutdown {shutdown}{replacement}{_provider(row)}")
        lines.append(f"  routed by: {', '.join(row.routed_by) or '-'}")
        lines.append(f"  price: {price}")
        lines.append(
            f"  api: {info.api}; structured output: {info.structured_output}; reasoning: {_efforts(info)};"
            f" temperature: {info.temperature}; function calling: {info.function_calling}; logprobs: {info.logprobs}"
        )
    return "\n".join(lines)
