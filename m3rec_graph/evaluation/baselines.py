"""Reference rankers for the evaluation harness: Random, Popularity and TextSimilarity.

Each ranks the candidates of an `EvalCase` and returns item ids, best first. None
looks at `EvalCase.target_id`.
"""

import math
import random
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Protocol

from m3rec_graph.contracts.schemas import Item
from m3rec_graph.evaluation.datasets import Dataset, EvalCase
from m3rec_graph.text.item_text import item_text


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


_WORD = re.compile(r"\w+")

Vector = dict[str, float]
"""A sparse TF-IDF vector: term -> weight."""


def text_tokens(item: Item) -> list[str]:
    """Lowercase word tokens of `item_text(item)` (the text the LLM methods see)."""
    return _WORD.findall(item_text(item).lower())


def _unit(vector: Vector) -> Vector:
    norm = math.sqrt(sum(w * w for w in vector.values()))
    return {t: w / norm for t, w in vector.items()} if norm > 0 else {}


class TextSimilarityBaseline:
    """A text-only, non-LLM ranker: TF-IDF cosine between each candidate and the user's history.

    Documents are `item_text(item)`, tokenised into lowercase word tokens. Term
    weights are `(1 + ln tf) * idf` with `idf = ln((1 + N) / (1 + df))`, fitted once
    over the catalogue's N item texts (text only, no interactions, so nothing about
    the held-out items leaks). That idf gives a term found in every item ~0 weight,
    which mutes the field labels `item_text` writes (`brand:`, `category:`, ...) and
    very broad category names, while rare words (a brand, a product type) dominate.

    A candidate's score is the cosine between its unit vector and the centroid of
    the history's unit vectors. The centroid (rather than the max over history
    items) is used because every history item then counts equally and a candidate
    is rewarded for sharing terms with many of them, so one odd purchase does not
    decide the ranking; it also costs one dot product per candidate instead of
    one per (candidate, history item). Ties (including an empty history or
    text-less items, which score 0) keep the order the candidates were shown in.
    """

    def __init__(self, catalogue: Iterable[Item]) -> None:
        self._tokens: dict[str, list[str]] = {}
        df: Counter[str] = Counter()
        for item in catalogue:
            tokens = self._tokens.setdefault(item.item_id, text_tokens(item))
            df.update(set(tokens))
        n_docs = len(self._tokens)
        self.idf = {term: math.log((1 + n_docs) / (1 + count)) for term, count in df.items()}
        self._unseen_idf = math.log(1 + n_docs)
        self._vectors: dict[str, Vector] = {}

    @classmethod
    def from_dataset(cls, dataset: Dataset) -> "TextSimilarityBaseline":
        """Fit the idf on all of `dataset`'s items."""
        return cls(dataset.items.values())

    def vector(self, item: Item) -> Vector:
        """Return `item`'s unit-length TF-IDF vector (cached by item id)."""
        cached = self._vectors.get(item.item_id)
        if cached is not None:
            return cached
        tokens = self._tokens.get(item.item_id)
        if tokens is None:  # not in the fitted catalogue: a term seen nowhere gets the top idf
            tokens = text_tokens(item)
        tf = Counter(tokens)
        vector = _unit(
            {
                term: (1 + math.log(count)) * self.idf.get(term, self._unseen_idf)
                for term, count in tf.items()
            }
        )
        self._vectors[item.item_id] = vector
        return vector

    def rank(self, case: EvalCase) -> list[str]:
        """Return the candidate ids by descending cosine to the history centroid (stable on ties)."""
        centroid: Vector = {}
        for item in case.history:
            for term, weight in self.vector(item).items():
                centroid[term] = centroid.get(term, 0.0) + weight
        centroid = _unit(centroid)

        def score(item: Item) -> float:
            return sum(w * centroid.get(t, 0.0) for t, w in self.vector(item).items())

        scores = {item.item_id: score(item) for item in case.candidates}
        ids = [item.item_id for item in case.candidates]
        return sorted(ids, key=lambda item_id: -scores[item_id])
