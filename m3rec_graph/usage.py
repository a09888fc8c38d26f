"""Cost accounting: per-call token usage, the price table, and the per-stage report."""

import functools
import json
from collections.abc import Sequence
from pathlib import Path

from langchain_core.messages import AIMessage, BaseMessage
from pydantic import BaseModel, ConfigDict
from typing_extensions import TypedDict

from m3rec_graph.context import Stage
from m3rec_graph.tokens import count_messages, count_text


class CallUsage(TypedDict):
    """Tokens of one LLM call."""

    stage: Stage
    model: str
    input_tokens: int
    output_tokens: int
    estimated: bool
    """True when the provider reported no usage and tiktoken counted instead."""
    accepted: bool
    """False for an answer that failed validation (its tokens were wasted)."""


def call_usage(
    stage: Stage,
    model: str,
    tokenizer_model: str | None,
    messages: Sequence[BaseMessage],
    raw: AIMessage | None,
    *,
    accepted: bool,
) -> CallUsage:
    """Return a call's usage: the provider's numbers, else a tiktoken count of prompt and answer."""
    meta = raw.usage_metadata if raw is not None else None
    if meta and meta.get("input_tokens"):
        return CallUsage(
            stage=stage,
            model=model,
            input_tokens=int(meta["input_tokens"]),
            output_tokens=int(meta.get("output_tokens", 0)),
            estimated=False,
            accepted=accepted,
        )
    tok = tokenizer_model or model
    answer = raw.text if raw is not None else ""
    return CallUsage(
        stage=stage,
        model=model,
        input_tokens=count_messages(messages, tok),
        output_tokens=count_text(answer, tok) if answer else 0,
        estimated=True,
        accepted=accepted,
    )


class Price(BaseModel):
    """USD per 1M tokens."""

    model_config = ConfigDict(frozen=True)

    input: float
    output: float


class PriceTable(BaseModel):
    """Model prices with the date they were taken."""

    model_config = ConfigDict(frozen=True)

    currency: str
    taken: str
    source: str
    batch_discount: float
    models: dict[str, Price]

    def cost(self, model: str, input_tokens: int, output_tokens: int) -> float | None:
        """Return the USD cost, or `None` for a model missing from the table."""
        price = self.models.get(model)
        if price is None:
            return None
        return (input_tokens * price.input + output_tokens * price.output) / 1_000_000


@functools.cache
def price_table(path: Path | None = None) -> PriceTable:
    """Load the shipped price table (or another file in the same format)."""
    source = path or Path(__file__).parent / "data" / "prices.json"
    return PriceTable.model_validate(json.loads(source.read_text()))


class StageCost(BaseModel):
    """Tokens and cost of one stage (all its calls, re-asks included)."""

    model_config = ConfigDict(frozen=True)

    models: list[str]
    calls: int
    input_tokens: int
    output_tokens: int
    wasted_tokens: int
    """Tokens of answers that failed validation and were re-asked."""
    estimated_calls: int
    cost_usd: float | None
    """`None` when a model is missing from the price table."""


class UsageReport(BaseModel):
    """Per-stage and total tokens and cost of one recommendation."""

    model_config = ConfigDict(frozen=True)

    stages: dict[str, StageCost]
    total: StageCost
    prices_taken: str


def _summarise(calls: Sequence[CallUsage], table: PriceTable) -> StageCost:
    costs = [table.cost(c["model"], c["input_tokens"], c["output_tokens"]) for c in calls]
    return StageCost(
        models=sorted({c["model"] for c in calls}),
        calls=len(calls),
        input_tokens=sum(c["input_tokens"] for c in calls),
        output_tokens=sum(c["output_tokens"] for c in calls),
        wasted_tokens=sum(c["input_tokens"] + c["output_tokens"] for c in calls if not c["accepted"]),
        estimated_calls=sum(c["estimated"] for c in calls),
        cost_usd=None if any(c is None for c in costs) else sum(c for c in costs if c is not None),
    )


def usage_report(calls: Sequence[CallUsage], table: PriceTable | None = None) -> UsageReport:
    """Aggregate call usage into per-stage and total tokens and cost."""
    prices = table or price_table()
    stages = {stage: _summarise([c for c in calls if c["stage"] == stage], prices) for stage in ("mope", "mote", "mar")}
    return UsageReport(stages=stages, total=_summarise(calls, prices), prices_taken=prices.taken)
