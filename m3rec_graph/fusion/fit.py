"""Fit fusion weights on validation cases: logistic regression (default) or coordinate ascent on NDCG@10.

A fit sees groups: one per validation case, with each signal's raw value per
candidate and the index of the held-out item. Each signal is z-normalised within
its group first, exactly as `combine.fuse` does at serving time, so the weights
mean the same in both places.

* `logistic` (the default): the held-out item against its negatives, a binary
  logistic regression on the z-scores (plus an intercept, dropped afterwards:
  it does not change a ranking), by Newton's method with a tiny ridge term. Why
  the default: the loss is convex, so the fit is unique and deterministic, it
  uses every candidate rather than only the top 10, and on this harness it is
  what the reference measurement of issue 15 used.
* `coordinate`: coordinate ascent on mean validation NDCG@10, starting from the
  logistic weights; each sweep tries a grid of values for one weight with the
  others fixed. It optimises the reported metric directly, but NDCG@10 is a step
  function of the weights, so it can chase noise on a few hundred users.

Both are pure Python (no numpy): a fit has at most four weights.
"""

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from m3rec_graph.fusion.combine import zscores
from m3rec_graph.fusion.config import SIGNALS, FusionConfig, Signal

FitMethod = Literal["logistic", "coordinate"]
FIT_METHODS: tuple[FitMethod, ...] = ("logistic", "coordinate")
DEFAULT_FIT: FitMethod = "logistic"


class FitError(ValueError):
    """Nothing to fit on: no groups, a group without its target, or signals of unequal lengths."""


@dataclass(frozen=True)
class FitGroup:
    """One validation case: each signal's raw value per candidate, and the held-out item's index."""

    signals: Mapping[Signal, Sequence[float]]
    target: int


@dataclass(frozen=True)
class FitResult:
    """Fitted weights (sum of absolute values 1) and how well they rank the groups they were fit on."""

    weights: dict[Signal, float]
    method: FitMethod
    groups: int
    in_sample: dict[str, float] = field(default_factory=dict)
    """HR@10 and NDCG@10 on the fitting groups themselves (optimistic)."""


def _normalised(
    groups: Sequence[FitGroup], signals: Sequence[Signal]
) -> list[tuple[list[list[float]], int]]:
    """Per group: rows of z-scores (one row per candidate, one column per signal) and the target."""
    if not groups:
        raise FitError("no validation cases to fit on")
    out = []
    for n, group in enumerate(groups):
        columns = [list(group.signals[s]) for s in signals]
        sizes = {len(c) for c in columns}
        if len(sizes) != 1:
            raise FitError(f"group {n}: signals give different numbers of candidates")
        size = sizes.pop()
        if not 0 <= group.target < size:
            raise FitError(f"group {n}: target index {group.target} outside its {size} candidates")
        z = [zscores(c) for c in columns]
        out.append(([[z[j][i] for j in range(len(signals))] for i in range(size)], group.target))
    return out


def _solve(matrix: list[list[float]], vector: list[float]) -> list[float]:
    """Solve a small symmetric positive-definite system by Gaussian elimination with pivoting."""
    n = len(vector)
    a = [[*row, b] for row, b in zip(matrix, vector, strict=True)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(a[r][col]))
        a[col], a[pivot] = a[pivot], a[col]
        for r in range(n):
            if r != col and a[col][col] != 0.0:
                factor = a[r][col] / a[col][col]
                a[r] = [x - factor * y for x, y in zip(a[r], a[col], strict=True)]
    return [a[i][n] / a[i][i] if a[i][i] != 0.0 else 0.0 for i in range(n)]


def _logistic(
    data: list[tuple[list[list[float]], int]], k: int, ridge: float = 1e-6
) -> list[float]:
    """Newton's method on the mean log-loss of target-vs-negative; returns the k signal weights."""
    beta = [0.0] * (k + 1)  # last entry: the intercept
    rows = [(row, 1.0 if i == target else 0.0) for zs, target in data for i, row in enumerate(zs)]
    n = len(rows)
    for _ in range(50):
        grad = [0.0] * (k + 1)
        hess = [[0.0] * (k + 1) for _ in range(k + 1)]
        for row, y in rows:
            x = [*row, 1.0]
            margin = sum(b * v for b, v in zip(beta, x, strict=True))
            p = 1.0 / (1.0 + math.exp(-margin)) if margin > -700 else 0.0
            w = p * (1.0 - p)
            for i in range(k + 1):
                grad[i] += (p - y) * x[i]
                for j in range(i, k + 1):
                    hess[i][j] += w * x[i] * x[j]
        for i in range(k + 1):
            grad[i] = grad[i] / n + ridge * beta[i] * (i < k)
            for j in range(i, k + 1):
                hess[i][j] = hess[i][j] / n + (ridge if i == j else 0.0)
                hess[j][i] = hess[i][j]
        step = _solve(hess, grad)
        beta = [b - s for b, s in zip(beta, step, strict=True)]
        if max(abs(s) for s in step) < 1e-9:
            break
    return beta[:k]


