"""An instant (or fixed-latency) fake chat model for the benchmarks.

It answers every stage with valid JSON read off the prompt, the way a well-behaved
provider would, so a benchmark measures the graph and not the model. It needs nothing
from `tests/`. The benchmarks that need an HTTP provider double (`rate_limits`, `soak`,
`scale`, `serving_latency`) start the test suite's own servers (`tests/fault_server.py`,
`tests/latency_server.py`), so they run from a checkout, not from an installed wheel.

`latency_s > 0` makes each async call `await asyncio.sleep(latency_s)`, which is
how the concurrency benchmark stands in for network latency without using CPU.
"""

import asyncio
import json
import re
import time
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.output_parsers import JsonOutputParser
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable

from m3rec_graph.context import ModelSpec
from m3rec_graph.contracts.schemas import Dimension

STAGE_MARKERS = {"You are MOPE": "mope", "You are MOTE": "mote", "You are MAR": "mar"}
_ID_LINE = re.compile(r"^\[([^\]]+)\]", flags=re.MULTILINE)
_POINTWISE_ID = re.compile(r"<candidate>\s*\[([^\]]+)\]")


def stage_of(prompt: str) -> str:
    """Return which stage a prompt belongs to (from the system message's first words)."""
    for marker, stage in STAGE_MARKERS.items():
        if marker in prompt:
            return stage
    raise ValueError(f"not an m3rec prompt: {prompt[:80]!r}")


def _block(prompt: str, tag: str) -> str:
    # The system message names the tags too: the data block is the last one.
    return prompt.rsplit(f"<{tag}>", 1)[1].split(f"</{tag}>", 1)[0]


def score_of(item_id: str) -> int:
    """Return a deterministic, id-dependent MAR score in 0-10 (so rankings are not all ties)."""
    return zlib.crc32(item_id.encode("utf-8")) % 11


def answer_for(stage: str, prompt: str) -> dict[str, Any]:
    """Return a valid answer for `stage`, using only ids that appear in `prompt`."""
    if stage == "mope":
        history = _ID_LINE.findall(_block(prompt, "history"))
        answer: dict[str, Any] = {
            dim.value: {"strength": 5, "evidence": history[:1]} for dim in Dimension
        }
        answer["aesthetic"] = {"strength": 9, "evidence": history[:2]}
        answer["summary"] = "Buys colourful cosmetics for the look."
        return answer
    if stage == "mote":
        return {
            "strengths": {dim.value: 5 for dim in Dimension},
            "traits": ["bright colour", "long lasting"],
        }
    if "<candidates>" in prompt:
        ids = _ID_LINE.findall(_block(prompt, "candidates"))
        return {
            "scores": {
                i: {"score": score_of(i), "matched": ["aesthetic"], "rationale": "fits the look"}
                for i in ids
            }
        }
    match = _POINTWISE_ID.search(prompt.rsplit("</profile>", 1)[1])
    if match is None:
        raise ValueError("a MAR prompt with neither <candidates> nor <candidate>")
    return {"score": score_of(match.group(1)), "matched": ["value"], "rationale": "good value"}


@dataclass
class CallCounter:
    """LLM calls per stage (every call of every model a factory handed out)."""

    by_stage: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.by_stage.values())

    def reset(self) -> None:
        self.by_stage.clear()


class BenchChatModel(BaseChatModel):
    """A chat model that answers valid JSON at once, or after a fixed `latency_s`."""

    model_name: str
    latency_s: float = 0.0
    counter: CallCounter

    @property
    def _llm_type(self) -> str:
        return "m3rec-bench-fake"

    def _answer(self, messages: list[BaseMessage]) -> ChatResult:
        prompt = "\n".join(m.text for m in messages)
        stage = stage_of(prompt)
        self.counter.by_stage[stage] += 1
        message = AIMessage(
            content=json.dumps(answer_for(stage, prompt)),
            # Reported usage, as a provider would: the graph then skips tiktoken.
            usage_metadata={"input_tokens": 100, "output_tokens": 10, "total_tokens": 110},
            response_metadata={"model_name": self.model_name},
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.latency_s > 0:
            time.sleep(self.latency_s)
        return self._answer(messages)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        # Overridden so an instant call stays on the event loop (the default runs
        # `_generate` in a thread pool, which would be measured as graph overhead).
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)
        return self._answer(messages)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type,
        *,
        include_raw: bool = False,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | Any]:
        """Mimic langchain-openai's `json_schema` path: the model, then langchain's JSON output parser."""
        if include_raw:
            raise ValueError("include_raw is not supported: the graph sends the model and applies its parser (models.structured_call)")
        return self | JsonOutputParser()


@dataclass
class FakeModels:
    """A `ChatModelFactory` handing out one `BenchChatModel` per model name, sharing a call counter."""

    latency_s: float = 0.0
    counter: CallCounter = field(default_factory=CallCounter)
    models: dict[str, BenchChatModel] = field(default_factory=dict)

    def __call__(self, spec: ModelSpec) -> BaseChatModel:
        model = self.models.get(spec.name)
        if model is None:
            model = BenchChatModel(
                model_name=spec.name, latency_s=self.latency_s, counter=self.counter
            )
            self.models[spec.name] = model
        return model

    def set_latency(self, latency_s: float) -> None:
        """Make every model, handed out or not, sleep `latency_s` per async call."""
        self.latency_s = latency_s
        for model in self.models.values():
            model.latency_s = latency_s

    @property
    def calls(self) -> int:
        return self.counter.total

    def stage_calls(self, stages: Sequence[str] = ("mope", "mote", "mar")) -> dict[str, int]:
        return {stage: self.counter.by_stage[stage] for stage in stages}

    def reset(self) -> None:
        self.counter.reset()
