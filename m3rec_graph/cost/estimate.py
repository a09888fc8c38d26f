"""Dry-run cost estimates of routing presets: real prompts, tiktoken counts, the price table.

`estimate_costs` takes the users and candidate sets the evaluation harness would
draw (`datasets.build_requests`, same seed and cut), renders every stage call's
prompt with the stages' own code (`MopeStage` / `MoteStage` / `MarStage`
`.variables` + `load_prompt(...).format`), and counts it with the tiktoken
encoding of the model each preset routes the stage to. Nothing is sent anywhere.

What is exact and what is estimated:

* **Input tokens (exact for the prompt text).** Each call's messages are counted
  like `tokens.count_messages`, by langchain-openai's own rules
  (`ChatOpenAI.get_num_tokens_from_messages`: 3 tokens per message + role +
  content, + 3 to prime the reply). MAR's prompt embeds MOPE's profile and MOTE's traits, which
  a dry run does not have: it uses the *typical answers* below in their place.
* **Schema tokens (estimated, an upper bound).** The answer schema travels with
  every call: as `response_format` (json_schema) or, for gpt-3.5-turbo, as a
  forced function call (`tools`); `openai_requests` builds those parameters by
  the graph's own ChatOpenAI path. OpenAI bills function definitions as input
  tokens and injects response-format schemas into the prompt, but renders both
  more compactly than their JSON, so the compact JSON's count is an upper bound.
  They are shown separately and included by default (`include_schema`).
* **Output tokens (estimated from the answer schema).** For every call a
  *typical answer* is built that validates against that call's answer schema
  (the real ids of its history or candidates, levels 0-10, evidence ids, a
  summary, trait phrases, matched dimensions and a rationale of the sizes in
  `OutputAssumptions`), serialised as compact JSON and counted. Replace the
  model with measured per-call averages from a real run with `output_overrides`.
* **Trait store.** MOTE runs once per distinct item (store key: item id, text
  hash, model, prompt version) across all sampled users, starting from an empty
  cache unless a filled one is given; items without text get neutral traits
  and no call, as in the graph.
* **Reasoning tokens (an assumption).** A reasoning model bills its reasoning
  as output tokens. They cannot be measured offline, so each call at effort `e`
  adds `assumed_reasoning_tokens[e]` from the model registry (0 at `none` and for
  models without reasoning), shown in their own column; override them with
  `reasoning_overrides` (`--reasoning-tokens low=300`).
* **Not modelled:** re-asks after invalid answers (assumed none), provider-side
  prompt caching discounts, and retries.
"""

import json
import re
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from langchain_core.messages import BaseMessage, convert_to_messages
from langgraph.store.base import BaseStore
from langgraph.store.memory import InMemoryStore
from pydantic import BaseModel

from m3rec_graph.context import STAGES, ModelSpec, Stage
from m3rec_graph.contracts.request import RecommendationRequest, parse_request
from m3rec_graph.contracts.schemas import (
    Dimension,
    Item,
    ItemTraits,
    MotivationProfile,
    PointwiseScore,
    TraitsAnswer,
    listwise_contract,
    profile_from_answer,
)
from m3rec_graph.errors import ConfigurationError
from m3rec_graph.evaluation.datasets import build_requests, load_dataset
from m3rec_graph.llm.registry import EFFORTS, registry
from m3rec_graph.llm.request_body import (
    SCHEMA_PARAMS,
    params_text,
    structured_params,
    structured_params_for_json,
)
from m3rec_graph.llm.routing import PRESETS, context_for
from m3rec_graph.llm.tokens import message_counter, text_encoder
from m3rec_graph.llm.usage import PriceTable, price_table
from m3rec_graph.prompts.loader import load_prompt
from m3rec_graph.stages.fallbacks import fallback_profile
from m3rec_graph.stages.mar import MarStage
from m3rec_graph.stages.mope import MopeStage
from m3rec_graph.stages.mote import MoteStage
from m3rec_graph.stages.order import shown_order
from m3rec_graph.state import MarCandidate, MarState, MopeState, MoteState
from m3rec_graph.storage.memory import read_traits_sync

MarMode = Literal["listwise", "pointwise"]
MAR_MODES: tuple[MarMode, ...] = ("listwise", "pointwise")

# --------------------------------------------------------------------------- typical answers


@dataclass(frozen=True)
class OutputAssumptions:
    """Sizes of the typical answers that stand in for model output in a dry run.

    The defaults follow the prompts' instructions ("one short paragraph", "2 to 5
    concise phrases", "one short sentence") and stay inside the answer schemas'
    limits (summary <= 800 characters, rationale <= 240, <= 5 evidence ids).
    """

    summary_words: int = 60
    """Words of MOPE's `summary` ("one short paragraph")."""
    evidence_per_dimension: int = 2
    """History ids MOPE cites per dimension (fewer when the history is shorter)."""
    trait_phrases: int = 4
    """MOTE's trait phrases (2-5), about three words each."""
    matched_per_candidate: int = 2
    """Dimensions MAR names as matched per candidate (0-3)."""
    rationale_words: int = 18
    """Words of MAR's rationale ("one short sentence")."""


