"""TF-IDF cosine between a shopper's history and each candidate: one implementation.

The `text` baseline of the evaluation harness and the graph's fusion step both call
`TfidfSimilarity`, so the signal the fusion weights were fitted on is the signal the
graph computes.
"""

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence

from m3rec_graph.contracts.schemas import Item
from m3rec_graph.text.item_text import item_text

_WORD = re.compile(r"\w+")

Vector = dict[str, float]
"""A sparse TF-IDF vector: term -> weight."""


def text_tokens(item: Item) -> list[str]:
    """Lowercase word tokens of `item_text(item)` (the text the LLM stages see)."""
    return _WORD.findall(item_text(item).lower())


def _unit(vector: Vector) -> Vector:
    norm = math.sqrt(sum(w * w for w in vector.values()))
    return {t: w / norm for t, w in vector.items()} if norm > 0 else {}


class TfidfSimilarity:
    """TF-IDF cosine between each candidate and the centroid of the history's vectors.

    Documents are `item_text(item)`, tokenised into lowercase word tokens. Term
    weights are `(1 + ln tf) * idf` with `idf = ln((1 + N) / (1 + df))`, fitted once
    over the N item texts of `corpus` (text only, no interactions, so nothing about
    held-out items leaks). That idf gives a term found in every item ~0 weight, which
    mutes the field labels `item_text` writes (`brand:`, `category:`, ...) and very
    broad category names, while rare words (a brand, a product type) dominate.

    The centroid (rather than the max over history items) is used because every
    history item then counts equally and a candidate is rewarded for sharing terms
    with many of them, so one odd purchase does not decide; it also costs one dot
    product per candidate. An empty history or a text-less item scores 0.
    """

    def __init__(self, corpus: Iterable[Item]) -> None:
        """Fit the idf on `corpus` (a catalogue, or a request's own history and candidates)."""
        self._tokens: dict[str, list[str]] = {}
        df: Counter[str] = Counter()
        for item in corpus:
            if item.item_id in self._tokens:
                continue
            tokens = self._tokens[item.item_id] = text_tokens(item)
            df.update(set(tokens))
        n_docs = len(self._tokens)
        self.idf = {term: math.log((1 + n_docs) / (1 + count)) for term, count in df.items()}
        self._unseen_idf = math.log(1 + n_docs)
        self._vectors: dict[str, Vector] = {}

    @classmethod
    def sharing_idf(cls, fitted: "TfidfSimilarity") -> "TfidfSimilarity":
        """Return a similarity with `fitted`'s idf that tokenises every item from its own text.

        For a long-lived idf (fit once on a catalogue) used per request: the items'
        text comes from the request, and the vector cache lives only as long as the
        returned object, so a server does not accumulate every item it ever saw.
        """
        fresh = cls(())
        fresh.idf, fresh._unseen_idf = fitted.idf, fitted._unseen_idf
        return fresh

    def vector(self, item: Item) -> Vector:
        """Return `item`'s unit-length TF-IDF vector (cached by item id)."""
        cached = self._vectors.get(item.item_id)
        if cached is not None:
            return cached
        tokens = self._tokens.get(item.item_id)
        if tokens is None:  # not in the fitted corpus: a term seen nowhere gets the top idf
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

    def scores(self, history: Sequence[Item], candidates: Sequence[Item]) -> dict[str, float]:
        """Return each candidate's cosine to the history centroid, by item id, in [0, 1]."""
        centroid: Vector = {}
        for item in history:
            for term, weight in self.vector(item).items():
                centroid[term] = centroid.get(term, 0.0) + weight
        centroid = _unit(centroid)
        return {
            item.item_id: sum(w * centroid.get(t, 0.0) for t, w in self.vector(item).items())
            for item in candidates
        }
