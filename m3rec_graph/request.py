"""Request validation: one typed error with a one-line message for anything malformed."""

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from m3rec_graph.errors import InvalidRequestError
from m3rec_graph.schemas import Item

MAX_CANDIDATES = 1000


class RecommendationRequest(BaseModel):
    """A validated recommendation request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    user_id: str = Field(min_length=1, max_length=200)
    history: list[Item] = Field(max_length=500)
    candidates: list[Item] = Field(min_length=1, max_length=MAX_CANDIDATES)
    k: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _unique_candidates(self) -> "RecommendationRequest":
        seen: set[str] = set()
        for item in self.candidates:
            if item.item_id in seen:
                raise ValueError(f"duplicate candidate item_id {item.item_id!r}")
            seen.add(item.item_id)
        return self


def _describe(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "request"
    more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"


def parse_request(data: Any) -> RecommendationRequest:
    """Validate a request mapping; raise `InvalidRequestError` with a one-line reason."""
    if isinstance(data, RecommendationRequest):
        return data
    if not isinstance(data, dict):
        raise InvalidRequestError(f"request must be a JSON object, got {type(data).__name__}")
    fields = {key: data[key] for key in ("user_id", "history", "candidates", "k") if key in data}
    extra = sorted(set(data) - set(RecommendationRequest.model_fields))
    if extra:
        raise InvalidRequestError(f"unknown request field(s): {', '.join(map(str, extra))}")
    try:
        return RecommendationRequest.model_validate(fields)
    except ValidationError as exc:
        raise InvalidRequestError(f"invalid request: {_describe(exc)}") from None
