"""Reference rankers for the evaluation harness: Random, Popularity and TextSimilarity.

Each ranks the candidates of an `EvalCase` and returns item ids, best first. None
looks at `EvalCase.target_id`.
"""

import random
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Protocol

from m3rec_graph.contracts.schemas import Item
from m3rec_graph.evaluation.datasets import Dataset, EvalCase
from m3rec_graph.text.similarity import TfidfSimilarity, Vector


class Ranker(Protocol):
    """Anything that orders a case's candidates, best first."""

    def rank(self, case: EvalCase) -> list[str]:
        """Return the ids of `case.candidates`, best first."""


class RandomBaseline:
    """A seeded random permutation of the candidates, fixed per (seed, user).

    The rng is seeded with a string of its own, so the permutation is independent
    of the seeded shuffles used to sample and show the candidates.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def rank(self, case: EvalCase) -> list[str]:
        """Return the candidate ids in a random order that depends only on the seed and user."""
        ranking = [item.item_id for item in case.candidates]
        random.Random(f"random-baseline:{self.seed}:{case.user_id}").shuffle(ranking)
        return ranking


def training_popularity(dataset: Dataset) -> Counter[str]:
    """Count interactions over the training split only: each sequence minus its last two items.

    The last item of each user is the test target and the second-last the
    validation target, so neither may inform a ranker evaluated on them.
    """
    counts: Counter[str] = Counter()
    for seq in dataset.sequences.values():
        counts.update(seq[:-2])
    return counts


class PopularityBaseline:
    """Most interacted-with first; ties keep the order the candidates were shown in."""

    def __init__(self, counts: Mapping[str, int]) -> None:
        self.counts = counts

    @classmethod
    def from_dataset(cls, dataset: Dataset) -> "PopularityBaseline":
        """Count popularity over `dataset`'s training split (see `training_popularity`)."""
        return cls(training_popularity(dataset))

    def rank(self, case: EvalCase) -> list[str]:
        """Return the candidate ids by descending training count (a stable sort keeps shown order on ties)."""
        ids = [item.item_id for item in case.candidates]
        return sorted(ids, key=lambda item_id: -self.counts.get(item_id, 0))


class TextSimilarityBaseline:
    """A text-only, non-LLM ranker: `TfidfSimilarity` (m3rec_graph.text.similarity), idf fit on the catalogue.

    Candidates are sorted by their cosine to the history centroid. Ties (including an
    empty history or text-less items, which score 0) keep the order the candidates
    were shown in. The graph's fusion step computes the same signal.
    """

    def __init__(self, catalogue: Iterable[Item]) -> None:
        self.similarity = TfidfSimilarity(catalogue)

    @classmethod
    def from_dataset(cls, dataset: Dataset) -> "TextSimilarityBaseline":
        """Fit the idf on all of `dataset`'s items."""
        return cls(dataset.items.values())

    def vector(self, item: Item) -> Vector:
        """Return `item`'s unit-length TF-IDF vector (cached by item id)."""
        return self.similarity.vector(item)

    def rank(self, case: EvalCase) -> list[str]:
        """Return the candidate ids by descending cosine to the history centroid (stable on ties)."""
        scores = self.similarity.scores(case.history, case.candidates)
        ids = [item.item_id for item in case.candidates]
        return sorted(ids, key=lambda item_id: -scores[item_id])
