"""Per-run settings: which model each stage calls, the re-ask budget, MAR mode, seed.

`M3RecContext` is the one run context: flat, JSON-friendly, hashable, every field
with a default (like the LangGraph react-agent template's `Context`). It names
models, reasoning efforts and settings only. Endpoints, keys and rate limits are
not in it: the chat model factory takes them from the environment, the model
registry and `build_graph(chat_models=...)`. The context travels into run
metadata and checkpoints, so it must never carry a secret or an address.

`m3rec_graph.llm.routing` turns a context into each stage's `ModelSpec`, once per
distinct context (cached).
"""

import datetime as dt
import json
import math
import os
import warnings
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal, NoReturn, Protocol, TypeAlias, TypeVar, get_args

from m3rec_graph.errors import ConfigurationError

Stage = Literal["mope", "mote", "mar"]
STAGES: tuple[Stage, ...] = ("mope", "mote", "mar")

StructuredMethod = Literal["json_schema", "json_mode", "function_calling"]

Ablation = Literal["none", "no_mope", "no_mote", "no_mar"]
ABLATIONS: tuple[Ablation, ...] = ("none", "no_mope", "no_mote", "no_mar")

MarMode = Literal["listwise", "pointwise"]

MarAnswer = Literal["listwise", "scores_first"]
"""What a listwise MAR call asks for: the paper's full judgement, or scores first (`M3RecContext.mar_answer`)."""

Effort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]
EFFORTS: tuple[Effort, ...] = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
"""Every `reasoning_effort` value openai-python knows, weakest first."""


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """Which chat model a stage calls, and how.

    Every model is created through `langchain_openai.ChatOpenAI`, so any
    OpenAI-compatible endpoint works: leave `base_url` as `None` to use
    OpenAI (or `OPENAI_BASE_URL`), or point it at a local server.
    """

    name: str
    temperature: float | None = 0.0
    """`None`: not sent (reasoning models refuse it above effort `none`; see the model registry)."""
    max_tokens: int = 1024
    """The answer budget, sent as `max_completion_tokens`; for a reasoning model it includes
    the reasoning allowance of its effort (reasoning and answer share it)."""
    reasoning_effort: str | None = None
    """Sent as Chat Completions' `reasoning_effort`; `None` for models without reasoning."""
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    """`None` reads `OPENAI_API_KEY`; a local server takes any placeholder. Kept out of the repr."""
    timeout_s: float = 120.0
    max_retries: int = 2
    """Retries of one call inside the OpenAI client: 408/409/429/5xx, timeouts and dropped
    connections, with exponential backoff that honours `Retry-After`. The client is the one
    owner of retries; the graph adds none (a call makes at most `max_retries + 1` attempts)."""
    structured_method: StructuredMethod = "json_schema"
    """The strongest constraint the endpoint supports; OpenAI and llama.cpp accept `json_schema`."""
    tokenizer_model: str | None = None
    """OpenAI model whose tiktoken encoding approximates this one when usage is missing."""
    requests_per_second: float | None = None
    """Client-side request limit for this model (`None`: unlimited).

    Specs with the same `name`, `base_url` and limit share one limiter per
    process, whatever their other settings, because a provider's rate limit
    counts requests to the model, not per stage. Transport retries inside the
    OpenAI client are not counted against it.
    """
    tokens_per_minute: int | None = None
    """Client-side token budget for this model (`None`: unlimited).

    Before it is sent, each request books its prompt and answer-schema tokens
    plus `max_tokens` (what a provider reserves when it admits a request), and
    requests are paced so that the booked tokens flow at `tokens_per_minute / 60`
    per second with no burst. Shared like `requests_per_second` (same `name`,
    `base_url` and limit); set it a little under the provider's limit, and keep
    `max_tokens` close to the answers' real size, since it is booked in full.
    See `m3rec_graph.llm.rate_limits`.
    """
    max_inflight_requests: int | None = None
    """At most this many requests in flight at once to this endpoint (`None`: no cap).

    One cap per `base_url` and value for the whole process: it spans stages,
    models on that endpoint, concurrent graph runs and event loops. Give every
    spec of one endpoint the same value (different values make separate caps).
    """

    def __post_init__(self) -> None:
        rps = self.requests_per_second
        is_number = isinstance(rps, int | float) and not isinstance(rps, bool)
        if rps is not None and not (is_number and math.isfinite(rps) and rps > 0):
            raise ConfigurationError(f"{self.name}: requests_per_second must be a number > 0, got {rps!r}")
        for name in ("tokens_per_minute", "max_inflight_requests"):
            value = getattr(self, name)
            is_int = isinstance(value, int) and not isinstance(value, bool)
            if value is not None and not (is_int and value >= 1):
                raise ConfigurationError(
                    f"{self.name}: {name} must be an integer >= 1, got {value!r}"
                )
        tpm = self.tokens_per_minute
        if tpm is not None and tpm <= self.max_tokens:
            raise ConfigurationError(
                f"{self.name}: tokens_per_minute ({tpm}) must exceed max_tokens "
                f"({self.max_tokens}): every request books max_tokens, so none would fit"
            )


