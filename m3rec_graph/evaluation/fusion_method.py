"""The `fusion:PRIOR+text` method: text similarity and the host's prior, z-normalised per user and fused.

No LLM runs. The signals are `text` (`TfidfSimilarity`, idf from the dataset's
catalogue, the same function as the `text` baseline and the graph's fusion step)
and `prior` (SASRec's score or log popularity; none for `fusion:none+text`). They
are combined by `m3rec_graph.fusion.fuse` with a `FusionConfig`:

* fitted on the run's own validation split (`validation.validation_cases`:
  second-last items, seeded negatives disjoint from the test candidates) unless a
  config file is given; the fitted config is written to the run directory;
* or read from `--fusion FILE`. A file fit under another negative sampling is
  refused (`FusionSamplingMismatchError`) unless the mismatch is allowed.

Each result line records the config's version, whether it was fitted, and where it
came from. A run directory never mixes configs under one method name: lines made
with another config version are refused (`FusionConfigChangedError`).

SASRec early-stops on the validation items of *every* user (its `SASRecConfig`),
so the fit's users overlap SASRec's model selection: on those items its scores are
a little better than on unseen ones, which can only inflate the prior's fitted
weight (the overlap's direction is in favour of SASRec, not of fusion).
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from m3rec_graph.evaluation.datasets import Dataset, EvalCase, NegativeSampling
from m3rec_graph.evaluation.metrics import MetricSummary, rank_of, summarise
from m3rec_graph.evaluation.priors import PriorScorer
from m3rec_graph.evaluation.settings import EvaluationError
from m3rec_graph.evaluation.validation import validation_cases
from m3rec_graph.fusion import FusionConfig, fuse
from m3rec_graph.fusion.config import Signal
from m3rec_graph.fusion.fit import (
    DEFAULT_FIT,
    FitError,
    FitGroup,
    FitMethod,
    fit_weights,
    fitted_config,
)
from m3rec_graph.text.similarity import TfidfSimilarity


class FusionSamplingMismatchError(EvaluationError):
    """A fusion config fit under one negative sampling is used on a run with another (exit code 2)."""


class FusionConfigChangedError(EvaluationError):
    """A run directory's fusion lines were made with another config than the one in use now (exit code 2)."""


CaseSignals = dict[Signal, list[float]]
"""One case's signals: each signal's raw value per candidate, in shown order."""


def case_signals(
    cases: Sequence[EvalCase], text: TfidfSimilarity, prior: PriorScorer | None
) -> list[CaseSignals]:
    """Compute the `text` (and, with a prior, `prior`) signal of every candidate of every case."""
    priors = prior(cases) if prior is not None else None
    out: list[CaseSignals] = []
    for n, case in enumerate(cases):
        scores = text.scores(case.history, case.candidates)
        signals: CaseSignals = {"text": [scores[i.item_id] for i in case.candidates]}
        if priors is not None:
            signals["prior"] = list(priors[n])
        out.append(signals)
    return out


def fused_ranking(case: EvalCase, signals: CaseSignals, config: FusionConfig) -> list[str]:
    """The candidate ids by descending fused score (a stable sort: ties keep the shown order)."""
    ids = [item.item_id for item in case.candidates]
    by_id = {s: dict(zip(ids, values, strict=True)) for s, values in signals.items()}
    fused = fuse(by_id, config, ids)
    return sorted(ids, key=lambda i: -fused[i].fused)


def fit_groups(cases: Sequence[EvalCase], signals: Sequence[CaseSignals]) -> list[FitGroup]:
    """The fit's groups: each validation case's signals and its target's index."""
    groups = []
    for case, values in zip(cases, signals, strict=True):
        ids = [item.item_id for item in case.candidates]
        groups.append(FitGroup(signals=values, target=ids.index(case.target_id)))
    return groups


@dataclass(frozen=True)
class ValidationFit:
    """A config fitted on a validation split, with the metrics of each ranking on that split."""

    config: FusionConfig
    cases: list[EvalCase]
    metrics: dict[str, dict[str, MetricSummary]]
    """`fused`, and each signal alone -> HR/NDCG/MRR with bootstrap CIs (in-sample for `fused`)."""


