"""Two breakdowns every report adds: paired gains against a baseline, and metrics by history length.

* Paired gains: for each method and slice, the mean per-user difference of HR@10
  and NDCG@10 against `sasrec` (when the run has it) on the users both have, with
  a paired bootstrap interval (`metrics.paired_difference`).
* History length: each method's HR@10 and NDCG@10 on the full slice, by the number
  of history items the case had, with counts and bootstrap intervals. The buckets
  suit 5-core data (the shortest test history is 4 items); the cold-start slices
  have one history length each and are reported on their own.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from m3rec_graph.evaluation.metrics import MetricSummary, paired_difference, summarise

PAIRED_BASELINE = "sasrec"
BREAKDOWN_METRICS = ("HR@10", "NDCG@10")
HISTORY_BUCKETS: tuple[tuple[str, int, int | None], ...] = (
    ("<=4", 0, 4),
    ("5-7", 5, 7),
    ("8-15", 8, 15),
    (">15", 16, None),
)
"""(label, fewest, most history items); None: no upper bound."""

Records = Mapping[str, Mapping[str, Mapping[str, Any]]]
"""Method -> user id -> result line, of one slice."""


@dataclass(frozen=True)
class PairedGain:
    """One method's per-user gain over the baseline on one slice."""

    method: str
    slice: str
    baseline: str
    users: int
    deltas: dict[str, MetricSummary]


@dataclass(frozen=True)
class BucketReport:
    """One method's metrics on the users of one history-length bucket."""

    method: str
    bucket: str
    users: int
    metrics: dict[str, MetricSummary]


def paired_gains(
    slice_name: str,
    records: Records,
    *,
    baseline: str = PAIRED_BASELINE,
    n_boot: int = 2000,
    seed: int = 0,
) -> list[PairedGain]:
    """Each other method's paired gain over `baseline` on the users both have (none without `baseline`)."""
    base = records.get(baseline)
    if not base:
        return []
    gains = []
    for method, lines in records.items():
        users = [u for u in lines if u in base]
        if method == baseline or not users:
            continue
        ranks = [int(lines[u]["rank"]) for u in users]
        base_ranks = [int(base[u]["rank"]) for u in users]
        deltas = {
            m: paired_difference(ranks, base_ranks, m, n_boot=n_boot, seed=seed)
            for m in BREAKDOWN_METRICS
        }
        gains.append(PairedGain(method, slice_name, baseline, len(users), deltas))
    return gains


def bucket_of(history_items: int) -> str:
    """The label of the bucket `history_items` falls in."""
    for label, low, high in HISTORY_BUCKETS:
        if history_items >= low and (high is None or history_items <= high):
            return label
    raise AssertionError(history_items)


def history_breakdown(records: Records, *, n_boot: int = 2000, seed: int = 0) -> list[BucketReport]:
    """Each method's metrics per history-length bucket (buckets without users are left out)."""
    out = []
    for method, lines in records.items():
        for label, _, _ in HISTORY_BUCKETS:
            ranks = [
                int(r["rank"])
                for r in lines.values()
                if bucket_of(int(r["history_items"])) == label
            ]
            if ranks:
                summary = summarise(ranks, (10,), n_boot=n_boot, seed=seed)
                metrics = {m: summary[m] for m in BREAKDOWN_METRICS}
                out.append(BucketReport(method, label, len(ranks), metrics))
    return out


def _ci(s: MetricSummary, signed: bool = False) -> str:
    sign = "+" if signed else ""
    return f"{s.mean:{sign}.3f} [{s.low:{sign}.3f}, {s.high:{sign}.3f}]"


def format_breakdowns(gains: Sequence[PairedGain], buckets: Sequence[BucketReport]) -> str:
    """The markdown of both breakdowns (empty when there is neither)."""
    parts = []
    if gains:
        lines = [
            f"## Paired gain over {gains[0].baseline}",
            "",
            "Mean per-user difference (method minus baseline) with a paired bootstrap 95% CI.",
            "",
            "| slice | method | users | Δ HR@10 [95% CI] | Δ NDCG@10 [95% CI] |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {g.slice} | {g.method} | {g.users} | {_ci(g.deltas['HR@10'], True)}"
            f" | {_ci(g.deltas['NDCG@10'], True)} |"
            for g in gains
        ]
        parts.append("\n".join(lines))
    if buckets:
        lines = [
            "## full, by history length",
            "",
            "| method | history items | users | HR@10 [95% CI] | NDCG@10 [95% CI] |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {b.method} | {b.bucket} | {b.users} | {_ci(b.metrics['HR@10'])} | {_ci(b.metrics['NDCG@10'])} |"
            for b in buckets
        ]
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def breakdowns_document(
    gains: Sequence[PairedGain], buckets: Sequence[BucketReport]
) -> dict[str, Any]:
    """The `results.json` entries of both breakdowns."""

    def plain(metrics: Mapping[str, MetricSummary]) -> dict[str, dict[str, float]]:
        return {m: {"mean": s.mean, "low": s.low, "high": s.high} for m, s in metrics.items()}

    return {
        "paired_gain": [
            {"slice": g.slice, "method": g.method, "baseline": g.baseline, "users": g.users,
             "deltas": plain(g.deltas)}
            for g in gains
        ],
        "history_length": [
            {"slice": "full", "method": b.method, "bucket": b.bucket, "users": b.users,
             "metrics": plain(b.metrics)}
            for b in buckets
        ],
    }  # fmt: skip
