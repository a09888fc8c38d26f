"""Cost accounting: per-call token usage, the price table, and the per-stage report."""

import functools
from collections.abc import Sequence

from langchain_core.messages import AIMessage, BaseMessage
from pydantic import BaseModel, ConfigDict
from typing_extensions import TypedDict

from m3rec_graph.context import Stage
from m3rec_graph.llm.registry import Registry, registry
from m3rec_graph.llm.tokens import count_messages, count_text


class CallUsage(TypedDict):
    """Tokens of one LLM call."""

    stage: Stage
    model: str
    input_tokens: int
    output_tokens: int
    """Everything billed as output, reasoning tokens included (as the provider reports it)."""
    reasoning_tokens: int
    """The part of `output_tokens` the model spent reasoning (0 without reasoning)."""
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
        details = meta.get("output_token_details") or {}
        return CallUsage(
            stage=stage,
            model=model,
            input_tokens=int(meta["input_tokens"]),
            output_tokens=int(meta.get("output_tokens", 0)),
            reasoning_tokens=int(details.get("reasoning", 0) or 0),
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
        reasoning_tokens=0,  # not visible without the provider's count
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


def price_table(source: Registry | None = None) -> PriceTable:
    """Return the prices of the model registry (`m3rec_graph/llm/models.json`) as a table.

    A model without a price (an unknown name) is missing from the table, so its
    cost is `None`, never 0.
    """
    return _prices(source) if source is not None else _shipped_prices()


@functools.cache
def _shipped_prices() -> PriceTable:
    return _prices(registry())


def _prices(reg: Registry) -> PriceTable:
    return PriceTable(
        currency=reg.currency,
        taken=reg.taken,
        source="m3rec_graph/llm/models.json (each model's price names its own source and date)",
        batch_discount=reg.batch_discount,
        models={
            name: Price(input=info.price.input, output=info.price.output)
            for name, info in reg.models.items()
            if info.price is not None
        },
    )


class StageCost(BaseModel):
    """Tokens and cost of one stage (all its calls, re-asks included)."""

    model_config = ConfigDict(frozen=True)

    models: list[str]
    calls: int
    input_tokens: int
    output_tokens: int
    """Billed output, reasoning included."""
    reasoning_tokens: int = 0
    """The reasoning part of `output_tokens`."""
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
        reasoning_tokens=sum(c.get("reasoning_tokens", 0) for c in calls),
        wasted_tokens=sum(
            c["input_tokens"] + c["output_tokens"] for c in calls if not c["accepted"]
        ),
        estimated_calls=sum(c["estimated"] for c in calls),
        cost_usd=None if any(c is None for c in costs) else sum(c for c in costs if c is not None),
    )


def usage_report(calls: Sequence[CallUsage], table: PriceTable | None = None) -> UsageReport:
    """Aggregate call usage into per-stage and total tokens and cost."""
    prices = table or price_table()
    stages = {
        stage: _summarise([c for c in calls if c["stage"] == stage], prices)
        for stage in ("mope", "mote", "mar")
    }
    return UsageReport(stages=stages, total=_summarise(calls, prices), prices_taken=prices.taken)
