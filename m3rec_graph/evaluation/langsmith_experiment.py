"""Run an evaluation as a LangSmith experiment: the cases as a dataset, the metrics as evaluators.

`arun_experiment` uploads the evaluation cases as a LangSmith dataset (once:
the name is derived from the candidate-set settings, and a rerun reuses it),
then runs `predict` over it with `langsmith.aevaluate`: one evaluator writes
every ranking metric of a run (HR@k, NDCG@k, MRR) as its feedback, and a summary
evaluator computes the experiment's means (posted as experiment-level feedback,
`mean NDCG@10`, ..., and `failed predictions`). Each run, and the experiment, carries the
metadata the caller passes (routing, prompt versions, ablation) plus the
candidate-set settings (seed, dataset fingerprint), so prompt and routing
variants can be compared side by side on the dataset's compare page.

A dataset example is one user: `inputs` is the recommendation request
(`EvalCase.to_request()`: history and shuffled candidates, never the target),
`outputs` is `{"target_id": ...}` and `metadata` is `{"user_id": ...}`.

All HTTP goes through the LangSmith SDK (`LANGSMITH_API_KEY`,
`LANGSMITH_ENDPOINT`). Without a key, `LangSmithConfigError` says so in one
line (the CLI exits 2 and `m3rec eval` without `--langsmith` runs locally);
when LangSmith cannot be reached or refuses, `LangSmithServiceError` (exit 1).
"""

import asyncio
import contextlib
import hashlib
import json
import math
import re
import sys
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.tracers.langchain import wait_for_all_tracers
from langsmith import Client, aevaluate, traceable
from langsmith import schemas as ls_schemas
from langsmith import utils as ls_utils
from langsmith.evaluation import EvaluationResult, EvaluationResults, RunEvaluator

from m3rec_graph._internal import langsmith_errors
from m3rec_graph.errors import M3RecError
from m3rec_graph.evaluation.datasets import EvalCase
from m3rec_graph.evaluation.metrics import DEFAULT_K, metric_names, rank_of, user_metrics

Predict = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
"""Rank one request (an example's inputs); return at least `{"ranking": [item ids, best first]}`."""

NOT_CANDIDATE_SETTINGS = frozenset({"dataset_path", "routing", "ablation"})
"""Settings that do not change the candidate sets: left out of the dataset name, so every
routing and ablation of the same cases is an experiment on the same dataset."""

_LOCAL_ONLY_SETTINGS = frozenset({"dataset_path"})
"""Settings that stay on this machine (not sent as experiment metadata)."""


class LangSmithConfigError(M3RecError, ValueError):
    """The experiment cannot run as asked: no API key, no cases, or a dataset name taken by other examples."""


class LangSmithServiceError(langsmith_errors.LangSmithFailure):
    """LangSmith could not be reached, rejected the API key, or failed a request (`.unreachable` tells which)."""


@dataclass(frozen=True)
class ExperimentMeans:
    """What the summary evaluator measured over an experiment's runs."""

    examples: int
    """Examples run (one per evaluation case)."""
    metrics: dict[str, float]
    """Metric name (as in `metric_names`) -> mean over the examples that were scored."""
    failed: int
    """Examples without scores: `predict` raised or returned no usable ranking."""


@dataclass(frozen=True)
class ExperimentSummary(ExperimentMeans):
    """What one LangSmith experiment measured, and where to see it."""

    experiment_name: str
    dataset_name: str
    url: str | None
    """The dataset's compare page with this experiment selected (or the experiment's page)."""


# --------------------------------------------------------------------------- errors


def service_error(exc: ls_utils.LangSmithError, action: str, api_url: str) -> LangSmithServiceError:
    """Translate a LangSmith SDK error into a one-line `LangSmithServiceError`."""
    return LangSmithServiceError(
        langsmith_errors.describe(exc, action, api_url),
        unreachable=langsmith_errors.is_unreachable(exc),
    )


def _require_key(client: Client) -> None:
    if not client.api_key:
        raise LangSmithConfigError(
            "LANGSMITH_API_KEY is not set: a LangSmith experiment needs an API key"
            " (without --langsmith the evaluation runs locally)"
        )