def rank_metrics(
    data: list[tuple[list[list[float]], int]], weights: Sequence[float]
) -> dict[str, float]:
    """Mean HR@10 and NDCG@10 of ranking each group by `weights . z` (ties count against the target)."""
    hits = ndcg = 0.0
    for zs, target in data:
        scores = [sum(w * v for w, v in zip(weights, row, strict=True)) for row in zs]
        mine = scores[target]
        rank = 1 + sum(1 for i, s in enumerate(scores) if s >= mine and i != target)
        if rank <= 10:
            hits += 1.0
            ndcg += 1.0 / math.log2(rank + 1)
    return {"HR@10": hits / len(data), "NDCG@10": ndcg / len(data)}


def _unit(weights: Sequence[float]) -> list[float]:
    total = sum(abs(w) for w in weights)
    return [w / total for w in weights] if total > 0 else [1.0 / len(weights)] * len(weights)


def _coordinate(
    data: list[tuple[list[list[float]], int]], start: list[float], sweeps: int = 3
) -> list[float]:
    """Coordinate ascent on NDCG@10 over a grid of [-1, 1] per weight (weights kept at unit L1 norm)."""
    grid = [x / 10 for x in range(-10, 11)]
    best = _unit(start)
    best_score = rank_metrics(data, best)["NDCG@10"]
    for _ in range(sweeps):
        improved = False
        for j in range(len(best)):
            for value in grid:
                trial = list(best)
                trial[j] = value
                if not any(trial):
                    continue
                score = rank_metrics(data, trial)["NDCG@10"]
                if score > best_score + 1e-12:
                    best, best_score, improved = _unit(trial), score, True
        if not improved:
            break
    return best


def fit_weights(
    groups: Sequence[FitGroup], signals: Sequence[Signal], method: FitMethod = DEFAULT_FIT
) -> FitResult:
    """Fit one weight per signal on `groups` (see the module docstring for the two methods).

    Raises:
        FitError: No groups, an unknown signal, or a malformed group.
    """
    unknown = [s for s in signals if s not in SIGNALS]
    if unknown or not signals:
        raise FitError(
            f"signals must be a non-empty subset of {', '.join(SIGNALS)}, got {list(signals)}"
        )
    if method not in FIT_METHODS:
        raise FitError(f"fit method must be one of {', '.join(FIT_METHODS)}, got {method!r}")
    data = _normalised(groups, signals)
    weights = _unit(_logistic(data, len(signals)))
    if method == "coordinate":
        weights = _coordinate(data, weights)
    return FitResult(
        weights={s: round(w, 6) for s, w in zip(signals, weights, strict=True)},
        method=method,
        groups=len(groups),
        in_sample=rank_metrics(data, weights),
    )


def weight_intervals(
    groups: Sequence[FitGroup],
    signals: Sequence[Signal],
    *,
    n_boot: int = 200,
    seed: int = 0,
) -> dict[Signal, tuple[float, float]]:
    """95% percentile-bootstrap interval of each logistic weight, resampling the groups (users).

    The weights are on the same scale as `fit_weights`'s (unit L1 norm). An interval
    that spans 0 says the validation cases cannot tell the signal's sign; a constant
    signal (every z-score 0) has weight 0 in every resample.

    Raises:
        FitError: As `fit_weights`.
    """
    data = _normalised(groups, signals)
    rng = random.Random(f"weights:{seed}")
    draws: list[list[float]] = []
    for _ in range(n_boot):
        sample = [data[rng.randrange(len(data))] for _ in data]
        draws.append(_unit(_logistic(sample, len(signals))))
    out: dict[Signal, tuple[float, float]] = {}
    for j, signal in enumerate(signals):
        values = sorted(draw[j] for draw in draws)
        low = values[int(0.025 * (len(values) - 1))]
        high = values[int(math.ceil(0.975 * (len(values) - 1)))]
        out[signal] = (round(low, 6), round(high, 6))
    return out


def supported_signals(intervals: Mapping[Signal, tuple[float, float]]) -> list[Signal]:
    """The signals whose interval (from `weight_intervals`) excludes 0: the cases decide their sign."""
    return [s for s, (low, high) in intervals.items() if low > 0 or high < 0]


def fitted_config(
    result: FitResult, *, sampling: str, metadata: Mapping[str, object]
) -> FusionConfig:
    """A `FusionConfig` of `result`'s weights, recording the fit (method, groups, metrics, `metadata`)."""
    return FusionConfig(
        weights=result.weights,
        sampling=sampling,
        fitted={
            "method": result.method,
            "groups": result.groups,
            "in_sample": result.in_sample,
            **metadata,
        },
    )
