"""Benchmarks 4 and 5: the trait cache's effect, and tokens per recommendation per stage.

Both come from one dry run of `m3rec_graph.cost.estimate` (what `m3rec cost estimate`
uses): the evaluation harness's users and candidates (`datasets.build_requests`,
target + 19 negatives, seed 0), every stage call's real prompt rendered by the
stages' own code and counted with tiktoken under the `gpt-4o` preset (all three
stages on gpt-4o, so one encoding). Nothing is sent to a model.

* Input tokens are exact counts of the rendered prompts (MAR's prompt embeds a
  typical profile and typical traits in place of the model's answers).
* Schema tokens (the `response_format` parameter) are an upper-bound estimate
  and are reported apart, not included in "input" or "total" below.
* Output tokens are estimated from a typical answer of each stage's schema.
* With the trait cache, MOTE runs once per distinct item with text across all
  sampled users (an empty cache at the start); without it, once per candidate
  slot with text. Items without text get neutral traits and no call either way.
"""

import time
from dataclasses import dataclass
from pathlib import Path

from m3rec_graph._internal.bpe import encoding_for
from m3rec_graph.cost.estimate import CostSettings, PresetEstimate, StageEstimate, estimate_costs
from m3rec_graph.llm.routing import PRESETS

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATASET = Path("../shared/data/amazon/beauty")
"""The full dataset, relative to the repository root (as in `evals/`)."""
QUICK_DATASET = Path("tests/fixtures/beauty_small")
PRESET = "gpt-4o"
NEGATIVES = 19
SEED = 0


def resolve(path: Path) -> Path:
    """A relative dataset path is taken from the repository root."""
    return path if path.is_absolute() else ROOT / path


@dataclass
class CacheShare:
    """The cache's share of one MAR mode's tokens (input = exact prompt tokens, output estimated)."""

    mar_mode: str
    total_tokens_without_cache: int
    """MOPE + MOTE (one call per candidate slot with text) + MAR, input + output."""
    total_tokens_with_cache: int
    mote_tokens_saved: int
    cached_fraction: float
    """mote_tokens_saved / total_tokens_without_cache."""
    cached_fraction_with_schema: float
    """The same fraction with the (upper-bound) schema tokens counted as input too."""


@dataclass
class CacheEffect:
    users: int
    candidates_per_user: float
    candidate_slots: int
    slots_with_text: int
    mote_calls_without_cache: int
    """One per candidate slot with text."""
    mote_calls_with_cache: int
    """One per distinct item with text (empty cache at the start)."""
    call_reduction: float
    """1 - with / without."""
    shares: list[CacheShare]


@dataclass
class StageTokens:
    """One stage's tokens per recommendation (totals divided by the users)."""

    stage: str
    calls: float
    input_tokens: float
    """Exact tiktoken count of the rendered prompts."""
    schema_tokens: float
    """Upper-bound estimate of the schema parameter, not included in `input_tokens`."""
    output_tokens: float
    """Estimated from typical answers."""
    input_tokens_per_call: float


@dataclass
class ModeTokens:
    mar_mode: str
    stages: list[StageTokens]
    """MOPE, MOTE without the cache, MOTE with the shared cache (amortised), MAR."""
    total_without_cache: StageTokens
    total_with_cache: StageTokens


@dataclass
class TokenResults:
    dataset: str
    dataset_path: str
    preset: str
    model: str
    encoding: str
    negatives: int
    seed: int
    users: int
    mean_history: float
    duration_s: float
    cache: CacheEffect
    modes: list[ModeTokens]


def _per_rec(label: str, parts: list[StageEstimate], users: int) -> StageTokens:
    calls = sum(p.calls for p in parts)
    prompt = sum(p.prompt_tokens for p in parts)
    return StageTokens(
        stage=label,
        calls=calls / users,
        input_tokens=prompt / users,
        schema_tokens=sum(p.schema_tokens for p in parts) / users,
        output_tokens=sum(p.output_tokens for p in parts) / users,
        input_tokens_per_call=prompt / calls if calls else 0.0,
    )


def _tokens(parts: list[StageEstimate], schema: bool = False) -> int:
    return sum(p.prompt_tokens + p.output_tokens + (p.schema_tokens if schema else 0) for p in parts)


