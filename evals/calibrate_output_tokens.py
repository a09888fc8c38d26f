"""Measure each stage's output tokens on a real run and compare them with the dry run's size model.

    python evals/calibrate_output_tokens.py --users 2 --routing local [--mar-mode listwise]

Runs the graph on the first N users of the shipped Beauty demo sample (real
histories, 20 candidates each), records every LLM answer by stage through a
callback (the raw JSON text, or a forced function call's arguments), counts it
with tiktoken (gpt-4o's encoding for the local model), and prints the measured
mean per call (per scored candidate for MAR) next to what `m3rec cost estimate`
assumes for the same calls. The last line is an `--output-tokens` value to
feed the measured averages back into the dry run.

With `--routing hybrid` (needs OPENAI_API_KEY) the same script calibrates
against the real models; here only the local model can run, whose answers
(SmolLM2-135M) are a poor proxy for GPT answers: read docs/cost.md.
"""

import argparse
import asyncio
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, cast
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, LLMResult

from m3rec_graph import InMemoryTraitCache, build_graph, context_for
from m3rec_graph.cli.demo import load_cases
from m3rec_graph.contracts.request import parse_request
from m3rec_graph.cost.estimate import CostSettings, estimate_requests
from m3rec_graph.integrations.runner import serving
from m3rec_graph.llm.routing import PRESETS
from m3rec_graph.llm.tokens import count_text
from m3rec_graph.state import RecInput


class AnswerRecorder(BaseCallbackHandler):
    """Keeps the raw answer text of every stage LLM call, keyed by stage."""

    def __init__(self) -> None:
        self.stage_of: dict[UUID, str] = {}
        self.answers: dict[str, list[str]] = defaultdict(list)

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        stage = (metadata or {}).get("m3rec_stage")
        if isinstance(stage, str):
            self.stage_of[run_id] = stage

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        stage = self.stage_of.pop(run_id, None)
        if stage is None or not response.generations or not response.generations[0]:
            return
        generation = response.generations[0][0]
        message = generation.message if isinstance(generation, ChatGeneration) else None
        text = generation.text
        if isinstance(message, AIMessage) and message.tool_calls:
            text = json.dumps(message.tool_calls[0]["args"], separators=(",", ":"))
        self.answers[stage].append(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--users", type=int, default=2, help="demo users to run (each has 20 candidates)")
    parser.add_argument("--routing", default="local", choices=sorted(PRESETS))
    parser.add_argument("--mar-mode", default="listwise", choices=["listwise", "pointwise"])
    parser.add_argument("--json", type=Path, help="also write the measurements as JSON")
    args = parser.parse_args(argv)

    cases = load_cases()[: args.users]
    requests = [parse_request({k: c[k] for k in ("user_id", "history", "candidates")}) for c in cases]
    ctx = context_for(args.routing, mar_mode=args.mar_mode)
    recorder = AnswerRecorder()
    graph = build_graph(trait_cache=InMemoryTraitCache())

    async def run_all() -> None:
        for request in requests:
            print(f"running {request.user_id} ...", file=sys.stderr, flush=True)
            await graph.ainvoke(
                cast(RecInput, request.model_dump(exclude_none=True)),
                {"callbacks": [recorder]},
                context=ctx,
            )

    with serving(ctx):
        asyncio.run(run_all())

    settings = CostSettings(
        dataset=Path("."), users=len(requests), presets=(args.routing,), mar_modes=(args.mar_mode,)
    )
    (predicted,) = estimate_requests(requests, settings)
    scored = sum(len(r.candidates) for r in requests)
    rows = {}
    for stage in ("mope", "mote", "mar"):
        model = ctx.model_for(stage)
        tok = model.tokenizer_model or model.name
        answers = recorder.answers.get(stage, [])
        measured = sum(count_text(a, tok) for a in answers)
        est = predicted.stages[stage]
        unit = scored if stage == "mar" else max(len(answers), 1)
        est_unit = scored if stage == "mar" else max(est.calls, 1)
        rows[stage] = {
            "calls": len(answers),
            "measured_per_unit": measured / unit,
            "predicted_per_unit": est.output_tokens / est_unit,
        }
    print(f"output tokens, {args.routing}, MAR {args.mar_mode}, {len(requests)} users "
          "(per call; MAR: per scored candidate)")
    print("| stage | calls (incl. re-asks) | measured | dry-run size model | ratio |")
    print("|---|---:|---:|---:|---:|")
    for stage, r in rows.items():
        ratio = r["measured_per_unit"] / r["predicted_per_unit"] if r["predicted_per_unit"] else 0.0
        print(f"| {stage} | {r['calls']} | {r['measured_per_unit']:.1f} | {r['predicted_per_unit']:.1f} | {ratio:.2f} |")
    flag = ",".join(f"{s}={r['measured_per_unit']:.0f}" for s, r in rows.items())
    print(f"--output-tokens {flag}")
    if args.json:
        args.json.write_text(json.dumps({"routing": args.routing, "rows": rows, "answers": recorder.answers}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
