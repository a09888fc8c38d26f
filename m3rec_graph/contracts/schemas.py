"""Data contracts: input items, the motivational schema, and what each LLM stage returns.

The motivational schema is a closed set of seven dimensions (`Dimension`). MOPE
scores a user on them, MOTE scores an item on them, and MAR aligns the two. A
fixed, small set keeps the profile comparable across users and items, makes the
JSON schema enforceable by grammar-constrained decoding, and gives the
deterministic fallbacks something to compute with.
"""

import copy
import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Literal, cast

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails


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
    """One entry of the final ranking.

    `score` is always MAR's alignment in [0, 1] (the overlap fallback's when MAR did
    not run). With fusion on (`M3RecContext.fusion`), the ranking follows
    `fused_score` instead, and `score_parts` says what each signal added to it.
    """

    rank: int = Field(ge=1)
    fused_score: float | None = None
    """The fused score (a weighted sum of per-request z-scores, unbounded); `None`: fusion off."""
    score_parts: dict[str, float] | None = None
    """Signal (`mar`, `overlap`, `text`, `prior`) -> its weighted z-score; they sum to `fused_score`."""


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


TASK_IDS = "m3rec_task_ids"
"""The validation-context key of the ids a task's answer may (MOPE) or must (MAR) use."""


@dataclass(frozen=True)
class AnswerContract:
    """What one task's answer must be: a pydantic model, plus the ids this task allows, if any.

    A MOPE answer may only cite this user's history ids and a listwise MAR answer
    must score exactly its chunk's candidate ids. Pydantic says that directly with
    a model per task (a `Literal` of the ids, one field per id), but creating one
    per task, and generating its JSON schema, was the graph's largest CPU cost
    after the model calls. So the per-task part travels as data instead: one
    shared model checks the ids it gets through pydantic's validation context,
    with the errors a per-id model reports, and the per-id JSON schema is
    assembled from a template. The unit tests check both against the per-id
    models (`per_id_profile_model`, `per_id_listwise_model`).
    """

    model: type[BaseModel]
    ids: tuple[str, ...] = ()
    task_json_schema: Callable[[tuple[str, ...]], dict[str, Any]] | None = None
    """Builds the per-id JSON schema; None for a contract without ids (the model's own schema)."""

    @staticmethod
    def of(schema: "AnswerContract | type[BaseModel]") -> "AnswerContract":
        """Return `schema` as a contract (a plain pydantic model is a contract without ids)."""
        return schema if isinstance(schema, AnswerContract) else AnswerContract(schema)

    @property
    def per_task(self) -> bool:
        """Whether the contract depends on the task's ids (so it is not worth caching)."""
        return self.task_json_schema is not None

    def json_schema(self) -> dict[str, Any]:
        """Return the JSON schema the model is asked to answer in (a fresh dict: callers may edit it)."""
        if self.task_json_schema is not None:
            return self.task_json_schema(self.ids)
        return copy.deepcopy(_model_json_schema(self.model))

    def validate_answer(self, data: Any) -> BaseModel:
        """Validate a parsed answer (raises pydantic's `ValidationError`)."""
        return self.model.model_validate(data, context={TASK_IDS: self.ids})

    def validate_answer_json(self, text: str | bytes) -> BaseModel:
        """Validate an answer's JSON text (raises pydantic's `ValidationError`, `json_invalid` for bad JSON)."""
        return self.model.model_validate_json(text, context={TASK_IDS: self.ids})


@functools.lru_cache(maxsize=256)
def _model_json_schema(model: type[BaseModel]) -> dict[str, Any]:
    # Generating a JSON schema is costly and the answer models are immutable.
    return model.model_json_schema()


def _task_ids(info: ValidationInfo) -> tuple[str, ...]:
    context = info.context
    ids = context.get(TASK_IDS, ()) if isinstance(context, dict) else ()
    return tuple(ids)


def profile_contract(history_ids: Sequence[str]) -> AnswerContract:
    """Return the MOPE answer contract, with evidence ids limited to the history."""
    if not history_ids:
        return AnswerContract(per_id_profile_model(()))
    return AnswerContract(ProfileAnswer, tuple(history_ids), _profile_json_schema)