PROFILE_LEVELS: dict[Dimension, int] = {
    Dimension.FUNCTIONAL: 7,
    Dimension.QUALITY: 6,
    Dimension.AESTHETIC: 8,
    Dimension.SELF_CARE: 5,
    Dimension.SOCIAL: 2,
    Dimension.VALUE: 4,
    Dimension.CONVENIENCE: 6,
}
TRAIT_LEVELS: dict[Dimension, int] = {
    Dimension.FUNCTIONAL: 6,
    Dimension.QUALITY: 7,
    Dimension.AESTHETIC: 8,
    Dimension.SELF_CARE: 4,
    Dimension.SOCIAL: 2,
    Dimension.VALUE: 5,
    Dimension.CONVENIENCE: 6,
}
SUMMARY_TEXT = (
    "This shopper keeps returning to nail polish, nail care and hair styling products from "
    "salon brands, choosing bright, long-lasting colours and finishes that look professional. "
    "The purchases suggest someone who enjoys treating themselves to small beauty upgrades, cares "
    "more about quality and appearance than about price, and prefers products that are quick and "
    "easy to use at home between salon visits, often buying related items together."
)
TRAIT_PHRASES = (
    "long-lasting bright colour",
    "salon-quality glossy finish",
    "quick easy application",
    "gentle on skin",
    "good value multi-pack",
)
RATIONALE_TEXT = (
    "Its long-lasting salon-quality colour serves the shopper's strong aesthetic and quality "
    "motivations, and quick application at home suits their wish for convenience and easy "
    "everyday use."
)


def _words(text: str, n: int) -> str:
    words = text.split()
    return " ".join(words[i % len(words)] for i in range(max(1, n)))


def typical_profile_answer(history_ids: Sequence[str], a: OutputAssumptions) -> dict[str, Any]:
    """Return a MOPE answer of typical size that validates against `profile_contract(history_ids)`."""
    ids = list(dict.fromkeys(history_ids))
    per_dim = min(a.evidence_per_dimension, len(ids), 5)
    answer: dict[str, Any] = {}
    for n, dim in enumerate(Dimension):
        evidence = [ids[(n + k) % len(ids)] for k in range(per_dim)] if ids else []
        answer[dim.value] = {"strength": PROFILE_LEVELS[dim], "evidence": evidence}
    answer["summary"] = _words(SUMMARY_TEXT, a.summary_words)[:800]
    return answer


def typical_traits_answer(a: OutputAssumptions) -> dict[str, Any]:
    """Return a MOTE answer of typical size that validates against `TraitsAnswer`."""
    count = min(max(a.trait_phrases, 2), 5)
    return {
        "strengths": {dim.value: TRAIT_LEVELS[dim] for dim in Dimension},
        "traits": list(TRAIT_PHRASES[:count]),
    }


def typical_judgement(a: OutputAssumptions) -> dict[str, Any]:
    """Return one MAR judgement of typical size (`Judgement`: score, matched, rationale)."""
    matched = [Dimension.AESTHETIC.value, Dimension.QUALITY.value, Dimension.CONVENIENCE.value]
    return {
        "score": 7,
        "matched": matched[: min(max(a.matched_per_candidate, 0), 3)],
        "rationale": _words(RATIONALE_TEXT, a.rationale_words)[:240],
    }


def typical_listwise_answer(candidate_ids: Sequence[str], a: OutputAssumptions) -> dict[str, Any]:
    """Return a listwise MAR answer of typical size for `candidate_ids`."""
    judgement = typical_judgement(a)
    return {"scores": {item_id: judgement for item_id in candidate_ids}}