def client_from_env() -> Client:
    """Return a LangSmith client configured from `LANGSMITH_*` variables.

    Raises:
        LangSmithConfigError: `LANGSMITH_API_KEY` is not set, or a `LANGSMITH_*` value is invalid.
    """
    try:
        client = Client()
    except ls_utils.LangSmithUserError as exc:
        raise LangSmithConfigError(
            f"LangSmith settings: {langsmith_errors.first_sentence(exc)}"
        ) from exc
    _require_key(client)
    return client


# --------------------------------------------------------------------------- dataset


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def langsmith_dataset_name(dataset_label: str, settings: Mapping[str, Any]) -> str:
    """Return a stable dataset name for the candidate sets built with `settings`.

    The name reads `m3rec-<label>-n<negatives>-u<users>-s<seed>[-c<cold_start>]-<hash8>`
    (parts whose setting is absent are left out); the hash covers every setting
    except `NOT_CANDIDATE_SETTINGS`, so other candidate sets never share a name.
    """
    kept = {k: v for k, v in settings.items() if k not in NOT_CANDIDATE_SETTINGS}
    digest = hashlib.sha256(_canonical(kept).encode()).hexdigest()[:8]
    label = re.sub(r"[^a-z0-9]+", "-", dataset_label.lower()).strip("-") or "dataset"
    parts = ["m3rec", label]
    for key, letter in (("negatives", "n"), ("users", "u"), ("seed", "s"), ("cold_start", "c")):
        if settings.get(key) is not None:
            parts.append(f"{letter}{settings[key]}")
    return "-".join([*parts, digest])


def case_example(case: EvalCase) -> dict[str, Any]:
    """Return the dataset example of `case`: the request as inputs, the target as reference output.

    The keys are those of `langsmith.schemas.ExampleCreate` (stored as `inputs`, `outputs`, `metadata`).
    """
    return {
        "inputs": case.to_request(),
        "reference_outputs": {"target_id": case.target_id},
        "metadata": {"user_id": case.user_id},
    }


def _example_key(inputs: Mapping[str, Any] | None, outputs: Mapping[str, Any] | None) -> str:
    """Identify an example by content (metadata left out: the server may add to it)."""
    return hashlib.sha256(_canonical({"inputs": inputs, "outputs": outputs}).encode()).hexdigest()


def upload_cases(
    client: Client,
    cases: Sequence[EvalCase],
    name: str,
    description: str,
    *,
    metadata: Mapping[str, Any] | None = None,
) -> ls_schemas.Dataset:
    """Create the dataset `name` holding one example per case, or reuse it; return it.

    Idempotent: examples already in the dataset (same inputs and outputs) are
    not uploaded again, so a rerun, or a run after an interrupted upload, ends
    with exactly one example per case.

    Args:
        client: The LangSmith client.
        cases: The evaluation cases.
        name: The dataset name (see `langsmith_dataset_name`).
        description: The dataset description, used when it is created.
        metadata: Dataset metadata, used when it is created.

    Raises:
        LangSmithConfigError: No cases, or the dataset holds examples that are
            not among the cases (built from other data under the same name).
        LangSmithServiceError: LangSmith is unreachable or refused.
    """
    if not cases:
        raise LangSmithConfigError("no evaluation cases to upload to LangSmith")
    wanted = [case_example(case) for case in cases]
    try:
        try:
            dataset: ls_schemas.Dataset = client.read_dataset(dataset_name=name)
            stored = [
                _example_key(e.inputs, e.outputs)
                for e in client.list_examples(dataset_id=dataset.id)
            ]
        except ls_utils.LangSmithNotFoundError:
            dataset = client.create_dataset(
                name, description=description, metadata=dict(metadata or {})
            )
            stored = []
        have = Counter(stored)
        foreign = have - Counter(_example_key(w["inputs"], w["reference_outputs"]) for w in wanted)
        if foreign:
            raise LangSmithConfigError(
                f"LangSmith dataset {name!r} holds {foreign.total()} example(s) that are not in this"
                " evaluation set; delete the dataset on LangSmith or use other settings"
            )
        missing: list[dict[str, Any]] = []
        for example in wanted:
            key = _example_key(example["inputs"], example["reference_outputs"])
            if have[key] > 0:
                have[key] -= 1
            else:
                missing.append(example)
        if missing:
            client.create_examples(dataset_id=dataset.id, examples=missing)
    except ls_utils.LangSmithError as exc:
        raise service_error(exc, f"upload dataset {name}", client.api_url) from exc
    return dataset


