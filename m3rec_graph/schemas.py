"""Data contracts: input items, the motivational schema, and what each LLM stage returns.

The motivational schema is a closed set of seven dimensions (`Dimension`). MOPE
scores a user on them, MOTE scores an item on them, and MAR aligns the two. A
fixed, small set keeps the profile comparable across users and items, makes the
JSON schema enforceable by grammar-constrained decoding, and gives the
deterministic fallbacks something to compute with.
"""

import functools
from collections.abc import Sequence
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator


class Dimension(StrEnum):
    """The motivation dimensions shared by user profiles and item traits."""

    FUNCTIONAL = "functional"
    QUALITY = "quality"
    AESTHETIC = "aesthetic"
    SELF_CARE = "self_care"
    SOCIAL = "social"
    VALUE = "value"
    CONVENIENCE = "convenience"


DIMENSION_DESCRIPTIONS: dict[Dimension, str] = {
    Dimension.FUNCTIONAL: "functional need: solves a practical problem or task",
    Dimension.QUALITY: "quality/performance: premium, professional-grade, trusted, effective",
    Dimension.AESTHETIC: "aesthetic/sensory: looks, style, colour, scent, texture, feel",
    Dimension.SELF_CARE: "emotional/self-care: pampering, relaxation, wellbeing, treating oneself",
    Dimension.SOCIAL: "social/identity: gifting, belonging, self-expression, following trends",
    Dimension.VALUE: "value/price: low price, bulk packs, good deal, long-lasting",
    Dimension.CONVENIENCE: "convenience: easy, quick, portable, low effort",
}
"""One line per dimension, shown to every LLM stage so all stages share one meaning."""

_STRICT = ConfigDict(extra="forbid", frozen=True)

Strength = float
"""A dimension strength in [0, 1]."""


class Item(BaseModel):
    """One catalogue item: an id plus whatever text exists (any text field may be missing)."""

    model_config = _STRICT

    item_id: str = Field(min_length=1, max_length=200)
    title: str | None = None
    description: str | None = None
    brand: str | None = None
    categories: list[str] = Field(default_factory=list)
    """Category names or paths such as `Makeup > Nails > Nail Polish`."""
    review: str | None = None

    @field_validator("item_id")
    @classmethod
    def _strip_id(cls, value: str) -> str:
        stripped = value.strip()
        if not stripped:
            raise ValueError("item_id must not be blank")
        return stripped

    def has_text(self) -> bool:
        """Return whether the item has any text an LLM could read."""
        fields = (self.title, self.description, self.brand, self.review)
        return any(f and f.strip() for f in fields) or any(c.strip() for c in self.categories)


class ProfileDimension(BaseModel):
    """How strongly one motivation drives the user, and which history items show it."""

    model_config = _STRICT

    strength: Strength = Field(ge=0.0, le=1.0, description="0.0 = irrelevant, 1.0 = dominant")
    evidence: list[str] = Field(
        default_factory=list,
        max_length=5,
        description="item_ids from the history that show this motivation",
    )


class MotivationProfile(BaseModel):
    """MOPE output: the user's motivational profile on the fixed schema."""

    model_config = _STRICT

    functional: ProfileDimension
    quality: ProfileDimension
    aesthetic: ProfileDimension
    self_care: ProfileDimension
    social: ProfileDimension
    value: ProfileDimension
    convenience: ProfileDimension
    summary: str = Field(
        min_length=1, max_length=800, description="one paragraph on why this user buys"
    )

    def dimension(self, dim: Dimension) -> ProfileDimension:
        """Return the entry for `dim`."""
        value: ProfileDimension = getattr(self, dim.value)
        return value

    def strengths(self) -> dict[Dimension, float]:
        """Return the strength of every dimension."""
        return {dim: self.dimension(dim).strength for dim in Dimension}


class DimensionStrengths(BaseModel):
    """How strongly an item serves each motivation, each in [0, 1]."""

    model_config = _STRICT

    functional: Strength = Field(ge=0.0, le=1.0)
    quality: Strength = Field(ge=0.0, le=1.0)
    aesthetic: Strength = Field(ge=0.0, le=1.0)
    self_care: Strength = Field(ge=0.0, le=1.0)
    social: Strength = Field(ge=0.0, le=1.0)
    value: Strength = Field(ge=0.0, le=1.0)
    convenience: Strength = Field(ge=0.0, le=1.0)

    def as_dict(self) -> dict[Dimension, float]:
        """Return the strengths keyed by dimension."""
        return {dim: float(getattr(self, dim.value)) for dim in Dimension}

    @classmethod
    def uniform(cls, value: float) -> "DimensionStrengths":
        """Return the same strength on every dimension."""
        return cls(**{dim.value: value for dim in Dimension})


class ItemTraits(BaseModel):
    """MOTE output: an item's motivational traits on the same schema as the profile."""

    model_config = _STRICT

    strengths: DimensionStrengths
    traits: list[str] = Field(
        min_length=2, max_length=5, description="2-5 concise trait phrases (a few words each)"
    )

    @field_validator("traits")
    @classmethod
    def _short_phrases(cls, phrases: list[str]) -> list[str]:
        for phrase in phrases:
            if not phrase.strip() or len(phrase) > 80:
                raise ValueError("each trait must be a non-empty phrase of at most 80 characters")
        return phrases