def compact_json(value: Any) -> str:
    """Serialise like a Structured Outputs answer: compact JSON, non-ASCII kept."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# --------------------------------------------------------------------------- token counting

# A newline followed by a character that is neither whitespace nor "/" always ends a
# tiktoken pre-token under cl100k_base and o200k_base (no pattern alternative can run
# on past such a point), and BPE merges never cross pre-tokens. Counting the pieces
# between those points separately therefore gives exactly the count of the whole
# text, and the pieces (template lines, item lines, profile lines) repeat a lot.
_PIECE_END = re.compile(r"\n(?=[^\s/])")


def split_pieces(text: str) -> list[str]:
    """Split `text` after every newline that is followed by neither whitespace nor "/"."""
    parts = _PIECE_END.split(text)
    return [part + "\n" for part in parts[:-1]] + [parts[-1]]


class TokenCounter:
    """Exact tiktoken counts for one model's encoding, memoised per line piece.

    It is itself the encoder the library's message count runs over (`encode`), so
    a chat prompt is counted by `tokens.message_counter`'s rules and its text from
    the memo.
    """

    def __init__(self, model: str) -> None:
        self.encoder = text_encoder(model)
        self._pieces: dict[str, array[int]] = {}
        self._count_messages = message_counter(self)

    def encode(self, text: str) -> "array[int]":
        """Return the tokens of `text` (those of `tokens.text_encoder(model).encode`), piece by piece."""
        known = self._pieces.get(text)
        if known is not None:  # short or repeated texts: role names, system messages
            return known
        tokens = array("I")
        for piece in split_pieces(text):
            part = self._pieces.get(piece)
            if part is None:
                part = array("I", self.encoder.encode(piece))
                self._pieces[piece] = part
            tokens += part
        return tokens

    def text(self, text: str) -> int:
        """Count `text` (same result as `tokens.count_text`)."""
        return len(self.encode(text))

    def messages(self, messages: Sequence[BaseMessage]) -> int:
        """Count a chat prompt like `tokens.count_messages`."""
        return self._count_messages(messages)


# --------------------------------------------------------------------------- settings and results


@dataclass(frozen=True)
class CostSettings:
    """What to estimate: which users and candidates, which presets and MAR modes."""

    dataset: Path
    users: int
    presets: tuple[str, ...] = ("hybrid", "gpt-6.1-sol", "paper", "gpt-4o")
    negatives: int = 99
    mar_modes: tuple[MarMode, ...] = ("listwise",)
    seed: int = 0
    """Seeds the user sample, the candidates and the shown order (as in the evaluation harness)."""
    cold_start: int | None = None
    """Keep only the last N history items (as the cold-start slice of `m3rec eval`)."""
    chunk_size: int = 10
    """Candidates per listwise MAR call (`M3RecContext.mar_chunk_size`)."""
    include_schema: bool = True
    """Count the schema parameters as input tokens (an upper-bound estimate)."""
    assumptions: OutputAssumptions = field(default_factory=OutputAssumptions)
    output_overrides: Mapping[Stage, float] = field(default_factory=dict)
    """Measured output tokens per call (MOPE, MOTE) or per scored candidate (MAR)."""
    reasoning_overrides: Mapping[str, int] = field(default_factory=dict)
    """Reasoning tokens per call at an effort, instead of the registry's assumption."""

    def validate(self) -> None:
        """Raise `ConfigurationError` for settings that cannot be estimated."""
        if self.users < 1:
            raise ConfigurationError(f"--users must be >= 1, got {self.users}")
        if self.negatives < 0:
            raise ConfigurationError(f"--negatives must be >= 0, got {self.negatives}")
        if self.chunk_size < 1:
            raise ConfigurationError(f"--chunk-size must be >= 1, got {self.chunk_size}")
        if self.cold_start is not None and self.cold_start < 1:
            raise ConfigurationError(f"--cold-start must be >= 1, got {self.cold_start}")
        if not self.presets:
            raise ConfigurationError("give at least one preset")
        unknown = [p for p in self.presets if p not in PRESETS]
        if unknown:
            raise ConfigurationError(
                f"unknown preset {unknown[0]!r}; choose from {', '.join(PRESETS)}"
            )
        for mode in self.mar_modes:
            if mode not in MAR_MODES:
                raise ConfigurationError(f"unknown MAR mode {mode!r}")
        for stage, value in self.output_overrides.items():
            if stage not in STAGES or value < 0:
                raise ConfigurationError(f"bad output-token override {stage}={value}")
        for effort, tokens in self.reasoning_overrides.items():
            if effort not in EFFORTS or tokens < 0:
                raise ConfigurationError(f"bad reasoning-token override {effort}={tokens}")

    def reasoning_tokens(self, effort: str | None) -> int:
        """Reasoning tokens one call at `effort` is assumed to spend (0 without reasoning)."""
        if effort is None:
            return 0
        if effort in self.reasoning_overrides:
            return self.reasoning_overrides[effort]
        return registry().assumed_reasoning(effort)  # type: ignore[arg-type]


@dataclass(frozen=True)
class StageEstimate:
    """Tokens and cost of all of one stage's calls under one model."""

    stage: Stage
    model: str
    calls: int
    prompt_tokens: int
    """The rendered chat messages."""
    schema_tokens: int
    """The schema-carrying parameters (`response_format` or `tools`), upper-bound estimate."""
    output_tokens: int
    """Billed output: the answers plus the assumed reasoning tokens."""
    input_tokens: int
    """Billed input: prompt, plus schema when the settings include it."""
    cost_usd: float | None
    """`None` when the model is not in the price table."""
    reasoning_effort: str | None = None
    reasoning_tokens: int = 0
    """The assumed reasoning part of `output_tokens`."""

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True)
class CacheStats:
    """How the trait cache served the sampled candidates."""

    slots: int
    """Candidate slots with text, over all users (a MOTE call each without the cache)."""
    encoded: int
    """MOTE calls: distinct items not already in the cache."""
    prefilled: int
    """Distinct items found in the cache passed in."""

    @property
    def hits(self) -> int:
        """Candidate slots served from the cache."""
        return self.slots - self.encoded

    @property
    def hit_rate(self) -> float:
        """Share of candidate slots served from the cache."""
        return self.hits / self.slots if self.slots else 0.0


