"""Ranking metrics for one held-out target per user, and bootstrap confidence intervals.

Every metric is a function of the target's 1-based rank `r` among the candidates:

* `HR@k` (hit rate, equal to Recall@k with one target): `1` if `r <= k`, else `0`;
* `NDCG@k`: `1 / log2(r + 1)` if `r <= k`, else `0` (the ideal DCG is 1);
* `MRR`: `1 / r`, untruncated (as in S3-Rec's sampled evaluation).

`NDCG@1` equals `HR@1`, so it is not reported separately. `summarise` averages
over users and adds a percentile-bootstrap 95% interval, resampling users.
"""

import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_K: tuple[int, ...] = (1, 5, 10, 20)
"""The cut-offs reported by default: HR@1/5/10/20 and NDCG@5/10/20."""


def rank_of(target: str, ranking: Sequence[str]) -> int:
    """Return the 1-based position of `target` in `ranking` (best first).

    Raises:
        ValueError: `target` is not in `ranking`.
    """
    for position, item_id in enumerate(ranking, start=1):
        if item_id == target:
            return position
    raise ValueError(f"target {target!r} is not in the ranking of {len(ranking)} items")


def _check_rank(rank: int) -> None:
    if rank < 1:
        raise ValueError(f"a rank is 1-based, got {rank}")


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"a cut-off k must be >= 1, got {k}")


def hit_at(rank: int, k: int) -> float:
    """Return HR@k of one user: 1.0 when the target is in the top `k`, else 0.0."""
    _check_rank(rank)
    _check_k(k)
    return 1.0 if rank <= k else 0.0


def ndcg_at(rank: int, k: int) -> float:
    """Return NDCG@k of one user with a single relevant item: `1 / log2(rank + 1)` within the top `k`."""
    _check_rank(rank)
    _check_k(k)
    return 1.0 / math.log2(rank + 1) if rank <= k else 0.0


def reciprocal_rank(rank: int) -> float:
    """Return the reciprocal rank `1 / rank` of one user (its mean over users is MRR)."""
    _check_rank(rank)
    return 1.0 / rank


def metric_names(k_list: Sequence[int] = DEFAULT_K) -> list[str]:
    """Return the metric names for `k_list`, in report order: HR@k, then NDCG@k (k > 1), then MRR."""
    for k in k_list:
        _check_k(k)
    ks = sorted(set(k_list))
    return [f"HR@{k}" for k in ks] + [f"NDCG@{k}" for k in ks if k > 1] + ["MRR"]


def user_metrics(rank: int, k_list: Sequence[int] = DEFAULT_K) -> dict[str, float]:
    """Return every metric of one user whose target is at `rank`, keyed as in `metric_names`."""
    _check_rank(rank)
    values: dict[str, float] = {}
    for name in metric_names(k_list):
        kind, _, k = name.partition("@")
        if kind == "HR":
            values[name] = hit_at(rank, int(k))
        elif kind == "NDCG":
            values[name] = ndcg_at(rank, int(k))
        else:
            values[name] = reciprocal_rank(rank)
    return values


@dataclass(frozen=True)
class MetricSummary:
    """The mean of a metric over users and its percentile-bootstrap 95% interval."""

    mean: float
    low: float
    high: float


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Return the `q`-quantile (0..1) of ascending `sorted_values`, linearly interpolated.

    This is numpy's default (`linear`) definition: position `q * (n - 1)`.
    """
    if not sorted_values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1], got {q}")
    position = q * (len(sorted_values) - 1)
    lower = math.floor(position)
    upper = min(lower + 1, len(sorted_values) - 1)
    fraction = position - lower
    return sorted_values[lower] + (sorted_values[upper] - sorted_values[lower]) * fraction


def summarise(
    ranks: Sequence[int],
    k_list: Sequence[int] = DEFAULT_K,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, MetricSummary]:
    """Average each metric over users, with a percentile-bootstrap 95% confidence interval.

    Each bootstrap replicate draws `len(ranks)` users with replacement (one draw
    shared by all metrics, so the intervals are of the same resamples) using
    `random.Random(seed)`; the interval is the 2.5th and 97.5th percentile of the
    replicate means. With `n_boot=0` the interval is just the mean.

    Args:
        ranks: The target's 1-based rank for each user.
        k_list: Cut-offs of HR@k and NDCG@k.
        n_boot: Number of bootstrap replicates.
        seed: Seed of the resampling, so intervals are reproducible.

    Returns:
        Metric name (as in `metric_names(k_list)`) -> mean and interval.

    Raises:
        ValueError: No ranks, a rank below 1, a cut-off below 1, or a negative `n_boot`.
    """
    if not ranks:
        raise ValueError("cannot summarise an empty list of ranks")
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot}")
    names = metric_names(k_list)
    # Metrics depend only on the rank, so work with the few distinct ranks and their counts.
    counts = Counter(ranks)
    per_rank = {rank: user_metrics(rank, k_list) for rank in counts}
    n = len(ranks)
    means = {
        name: sum(count * per_rank[rank][name] for rank, count in counts.items()) / n
        for name in names
    }
    replicates: dict[str, list[float]] = {name: [] for name in names}
    rng = random.Random(seed)
    population = list(ranks)
    for _ in range(n_boot):
        sample = Counter(rng.choices(population, k=n))
        for name in names:
            replicates[name].append(
                sum(count * per_rank[rank][name] for rank, count in sample.items()) / n
            )
    summary: dict[str, MetricSummary] = {}
    for name in names:
        if n_boot == 0:
            summary[name] = MetricSummary(means[name], means[name], means[name])
            continue
        values = sorted(replicates[name])
        summary[name] = MetricSummary(
            means[name], percentile(values, 0.025), percentile(values, 0.975)
        )
    return summary


def paired_difference(
    ranks: Sequence[int],
    baseline_ranks: Sequence[int],
    metric: str,
    n_boot: int = 2000,
    seed: int = 0,
) -> MetricSummary:
    """Mean per-user difference of `metric` (method minus baseline), with a paired bootstrap 95% interval.

    The two rank lists are of the same users in the same order; each replicate draws
    users with replacement and keeps both of a user's ranks together, so the interval
    reflects the per-user difference, not two independent samples.

    Raises:
        ValueError: The lists differ in length or are empty, or `metric` is unknown.
    """
    if len(ranks) != len(baseline_ranks) or not ranks:
        raise ValueError("paired ranks must be two non-empty lists of equal length")
    k = int(metric.partition("@")[2] or 1)
    diffs = [
        user_metrics(a, (k,))[metric] - user_metrics(b, (k,))[metric]
        for a, b in zip(ranks, baseline_ranks, strict=True)
    ]
    n = len(diffs)
    mean = sum(diffs) / n
    if n_boot == 0:
        return MetricSummary(mean, mean, mean)
    rng = random.Random(seed)
    replicates = sorted(sum(rng.choices(diffs, k=n)) / n for _ in range(n_boot))
    return MetricSummary(mean, percentile(replicates, 0.025), percentile(replicates, 0.975))