class AlignmentScore(BaseModel):
    """MAR's result for one candidate, normalised: score in [0, 1] plus why."""

    model_config = _STRICT

    item_id: str
    score: float = Field(ge=0.0, le=1.0, description="alignment, normalised to [0, 1]")
    matched_motivations: list[Dimension]
    rationale: str
    source: Literal["llm", "fallback"]
    """`fallback` when MAR's deterministic overlap ranking produced this score."""


class RankedItem(AlignmentScore):
    """One entry of the final ranking."""

    rank: int = Field(ge=1)


Level = int
"""What a model answers for a strength: an integer 0-10 (divided by 10 into [0, 1]).

Grammar-constrained decoders enforce integer bounds but not float bounds, and
small models tend to answer integers anyway, so the LLM-facing contracts ask for
levels and the domain models store strengths.
"""


def _level(description: str = "0 = not at all, 10 = very strongly") -> Any:
    return Field(ge=0, le=10, description=description)


def _ids_literal(ids: list[str]) -> Any:
    # A Literal over the allowed ids becomes a JSON-schema `enum`, which
    # grammar-constrained decoders (llama.cpp, OpenAI strict mode) enforce.
    return Literal[tuple(ids)] if ids else str


class DimensionLevels(BaseModel):
    """How strongly an item serves each motivation, as levels 0-10."""

    model_config = ConfigDict(extra="forbid")

    functional: Level = _level()
    quality: Level = _level()
    aesthetic: Level = _level()
    self_care: Level = _level()
    social: Level = _level()
    value: Level = _level()
    convenience: Level = _level()


class TraitsAnswer(BaseModel):
    """The MOTE answer contract: levels 0-10 per dimension, plus trait phrases."""

    model_config = ConfigDict(extra="forbid", title="ItemTraits")

    strengths: DimensionLevels
    traits: list[Annotated[str, Field(min_length=1, max_length=60)]] = Field(
        min_length=2, max_length=5, description="2-5 short phrases"
    )

    def to_traits(self) -> ItemTraits:
        """Convert levels to strengths in [0, 1]."""
        levels = self.strengths.model_dump()
        return ItemTraits(
            strengths=DimensionStrengths(**{k: v / 10 for k, v in levels.items()}),
            traits=[t.strip() for t in self.traits],
        )


def profile_answer_schema(history_ids: Sequence[str]) -> type[BaseModel]:
    """Return the MOPE answer contract, with evidence ids limited to the history (memoised)."""
    return _profile_answer_schema(tuple(history_ids))


@functools.lru_cache(maxsize=4096)
def _profile_answer_schema(history_ids: tuple[str, ...]) -> type[BaseModel]:
    dim_model = create_model(
        "ProfileDimension",
        __config__=ConfigDict(extra="forbid"),
        strength=(int, _level("0 = irrelevant to this shopper, 10 = dominant")),
        evidence=(list[_ids_literal(list(history_ids))], Field(max_length=5)),  # type: ignore[misc,arg-type]
    )
    fields: dict[str, Any] = {dim.value: (dim_model, ...) for dim in Dimension}
    fields["summary"] = (str, Field(min_length=1, max_length=800))
    model: type[BaseModel] = create_model(
        "MotivationProfile", __config__=ConfigDict(extra="forbid"), **fields
    )
    return model


def profile_from_answer(answer: BaseModel) -> MotivationProfile:
    """Convert a MOPE answer (levels 0-10) to a `MotivationProfile` (strengths in [0, 1])."""
    data = answer.model_dump()
    for dim in Dimension:
        entry = data[dim.value]
        entry["strength"] = entry["strength"] / 10
        entry["evidence"] = list(dict.fromkeys(entry["evidence"]))
    return MotivationProfile.model_validate(data)


class Judgement(BaseModel):
    """MAR's judgement of one candidate."""

    model_config = ConfigDict(extra="forbid")

    score: int = Field(ge=0, le=10, description="0 = no alignment, 10 = perfect alignment")
    matched: list[Dimension] = Field(max_length=3, description="the motivations it matches")
    rationale: str = Field(min_length=1, max_length=240, description="one short sentence")


PointwiseScore = Judgement
"""MAR pointwise answer: the paper's Score(u, i) = F_LLM(m_u, T_i) for one candidate."""


def listwise_answer_schema(candidate_ids: Sequence[str]) -> type[BaseModel]:
    """Return the MAR listwise contract: `scores` keyed by every candidate id, each exactly once.

    Memoised: building a pydantic model per call was the largest single cost of
    the graph's own overhead (benchmarks/).

    Keys as required properties are the strongest constraint a JSON schema can
    state: a grammar-constrained decoder cannot emit an unknown, duplicate or
    missing id, and for other providers validation rejects them.
    """
    # Field names must be identifiers; the ids themselves are the aliases.
    fields: dict[str, Any] = {
        f"candidate_{n}": (Judgement, Field(alias=item_id)) for n, item_id in enumerate(candidate_ids)
    }
    scores = create_model("Scores", __config__=ConfigDict(extra="forbid"), **fields)
    model: type[BaseModel] = create_model(
        "ListwiseScores", __config__=ConfigDict(extra="forbid"), scores=(scores, ...)
    )
    return model
