"""Per-run settings: which model each stage calls, the re-ask budget, MAR mode, seed."""

from dataclasses import dataclass, field
from typing import Literal

Stage = Literal["mope", "mote", "mar"]
STAGES: tuple[Stage, ...] = ("mope", "mote", "mar")

StructuredMethod = Literal["json_schema", "json_mode", "function_calling"]


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """Which chat model a stage calls, and how.

    Every model is created through `langchain_openai.ChatOpenAI`, so any
    OpenAI-compatible endpoint works: leave `base_url` as `None` to use
    OpenAI (or `OPENAI_BASE_URL`), or point it at a local server.
    """

    name: str
    temperature: float = 0.0
    max_tokens: int = 1024
    base_url: str | None = None
    api_key: str | None = None
    """`None` reads `OPENAI_API_KEY`; a local server takes any placeholder."""
    timeout_s: float = 120.0
    max_retries: int = 2
    """Transport retries inside the OpenAI client (429/5xx/connection; honours Retry-After)."""
    structured_method: StructuredMethod = "json_schema"
    """The strongest constraint the endpoint supports; OpenAI and llama.cpp accept `json_schema`."""
    tokenizer_model: str | None = None
    """OpenAI model whose tiktoken encoding approximates this one when usage is missing."""


@dataclass(frozen=True, kw_only=True)
class M3RecContext:
    """Static run context. Pass it as `graph.ainvoke(inputs, context=M3RecContext(...))`.

    Build one from a named routing preset with `m3rec_graph.routing.context_for`.
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
    max_schema_retries: int = 2
    """Re-asks with the validation error after a failed answer, per stage call."""
    seed: int = 0
    """Seeds the order candidates are shown in (position bias) and so the tie-breaks."""
    prompt_overrides: dict[str, str] = field(default_factory=dict)
    """Stage -> prompt file path to use instead of the shipped one."""

    def model_for(self, stage: Stage) -> ModelSpec:
        """Return the model spec routed to `stage`."""
        specs = {"mope": self.mope_model, "mote": self.mote_model, "mar": self.mar_model}
        return specs[stage]

