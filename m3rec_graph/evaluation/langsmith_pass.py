"""Score one (method, slice) as a LangSmith experiment, keeping the run directory's resumable results.

The evaluation set is uploaded as a LangSmith dataset and the method predicts
each example inside `langsmith.aevaluate`, so its graph runs are traced under the
experiment and the metrics are its evaluators. Users already in `results.jsonl`
(from an interrupted or earlier local run) are not recomputed: their stored
ranking is the prediction. New results are appended as they finish, exactly as
in the local pass.
"""

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from m3rec_graph.evaluation.datasets import EvalCase
from m3rec_graph.evaluation.langsmith_experiment import ExperimentSummary, arun_experiment
from m3rec_graph.evaluation.methods import MethodEnv, Scorer, env_context, prompt_versions
from m3rec_graph.evaluation.progress import ProgressBar
from m3rec_graph.evaluation.settings import EvalSlice, MethodSpec
from m3rec_graph.evaluation.store import ResultKey, append_result
from m3rec_graph.integrations.runner import flush_traces

_USAGE_FIELDS = ("llm_calls", "total_tokens", "cost_usd", "degraded")


def run_langsmith_pass(
    spec: MethodSpec,
    slice_: EvalSlice,
    cases: Sequence[EvalCase],
    done: dict[ResultKey, dict[str, Any]],
    handle: TextIO,
    bar: ProgressBar,
    env: MethodEnv,
    scorer: Scorer,
    settings: Mapping[str, Any],
) -> ExperimentSummary:
    """Run `spec` on the sliced `cases` as a LangSmith experiment (see the module docstring)."""
    by_user = {case.user_id: case for case in cases}

    async def predict(inputs: dict[str, Any]) -> dict[str, Any]:
        user_id = str(inputs.get("user_id"))
        key = (spec.key, slice_.name, user_id)
        record = done.get(key)
        if record is None:
            record = await scorer(by_user[user_id])
            append_result(handle, record)
            done[key] = record
            bar.advance(record.get("total_tokens"), record.get("cost_usd"))
        return {
            "ranking": record["ranking"],
            **{k: record[k] for k in _USAGE_FIELDS if k in record},
        }

    metadata: dict[str, Any] = {"method": spec.key, "slice": slice_.name}
    serve: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
    if spec.kind == "m3rec":
        ctx = env_context(spec, env)
        metadata.update(routing=spec.routing, ablation=spec.ablation, prompts=prompt_versions(ctx))
        serve = env.serve(ctx)
    with serve:
        try:
            return asyncio.run(
                arun_experiment(
                    cases,
                    predict=predict,
                    dataset_label=str(settings["dataset_name"]),
                    settings={**settings, "cold_start": slice_.history_items},
                    experiment_prefix=f"{settings['dataset_name']}-{spec.key}-{slice_.name}".replace(
                        ":", "-"
                    ),
                    metadata=metadata,
                    max_concurrency=env.concurrency,
                )
            )
        finally:
            flush_traces()