@functools.lru_cache(maxsize=64)
def per_id_profile_model(history_ids: Sequence[str]) -> type[BaseModel]:
    """Return the MOPE answer contract as a pydantic model whose evidence items are a `Literal` of the ids."""
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


_AnyEvidenceDimension = create_model(
    "ProfileDimension",
    __config__=ConfigDict(extra="forbid"),
    strength=(int, _level("0 = irrelevant to this shopper, 10 = dominant")),
    evidence=(list[Any], Field(max_length=5)),
)


def _expected_repr(values: Sequence[str]) -> str:
    """How pydantic lists a `Literal`'s values in a `literal_error` (checked by the unit tests)."""
    shown = [repr(v) for v in values]
    return shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} or {shown[-1]}"


class ProfileAnswer(BaseModel):
    """The MOPE answer model behind `profile_contract`: evidence ids are checked against the task's history.

    Validated with the history ids in the validation context (`TASK_IDS`), it
    accepts what the per-id model (`per_id_profile_model`) accepts and reports
    the same errors.
    """

    model_config = ConfigDict(extra="forbid", title="MotivationProfile")

    functional: _AnyEvidenceDimension
    quality: _AnyEvidenceDimension
    aesthetic: _AnyEvidenceDimension
    self_care: _AnyEvidenceDimension
    social: _AnyEvidenceDimension
    value: _AnyEvidenceDimension
    convenience: _AnyEvidenceDimension
    summary: str = Field(min_length=1, max_length=800)

    @model_validator(mode="wrap")
    @classmethod
    def _evidence_from_the_history(
        cls, data: Any, handler: ModelWrapValidatorHandler[Any], info: ValidationInfo
    ) -> Any:
        errors: list[InitErrorDetails] = []
        history_ids = _task_ids(info)
        if history_ids and isinstance(data, dict):
            allowed = set(history_ids)
            expected = _expected_repr(history_ids)
            for dim in Dimension:
                entry = data.get(dim.value)
                evidence = entry.get("evidence") if isinstance(entry, dict) else None
                if not isinstance(evidence, list) or len(evidence) > 5:
                    continue  # pydantic reports the list itself (type, too long), not its items
                for n, item in enumerate(evidence):
                    try:
                        known = isinstance(item, str) and item in allowed
                    except TypeError:
                        known = False
                    if not known:
                        errors.append(
                            {
                                "type": "literal_error",
                                "loc": (dim.value, "evidence", n),
                                "input": item,
                                "ctx": {"expected": expected},
                            }
                        )
        return _validate_adding(
            cls.model_config.get("title") or cls.__name__, data, handler, errors
        )


def _validate_adding(
    title: str, data: Any, handler: ModelWrapValidatorHandler[Any], errors: list[InitErrorDetails]
) -> Any:
    """Run pydantic's validation, and report `errors` too (alone when it passes)."""
    try:
        validated = handler(data)
    except ValidationError as exc:
        if not errors:
            raise
        found = [
            cast(
                InitErrorDetails,
                {key: e[key] for key in ("type", "loc", "input", "ctx") if key in e},
            )
            for e in exc.errors()
        ]
        try:
            combined = ValidationError.from_exception_data(title, [*found, *errors])
        except (KeyError, TypeError, ValueError):  # an error type that does not round-trip
            raise exc from None
        raise combined from None
    if errors:
        raise ValidationError.from_exception_data(title, errors)
    return validated


@functools.cache
def _profile_template() -> str:
    """Return pydantic's JSON schema of the per-id profile model for two placeholder ids, as JSON text."""
    return json.dumps(
        per_id_profile_model(("m3rec-template-a", "m3rec-template-b")).model_json_schema()
    )


def _profile_json_schema(history_ids: Sequence[str]) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(_profile_template())  # a fresh copy: callers may edit it
    evidence = schema["$defs"]["ProfileDimension"]["properties"]["evidence"]
    ids = list(history_ids)
    # pydantic writes a one-value Literal as `const`, a longer one as `enum`
    evidence["items"] = (
        {"const": ids[0], "type": "string"} if len(ids) == 1 else {"enum": ids, "type": "string"}
    )
    return schema


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