# --------------------------------------------------------------------------- evaluators


def metric_scores(
    outputs: Mapping[str, Any] | None,
    reference_outputs: Mapping[str, Any] | None,
    k_list: Sequence[int] = DEFAULT_K,
) -> dict[str, float]:
    """Return every metric of one prediction, from `outputs["ranking"]` and `reference_outputs["target_id"]`.

    Raises:
        ValueError: No outputs (the prediction failed), no ranking, no target,
            or the target is not in the ranking.
    """
    if outputs is None:
        raise ValueError("the prediction failed: the run has no outputs")
    ranking = outputs.get("ranking")
    if not isinstance(ranking, list) or not all(isinstance(i, str) for i in ranking):
        raise ValueError("the prediction has no 'ranking' list of item ids")
    target = (reference_outputs or {}).get("target_id")
    if not isinstance(target, str):
        raise ValueError("the example has no 'target_id' reference output")
    return user_metrics(rank_of(target, ranking), k_list)


class RankingEvaluator(RunEvaluator):
    """One LangSmith evaluator writing every ranking metric (HR@k, NDCG@k, MRR) of a run.

    It returns `{"results": [...]}`, one result per metric, so each example runs one
    evaluator rather than one per metric. It is a `RunEvaluator` rather than a plain
    function because it states its feedback keys: for a function the SDK reads the keys
    from the function's source (`langsmith/evaluation/_key_extraction.py`) and, when they
    are computed, falls back to the function's name. The keys go into the experiment's
    progress hint, and the SDK writes one error feedback per key when the evaluator
    raises (a failed prediction), so they must be the metric names.
    """

    def __init__(self, k_list: Sequence[int] = DEFAULT_K) -> None:
        """Score the metrics of `metric_names(k_list)`."""
        self.k_list = tuple(k_list)
        self._names = metric_names(self.k_list)

    @property
    def feedback_keys(self) -> list[str]:
        """The feedback keys this evaluator writes: the metric names."""
        return list(self._names)

    def evaluate_run(
        self,
        run: ls_schemas.Run,
        example: ls_schemas.Example | None = None,
        evaluator_run_id: uuid.UUID | None = None,
    ) -> EvaluationResults:
        """Return every metric of `run`'s ranking for `example`'s target (raises `ValueError` if unusable)."""
        reference = example.outputs if example is not None else None
        scores = metric_scores(run.outputs, reference, self.k_list)
        return {"results": [EvaluationResult(key=name, score=scores[name]) for name in self._names]}

    async def aevaluate_run(
        self,
        run: ls_schemas.Run,
        example: ls_schemas.Example | None = None,
        evaluator_run_id: uuid.UUID | None = None,
    ) -> EvaluationResults:
        """Score on the event loop (the computation is trivial)."""
        return self.evaluate_run(run, example, evaluator_run_id)


SUMMARY_PREFIX = "mean "
"""Experiment-level feedback keys: `mean NDCG@10`, ... (the per-run keys stay the metric names)."""

FAILED_KEY = "failed predictions"
"""Experiment-level feedback key: examples without scores."""


def experiment_means(
    runs: Sequence[ls_schemas.Run],
    examples: Sequence[ls_schemas.Example],
    k_list: Sequence[int] = DEFAULT_K,
) -> ExperimentMeans:
    """Return each metric's mean over the runs that could be scored, and how many could not.

    `runs` and `examples` are aligned, as LangSmith passes them to a summary evaluator.
    """
    names = metric_names(k_list)
    scores: dict[str, list[float]] = {name: [] for name in names}
    failed = 0
    for run, example in zip(runs, examples, strict=True):
        try:
            if run.error:
                raise ValueError(run.error)
            one = metric_scores(run.outputs, example.outputs, k_list)
        except ValueError:
            failed += 1
            continue
        for name in names:
            scores[name].append(one[name])
    # fsum: the mean does not depend on the order the examples finished in.
    means = {name: math.fsum(values) / len(values) for name, values in scores.items() if values}
    return ExperimentMeans(examples=len(runs), metrics=means, failed=failed)


# --------------------------------------------------------------------------- experiment


def _flush(client: Client) -> None:
    wait_for_all_tracers()
    client.flush()


