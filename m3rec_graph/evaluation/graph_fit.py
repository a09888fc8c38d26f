"""Fusion weights for a fused graph method (`m3rec...:fused[+PRIOR]`), fit on the run's validation split.

The `mar` and `overlap` signals exist only once the graph has run, so a fit that
uses them runs the LLM on the validation cases (`validation.validation_cases`:
each user's second-last item with its own seeded negatives, disjoint from the
test candidates). It is resumable like `m3rec eval`: every validation user's
signals are appended to `validation-METHOD.jsonl` in the run directory as they
arrive, and a rerun runs only the users missing there.

How the signals are read: each validation case runs under the method's own
context with the probe config `PROBE` (weights `mar` 1, `overlap` 1), and the
line keeps each candidate's `score_parts` of the two. A part is the signal's
per-request z-score times a positive constant (its renormalised weight), and the
fit z-normalises every signal within its case again (`fusion.fit`), so the fit
sees exactly the z-scores the serving-time fusion will weigh. `text` and the
prior are computed here, as for `fusion:PRIOR+text` (`fusion_method.case_signals`).
A case whose MAR did not score every candidate (a failed MAR chunk) has no `mar`
part; it is left out of the fit and counted.

Signal selection: the fit first takes a 95% bootstrap interval of each logistic
weight over the validation users (`fusion.fit.weight_intervals`). A signal whose
interval contains 0 gets weight 0 and the others are refit (`SELECTION_RULE`): a
fit on a few dozen LLM-run users otherwise hands a large weight to a signal that
varied in one user (on the offline model, MAR scores all candidates alike for
almost every user). A signal at weight 0 costs nothing at serving time: the stage
that only feeds it does not run.

The fitted config is written to `fusion-METHOD.json` next to the results, and each
result line of the method records its version.
"""

import asyncio
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

from langchain_core.runnables import RunnableConfig

from m3rec_graph.context import M3RecContext
from m3rec_graph.evaluation.datasets import EvalCase
from m3rec_graph.evaluation.fusion_method import (
    CaseSignals,
    case_signals,
    describe_weights,
    fit_groups,
)
from m3rec_graph.evaluation.metrics import rank_of
from m3rec_graph.evaluation.priors import PriorScorer
from m3rec_graph.evaluation.progress import ProgressBar
from m3rec_graph.evaluation.settings import EvaluationError, MethodSpec
from m3rec_graph.evaluation.store import append_result, read_results
from m3rec_graph.evaluation.validation import validation_cases
from m3rec_graph.fusion import FusionConfig
from m3rec_graph.fusion.config import Signal
from m3rec_graph.fusion.fit import (
    DEFAULT_FIT,
    FitError,
    FitGroup,
    fit_weights,
    fitted_config,
    supported_signals,
    weight_intervals,
)
from m3rec_graph.state import M3RecGraph, RecInput
from m3rec_graph.text.similarity import TfidfSimilarity

PROBE = FusionConfig(weights={"mar": 1.0, "overlap": 1.0})
"""The config validation cases run under: it makes the graph compute (and report) both LLM signals."""
GRAPH_SIGNALS: tuple[Signal, ...] = ("mar", "overlap")
SELECTION_RULE = (
    "weight 0 for each signal whose 95% bootstrap interval over validation users contains 0;"
    " the others refit by logistic regression (all kept if none excludes 0)"
)
"""How a graph fit picks its signals, recorded in each fitted config."""
VALIDATION_SLICE = "validation"


def method_slug(method: str) -> str:
    """A file-name-safe form of a method key (`m3rec:local:fused+sasrec` -> `m3rec-local-fused-sasrec`)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", method)


def validation_file(out_dir: Path, method: str) -> Path:
    """The run directory's file of a fused graph method's validation signals."""
    return out_dir / f"validation-{method_slug(method)}.jsonl"


def fitted_config_file(out_dir: Path, method: str) -> Path:
    """The run directory's file of the config fitted for a fused graph method."""
    return out_dir / f"fusion-{method_slug(method)}.json"