def _exactly_the_task_ids(
    key: str, title: str, data: Any, handler: ModelWrapValidatorHandler[Any], info: ValidationInfo
) -> Any:
    """Validate an answer whose `key` maps exactly the task's ids (as a per-id model would)."""
    entries = data.get(key) if isinstance(data, dict) else None
    errors: list[InitErrorDetails] = []
    candidate_ids = _task_ids(info)
    if candidate_ids and isinstance(entries, dict):
        allowed = set(candidate_ids)
        errors += [
            {"type": "missing", "loc": (key, i), "input": entries}
            for i in candidate_ids
            if i not in entries
        ]
        errors += [
            {"type": "extra_forbidden", "loc": (key, name), "input": value}
            for name, value in entries.items()
            if name not in allowed
        ]
        if any(name not in allowed for name in entries):
            # like a per-id model: an unknown id's value is not validated
            data = {**data, key: {k: v for k, v in entries.items() if k in allowed}}
    return _validate_adding(title, data, handler, errors)


class ListwiseAnswer(BaseModel):
    """The listwise MAR answer model behind `listwise_contract`: `scores` keyed by exactly the task's ids.

    Validated with the chunk's candidate ids in the validation context
    (`TASK_IDS`), `scores` is a dict of `Judgement`s whose keys are checked with
    the errors a per-id model (`per_id_listwise_model`: one required field per
    id) reports for a missing or an extra field.
    """

    model_config = ConfigDict(extra="forbid", title="ListwiseScores")

    scores: dict[str, Judgement]

    @model_validator(mode="wrap")
    @classmethod
    def _exactly_the_candidate_ids(
        cls, data: Any, handler: ModelWrapValidatorHandler[Any], info: ValidationInfo
    ) -> Any:
        return _exactly_the_task_ids("scores", "ListwiseScores", data, handler, info)


class ScoreOnly(BaseModel):
    """MAR's score of one candidate, without the why (the `scores_first` answer)."""

    model_config = ConfigDict(extra="forbid")

    score: int = Field(ge=0, le=10, description="0 = no alignment, 10 = perfect alignment")


class Rationale(BaseModel):
    """Why one ranked candidate fits (the `scores_first` answer's second call)."""

    model_config = ConfigDict(extra="forbid")

    matched: list[Dimension] = Field(max_length=3, description="the motivations it matches")
    rationale: str = Field(min_length=1, max_length=240, description="one short sentence")


class ScoresOnlyAnswer(BaseModel):
    """The scores-first MAR answer: `scores` keyed by exactly the chunk's ids, a score each."""

    model_config = ConfigDict(extra="forbid", title="ScoresOnly")

    scores: dict[str, ScoreOnly]

    @model_validator(mode="wrap")
    @classmethod
    def _exactly_the_candidate_ids(
        cls, data: Any, handler: ModelWrapValidatorHandler[Any], info: ValidationInfo
    ) -> Any:
        return _exactly_the_task_ids("scores", "ScoresOnly", data, handler, info)


class RationalesAnswer(BaseModel):
    """The rationales of the top items: `rationales` keyed by exactly those ids."""

    model_config = ConfigDict(extra="forbid", title="Rationales")

    rationales: dict[str, Rationale]

    @model_validator(mode="wrap")
    @classmethod
    def _exactly_the_candidate_ids(
        cls, data: Any, handler: ModelWrapValidatorHandler[Any], info: ValidationInfo
    ) -> Any:
        return _exactly_the_task_ids("rationales", "Rationales", data, handler, info)