async def arun_experiment(
    cases: Sequence[EvalCase],
    *,
    predict: Predict,
    dataset_label: str,
    settings: Mapping[str, Any],
    experiment_prefix: str,
    metadata: Mapping[str, Any],
    max_concurrency: int = 1,
    k_list: Sequence[int] = DEFAULT_K,
    client: Client | None = None,
) -> ExperimentSummary:
    """Upload `cases` as a LangSmith dataset and run `predict` over it as an experiment.

    The SDK's progress line goes to stderr (stdout stays the caller's). Runs are
    flushed before this returns; per-example feedback is posted by the SDK's
    background threads, which finish before the interpreter exits.

    Args:
        cases: The evaluation cases (one example each).
        predict: Ranks one request (see `Predict`).
        dataset_label: Short dataset name for the LangSmith dataset name (e.g. `beauty`).
        settings: What the candidate sets were built from (`evaluation.settings_record`):
            names the dataset and goes into the experiment metadata (without `dataset_path`).
        experiment_prefix: Experiment name prefix; LangSmith appends a random suffix.
        metadata: Experiment and run metadata, e.g. `routing`, `prompts` (the prompt
            versions), `ablation`; it overrides same-named settings.
        max_concurrency: Examples predicted at once (0: one after the other).
        k_list: Cut-offs of HR@k and NDCG@k.
        client: The LangSmith client (default: from `LANGSMITH_*` variables).

    Raises:
        LangSmithConfigError: No API key, no cases, a negative `max_concurrency`,
            or a dataset name taken by other examples.
        LangSmithServiceError: LangSmith is unreachable or refused.
    """
    client = client if client is not None else client_from_env()
    _require_key(client)
    if max_concurrency < 0:
        raise LangSmithConfigError(f"max_concurrency must be >= 0, got {max_concurrency}")
    dataset_name = langsmith_dataset_name(dataset_label, settings)
    shared = {k: v for k, v in settings.items() if k not in _LOCAL_ONLY_SETTINGS}
    candidate_settings = {k: v for k, v in shared.items() if k not in NOT_CANDIDATE_SETTINGS}
    description = f"m3rec evaluation cases of {dataset_label}: {_canonical(candidate_settings)}"
    dataset = await asyncio.to_thread(
        upload_cases, client, cases, dataset_name, description, metadata=candidate_settings
    )

    @traceable(name="m3rec-eval", run_type="chain")
    async def target(inputs: dict[str, Any]) -> dict[str, Any]:
        return await predict(inputs)

    measured: list[ExperimentMeans] = []

    def summary(
        runs: list[ls_schemas.Run], examples: list[ls_schemas.Example]
    ) -> EvaluationResults:
        """The summary evaluator: the experiment's means, kept here and posted as experiment feedback."""
        means = experiment_means(runs, examples, k_list)
        measured.append(means)
        results = [
            EvaluationResult(key=SUMMARY_PREFIX + k, score=v) for k, v in means.metrics.items()
        ]
        return {"results": [*results, EvaluationResult(key=FAILED_KEY, score=means.failed)]}

    experiment_metadata = {**shared, **metadata, "langsmith_dataset": dataset_name}
    try:
        with contextlib.redirect_stdout(sys.stderr):
            results = await aevaluate(
                target,
                data=dataset.id,
                evaluators=[RankingEvaluator(k_list)],
                summary_evaluators=[summary],
                # No evaluator traces in the "evaluators" project: scoring a ranking is
                # arithmetic, and the feedback itself is posted either way.
                disable_evaluator_tracing=True,
                metadata=experiment_metadata,
                experiment_prefix=experiment_prefix,
                description=f"m3rec on {dataset_name}",
                max_concurrency=max_concurrency,
                client=client,
            )
        url = await results.get_comparison_url() or results.url
    except ls_utils.LangSmithError as exc:
        raise service_error(exc, f"run experiment on {dataset_name}", client.api_url) from exc
    finally:
        await asyncio.to_thread(_flush, client)
    if not measured:  # the SDK logs a summary evaluator's exception and goes on
        raise RuntimeError(
            f"the summary evaluator of {results.experiment_name} did not run (see the log)"
        )
    return ExperimentSummary(
        **vars(measured[-1]),
        experiment_name=results.experiment_name,
        dataset_name=dataset_name,
        url=url,
    )
