"""Scripted fake chat models, injected through `build_graph(chat_models=...)`.

A fake answers every call through a responder function that sees the prompt, so
concurrent MOTE/MAR tasks can be answered by content rather than by call order.
"""

import json
import os
import re
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.output_parsers import JsonOutputParser
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable

from m3rec_graph.context import ModelSpec
from m3rec_graph.contracts.schemas import Dimension

Responder = Callable[[str, str], str | BaseException]
"""(stage, prompt text) -> the answer's JSON text, or an exception to raise."""

STAGE_MARKERS = {"You are MOPE": "mope", "You are MOTE": "mote", "You are MAR": "mar"}


def stage_of(prompt: str) -> str:
    for marker, stage in STAGE_MARKERS.items():
        if marker in prompt:
            return stage
    raise AssertionError(f"unknown prompt: {prompt[:80]}")


class ScriptedChatModel(BaseChatModel):
    """A chat model whose answers come from a responder; records every prompt it saw."""

    model_name: str
    responder: Any
    calls: list[tuple[str, str]] = []

    @property
    def _llm_type(self) -> str:
        return "scripted-fake"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        prompt = "\n".join(m.text for m in messages)
        stage = stage_of(prompt)
        self.calls.append((stage, prompt))
        answer = self.responder(stage, prompt)
        if isinstance(answer, BaseException):
            raise answer
        message = AIMessage(
            content=answer,
            usage_metadata={"input_tokens": 100, "output_tokens": 10, "total_tokens": 110},
            response_metadata={"model_name": self.model_name},
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def with_structured_output(
        self, schema: Any, *, include_raw: bool = False, **kwargs: Any
    ) -> Runnable[Any, Any]:
        """Mimic langchain-openai's json_schema path: the model, then langchain's JSON output parser."""
        if include_raw:
            raise ValueError("include_raw is not supported: the graph sends the model and applies its parser (models.structured_call)")
        return self | JsonOutputParser()


@dataclass
class ScriptedModels:
    """A `ChatModelFactory` handing out one scripted model per model name."""

    responder: Responder
    models: dict[str, ScriptedChatModel] = field(default_factory=dict)
    calls: list[tuple[str, str, str]] = field(default_factory=list)
    """(model name, stage, prompt) of every call, across models."""

    def __call__(self, spec: ModelSpec) -> BaseChatModel:
        if spec.name not in self.models:
            name = spec.name
            outer = self

            def respond(stage: str, prompt: str) -> str | BaseException:
                outer.calls.append((name, stage, prompt))
                return outer.responder(stage, prompt)

            self.models[name] = ScriptedChatModel(model_name=name, responder=respond, calls=[])
        return self.models[spec.name]

    def stage_calls(self, stage: str) -> list[tuple[str, str, str]]:
        return [c for c in self.calls if c[1] == stage]


# --- well-formed answers ---------------------------------------------------------------

def profile_answer(history_ids: Sequence[str], strength: int = 6) -> dict[str, Any]:
    answer: dict[str, Any] = {
        dim.value: {"strength": strength, "evidence": list(history_ids[:1])} for dim in Dimension
    }
    answer["aesthetic"] = {"strength": 9, "evidence": list(history_ids[:2])}
    answer["summary"] = "Buys colourful cosmetics for the look."
    return answer


def traits_answer(level: int = 5) -> dict[str, Any]:
    return {
        "strengths": {dim.value: level for dim in Dimension},
        "traits": ["bright colour", "long lasting"],
    }


def candidate_ids_in(prompt: str) -> list[str]:
    """The candidate ids of a MAR prompt, in the order shown."""
    # the system message names the tags too: the data block is the last one
    block = prompt.rsplit("<candidates>", 1)[1].split("</candidates>")[0]
    return re.findall(r"^\[([^\]]+)\]", block, flags=re.MULTILINE)


def history_ids_in(prompt: str) -> list[str]:
    block = prompt.rsplit("<history>", 1)[1].split("</history>")[0]
    return re.findall(r"^\[([^\]]+)\]", block, flags=re.MULTILINE)


def is_incremental(prompt: str) -> bool:
    """Whether a MOPE prompt is the incremental one (a stored profile plus new items)."""
    return "<new_items>" in prompt


def new_item_ids_in(prompt: str) -> list[str]:
    """The `[id]` lines of an incremental MOPE prompt's new items."""
    block = prompt.rsplit("<new_items>", 1)[1].split("</new_items>")[0]
    return re.findall(r"^\[([^\]]+)\]", block, flags=re.MULTILINE)


def evidence_ids_in(prompt: str) -> list[str]:
    """Ids a MOPE answer may cite: the history's, or an incremental prompt's new items."""
    return new_item_ids_in(prompt) if is_incremental(prompt) else history_ids_in(prompt)


def item_id_in(prompt: str) -> str:
    block = prompt.rsplit("<item>", 1)[1].split("</item>")[0]
    match = re.search(r"\[([^\]]+)\]", block)
    assert match
    return match.group(1)


def listwise_answer(ids: Sequence[str], score_of: Callable[[str], int] = lambda _: 5) -> dict[str, Any]:
    return {
        "scores": {
            i: {"score": score_of(i), "matched": ["aesthetic"], "rationale": f"fits the look ({i})"}
            for i in ids
        }
    }


def is_scores_only(prompt: str) -> bool:
    """Whether a MAR prompt is `scores_first`'s first call (prompts/mar_scores.toml)."""
    return "return scores only" in prompt


def is_rationales(prompt: str) -> bool:
    """Whether a MAR prompt is `scores_first`'s second call (prompts/mar_rationales.toml)."""
    return "top-ranked candidates, best first" in prompt


def scores_only_answer(ids: Sequence[str], score_of: Callable[[str], int] = lambda _: 5) -> dict[str, Any]:
    return {"scores": {i: {"score": score_of(i)} for i in ids}}


def rationales_answer(ids: Sequence[str]) -> dict[str, Any]:
    return {"rationales": {i: {"matched": ["aesthetic"], "rationale": f"why {i}"} for i in ids}}


def default_responder(score_of: Callable[[str], int] = lambda _: 5) -> Responder:
    """Answers every stage validly; MAR scores come from `score_of(item_id)`."""

    def respond(stage: str, prompt: str) -> str:
        if stage == "mope":
            return json.dumps(profile_answer(evidence_ids_in(prompt)))
        if stage == "mote":
            return json.dumps(traits_answer())
        if "<candidates>" in prompt and is_scores_only(prompt):
            return json.dumps(scores_only_answer(candidate_ids_in(prompt), score_of))
        if "<candidates>" in prompt and is_rationales(prompt):
            return json.dumps(rationales_answer(candidate_ids_in(prompt)))
        if "<candidates>" in prompt:
            return json.dumps(listwise_answer(candidate_ids_in(prompt), score_of))
        item = re.search(r"<candidate>\s*\[([^\]]+)\]", prompt.rsplit("</profile>", 1)[1])
        assert item
        return json.dumps({"score": score_of(item.group(1)), "matched": ["value"], "rationale": "ok"})

    return respond


def scripted_models() -> ScriptedModels:
    """Valid answers for every stage, MAR scores by a hash of the id: a `WorkerConfig.chat_models`.

    Module-level, so it pickles by reference and a worker in another process builds its own.
    """
    return ScriptedModels(default_responder(lambda item_id: zlib.crc32(item_id.encode()) % 11))


def slow_scripted_models() -> ScriptedModels:
    """`scripted_models`, each answer 50 ms late: a run slow enough to be killed midway (module-level, for Ray workers)."""
    fast = default_responder(lambda item_id: zlib.crc32(item_id.encode()) % 11)

    def respond(stage: str, prompt: str) -> str | BaseException:
        time.sleep(0.05)
        return fast(stage, prompt)

    return ScriptedModels(respond)


def recording_scripted_models(log: str) -> ScriptedModels:
    """`scripted_models` that also appends `PID<TAB>ITEM_ID` to the file `log` for each MOTE call.

    For calls made in other processes (Ray workers): pass `functools.partial(recording_scripted_models,
    path)` as the workers' factory, then read the file. One short `O_APPEND` write per line, so
    lines from several processes never interleave.
    """
    answer = default_responder(lambda item_id: zlib.crc32(item_id.encode()) % 11)

    def respond(stage: str, prompt: str) -> str | BaseException:
        if stage == "mote":
            fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, f"{os.getpid()}\t{item_id_in(prompt)}\n".encode())
            finally:
                os.close(fd)
        return answer(stage, prompt)

    return ScriptedModels(respond)