@dataclass(frozen=True)
class PresetEstimate:
    """The estimate of one preset in one MAR mode."""

    preset: str
    mar_mode: MarMode
    users: int
    candidates: int
    """Candidate slots over all users."""
    stages: dict[Stage, StageEstimate]
    cache: CacheStats
    mote_without_cache: StageEstimate
    """MOTE if every candidate slot were encoded (no trait cache)."""
    batch_discount: float

    @property
    def input_tokens(self) -> int:
        """Billed input tokens of all stages."""
        return sum(s.input_tokens for s in self.stages.values())

    @property
    def output_tokens(self) -> int:
        """Output tokens of all stages."""
        return sum(s.output_tokens for s in self.stages.values())

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens of all stages."""
        return self.input_tokens + self.output_tokens

    @property
    def cost_usd(self) -> float | None:
        """USD of all stages (`None` if a model is not priced)."""
        costs = [s.cost_usd for s in self.stages.values()]
        return None if any(c is None for c in costs) else sum(c for c in costs if c is not None)

    @property
    def cost_usd_batch_mote(self) -> float | None:
        """USD with MOTE sent through the Batch API (billed at `batch_discount` of the price)."""
        total, mote = self.cost_usd, self.stages["mote"].cost_usd
        if total is None or mote is None:
            return None
        return total - mote + mote * self.batch_discount

    def per_user(self, value: float | None) -> float | None:
        """Divide a total by the number of users (MOTE amortised over the sample)."""
        return None if value is None else value / self.users


COMPARISONS: tuple[tuple[str, str], ...] = (("hybrid", "gpt-6.1-sol"), ("paper", "gpt-4o"))
"""(routed, all-strong) preset pairs the report compares: each hybrid routing against
the routing that sends every stage to its own MAR model (the paper's ~87% is
`paper` against all-GPT-4o)."""


@dataclass(frozen=True)
class Comparison:
    """A hybrid routing against its all-strong routing in one MAR mode, and where the tokens go."""

    mar_mode: MarMode
    hybrid: str
    strong: str
    hybrid_usd: float
    strong_usd: float
    token_share: dict[Stage, float]
    """Share of each stage in the all-strong routing's tokens."""
    cost_share: dict[Stage, float]
    """Share of each stage in the all-strong routing's cost."""
    hybrid_models: dict[Stage, str]
    strong_model: str

    @property
    def reduction(self) -> float:
        """Relative cost reduction of the hybrid routing against the all-strong one."""
        return 1.0 - self.hybrid_usd / self.strong_usd if self.strong_usd else 0.0

    @property
    def dominant_stage(self) -> Stage:
        """The stage with the most tokens."""
        return max(self.token_share, key=lambda s: self.token_share[s])


@dataclass(frozen=True)
class CostReport:
    """Every preset's estimate, plus what was estimated and with which prices."""

    settings: CostSettings
    dataset_name: str
    users: int
    candidates_per_user: float
    mean_history: float
    estimates: list[PresetEstimate]
    prices: PriceTable

    def estimate(self, preset: str, mode: MarMode) -> PresetEstimate | None:
        """Return the estimate of `preset` in `mode`, if it was made."""
        return next((e for e in self.estimates if e.preset == preset and e.mar_mode == mode), None)

    def comparison(
        self, mode: MarMode, pair: tuple[str, str] = COMPARISONS[0]
    ) -> Comparison | None:
        """Compare `pair`'s hybrid routing with its all-strong one in `mode` (None unless both were priced)."""
        hybrid, strong = self.estimate(pair[0], mode), self.estimate(pair[1], mode)
        if hybrid is None or strong is None or hybrid.cost_usd is None or not strong.cost_usd:
            return None
        tokens = strong.total_tokens or 1
        return Comparison(
            mar_mode=mode,
            hybrid=pair[0],
            strong=pair[1],
            hybrid_usd=hybrid.cost_usd,
            strong_usd=strong.cost_usd,
            token_share={s: e.total_tokens / tokens for s, e in strong.stages.items()},
            cost_share={s: (e.cost_usd or 0.0) / strong.cost_usd for s, e in strong.stages.items()},
            hybrid_models={s: e.model for s, e in hybrid.stages.items()},
            strong_model=strong.stages["mar"].model,
        )

    def comparisons(self) -> list[Comparison]:
        """Every comparison of `COMPARISONS` the report's presets allow, per MAR mode."""
        found = [self.comparison(m, pair) for m in self.settings.mar_modes for pair in COMPARISONS]
        return [c for c in found if c is not None]

    def to_dict(self) -> dict[str, Any]:
        """Return the report as JSON-able data."""
        out: dict[str, Any] = {
            "settings": {
                **{k: v for k, v in asdict(self.settings).items() if k != "dataset"},
                "dataset": str(self.settings.dataset),
            },
            "dataset": self.dataset_name,
            "users": self.users,
            "candidates_per_user": self.candidates_per_user,
            "mean_history": self.mean_history,
            "prices_taken": self.prices.taken,
            "estimates": [],
        }
        for e in self.estimates:
            out["estimates"].append(
                {
                    "preset": e.preset,
                    "mar_mode": e.mar_mode,
                    "stages": {s: asdict(v) for s, v in e.stages.items()},
                    "input_tokens": e.input_tokens,
                    "output_tokens": e.output_tokens,
                    "cost_usd": e.cost_usd,
                    "cost_usd_per_user": e.per_user(e.cost_usd),
                    "cost_usd_batch_mote": e.cost_usd_batch_mote,
                    "cache": {**asdict(e.cache), "hit_rate": e.cache.hit_rate},
                    "mote_without_cache": asdict(e.mote_without_cache),
                }
            )
        out["comparisons"] = [
            {**asdict(c), "reduction": c.reduction, "dominant_stage": c.dominant_stage}
            for c in self.comparisons()
        ]
        return out