def _share(e: PresetEstimate) -> CacheShare:
    mope, mote, mar = e.stages["mope"], e.stages["mote"], e.stages["mar"]
    uncached = e.mote_without_cache
    without = [mope, uncached, mar]
    saved = _tokens([uncached]) - _tokens([mote])
    saved_schema = _tokens([uncached], schema=True) - _tokens([mote], schema=True)
    return CacheShare(
        mar_mode=e.mar_mode,
        total_tokens_without_cache=_tokens(without),
        total_tokens_with_cache=_tokens([mope, mote, mar]),
        mote_tokens_saved=saved,
        cached_fraction=saved / _tokens(without),
        cached_fraction_with_schema=saved_schema / _tokens(without, schema=True),
    )


def _mode_tokens(e: PresetEstimate) -> ModeTokens:
    n = e.users
    mope, mote, mar = e.stages["mope"], e.stages["mote"], e.stages["mar"]
    uncached = e.mote_without_cache
    return ModeTokens(
        mar_mode=e.mar_mode,
        stages=[
            _per_rec("MOPE", [mope], n),
            _per_rec("MOTE, no cache", [uncached], n),
            _per_rec(f"MOTE, shared cache ({n:,} users)", [mote], n),
            _per_rec(f"MAR {e.mar_mode}", [mar], n),
        ],
        total_without_cache=_per_rec("total, no cache", [mope, uncached, mar], n),
        total_with_cache=_per_rec("total, shared cache", [mope, mote, mar], n),
    )


def bench_tokens(dataset: Path, users: int) -> TokenResults:
    """Dry-run the `gpt-4o` preset over `users` users in both MAR modes and summarise it."""
    t0 = time.perf_counter()
    path = resolve(dataset)
    report = estimate_costs(
        CostSettings(
            dataset=path,
            users=users,
            presets=(PRESET,),
            negatives=NEGATIVES,
            mar_modes=("listwise", "pointwise"),
            seed=SEED,
        )
    )
    estimates = sorted(report.estimates, key=lambda e: e.mar_mode)
    first = estimates[0]
    cache = CacheEffect(
        users=report.users,
        candidates_per_user=report.candidates_per_user,
        candidate_slots=first.candidates,
        slots_with_text=first.cache.slots,
        mote_calls_without_cache=first.mote_without_cache.calls,
        mote_calls_with_cache=first.stages["mote"].calls,
        call_reduction=1 - first.stages["mote"].calls / max(1, first.mote_without_cache.calls),
        shares=[_share(e) for e in estimates],
    )
    model = PRESETS[PRESET]["mar"]
    return TokenResults(
        dataset=report.dataset_name,
        dataset_path=str(dataset),
        preset=PRESET,
        model=model,
        encoding=encoding_for(model).name,
        negatives=NEGATIVES,
        seed=SEED,
        users=report.users,
        mean_history=report.mean_history,
        duration_s=time.perf_counter() - t0,
        cache=cache,
        modes=[_mode_tokens(e) for e in estimates],
    )


def token_notes(t: TokenResults) -> list[str]:
    """Plain-language findings for the suite's notes."""
    c = t.cache
    shares = "; ".join(
        f"{s.cached_fraction:.1%} of all tokens with {s.mar_mode} MAR" for s in c.shares
    )
    notes = [
        f"Trait cache over {c.users:,} {t.dataset} users x {c.candidates_per_user:g} candidates: "
        f"MOTE calls fall from {c.mote_calls_without_cache:,} to {c.mote_calls_with_cache:,} "
        f"({c.call_reduction:.0%} fewer); the MOTE tokens it saves are {shares}."
    ]
    for m in t.modes:
        mar = m.stages[-1]
        total = m.total_without_cache
        notes.append(
            f"Tokens per recommendation, {m.mar_mode} MAR, no cache: {total.input_tokens:,.0f} input "
            f"(exact) + {total.output_tokens:,.0f} output (estimated); MAR alone "
            f"{mar.input_tokens + mar.output_tokens:,.0f} ({(mar.input_tokens + mar.output_tokens) / (total.input_tokens + total.output_tokens):.0%})."
        )
    return notes