K = TypeVar("K", bound=str)
V = TypeVar("V", bound=str)


class FrozenMap(dict[K, V]):
    """A read-only dict that hashes by content: the mapping fields of a hashable context.

    It is a `dict`, so it serialises as a JSON object (json, orjson, msgpack) and
    compares equal to a plain dict with the same items.
    """

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(frozenset(self.items()))

    def __reduce__(self) -> tuple[type["FrozenMap[K, V]"], tuple[dict[K, V]]]:
        # pickle and copy.deepcopy would rebuild a dict subclass item by item (`__setitem__`).
        return (type(self), (dict(self),))

    def _read_only(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError("a context's mappings are read-only: build a new context (dataclasses.replace)")

    __setitem__ = __delitem__ = _read_only
    clear = pop = popitem = setdefault = update = __ior__ = _read_only


class FrozenJson(FrozenMap[str, Any]):
    """A read-only JSON object that hashes by its canonical text (nested values allowed)."""

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(json.dumps(self, sort_keys=True, separators=(",", ":")))


class SupportsModelDump(Protocol):
    """A pydantic model, such as `m3rec_graph.fusion.FusionConfig` (this layer sits below it)."""

    def model_dump(self, *, mode: str = ...) -> dict[str, Any]:
        """Return the model's fields (`mode="json"`: as JSON values)."""
        ...


if TYPE_CHECKING:
    FusionSetting: TypeAlias = str | os.PathLike[str] | Mapping[str, Any] | SupportsModelDump | None
else:  # what pydantic sees (the LangGraph server's context schema, TypeAdapter): JSON only
    FusionSetting: TypeAlias = str | Mapping[str, Any] | None
"""`M3RecContext.fusion`: a path or a config; as JSON, a string or an object (or null)."""


@dataclass(frozen=True, kw_only=True)
class M3RecContext:
    """The run context. Pass it as `graph.ainvoke(inputs, context=M3RecContext(...))`, or as JSON.

    Every field has a default, so `M3RecContext()` is the default routing and a
    remote caller sends only what it changes, e.g. `{"routing": "hybrid", "models":
    {"mar": "gpt-6-sol"}, "efforts": {"mar": "medium"}}`. A `dict` context is turned
    into this type by LangGraph (`context_schema`) or by `M3RecContext.coerce`;
    unset or `null` fields keep their defaults. `m3rec_graph.llm.routing.context_for`
    builds one from a preset and checks it at once.

    Raises:
        ConfigurationError: A field of the wrong type, an unknown stage, an unknown
            reasoning effort, MAR mode or ablation, or a bad date.
    """

    routing: str | None = None
    """A key of `PRESETS`; unset: `default_preset()` when the run starts (`hybrid` with an
    OpenAI key, else `local`)."""
    models: Mapping[Stage, str] = field(default_factory=FrozenMap)
    """Stage -> model name overrides, as `--model STAGE=NAME` on the command line."""
    efforts: Mapping[Stage, Effort] = field(default_factory=FrozenMap)
    """Stage -> reasoning effort, as `--effort STAGE=EFFORT` (default: `routing.DEFAULT_EFFORTS`,
    moved to the nearest effort each model accepts; an explicit one must be accepted as is)."""
    allow_retired: bool = False
    """Let a model past its shutdown date run, against an endpoint that still serves it."""
    today: str | None = None
    """The date (`YYYY-MM-DD`) lifecycle checks use; unset: `M3REC_TODAY`, else the system date."""
    mar_mode: MarMode = "listwise"
    """`listwise` scores a chunk per call; `pointwise` is the paper's one call per candidate."""
    mar_chunk_size: int = 10
    """Candidates per listwise call: small enough for a 135M local model's output budget."""
    mar_answer: MarAnswer = "listwise"
    """What listwise MAR asks for. `listwise` (the paper's answer): a score, the matched
    motivations and a rationale for every candidate in one call per chunk.
    `scores_first`: one call per chunk asks for scores only (`prompts/mar_scores.toml`);
    once every score is in, the ranking is final and streamed (`ranking_ready`), and one
    more call asks for the matched motivations and rationales of the top
    `mar_rationale_k` only (`prompts/mar_rationales.toml`; `rationales_ready` when they
    are in). The others keep an empty rationale. A shorter path to the ranked list, and
    fewer output tokens, for a different question than the paper asks: it changes
    quality (docs/serving.md). Pointwise MAR ignores it."""
    mar_rationale_k: int = 5
    """`scores_first`: how many of the top items get a rationale (the request's `k` when smaller)."""
    max_history_items: int = 20
    """MOPE reads the most recent items only: the method targets short histories, and
    a 200-item history would overflow a small model's context."""
    max_incremental_items: int = 3
    """Profile memory: when the stored profile's history window is this window minus up to
    this many newest items (the window may also have slid by as many of its oldest items,
    once `max_history_items` is reached), MOPE updates the stored profile from the new items
    only, when that prompt is shorter than the whole window's (`m3rec_graph.stages.incremental`). 0: exact-match memory only, as `m3rec eval` runs."""
    max_schema_retries: int = 2
    """Re-asks with the validation error after a failed answer, per stage call."""
    seed: int = 0
    """Seeds the order candidates are shown in (position bias) and so the tie-breaks."""
    prompt_overrides: Mapping[str, str] = field(default_factory=FrozenMap)
    """Stage prompt name -> prompt file path to use instead of the shipped one."""
    ablation: Ablation = "none"
    """Run the same graph with one stage switched off (the paper's ablations):

    - `none`: the full pipeline.
    - `no_mope` (w/o MOPE): no MOPE call; MAR reads the raw recent history instead
      of a profile, and the deterministic keyword profile stands in wherever a
      profile is needed (the overlap fallback, the output's `profile`).
    - `no_mote` (w/o MOTE): no MOTE call and no trait cache; MAR reads each
      candidate's raw text instead of its traits (the traits are neutral).
    - `no_mar` (w/o MAR): no MAR call; candidates are ranked by the deterministic
      profile-trait overlap (`source="fallback"`).

    What an ablation switches off is the configuration, not a failure: it adds no
    `degraded` entries.
    """
    fusion: FusionSetting = None
    """Score fusion: `None` (the default) is the routing preset's default, `"off"` ranks by MAR's score.

    The OpenAI presets' default is off: the ranking is MAR's, as the paper's. The
    offline `local` preset's is the shipped `"local"` config, fit on validation cases
    with the local model (its MAR alone ranks near chance; docs/results.md), unless
    `models` overrides a stage (`m3rec_graph.fusion.PRESET_FUSION`).

    Fused, the ranking follows a weighted sum of per-request z-scores of MAR's
    score, the profile-trait overlap, TF-IDF text similarity and the candidates'
    `prior` (`RankedItem.fused_score`, `score_parts`), weighted by a fusion config:
    `"default"` (shipped, hand-set weights), `"local"`, a path to a config file (what
    `m3rec fit-fusion` writes), or the config itself (a `FusionConfig`, or its JSON
    fields). A stage that only feeds zero-weight signals does not run (README,
    "Fusion"). A path is kept as a string and a config as its JSON fields, so the
    context stays JSON and hashable; the config is read and checked when a run starts.
    """

    def __post_init__(self) -> None:
        for f in fields(self):  # JSON `null`: the field's default
            if getattr(self, f.name) is None and f.default is not None:
                if f.default is not MISSING:
                    object.__setattr__(self, f.name, f.default)
                elif f.default_factory is not MISSING:
                    object.__setattr__(self, f.name, f.default_factory())
        _check_type("routing", self.routing, (str, type(None)))
        _check_type("allow_retired", self.allow_retired, (bool,))
        for name in ("mar_chunk_size", "mar_rationale_k", "max_history_items", "max_incremental_items", "max_schema_retries", "seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigurationError(f"bad context setting {name}={value!r}: expected an integer")
        if self.max_incremental_items < 0:
            raise ConfigurationError(
                f"bad context setting max_incremental_items={self.max_incremental_items}: expected 0 or more"
            )
        _check_choice("mar_mode", self.mar_mode, get_args(MarMode))
        _check_choice("mar_answer", self.mar_answer, get_args(MarAnswer))
        if self.mar_rationale_k < 1:
            raise ConfigurationError(f"bad context setting mar_rationale_k={self.mar_rationale_k}: expected 1 or more")
        _check_choice("ablation", self.ablation, ABLATIONS)
        if isinstance(self.today, dt.date):  # context_for(today=date)
            object.__setattr__(self, "today", self.today.isoformat())
        _check_type("today", self.today, (str, type(None)))
        if self.today is not None:
            try:
                dt.date.fromisoformat(self.today)
            except ValueError as exc:
                raise ConfigurationError(f"bad context setting today={self.today!r}: expected YYYY-MM-DD") from exc
        models = _frozen_map("models", self.models)
        for stage, model in models.items():
            if stage not in STAGES or not model.strip():
                raise ConfigurationError(
                    f"bad model override {f'{stage}={model}'!r}: expected STAGE=MODEL with STAGE one of "
                    f"{', '.join(STAGES)}"
                )
        efforts = _frozen_map("efforts", self.efforts)
        for stage, effort in efforts.items():
            if stage not in STAGES:
                raise ConfigurationError(
                    f"bad reasoning effort override {f'{stage}={effort}'!r}: STAGE must be one of {', '.join(STAGES)}"
                )
            if effort not in EFFORTS:
                raise ConfigurationError(
                    f"bad reasoning effort {effort!r} for {stage}: expected one of {', '.join(EFFORTS)}"
                )
        object.__setattr__(self, "models", FrozenMap({s: m.strip() for s, m in models.items()}))
        object.__setattr__(self, "efforts", efforts)
        object.__setattr__(self, "prompt_overrides", _frozen_map("prompt_overrides", self.prompt_overrides))
        object.__setattr__(self, "fusion", _fusion_setting(self.fusion))

    @classmethod
    def coerce(cls, value: object) -> "M3RecContext":
        """Return the run context `value` stands for: itself, its fields as a dict, or `None` (the defaults).

        A graph run hands its nodes whatever context the caller passed. A compiled
        m3rec graph added directly as a node of a host graph gets the host's context,
        which m3rec cannot read: that raises instead of silently running with the
        default routing.

        Raises:
            ConfigurationError: Any other object (a host's own context type), a dict with
                fields m3rec does not have, or a bad field (see the class).
        """
        if isinstance(value, cls):
            return value
        if value is None:
            return cls()
        if isinstance(value, Mapping):
            known = {f.name for f in fields(cls)}
            unknown = sorted(str(key) for key in value if key not in known)
            if unknown:
                raise ConfigurationError(
                    f"unknown m3rec context field(s) {', '.join(unknown)}: expected some of {', '.join(sorted(known))}"
                )
            return cls(**{str(key): item for key, item in value.items()})
        raise ConfigurationError(
            f"m3rec got a context of type {type(value).__module__}.{type(value).__qualname__}, which it cannot "
            "read: pass an M3RecContext, a dict of its fields, or no context (the default routing). A compiled "
            "m3rec graph added directly as a node of a host graph receives the host's context; add it with "
            "m3rec_graph.as_node(...) instead, which runs m3rec with its own context."
        )

    # ------------------------------------------------------------- the resolved models
    # Shortcuts to `m3rec_graph.llm.routing.resolve`, which resolves each distinct
    # context once per process (cached); routing sits above this module.

    def model_for(self, stage: Stage) -> ModelSpec:
        """Return the `ModelSpec` routing resolves `stage` to (cached per context).

        Raises:
            ConfigurationError: An unknown preset, a retired model, or an effort a model refuses.
        """
        from m3rec_graph.llm.routing import resolve  # noqa: PLC0415 - routing imports this module

        return resolve(self).spec(stage)

    @property
    def mope_model(self) -> ModelSpec:
        """MOPE's resolved `ModelSpec` (`model_for("mope")`)."""
        return self.model_for("mope")

    @property
    def mote_model(self) -> ModelSpec:
        """MOTE's resolved `ModelSpec` (`model_for("mote")`)."""
        return self.model_for("mote")

    @property
    def mar_model(self) -> ModelSpec:
        """MAR's resolved `ModelSpec` (`model_for("mar")`)."""
        return self.model_for("mar")

    @property
    def routing_label(self) -> str:
        """The routing as traces and usage record it: the preset, plus any overrides (`hybrid+mar=gpt-4o`)."""
        from m3rec_graph.llm.routing import resolve  # noqa: PLC0415 - routing imports this module

        return resolve(self).label

    def resolve(self) -> "M3RecContext":
        """Deprecated (from `RemoteContext`): check this context's routing now and return it.

        Raises:
            ConfigurationError: As `model_for`.
        """
        warnings.warn(
            "M3RecContext.resolve() is deprecated: the context is already the run context "
            "(RemoteContext is now M3RecContext); use m3rec_graph.llm.routing.resolve(ctx) for the model specs",
            DeprecationWarning,
            stacklevel=2,
        )
        self.model_for("mope")
        return self


def _check_type(name: str, value: object, types: tuple[type, ...]) -> None:
    if not isinstance(value, types):
        expected = " or ".join("null" if t is type(None) else t.__name__ for t in types)
        raise ConfigurationError(f"bad context setting {name}={value!r}: expected {expected}")


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigurationError(f"bad context setting {name}={value!r}: expected one of {', '.join(choices)}")


def _frozen_map(name: str, value: object) -> FrozenMap[Any, Any]:
    if isinstance(value, FrozenMap):
        return value
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"bad context setting {name}={value!r}: expected a mapping of names to names")
    pairs = dict(value.items())
    if not all(isinstance(key, str) and isinstance(item, str) for key, item in pairs.items()):
        raise ConfigurationError(f"bad context setting {name}={value!r}: keys and values must be strings")
    return FrozenMap(pairs)


def _fusion_setting(value: object) -> str | FrozenJson | None:
    """Normalise `fusion` to `None`, a path string, or a frozen JSON object (the config's fields)."""
    if value is None or isinstance(value, FrozenJson):
        return value
    if isinstance(value, str | os.PathLike):
        path = os.fspath(value)
        if isinstance(path, str) and path.strip():
            return path
    else:
        dump = getattr(value, "model_dump", None)
        fields_ = dump(mode="json") if callable(dump) else value
        if isinstance(fields_, Mapping):
            try:  # a deep, JSON-only copy: nothing mutable is shared with the caller
                return FrozenJson(json.loads(json.dumps(dict(fields_), allow_nan=False)))
            except (TypeError, ValueError):
                pass
    raise ConfigurationError(
        f"bad context setting fusion={value!r}: expected null, \"default\", a fusion config path, "
        "or a fusion config (a FusionConfig or its JSON fields)"
    )