def fit_on_validation(
    dataset: Dataset,
    test_cases: Sequence[EvalCase],
    *,
    seed: int,
    sampling: NegativeSampling,
    text: TfidfSimilarity,
    prior: PriorScorer | None,
    prior_name: str,
    method: FitMethod = DEFAULT_FIT,
    n_boot: int = 2000,
    signals: Sequence[Signal] | None = None,
) -> ValidationFit:
    """Fit the weights of `signals` (default `text`, plus `prior` with a prior) on the validation split of `test_cases`; never on test targets.

    Raises:
        EvaluationError: No user has a validation case, or the fit fails.
        SplitOverlapError: A validation candidate is a test candidate (a bug, asserted).
    """
    cases = validation_cases(dataset, test_cases, seed=seed, sampling=sampling)
    if not cases:
        raise EvaluationError("no user has a validation item (every sequence has two items)")
    values = case_signals(cases, text, prior)
    default: list[Signal] = ["text"] if prior is None else ["text", "prior"]
    names = list(signals) if signals is not None else default
    missing = [s for s in names if s not in values[0]]
    if missing:
        raise EvaluationError(f"no {', '.join(missing)} signal to fit (a prior needs --prior)")
    try:
        result = fit_weights(fit_groups(cases, values), names, method)
    except FitError as exc:
        raise EvaluationError(f"fusion fit: {exc}") from None
    config = fitted_config(
        result,
        sampling=sampling,
        metadata={
            "dataset": dataset.name,
            "split": "validation (second-last item, own negatives)",
            "users": len(cases),
            "negatives": len(cases[0].candidates) - 1,
            "seed": seed,
            "prior": prior_name,
        },
    )
    rankings: dict[str, FusionConfig] = {"fused": config}
    rankings.update({s: FusionConfig(weights={s: 1.0}) for s in names})
    metrics = {
        label: summarise(
            [
                rank_of(case.target_id, fused_ranking(case, signal, cfg))
                for case, signal in zip(cases, values, strict=True)
            ],
            n_boot=n_boot,
            seed=seed,
        )
        for label, cfg in rankings.items()
    }
    return ValidationFit(config=config, cases=cases, metrics=metrics)


def checked_config(
    config: FusionConfig, sampling: str, *, allow_sampling_mismatch: bool, source: str
) -> FusionConfig:
    """Refuse a config fit under another negative sampling than `sampling`, unless allowed.

    Raises:
        FusionSamplingMismatchError: The sampling differs and the mismatch is not allowed.
    """
    if config.sampling is not None and config.sampling != sampling and not allow_sampling_mismatch:
        raise FusionSamplingMismatchError(
            f"fusion config {source} was fit under {config.sampling} negatives, this run samples"
            f" {sampling} ones: fit it again on this run's validation split (leave out --fusion),"
            " or pass --allow-sampling-mismatch"
        )
    return config


def check_recorded(
    method: str, config: FusionConfig, lines: Sequence[Mapping[str, Any]], out_dir: Path
) -> None:
    """Refuse a config whose version differs from the one `method`'s existing lines were made with.

    Raises:
        FusionConfigChangedError: Some line records another version.
    """
    versions = {str((line.get("fusion") or {}).get("version")) for line in lines}
    versions.discard(config.version)
    if versions:
        raise FusionConfigChangedError(
            f"{method} in {out_dir} was scored with fusion config {sorted(versions)[0]}, now"
            f" {config.version}: use a new --out directory (the same settings draw the same candidates)"
        )


class FusionRanker:
    """Ranks cases by the fused score of `text` and the prior (`baselines.Ranker`, with `rank_many`)."""

    def __init__(
        self,
        text: TfidfSimilarity,
        prior: PriorScorer | None,
        config: FusionConfig,
        *,
        fitted: bool,
        source: str,
    ) -> None:
        self.text, self.prior, self.config = text, prior, config
        self.record_fields: dict[str, Any] = {
            "fusion": {"version": config.version, "fitted": fitted, "source": source}
        }
        """Added to every result line: which config ranked it."""

    def rank_many(self, cases: Sequence[EvalCase]) -> list[list[str]]:
        """Return each case's candidate ids, best fused score first."""
        signals = case_signals(cases, self.text, self.prior)
        return [fused_ranking(c, s, self.config) for c, s in zip(cases, signals, strict=True)]

    def rank(self, case: EvalCase) -> list[str]:
        """Return `case`'s candidate ids, best fused score first."""
        return self.rank_many([case])[0]


def describe_weights(config: FusionConfig) -> str:
    """`text 0.41, prior 0.59` (the active weights, in `SIGNALS` order)."""
    return ", ".join(f"{s} {config.weights[s]:+.3f}" for s in config.active())


def print_fit(stream: TextIO, label: str, fit: ValidationFit) -> None:
    """One line per ranking of the validation split: HR@10 and NDCG@10 with their CIs."""
    for name, metrics in fit.metrics.items():
        hr, ndcg = metrics["HR@10"], metrics["NDCG@10"]
        print(
            f"{label}: validation {name}: HR@10 {hr.mean:.3f} [{hr.low:.3f}, {hr.high:.3f}]"
            f" NDCG@10 {ndcg.mean:.3f} [{ndcg.low:.3f}, {ndcg.high:.3f}]",
            file=stream,
        )
