"""Graph state: the public input/output contract, the private working state, and stage tasks."""

import operator
from typing import Annotated, Any, Literal, NotRequired

from langgraph.channels import EphemeralValue
from langgraph.graph.state import CompiledStateGraph
from typing_extensions import TypedDict

from m3rec_graph.context import M3RecContext, Stage
from m3rec_graph.contracts.request import RecommendationRequest
from m3rec_graph.contracts.schemas import (
    AlignmentScore,
    Item,
    ItemTraits,
    MotivationProfile,
    RankedItem,
    Rationale,
)
from m3rec_graph.llm.usage import CallUsage, UsageReport


def merge_dicts(left: dict[str, Any], right: dict[str, Any]) -> dict[str, Any]:
    """Reducer for fan-in channels keyed by item id (parallel tasks write disjoint keys)."""
    return {**left, **right}


class ItemDict(TypedDict, total=False):
    """An item as a caller passes it: `item_id` plus any text fields."""

    item_id: str
    title: str | None
    description: str | None
    brand: str | None
    categories: list[str]
    review: str | None
    prior: float | None
    """Candidates only: the host retriever's or ranker's score (finite; all candidates carry
    one or none does). Fusion uses it as the `prior` signal; it never reaches a prompt."""


class RecInput(TypedDict):
    """What a caller passes in."""

    user_id: str
    history: list[ItemDict]
    """The user's interactions, oldest first."""
    candidates: list[ItemDict]
    """The items to rank (each may carry a `prior`)."""
    k: NotRequired[int | None]
    """Return only the top `k` (default: all candidates)."""


class Degradation(TypedDict):
    """Something that did not come from a valid LLM answer, and why."""

    stage: Stage
    item_id: str | None
    reason: str


class RecOutput(TypedDict):
    """What a caller gets back."""

    user_id: str
    ranking: list[RankedItem]
    """Candidates ranked by motivational alignment, best first, each with score and rationale."""
    profile: MotivationProfile
    usage: UsageReport
    """Tokens and cost per stage and in total."""
    degraded: list[Degradation]
    """Empty when every stage answered validly."""
    truncated: list["Truncation"]
    """Item text fields cut to their character/token budget before any model saw them."""
    memory: "MemoryReport"
    """What the store served: the shopper's profile and the candidates' traits."""
    fusion: NotRequired["FusionReport | None"]
    """The fusion config that ranked this run; `None`: fusion off (ranked by MAR's score)."""


class FusedEntry(TypedDict):
    """One candidate's fused score and what each signal added to it (plain JSON in the state)."""

    fused: float
    parts: dict[str, float]


class FusionReport(TypedDict):
    """Which fusion config ranked the run (next to the output, as prompt versions are in results)."""

    version: str
    """`FusionConfig.version`: the content hash of the config."""
    signals: list[str]
    """The signals that counted (weighted and present), in `fusion.SIGNALS` order."""
    sampling: str | None
    """The negative sampling the weights were fit under (`None`: hand-set)."""


class MemoryReport(TypedDict):
    """What this run found in the store (next to `usage`: a hit is a call not made)."""

    profile: Literal["hit", "incremental", "miss", "off"]
    """`hit`: the profile for exactly this history window and MOPE settings was stored, no
    MOPE call; `incremental`: the stored profile of this window minus its newest few items
    was updated by an incremental MOPE call that read only those items
    (`M3RecContext.max_incremental_items`; only when that prompt is the shorter); `miss`: MOPE profiled the whole window (a valid
    answer is stored either way); `off`: no profile memory (no history, the `no_mope`
    ablation, or a deprecated `trait_cache=` graph)."""
    traits_hit: int
    """Candidates whose traits came from the store (no MOTE call)."""
    traits_miss: int
    """Candidates MOTE encoded in this run."""


class Truncation(TypedDict):
    """One item text field that was shortened before it reached a model."""

    item_id: str
    note: str
    """e.g. `description: 200000 -> 600 characters`."""


