"""The host-ranker scores the harness can pass as a candidate's `prior`: SASRec's, or log popularity.

A prior scorer maps cases to each case's candidate scores, in the order the
candidates are shown. Neither reads `EvalCase.target_id`. SASRec is trained once
per checkpoint path (then loaded), as for the `sasrec` method.
"""

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, TextIO

from m3rec_graph.evaluation.baselines import training_popularity
from m3rec_graph.evaluation.datasets import Dataset, EvalCase
from m3rec_graph.evaluation.settings import EvaluationError, Prior

PriorScorer = Callable[[Sequence[EvalCase]], list[list[float]]]
"""Cases -> each case's candidate scores, in shown order."""


class CaseScorer(Protocol):
    """A ranker that also exposes its raw scores (`SASRecRanker`)."""

    def scores(self, cases: Sequence[EvalCase]) -> list[list[float]]:
        """Return each case's candidate scores, in shown order."""

    def rank(self, case: EvalCase) -> list[str]:
        """Return the candidate ids, best first."""


def sasrec_ranker(
    dataset: Dataset, dataset_path: Path, path: Path, config: Any, stream: TextIO
) -> CaseScorer:
    """Load the SASRec checkpoint at `path` if it was trained with `config` on this data, else train and save it.

    Raises:
        EvaluationError: PyTorch is not installed.
    """
    try:
        from m3rec_graph.evaluation import sasrec  # noqa: PLC0415  (torch is an optional extra)
    except ImportError as exc:
        raise EvaluationError(
            f"the sasrec method needs PyTorch ({exc}); install it with pip install 'm3rec-graph[eval]'"
        ) from None
    config = config or sasrec.SASRecConfig()
    data_sha = sasrec.dataset_sha256(dataset_path)
    if path.exists():
        model, vocab, stored, log, stored_sha = sasrec.load_checkpoint(path)
        if stored == config and stored_sha == data_sha:
            print(
                f"sasrec: loaded {path} ({len(log.epochs)} epochs, {log.seconds:.0f}s)", file=stream
            )
            return sasrec.SASRecRanker(model, vocab)
    print(
        f"sasrec: training on {dataset.name} ({len(dataset.sequences)} users,"
        f" {len(dataset.items)} items); validation-based early stopping",
        file=stream,
        flush=True,
    )
    model, vocab, log = sasrec.train_sasrec(
        dataset, config, log=lambda line: print(f"sasrec: {line}", file=stream, flush=True)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    sasrec.save_checkpoint(path, model, vocab, config, log, data_sha)
    return sasrec.SASRecRanker(model, vocab)


def popularity_prior(dataset: Dataset) -> PriorScorer:
    """`ln(1 + count)` of each candidate over the training split (`baselines.training_popularity`).

    The log because counts are heavy-tailed: a z-score of raw counts is dominated by
    the one bestseller among the candidates.
    """
    counts = training_popularity(dataset)

    def score(cases: Sequence[EvalCase]) -> list[list[float]]:
        return [[math.log1p(counts.get(i.item_id, 0)) for i in c.candidates] for c in cases]

    return score


def prior_scorer(
    prior: Prior,
    dataset: Dataset,
    *,
    dataset_path: Path,
    sasrec_path: Path,
    sasrec_config: Any,
    stream: TextIO,
) -> PriorScorer | None:
    """The scorer of `prior` (None for `none`); SASRec is loaded from, or trained into, `sasrec_path`."""
    if prior == "none":
        return None
    if prior == "popularity":
        return popularity_prior(dataset)
    ranker = sasrec_ranker(dataset, dataset_path, sasrec_path, sasrec_config, stream)
    return ranker.scores