# --------------------------------------------------------------------------- estimation


@dataclass
class _Tally:
    calls: int = 0
    prompt: int = 0
    schema: int = 0
    output: int = 0

    def add(self, prompt: int, schema: int, output: int, calls: int = 1) -> None:
        self.calls += calls
        self.prompt += prompt * calls
        self.schema += schema * calls
        self.output += output * calls


class _Estimator:
    """Walks the stage calls once and tallies tokens for every model a preset routes to."""

    def __init__(self, settings: CostSettings, store: BaseStore) -> None:
        self.settings = settings
        self.store = store
        self.a = settings.assumptions
        self.counters: dict[str, TokenCounter] = {}
        self._listwise_params: dict[tuple[str, int], str] = {}
        self._constant: dict[tuple[str, str], int] = {}

    def counter(self, spec: ModelSpec) -> TokenCounter:
        """Return the counter of the encoding `spec`'s model uses."""
        model = spec.tokenizer_model or spec.name
        name = text_encoder(model).name
        if name not in self.counters:
            self.counters[name] = TokenCounter(model)
        return self.counters[name]

    def _constant_tokens(self, spec: ModelSpec, label: str, text: Callable[[], str]) -> int:
        """Count a text that is the same for every call of `spec` (built only once)."""
        key = (f"{spec.name}|{spec.tokenizer_model}", label)
        if key not in self._constant:
            self._constant[key] = self.counter(spec).text(text())
        return self._constant[key]

    def _fixed_schema_tokens(self, spec: ModelSpec, schema: type[BaseModel]) -> int:
        """Schema tokens of a stage whose answer schema does not depend on the task."""
        return self._constant_tokens(
            spec, f"schema:{schema.__name__}", lambda: params_text(structured_params(spec, schema))
        )

    def _output(
        self, stage: Stage, spec: ModelSpec, text: str, label: str | None, scored: int = 1
    ) -> int:
        """Output tokens of one call: the override (per call; per candidate for MAR) or the typical answer."""
        override = self.settings.output_overrides.get(stage)
        if override is not None:
            return round(override * (scored if stage == "mar" else 1))
        if label is not None:
            return self._constant_tokens(spec, label, lambda: text)
        return self.counter(spec).text(text)

    # MOPE ------------------------------------------------------------------
    def mope(
        self, requests: Sequence[RecommendationRequest], specs: Iterable[ModelSpec]
    ) -> tuple[dict[str, _Tally], dict[str, MotivationProfile]]:
        stage = MopeStage()
        prompt = load_prompt("mope")
        spec_list = list(specs)
        tallies = {spec.name: _Tally() for spec in spec_list}
        profiles: dict[str, MotivationProfile] = {}
        for request in requests:
            if not request.history:
                continue  # the graph uses the fallback profile: no call
            state = MopeState(user_id=request.user_id, history=request.history)
            messages = prompt.format(**stage.variables(state))
            contract = stage.answer_contract(state)
            json_schema = contract.json_schema()
            answer = typical_profile_answer([i.item_id for i in request.history], self.a)
            profiles[request.user_id] = profile_from_answer(contract.validate_answer(answer))
            answer_text = compact_json(answer)
            for spec in spec_list:
                counter = self.counter(spec)
                schema_tokens = counter.text(
                    params_text(structured_params_for_json(spec, json_schema))
                )
                tallies[spec.name].add(
                    counter.messages(messages),
                    schema_tokens,
                    self._output("mope", spec, answer_text, None),
                )
        return tallies, profiles

    # MOTE ------------------------------------------------------------------
    def mote(
        self, requests: Sequence[RecommendationRequest], specs: Iterable[ModelSpec]
    ) -> tuple[dict[str, _Tally], dict[str, _Tally], dict[str, CacheStats]]:
        stage = MoteStage()
        prompt = load_prompt("mote")
        occurrences: Counter[str] = Counter()
        items: dict[str, Item] = {}
        for request in requests:
            for candidate in request.candidates:
                if candidate.has_text():  # items without text get neutral traits, no call
                    occurrences[candidate.item_id] += 1
                    items.setdefault(candidate.item_id, candidate)
        answer_text = compact_json(typical_traits_answer(self.a))
        with_cache: dict[str, _Tally] = {}
        without_cache: dict[str, _Tally] = {}
        stats: dict[str, CacheStats] = {}
        for spec in specs:
            counter = self.counter(spec)
            prefilled = set(
                read_traits_sync(
                    self.store, list(items.values()), model=spec.name, prompt_version=prompt.version
                )
            )
            schema_tokens = self._fixed_schema_tokens(spec, TraitsAnswer)
            output = self._output("mote", spec, answer_text, "mote-answer")
            cached, uncached = _Tally(), _Tally()
            for item_id, item in items.items():
                state = MoteState(item=item)
                prompt_tokens = counter.messages(prompt.format(**stage.variables(state)))
                uncached.add(prompt_tokens, schema_tokens, output, calls=occurrences[item_id])
                if item_id not in prefilled:
                    cached.add(prompt_tokens, schema_tokens, output)
            with_cache[spec.name], without_cache[spec.name] = cached, uncached
            stats[spec.name] = CacheStats(
                slots=sum(occurrences.values()), encoded=cached.calls, prefilled=len(prefilled)
            )
        return with_cache, without_cache, stats

    # MAR -------------------------------------------------------------------
    def _listwise_schema_text(self, spec: ModelSpec, ids: Sequence[str]) -> str:
        """The listwise schema parameters for `ids`.

        Built once per chunk length with placeholder ids, which appear only as the
        `Scores` property names and `required` entries, then filled in (the unit
        tests check this equals building the schema for the real ids).
        """
        key = (spec.name, len(ids))
        if key not in self._listwise_params:
            placeholders = [f"m3rec-placeholder-{n}" for n in range(len(ids))]
            self._listwise_params[key] = params_text(
                structured_params(spec, listwise_contract(placeholders))
            )
        text = self._listwise_params[key]
        for n, item_id in enumerate(ids):
            text = text.replace(f'"m3rec-placeholder-{n}"', json.dumps(item_id, ensure_ascii=False))
        return text

    def mar(
        self,
        requests: Sequence[RecommendationRequest],
        specs: Iterable[ModelSpec],
        mode: MarMode,
        profiles: Mapping[str, MotivationProfile],
        fallback: MotivationProfile,
    ) -> dict[str, _Tally]:
        stage = MarStage()
        prompt = load_prompt("mar_pointwise" if mode == "pointwise" else "mar_listwise")
        traits: ItemTraits = TraitsAnswer.model_validate(typical_traits_answer(self.a)).to_traits()
        size = 1 if mode == "pointwise" else self.settings.chunk_size
        spec_list = list(specs)
        tallies = {spec.name: _Tally() for spec in spec_list}
        judgement_text = compact_json(typical_judgement(self.a))
        for request in requests:
            profile = profiles.get(request.user_id, fallback)
            items = {item.item_id: item for item in request.candidates}
            order = shown_order(list(items), request.user_id, self.settings.seed)
            candidates = [MarCandidate(item=items[i], traits=traits) for i in order]
            for start in range(0, len(candidates), size):
                chunk = candidates[start : start + size]
                state = MarState(profile=profile, candidates=chunk, mode=mode)
                messages = prompt.format(**stage.variables(state))
                ids = [c["item"].item_id for c in chunk]
                for spec in spec_list:
                    counter = self.counter(spec)
                    if mode == "pointwise":
                        schema_tokens = self._fixed_schema_tokens(spec, PointwiseScore)
                        output = self._output("mar", spec, judgement_text, "mar-pointwise-answer")
                    else:
                        schema_tokens = counter.text(self._listwise_schema_text(spec, ids))
                        answer = compact_json(typical_listwise_answer(ids, self.a))
                        output = self._output("mar", spec, answer, None, scored=len(ids))
                    tallies[spec.name].add(counter.messages(messages), schema_tokens, output)
        return tallies