class State(TypedDict, total=False):
    """Working state of the parent graph (private keys never reach `RecOutput`).

    A checkpointer thread keeps this state between runs (the LangGraph server, Studio,
    a `RemoteGraph` called with a `thread_id`), so every key is either this run's
    input or reset by `prepare`: the input keys are ephemeral (gone after `prepare`
    read them, so a later run that omits `k` does not inherit the last run's `k`), and
    `prepare` overwrites every per-run key, bypassing the reducers (`graph.prepare`).
    """

    user_id: str
    history: Annotated[list[ItemDict], EphemeralValue]
    candidates: Annotated[list[ItemDict], EphemeralValue]
    k: Annotated[int | None, EphemeralValue]
    request: RecommendationRequest
    shown_order: list[str]
    """Candidate ids in the seeded shuffled order every model sees (and ties break by)."""
    profile: MotivationProfile | None
    """`None` from `prepare` until this run's MOPE task (or its fallback) answers."""
    traits: Annotated[dict[str, ItemTraits], merge_dicts]
    scores: Annotated[dict[str, AlignmentScore], merge_dicts]
    rationale_ids: list[str] | None
    """`mar_answer="scores_first"`: the top ids sent for rationales (`None` until every score is in)."""
    rationales: Annotated[dict[str, "MarRationale"], merge_dicts]
    usage_log: Annotated[list[CallUsage], operator.add]
    degraded: Annotated[list[Degradation], operator.add]
    truncated: list[Truncation]
    ranking: list[RankedItem]
    usage: UsageReport
    memory: MemoryReport
    fused: dict[str, FusedEntry] | None
    """This run's fused scores by item id (`None` until `fuse` ran, and with fusion off)."""
    fusion: FusionReport | None


class LoopState(TypedDict, total=False):
    """Keys of a stage task's re-ask loop (the task's `Send` payload carries `feedback`)."""

    feedback: list[str]
    """Validation errors fed back on re-ask; its length is the number of failed attempts."""
    usage_log: Annotated[list[CallUsage], operator.add]
    degraded: Annotated[list[Degradation], operator.add]


class IncrementalBase(TypedDict):
    """What an incremental MOPE task starts from: a stored profile and the items it has not seen."""

    profile: MotivationProfile
    """The stored profile of the window before it grew."""
    new_items: int
    """How many of the task's newest history items the stored profile has not seen (>= 1)."""
    increments: int
    """Incremental updates since the last full profile, this one included (recorded in the store)."""


class MopeTask(TypedDict):
    """Payload of `Send("mope", ...)`."""

    user_id: str
    history: list[Item]
    """The whole history window the profile is for (its key), oldest first."""
    incremental: NotRequired[IncrementalBase]
    """Set when the stored profile of a shorter window is updated instead of re-profiling."""


class MoteTask(TypedDict):
    """Payload of one `Send("mote", ...)`: one candidate whose traits are not cached."""

    item: Item


class MarCandidate(TypedDict):
    """A candidate as MAR sees it."""

    item: Item
    traits: ItemTraits


class MarRationale(TypedDict):
    """Why one top item fits, from the `scores_first` rationales call (or the overlap fallback)."""

    rationale: Rationale
    source: Literal["llm", "fallback"]


class MarTask(TypedDict):
    """Payload of one `Send("mar", ...)`: a listwise chunk, or one candidate in pointwise mode.

    `scores_first` (`M3RecContext.mar_answer`) sends `scores` tasks (a chunk, scores
    only), then one `rationales` task (the top items, best first).
    """

    profile: MotivationProfile
    candidates: list[MarCandidate]
    mode: Literal["listwise", "pointwise", "scores", "rationales"]
    history: NotRequired[list[Item]]
    """Set only by the `no_mope` ablation: MAR reads this raw recent history instead of the profile."""
    raw_item_text: NotRequired[bool]
    """True only in the `no_mote` ablation: MAR reads each candidate's text instead of its traits."""


class MopeState(MopeTask, LoopState, total=False):
    """A MOPE task as its node sees it (and the state of the standalone MOPE graph)."""

    profile: MotivationProfile


class MoteState(MoteTask, LoopState, total=False):
    """A MOTE task as its node sees it (and the state of the standalone MOTE graph)."""

    traits: dict[str, ItemTraits]


class MarState(MarTask, LoopState, total=False):
    """A MAR task as its node sees it (and the state of the standalone MAR graph)."""

    scores: dict[str, AlignmentScore]
    rationales: dict[str, MarRationale]


class MopeOutput(TypedDict):
    """What the standalone MOPE graph returns."""

    profile: MotivationProfile
    usage_log: list[CallUsage]
    degraded: list[Degradation]


class MoteOutput(TypedDict):
    """What the standalone MOTE graph returns."""

    traits: dict[str, ItemTraits]
    usage_log: list[CallUsage]
    degraded: list[Degradation]


class MarOutput(TypedDict):
    """What the standalone MAR graph returns."""

    scores: dict[str, AlignmentScore]
    rationales: NotRequired[dict[str, MarRationale]]
    usage_log: list[CallUsage]
    degraded: list[Degradation]


M3RecGraph = CompiledStateGraph[State, M3RecContext, RecInput, RecOutput]
"""The compiled recommendation graph's type (what `build_graph` returns)."""
