"""Combine per-candidate signals into one fused score per candidate."""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from m3rec_graph.fusion.config import FusionConfig, FusionConfigError, Signal

CONSTANT_RTOL = 1e-9
"""A signal whose spread is below this fraction of its magnitude counts as constant.

Float arithmetic rarely gives a spread of exactly 0 for equal values (the mean of
seven 0.1s is not 0.1), and dividing by such a residue would blow rounding noise up
to z-scores of +-1, so "constant" is decided relative to the values' size.
"""


@dataclass(frozen=True)
class FusedScore:
    """One candidate's fused score and each signal's weighted share of it."""

    fused: float
    parts: dict[str, float]


def zscores(values: Sequence[float]) -> list[float]:
    """Z-normalise within one request; a constant signal becomes all zeros (it cannot rank).

    "Constant" is relative (`CONSTANT_RTOL` of the largest magnitude), and a signal
    with a non-finite value also gives zeros rather than NaN scores.
    """
    n = len(values)
    if n == 0:
        return []
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / n)
    scale = max(abs(v) for v in values)
    if not math.isfinite(sd) or sd <= CONSTANT_RTOL * scale:
        return [0.0] * n
    return [(v - mean) / sd for v in values]


def fuse(
    signals: Mapping[Signal, Mapping[str, float]],
    config: FusionConfig,
    candidate_ids: Sequence[str],
) -> dict[str, FusedScore]:
    """Return each candidate's fused score: sum over present signals of weight * z-score.

    Args:
        signals: Per signal, the raw value per candidate id. A signal that is absent
            (e.g. no `prior` in the request) drops out, and the weights of those
            present are renormalised to the same total absolute weight.
        config: The weights.
        candidate_ids: Every candidate; each signal must give a value for each.

    Raises:
        FusionConfigError: No signal with a non-zero weight is present (say a config
            that weighs only `prior`, for a request without priors). That raises
            rather than giving every candidate 0: an all-zero fused score would
            silently rank by the tie-break alone.
    """
    active = [s for s in config.active() if s in signals]
    if not active:
        raise FusionConfigError(
            f"fusion config {config.version}: none of its weighted signals "
            f"({', '.join(config.active())}) is present (present: {', '.join(sorted(signals)) or 'none'})"
        )
    total = sum(abs(w) for w in config.weights.values())
    kept = sum(abs(config.weights[s]) for s in active)
    scale = total / kept
    z = {
        s: dict(zip(candidate_ids, zscores([signals[s][i] for i in candidate_ids]), strict=True))
        for s in active
    }
    out: dict[str, FusedScore] = {}
    for item_id in candidate_ids:
        parts: dict[str, float] = {s: config.weights[s] * scale * z[s][item_id] for s in active}
        out[item_id] = FusedScore(fused=sum(parts.values()), parts=parts)
    return out