def _stage_estimate(
    stage: Stage, spec: ModelSpec, tally: _Tally, prices: PriceTable, settings: CostSettings
) -> StageEstimate:
    input_tokens = tally.prompt + (tally.schema if settings.include_schema else 0)
    reasoning = tally.calls * settings.reasoning_tokens(spec.reasoning_effort)
    output_tokens = tally.output + reasoning  # reasoning is billed as output
    return StageEstimate(
        stage=stage,
        model=spec.name,
        calls=tally.calls,
        prompt_tokens=tally.prompt,
        schema_tokens=tally.schema,
        output_tokens=output_tokens,
        input_tokens=input_tokens,
        cost_usd=prices.cost(spec.name, input_tokens, output_tokens),
        reasoning_effort=spec.reasoning_effort,
        reasoning_tokens=reasoning,
    )


def estimate_requests(
    requests: Sequence[RecommendationRequest],
    settings: CostSettings,
    *,
    store: BaseStore | None = None,
    prices: PriceTable | None = None,
) -> list[PresetEstimate]:
    """Estimate every preset and MAR mode of `settings` for these validated requests.

    Args:
        requests: The users' requests, as the graph would receive them.
        settings: Presets, MAR modes, chunk size, seed and output assumptions.
        store: A store whose traits count as already encoded (default: empty).
        prices: The price table (default: the shipped one).
    """
    settings.validate()
    table = prices or price_table()
    estimator = _Estimator(settings, store if store is not None else InMemoryStore())
    contexts = {
        # A dry run sends nothing, so a retired lineup (the paper's) can still be priced.
        (preset, mode): context_for(
            preset,
            mar_mode=mode,
            seed=settings.seed,
            mar_chunk_size=settings.chunk_size,
            allow_retired=True,
        )
        for preset in settings.presets
        for mode in settings.mar_modes
    }
    specs: dict[Stage, dict[str, ModelSpec]] = {stage: {} for stage in STAGES}
    for ctx in contexts.values():
        for stage in STAGES:
            spec = ctx.model_for(stage)
            specs[stage].setdefault(spec.name, spec)

    mope, profiles = estimator.mope(requests, specs["mope"].values())
    mote, mote_uncached, cache_stats = estimator.mote(requests, specs["mote"].values())
    fallback = fallback_profile([])  # what the graph uses for an empty history
    mar = {
        mode: estimator.mar(requests, specs["mar"].values(), mode, profiles, fallback)
        for mode in settings.mar_modes
    }

    candidates = sum(len(r.candidates) for r in requests)
    estimates = []
    for (preset, mode), ctx in contexts.items():
        chosen = {stage: ctx.model_for(stage) for stage in STAGES}
        tallies = {
            "mope": mope[chosen["mope"].name],
            "mote": mote[chosen["mote"].name],
            "mar": mar[mode][chosen["mar"].name],
        }
        stages: dict[Stage, StageEstimate] = {
            stage: _stage_estimate(stage, chosen[stage], tallies[stage], table, settings)
            for stage in STAGES
        }
        estimates.append(
            PresetEstimate(
                preset=preset,
                mar_mode=mode,
                users=len(requests),
                candidates=candidates,
                stages=stages,
                cache=cache_stats[chosen["mote"].name],
                mote_without_cache=_stage_estimate(
                    "mote", chosen["mote"], mote_uncached[chosen["mote"].name], table, settings
                ),
                batch_discount=table.batch_discount,
            )
        )
    return estimates


