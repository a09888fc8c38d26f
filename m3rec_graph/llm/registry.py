"""The model registry: prices, lifecycle and capabilities of every model, as dated data.

`models.json` (next to this module) is the one place that says what a model
costs, when it shuts down and what its replacement is, which API and
structured-output method it needs, which reasoning efforts Chat Completions
accepts for it, and where temperature is allowed. Routing, request building,
usage costs, the cost dry run and the Batch API all read it through
`model_info`; no code tests a model's name.

A name the registry does not know (a vLLM or llama.cpp endpoint, a new model)
gets one warning and conservative defaults: json_schema, temperature allowed,
no reasoning parameters, and no price (its cost is `None`, not 0).

"Today" comes from one injectable clock, `today()`: an explicit date, else
`M3REC_TODAY=YYYY-MM-DD`, else the system date. Lifecycle checks take it as an
argument, so tests pin it and no test reads the wall clock.
"""

import datetime as dt
import functools
import json
import os
import warnings
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from m3rec_graph.context import EFFORTS as EFFORTS  # re-exported: every effort, weakest first
from m3rec_graph.context import Effort as Effort
from m3rec_graph.errors import ConfigurationError

Policy = Literal["always", "effort_none", "never"]
"""Where a parameter is accepted: at every effort, only at effort `none`, or not at all."""

Api = Literal["chat_completions", "responses"]

DEPRECATION_WARNING_DAYS = 30
"""A routed model this close to its shutdown date gets a warning."""

REGISTRY_PATH = Path(__file__).with_name("models.json")


class ModelDeprecationWarning(UserWarning):
    """A routed model shuts down soon (within `DEPRECATION_WARNING_DAYS`)."""


class UnknownModelWarning(UserWarning):
    """The registry does not know a routed model: conservative defaults apply."""


class ModelRetiredError(ConfigurationError):
    """A routed model is past its shutdown date (exit code 2 in the CLI)."""


class Price(BaseModel):
    """USD per 1M tokens, with where and when it was read."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: float
    output: float
    source: str
    taken: str


class Reasoning(BaseModel):
    """The reasoning efforts Chat Completions accepts for a model, and its default."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    efforts: tuple[Effort, ...]
    default: Effort


class ModelInfo(BaseModel):
    """One model's registry row."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = ""
    known: bool = True
    """False for a name the registry does not know (conservative defaults)."""
    released: dt.date | None = None
    shutdown: dt.date | None = None
    replacement: str | None = None
    """The replacement the provider's deprecations page names."""
    price: Price | None = None
    api: Api = "chat_completions"
    """`responses`: the model is served on the Responses API only."""
    structured_output: Literal["json_schema", "function_calling"] = "json_schema"
    reasoning: Reasoning | None = None
    """`None`: not a reasoning model (never send `reasoning_effort`)."""
    temperature: Policy = "always"
    function_calling: Policy = "always"
    """Function calling (tools) on Chat Completions."""
    logprobs: Policy = "always"
    encoding: str = "o200k_base"
    """The tiktoken encoding that counts this model's tokens."""
    sources: tuple[str, ...] = ()

    def accepts(self, policy: Policy, effort: Effort | None) -> bool:
        """Return whether a parameter under `policy` may be sent at `effort`."""
        if policy == "always":
            return True
        return policy == "effort_none" and (self.reasoning is None or effort == "none")

    def temperature_allowed(self, effort: Effort | None) -> bool:
        """Return whether `temperature` may be sent at `effort`."""
        return self.accepts(self.temperature, effort)

    def status(self, today: dt.date) -> Literal["active", "deprecated", "retired"]:
        """Return the lifecycle state on `today` (`deprecated`: a shutdown date is announced)."""
        if self.shutdown is None:
            return "active"
        return "retired" if today >= self.shutdown else "deprecated"