def validation_record(method: str, case: EvalCase, out: dict[str, Any]) -> dict[str, Any]:
    """One validation line: each candidate's graph signals (in the case's order) and the call costs.

    Its `rank` is the target's under the probe config (mar and overlap at equal weight).
    """
    parts = {entry.item_id: entry.score_parts or {} for entry in out["ranking"]}
    ids = [item.item_id for item in case.candidates]
    signals = {
        s: [parts[i][s] for i in ids] for s in GRAPH_SIGNALS if all(s in parts[i] for i in ids)
    }
    total = out["usage"].total
    return {
        "method": method,
        "slice": VALIDATION_SLICE,
        "user_id": case.user_id,
        "rank": rank_of(case.target_id, [entry.item_id for entry in out["ranking"]]),
        "signals": signals,
        "llm_calls": total.calls,
        "input_tokens": total.input_tokens,
        "output_tokens": total.output_tokens,
        "cost_usd": total.cost_usd,
    }


def describe_intervals(config: FusionConfig) -> str:
    """`mar [+0.000, +0.000], text [+0.61, +0.93]` from a graph fit's recorded `weight_ci95`."""
    intervals = cast(dict[str, list[float]], config.fitted.get("weight_ci95", {}))
    return ", ".join(f"{s} [{lo:+.3f}, {hi:+.3f}]" for s, (lo, hi) in intervals.items())


def describe_fit(config: FusionConfig) -> str:
    """A graph fit's weights, each weight's interval and the signals it dropped, on one line."""
    dropped = ", ".join(cast(list[str], config.fitted["dropped"])) or "none"
    return (
        f"{describe_weights(config)}; 95% CI of each weight (bootstrap over users):"
        f" {describe_intervals(config)}; weight 0 (interval contains 0): {dropped}"
    )


async def run_validation(
    graph: M3RecGraph,
    context: M3RecContext,
    method: str,
    cases: Sequence[EvalCase],
    path: Path,
    bar: ProgressBar,
    concurrency: int,
) -> None:
    """Run the graph on `cases` (users started in order, `concurrency` in flight), appending each line as it finishes."""
    gate = asyncio.Semaphore(concurrency)
    config = cast(RunnableConfig, {"run_name": "m3rec_validation", "metadata": {"eval_method": method}})

    async def one(case: EvalCase) -> dict[str, Any]:
        async with gate:
            request = cast(RecInput, case.to_request())
            out = await graph.ainvoke(request, config, context=context)
            return validation_record(method, case, cast(dict[str, Any], out))

    with path.open("a", encoding="utf-8") as handle:
        tasks = [asyncio.create_task(one(case)) for case in cases]
        try:
            for finished in asyncio.as_completed(tasks):
                record = await finished
                append_result(handle, record)
                bar.advance(record["input_tokens"] + record["output_tokens"], record["cost_usd"])
        finally:  # a failed user stops the run: the others are cancelled, not left running
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def graph_fit_groups(
    cases: Sequence[EvalCase],
    lines: dict[str, dict[str, Any]],
    *,
    text: TfidfSimilarity,
    prior: PriorScorer | None,
) -> tuple[list[FitGroup], int]:
    """The fit groups of the validation `cases` that have every graph signal in `lines`, and the number left out.

    `lines` maps a user to its validation line (`validation_record`); `text` and the
    prior are computed from the case's own dataset.
    """
    extra = case_signals(cases, text, prior)
    used: list[EvalCase] = []
    values: list[CaseSignals] = []
    for case, more in zip(cases, extra, strict=True):
        graph_signals = lines[case.user_id]["signals"]
        if all(s in graph_signals for s in GRAPH_SIGNALS):
            used.append(case)
            values.append({**graph_signals, **more})
    return fit_groups(used, values), len(cases) - len(used)


