"""Request validation: one typed error with a one-line message for anything malformed."""

import unicodedata
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, model_validator

from m3rec_graph.contracts.schemas import Item
from m3rec_graph.errors import InvalidRequestError

MAX_CANDIDATES = 1000

ID_FORBIDDEN = "<>[]"
"""Characters an item id may not contain: prompts render ids as `[id]` lines inside `<tag>` blocks."""


def _bad_id_char(item_id: str) -> str | None:
    """Return the first character that may not appear in an item id, or `None`."""
    for ch in item_id:
        # Cc/Cf/Cs/Co/Cn: control, format (bidi, zero-width), surrogate, private, unassigned
        if ch in ID_FORBIDDEN or unicodedata.category(ch).startswith("C"):
            return ch
    return None


def _has_surrogate(text: str) -> bool:
    """Return whether `text` holds a lone surrogate (it came from bytes that were not UTF-8)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


class Candidate(Item):
    """A candidate item: an `Item` plus, optionally, the host's own score for it.

    `prior` is what the host's retriever or ranker thought of the candidate (any
    finite number, higher = better; only its order within the request counts, since
    fusion z-normalises it per request). It never reaches a prompt. Either every
    candidate of a request carries one or none does.
    """

    prior: float | None = Field(default=None, strict=True, allow_inf_nan=False)
    """The host's score for this candidate (strict: a number, not a string or a boolean)."""


class RecommendationRequest(BaseModel):
    """A validated recommendation request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    user_id: str = Field(min_length=1, max_length=200)
    history: list[Item] = Field(max_length=500)
    candidates: list[Candidate] = Field(min_length=1, max_length=MAX_CANDIDATES)
    k: StrictInt | None = Field(default=None, ge=1)

    @property
    def priors(self) -> dict[str, float] | None:
        """Each candidate's `prior` by item id, or `None` when the request carries none."""
        if self.candidates[0].prior is None:
            return None
        return {c.item_id: c.prior for c in self.candidates if c.prior is not None}

    @model_validator(mode="after")
    def _priors_all_or_none(self) -> "RecommendationRequest":
        # A prior for some candidates only cannot be z-normalised against the others,
        # and guessing a value for the rest would rank them by the guess.
        carrying = [c.prior is not None for c in self.candidates]
        if any(carrying) and not all(carrying):
            n = carrying.index(not carrying[0])
            raise ValueError(
                f"candidates.{n} ({self.candidates[n].item_id!r}) "
                f"{'has no' if carrying[0] else 'has a'} prior but candidates.0 "
                f"{'does' if carrying[0] else 'does not'}: give every candidate a prior, or none"
            )
        return self

    @model_validator(mode="after")
    def _unique_candidates(self) -> "RecommendationRequest":
        seen: set[str] = set()
        for item in self.candidates:
            if item.item_id in seen:
                raise ValueError(f"duplicate candidate item_id {item.item_id!r}")
            seen.add(item.item_id)
        return self

    @model_validator(mode="after")
    def _safe_text(self) -> "RecommendationRequest":
        # Ids are rendered verbatim into prompts (text fields are cleaned), so an id
        # must not be able to break a line or fake a delimiter. Lone surrogates
        # cannot be encoded for the provider, the cache or the output.
        if _has_surrogate(self.user_id):
            raise ValueError("user_id is not valid Unicode (bytes that were not UTF-8?)")
        for where, items in (("history", self.history), ("candidates", self.candidates)):
            for n, item in enumerate(items):
                bad = _bad_id_char(item.item_id)
                if bad is not None:
                    raise ValueError(
                        f"{where}.{n}.item_id {item.item_id!r} contains {bad!r}: ids may not contain "
                        f"control or format characters or any of {ID_FORBIDDEN}"
                    )
                texts = [item.title, item.description, item.brand, item.review, *item.categories]
                if any(text is not None and _has_surrogate(text) for text in texts):
                    raise ValueError(
                        f"{where}.{n} ({item.item_id!r}) has text that is not valid Unicode"
                    )
        return self


def one_line(text: str) -> str:
    """Escape line breaks and other unprintable characters, so a message stays on one line."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def _describe(exc: ValidationError) -> str:
    first = exc.errors()[0]
    message = first["msg"]
    if first["type"] == "value_error" and "error" in first.get("ctx", {}):
        message = str(first["ctx"]["error"])  # our own check: drop pydantic's "Value error, "
    where = ".".join(str(p) for p in first["loc"])
    more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
    return f"{where}: {message}{more}" if where else f"{message}{more}"


def parse_request(data: Any) -> RecommendationRequest:
    """Validate a request mapping; raise `InvalidRequestError` with a one-line reason."""
    if isinstance(data, RecommendationRequest):
        return data
    if not isinstance(data, dict):
        raise InvalidRequestError(f"request must be a JSON object, got {type(data).__name__}")
    fields = {key: data[key] for key in ("user_id", "history", "candidates", "k") if key in data}
    extra = sorted(str(key) for key in set(data) - set(RecommendationRequest.model_fields))
    if extra:
        raise InvalidRequestError(one_line(f"unknown request field(s): {', '.join(extra)}"))
    try:
        return RecommendationRequest.model_validate(fields)
    except ValidationError as exc:
        raise InvalidRequestError(one_line(f"invalid request: {_describe(exc)}")) from None


def item_dict(item: Item) -> dict[str, Any]:
    """Dump an item for a request: no null fields and no empty category list."""
    data = item.model_dump(exclude_none=True)
    if not data.get("categories"):
        data.pop("categories", None)
    return data