class Registry(BaseModel):
    """The whole registry file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    taken: str
    currency: str
    about: str
    batch_discount: float
    batch_source: str
    reasoning_allowance: dict[str, int | str] = Field(default_factory=dict)
    assumed_reasoning_tokens: dict[str, int | str] = Field(default_factory=dict)
    models: dict[str, ModelInfo]

    def allowance(self, effort: Effort | None) -> int:
        """Return the tokens added to an answer budget at `effort` (0 without reasoning)."""
        return 0 if effort is None else int(self.reasoning_allowance[effort])

    def assumed_reasoning(self, effort: Effort | None) -> int:
        """Return the reasoning tokens the dry run assumes per call at `effort` (an assumption)."""
        return 0 if effort is None else int(self.assumed_reasoning_tokens[effort])


@functools.cache
def registry(path: Path = REGISTRY_PATH) -> Registry:
    """Load the shipped registry (or another file in the same format), once."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        models = {name: {**row, "name": name} for name, row in raw.pop("models").items()}
        return Registry.model_validate({**raw, "models": models})
    except (OSError, ValueError, KeyError, ValidationError) as exc:
        raise ConfigurationError(f"{path}: not a valid model registry: {exc}") from exc


@functools.cache
def _unknown(name: str) -> ModelInfo:
    warnings.warn(
        f"model {name!r} is not in the model registry ({REGISTRY_PATH.name}): using json_schema, "
        "temperature, no reasoning parameters and no price (its cost is reported as null)",
        UnknownModelWarning,
        stacklevel=3,
    )
    return ModelInfo(name=name, known=False)


def model_info(name: str) -> ModelInfo:
    """Return `name`'s registry row, or conservative defaults (warned once) for an unknown name."""
    info = registry().models.get(name)
    return info if info is not None else _unknown(name)


def today(override: dt.date | str | None = None) -> dt.date:
    """Return the date lifecycle checks use: `override`, else `M3REC_TODAY`, else the system date.

    Raises:
        ConfigurationError: A date that is not `YYYY-MM-DD`.
    """
    value = override if override is not None else os.environ.get("M3REC_TODAY") or None
    if value is None:
        return dt.date.today()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise ConfigurationError(
            f"bad date {value!r} (M3REC_TODAY / today=): expected YYYY-MM-DD"
        ) from exc


def check_lifecycle(name: str, on: dt.date, *, allow_retired: bool = False) -> None:
    """Refuse a model past its shutdown date; warn when it shuts down within 30 days.

    Raises:
        ModelRetiredError: `name` shut down on or before `on` (unless `allow_retired`,
            for an endpoint that still serves it).
    """
    info = model_info(name)
    if info.shutdown is None:
        return
    if info.status(on) == "retired":
        if allow_retired:
            return
        instead = (
            f"; the provider names {info.replacement} as its replacement"
            if info.replacement
            else ""
        )
        raise ModelRetiredError(
            f"{name} was shut down on {info.shutdown.isoformat()} (today is {on.isoformat()}){instead}. "
            "Route another model, or pass --allow-retired (allow_retired=True) for an endpoint that still serves it."
        )
    days = (info.shutdown - on).days
    if days <= DEPRECATION_WARNING_DAYS:
        warnings.warn(
            f"{name} shuts down on {info.shutdown.isoformat()} ({days} days from {on.isoformat()})"
            + (f"; replacement: {info.replacement}" if info.replacement else ""),
            ModelDeprecationWarning,
            stacklevel=2,
        )


def resolve_effort(name: str, requested: Effort | None, *, explicit: bool) -> Effort | None:
    """Return the reasoning effort to send to `name` (`None`: send none).

    A stage's default effort moves to the nearest effort the model accepts (the
    first one at or above it, else its strongest); an effort the caller asked for
    explicitly must be accepted as is.

    Raises:
        ConfigurationError: An explicit effort the model does not accept, or any
            explicit effort for a model without reasoning.
    """
    info = model_info(name)
    if info.reasoning is None:
        if explicit and requested is not None:
            raise ConfigurationError(
                f"{name} is not a reasoning model: it takes no reasoning effort"
            )
        return None
    accepted = info.reasoning.efforts
    if requested is None:
        return info.reasoning.default
    if requested in accepted:
        return requested
    if explicit:
        raise ConfigurationError(
            f"{name} does not accept reasoning effort {requested!r} on Chat Completions; "
            f"it accepts {', '.join(accepted)}"
        )
    stronger = [e for e in accepted if EFFORTS.index(e) >= EFFORTS.index(requested)]
    return stronger[0] if stronger else accepted[-1]