def estimate_costs(
    settings: CostSettings, *, store: BaseStore | None = None, prices: PriceTable | None = None
) -> CostReport:
    """Sample the users and candidates like the evaluation harness, then estimate every preset.

    Raises:
        ConfigurationError: Bad settings.
        DatasetError: The dataset cannot be loaded or has too few items.
    """
    settings.validate()
    dataset = load_dataset(settings.dataset)
    cases = build_requests(
        dataset,
        n_users=settings.users,
        n_negatives=settings.negatives,
        seed=settings.seed,
        cold_start=settings.cold_start,
    )
    requests = [parse_request(case.to_request()) for case in cases]
    table = prices or price_table()
    estimates = estimate_requests(requests, settings, store=store, prices=table)
    return CostReport(
        settings=settings,
        dataset_name=dataset.name,
        users=len(requests),
        candidates_per_user=sum(len(r.candidates) for r in requests) / len(requests),
        mean_history=sum(len(r.history) for r in requests) / len(requests),
        estimates=estimates,
        prices=table,
    )


# --------------------------------------------------------------------------- report


def _usd(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value == 0:
        return "$0"
    return f"${value:,.4f}" if value < 1 else f"${value:,.2f}"


def _tok(value: float) -> str:
    return f"{value:,.0f}"


def format_estimate(e: PresetEstimate) -> str:
    """Render one preset's table (GitHub markdown, readable in a terminal)."""
    models = ", ".join(f"{s.upper()} {e.stages[s].model}" for s in STAGES)
    lines = [
        f"### `{e.preset}`, MAR {e.mar_mode} ({models})",
        "",
        "| stage | model (effort) | calls | input tokens | of which schema | output tokens | of which reasoning | USD | USD per user | USD per 1,000 users |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for stage in STAGES:
        s = e.stages[stage]
        per_user = e.per_user(s.cost_usd)
        lines.append(
            f"| {stage} | {s.model} ({s.reasoning_effort or 'no reasoning'}) | {_tok(s.calls)} | {_tok(s.input_tokens)}"
            f" | {_tok(s.schema_tokens)} | {_tok(s.output_tokens)} | {_tok(s.reasoning_tokens)} | {_usd(s.cost_usd)} | {_usd(per_user)} "
            f"| {_usd(None if per_user is None else per_user * 1000)} |"
        )
    total_calls = sum(s.calls for s in e.stages.values())
    schema = sum(s.schema_tokens for s in e.stages.values())
    reasoning = sum(s.reasoning_tokens for s in e.stages.values())
    per_user = e.per_user(e.cost_usd)
    lines.append(
        f"| **total** | | {_tok(total_calls)} | {_tok(e.input_tokens)} | {_tok(schema)} | {_tok(e.output_tokens)} | {_tok(reasoning)} "
        f"| {_usd(e.cost_usd)} | {_usd(per_user)} | {_usd(None if per_user is None else per_user * 1000)} |"
    )
    c = e.cache
    batch = e.per_user(e.cost_usd_batch_mote)
    lines += [
        "",
        f"Per user: {_tok(e.input_tokens / e.users)} input + {_tok(e.output_tokens / e.users)} output tokens.",
        f"Trait cache: {c.slots:,} candidate slots, {c.encoded:,} items encoded"
        + (f" ({c.prefilled:,} already cached)" if c.prefilled else "")
        + f", hit rate {c.hit_rate:.1%}; without the cache MOTE would make {e.mote_without_cache.calls:,} calls"
        f" costing {_usd(e.mote_without_cache.cost_usd)}.",
        f"MOTE through the Batch API ({1 - e.batch_discount:.0%} off): total {_usd(e.cost_usd_batch_mote)}"
        f" ({_usd(None if batch is None else batch * 1000)} per 1,000 users).",
    ]
    return "\n".join(lines)


def format_comparison(c: Comparison) -> str:
    """Explain a hybrid routing against its all-strong one: the reduction and where the tokens go."""
    order = sorted(STAGES, key=lambda s: -c.token_share[s])
    shares = ", ".join(f"{s.upper()} {c.token_share[s]:.0%}" for s in order)
    encoders = c.cost_share["mope"] + c.cost_share["mote"]
    cheap = ", ".join(sorted({c.hybrid_models["mope"], c.hybrid_models["mote"]}))
    return (
        f"**{c.hybrid} vs {c.strong}, MAR {c.mar_mode}: {c.reduction:.1%} cheaper** "
        f"({_usd(c.hybrid_usd)} vs {_usd(c.strong_usd)}). "
        f"Tokens under {c.strong}: {shares}; {c.dominant_stage.upper()} dominates. "
        f"{c.hybrid} moves only MOPE and MOTE ({encoders:.0%} of {c.strong}'s cost) to {cheap} "
        f"and keeps MAR ({c.cost_share['mar']:.0%} of the cost) on {c.strong_model}, so the saving cannot exceed {encoders:.0%}."
    )


def format_report(report: CostReport) -> str:
    """Render the whole dry-run report as markdown."""
    s = report.settings
    head = [
        f"## Dry-run cost estimate: {report.dataset_name}, {report.users:,} users, "
        f"{report.candidates_per_user:g} candidates each ({s.negatives} negatives)",
        "",
        f"Seed {s.seed}; mean history {report.mean_history:.1f} items"
        + (f" (cold start: last {s.cold_start})" if s.cold_start else "")
        + f"; listwise chunks of {s.chunk_size}; prices of {report.prices.taken} (USD per 1M tokens);"
        f" schema tokens {'included' if s.include_schema else 'excluded'};"
        + (
            " output tokens from measured overrides "
            + ", ".join(f"{k}={v:g}" for k, v in s.output_overrides.items())
            if s.output_overrides
            else " output tokens from the typical-answer size model"
        )
        + "; reasoning tokens assumed per call: "
        + ", ".join(
            f"{e}={s.reasoning_tokens(e)}" for e in sorted(_efforts_used(report), key=EFFORTS.index)
        )
        + " (an assumption: not measurable offline). No re-asks assumed.",
        "",
    ]
    body = [format_estimate(e) + "\n" for e in report.estimates]
    tail = [format_comparison(c) + "\n" for c in report.comparisons()]
    if not tail:
        pairs = " or ".join(f"`{a}` and `{b}`" for a, b in COMPARISONS)
        tail = [f"(Give {pairs} in --presets to compare them.)"]
    return "\n".join(head + body + tail)


def _efforts_used(report: CostReport) -> set[str]:
    return {
        s.reasoning_effort
        for e in report.estimates
        for s in e.stages.values()
        if s.reasoning_effort is not None
    }


def parse_output_overrides(text: str | None) -> dict[Stage, float]:
    """Parse `mope=420,mote=60,mar=45` (output tokens per call; per scored candidate for MAR)."""
    overrides: dict[Stage, float] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        stage, sep, value = part.partition("=")
        name = stage.strip().lower()
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if not sep or name not in STAGES or number < 0:
            raise ConfigurationError(
                f"bad --output-tokens entry {part!r}: expected STAGE=TOKENS with STAGE one of {', '.join(STAGES)}"
            )
        overrides[name] = number
    return overrides


def batch_file_cost(
    lines: Sequence[Mapping[str, Any]],
    model: str,
    *,
    assumptions: OutputAssumptions | None = None,
    include_schema: bool = True,
    prices: PriceTable | None = None,
) -> tuple[int, int, float | None]:
    """Estimate a MOTE Batch API file: (input tokens, output tokens, USD at the batch price).

    Input is counted from each request body like a live call (messages, plus the
    schema parameters when `include_schema`); output from the typical MOTE answer.
    """
    counter = TokenCounter(model)
    table = prices or price_table()
    output_each = counter.text(
        compact_json(typical_traits_answer(assumptions or OutputAssumptions()))
    )
    input_tokens = 0
    for line in lines:
        body = line["body"]
        input_tokens += counter.messages(convert_to_messages(body["messages"]))
        if include_schema:
            input_tokens += counter.text(
                params_text({k: body[k] for k in SCHEMA_PARAMS if k in body})
            )
    output_tokens = output_each * len(lines)
    cost = table.cost(model, input_tokens, output_tokens)
    return input_tokens, output_tokens, None if cost is None else cost * table.batch_discount