def per_id_keyed_model(
    title: str, key: str, entry: type[BaseModel], candidate_ids: Sequence[str]
) -> type[BaseModel]:
    """Return a model `{key: {id: entry}}` with one required field per id (the JSON schemas' source)."""
    # Field names must be identifiers; the ids themselves are the aliases.
    fields: dict[str, Any] = {
        f"candidate_{n}": (entry, Field(alias=item_id))
        for n, item_id in enumerate(candidate_ids)
    }
    container = "Scores" if key == "scores" else key.capitalize()
    inner = create_model(container, __config__=ConfigDict(extra="forbid"), **fields)
    outer: dict[str, Any] = {key: (inner, ...)}
    model: type[BaseModel] = create_model(title, __config__=ConfigDict(extra="forbid"), **outer)
    return model


def per_id_listwise_model(candidate_ids: Sequence[str]) -> type[BaseModel]:
    """Return the listwise contract as a pydantic model with one required field per id.

    What `listwise_contract` is equivalent to (and their JSON schema's source).
    """
    return per_id_keyed_model("ListwiseScores", "scores", Judgement, candidate_ids)


_TEMPLATE_ID = "m3rec-template-id"

_KEYED: dict[str, tuple[str, str, type[BaseModel]]] = {
    "listwise": ("ListwiseScores", "scores", Judgement),
    "scores": ("ScoresOnly", "scores", ScoreOnly),
    "rationales": ("Rationales", "rationales", Rationale),
}


@functools.cache
def _keyed_template(kind: str) -> str:
    """Pydantic's JSON schema of the one-candidate per-id model of `kind`, as JSON text."""
    title, key, entry = _KEYED[kind]
    return json.dumps(per_id_keyed_model(title, key, entry, [_TEMPLATE_ID]).model_json_schema())


def _keyed_json_schema(kind: str, candidate_ids: Sequence[str]) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(_keyed_template(kind))  # a fresh copy: callers may edit it
    _, key, _ = _KEYED[kind]
    container = schema["$defs"]["Scores" if key == "scores" else key.capitalize()]
    entry = container["properties"].pop(_TEMPLATE_ID)
    container["properties"] = {item_id: dict(entry) for item_id in candidate_ids}
    container["required"] = list(candidate_ids)
    return schema


def _listwise_json_schema(candidate_ids: Sequence[str]) -> dict[str, Any]:
    return _keyed_json_schema("listwise", candidate_ids)


def _scores_json_schema(candidate_ids: Sequence[str]) -> dict[str, Any]:
    return _keyed_json_schema("scores", candidate_ids)


def _rationales_json_schema(candidate_ids: Sequence[str]) -> dict[str, Any]:
    return _keyed_json_schema("rationales", candidate_ids)


def listwise_contract(candidate_ids: Sequence[str]) -> AnswerContract:
    """Return the MAR listwise contract: `scores` keyed by every candidate id, each exactly once.

    Keys as required properties are the strongest constraint a JSON schema can
    state: a grammar-constrained decoder cannot emit an unknown, duplicate or
    missing id, and for other providers validation rejects them.
    """
    if not candidate_ids:
        return AnswerContract(per_id_listwise_model(()))
    return AnswerContract(ListwiseAnswer, tuple(candidate_ids), _listwise_json_schema)


def scores_only_contract(candidate_ids: Sequence[str]) -> AnswerContract:
    """Return the scores-first MAR contract: `scores` keyed by every candidate id, a score each."""
    if not candidate_ids:
        return AnswerContract(per_id_keyed_model("ScoresOnly", "scores", ScoreOnly, ()))
    return AnswerContract(ScoresOnlyAnswer, tuple(candidate_ids), _scores_json_schema)


def rationales_contract(candidate_ids: Sequence[str]) -> AnswerContract:
    """Return the rationales contract: `rationales` keyed by every top item's id, exactly once."""
    if not candidate_ids:
        return AnswerContract(per_id_keyed_model("Rationales", "rationales", Rationale, ()))
    return AnswerContract(RationalesAnswer, tuple(candidate_ids), _rationales_json_schema)


TRAITS_CONTRACT = AnswerContract(TraitsAnswer)
"""The MOTE answer contract (the same for every item)."""

POINTWISE_CONTRACT = AnswerContract(PointwiseScore)
"""The pointwise MAR answer contract (one candidate's judgement)."""