def fit_selected_signals(
    groups: Sequence[FitGroup],
    names: Sequence[Signal],
    *,
    seed: int,
    sampling: str,
    metadata: dict[str, object],
) -> FusionConfig:
    """Fit `names` on `groups` under `SELECTION_RULE`, recording each weight's interval in the config.

    Raises:
        EvaluationError: The fit fails (e.g. no groups).
    """
    try:
        intervals = weight_intervals(groups, names, seed=seed)
        # A few dozen LLM-run users: a signal that varies in one of them can take a large
        # weight whose sign the cases cannot tell. Only signals whose interval excludes 0
        # keep a weight (refit without the others); if none does, the plain fit stands.
        kept = supported_signals(intervals) or list(names)
        result = fit_weights(groups, kept, DEFAULT_FIT)
    except FitError as exc:
        raise EvaluationError(f"fusion fit: {exc}") from None
    result = replace(result, weights={s: result.weights.get(s, 0.0) for s in names})
    return fitted_config(
        result,
        sampling=sampling,
        metadata={
            **metadata,
            "users": len(groups),
            "weight_ci95": {s: list(interval) for s, interval in intervals.items()},
            "selection": SELECTION_RULE,
            "dropped": [s for s in names if s not in kept],
        },
    )


def fit_graph_signals(
    spec: MethodSpec,
    cases: Sequence[EvalCase],
    lines: dict[str, dict[str, Any]],
    *,
    text: TfidfSimilarity,
    prior: PriorScorer | None,
    sampling: str,
    metadata: dict[str, object],
) -> tuple[FusionConfig, int]:
    """Fit `mar`, `overlap`, `text` (and `prior`) on the validation lines; return the config and the cases left out.

    Raises:
        EvaluationError: No case has every signal, or the fit fails.
    """
    groups, left_out = graph_fit_groups(cases, lines, text=text, prior=prior)
    if not groups:
        raise EvaluationError(f"{spec.key}: no validation case has a MAR score for every candidate")
    names: list[Signal] = [*GRAPH_SIGNALS, "text"]
    if prior is not None:
        names.append("prior")
    config = fit_selected_signals(
        groups,
        names,
        seed=cast(int, metadata.get("seed", 0)),
        sampling=sampling,
        metadata={**metadata, "method_key": spec.key},
    )
    return config, left_out


def fit_fused_graph_method(
    spec: MethodSpec,
    graph: M3RecGraph,
    context: M3RecContext,
    *,
    dataset: Any,
    test_cases: Sequence[EvalCase],
    seed: int,
    sampling: str,
    prior: PriorScorer | None,
    out_dir: Path,
    stream: Any,
    concurrency: int,
    fit_users: int | None = None,
) -> FusionConfig:
    """Run (or resume) the graph on the validation split, fit the weights, write and return the config.

    `context` is the method's context with `fusion=PROBE`; the caller has the model
    server running for it. `fit_users` keeps the validation cases of the run's first
    `fit_users` users (the run's seeded user order, so a random subset; None: all):
    every validation case is a full graph run, the cost of the fit.

    Raises:
        EvaluationError: No user has a validation case, or the fit fails.
    """
    cases = validation_cases(dataset, test_cases, seed=seed, sampling=cast(Any, sampling))
    if not cases:
        raise EvaluationError("no user has a validation item (every sequence has two items)")
    if fit_users is not None:
        cases = cases[:fit_users]
    path = validation_file(out_dir, spec.key)
    done = {user: line for (_, _, user), line in read_results(path).items()}
    todo = [case for case in cases if case.user_id not in done]
    bar = ProgressBar(stream, f"{spec.key} [validation fit]", len(cases), len(cases) - len(todo))
    if todo:
        asyncio.run(run_validation(graph, context, spec.key, todo, path, bar, concurrency))
    bar.render(force=True)
    lines = {user: line for (_, _, user), line in read_results(path).items()}
    config, left_out = fit_graph_signals(
        spec,
        cases,
        lines,
        text=TfidfSimilarity(dataset.items.values()),
        prior=prior,
        sampling=sampling,
        metadata={
            "dataset": dataset.name,
            "split": "validation (second-last item, own negatives)",
            "negatives": len(cases[0].candidates) - 1,
            "seed": seed,
            "prior": spec.prior,
        },
    )
    config.dump(fitted_config_file(out_dir, spec.key))
    cost = [lines[case.user_id].get("cost_usd") for case in cases]  # the fit's users only
    spent = "unknown" if any(c is None for c in cost) else f"${sum(cast(list[float], cost)):.4f}"
    print(
        f"{spec.key}: fitted on {len(cases) - left_out} validation users"
        f" ({left_out} left out: MAR did not score every candidate; validation LLM cost {spent}):"
        f" {describe_fit(config)}",
        file=stream,
        flush=True,
    )
    return config
