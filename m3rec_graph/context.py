"""Per-run settings: which model each stage calls, the re-ask budget, MAR mode, seed."""

import math
from dataclasses import dataclass, field
from typing import Literal

from m3rec_graph.errors import ConfigurationError

Stage = Literal["mope", "mote", "mar"]
STAGES: tuple[Stage, ...] = ("mope", "mote", "mar")

StructuredMethod = Literal["json_schema", "json_mode", "function_calling"]

Ablation = Literal["none", "no_mope", "no_mote", "no_mar"]
ABLATIONS: tuple[Ablation, ...] = ("none", "no_mope", "no_mote", "no_mar")


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


@dataclass(frozen=True, kw_only=True)
class M3RecContext:
    """Static run context. Pass it as `graph.ainvoke(inputs, context=M3RecContext(...))`.

    Build one from a named routing preset with `m3rec_graph.llm.routing.context_for`.
    """

    mope_model: ModelSpec
    mote_model: ModelSpec
    mar_model: ModelSpec
    routing: str = "custom"
    """Name of the preset these specs came from (recorded in traces and usage)."""
    mar_mode: Literal["listwise", "pointwise"] = "listwise"
    """`listwise` scores a chunk per call; `pointwise` is the paper's one call per candidate."""
    mar_chunk_size: int = 10
    """Candidates per listwise call: small enough for a 135M local model's output budget."""
    max_history_items: int = 20
    """MOPE reads the most recent items only: the method targets short histories, and
    a 200-item history would overflow a small model's context."""
    max_schema_retries: int = 2
    """Re-asks with the validation error after a failed answer, per stage call."""
    seed: int = 0
    """Seeds the order candidates are shown in (position bias) and so the tie-breaks."""
    prompt_overrides: dict[str, str] = field(default_factory=dict)
    """Stage -> prompt file path to use instead of the shipped one."""
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

    def model_for(self, stage: Stage) -> ModelSpec:
        """Return the model spec routed to `stage`."""
        specs = {"mope": self.mope_model, "mote": self.mote_model, "mar": self.mar_model}
        return specs[stage]

