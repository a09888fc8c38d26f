"""Measured routing experiments: run presets on the same candidate sets, then cost against accuracy.

`m3rec cost` without `--dry-run` runs each preset as the `m3rec:PRESET` method of
the evaluation harness (so results are resumable and reusable by `m3rec eval`),
alongside free baselines, and reports per preset: tokens and USD per stage, per
user and per 1,000 users, MOTE calls per candidate slot (what the trait cache
saved), wall time, degraded rate and accuracy with 95% CIs, next to the dry-run
estimate for the same users. `cost_accuracy.png` plots USD per 1,000 users
against HR@10 with the Pareto front.

Per-1,000-user figures scale the measured per-user mean: MOTE is amortised over
the sample, so a larger sample shares more traits and costs less per user.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

from m3rec_graph._internal.atomic import atomic_write_text
from m3rec_graph.cost.estimate import CostSettings, estimate_costs
from m3rec_graph.evaluation import (
    EvalSettings,
    MethodSpec,
    Serving,
    parse_methods,
    read_results,
    run_evaluation,
)
from m3rec_graph.evaluation.metrics import MetricSummary
from m3rec_graph.integrations.runner import serving
from m3rec_graph.llm.factory import ChatModelFactory, openai_chat_model

COST_REPORT = "cost.md"
COST_PLOT = "cost_accuracy.png"
_STAGES = ("mope", "mote", "mar")


@dataclass(frozen=True)
class MeasuredMethod:
    """One method's measured cost and accuracy on the run's full slice."""

    method: str
    users: int
    hr10: MetricSummary
    ndcg10: MetricSummary
    seconds_per_user: float
    cost_per_user_usd: float | None = None
    tokens_per_user: float | None = None
    stages: dict[str, dict[str, float | None]] = field(default_factory=dict)
    """Stage -> mean calls, input and output tokens, USD per user (recorded lines only)."""
    mote_calls_per_candidate: float | None = None
    degraded_user_rate: float | None = None
    estimated_cost_per_user_usd: float | None = None
    """The dry-run estimate for the same users and candidates (m3rec presets only)."""

    @property
    def cost_per_1000_users_usd(self) -> float:
        """USD per 1,000 users (0 for the free baselines)."""
        return 1000 * (self.cost_per_user_usd or 0.0)


@dataclass(frozen=True)
class CostMeasurement:
    """Every measured method of one `m3rec cost` run."""

    out_dir: Path
    dataset_name: str
    negatives: int
    methods: list[MeasuredMethod]
    plot: str | None
    report: str


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _stage_means(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float | None]]:
    with_stages = [r["stages"] for r in records if isinstance(r.get("stages"), dict)]
    out: dict[str, dict[str, float | None]] = {}
    for stage in _STAGES:
        rows = [s.get(stage, {}) for s in with_stages]
        if not rows:
            continue
        costs = [row.get("cost_usd") for row in rows]
        out[stage] = {
            "calls": _mean([float(row.get("calls", 0)) for row in rows]),
            "input_tokens": _mean([float(row.get("input_tokens", 0)) for row in rows]),
            "output_tokens": _mean([float(row.get("output_tokens", 0)) for row in rows]),
            "cost_usd": None
            if any(c is None for c in costs)
            else _mean([float(c) for c in costs if c is not None]),
        }
    return out


def measure(
    method: str, records: Sequence[Mapping[str, Any]], summary: Mapping[str, MetricSummary]
) -> MeasuredMethod:
    """Summarise one method's result lines (full slice) into cost and accuracy."""
    base = MeasuredMethod(
        method=method,
        users=len(records),
        hr10=summary["HR@10"],
        ndcg10=summary["NDCG@10"],
        seconds_per_user=sum(float(r["seconds"]) for r in records) / len(records),
    )
    if not all("total_tokens" in r for r in records):
        return base
    costs = [r.get("cost_usd") for r in records]
    stages = _stage_means(records)
    mote_calls = [
        float(r["stages"]["mote"]["calls"]) / int(r["n_candidates"])
        for r in records
        if isinstance(r.get("stages"), dict) and "mote" in r["stages"]
    ]
    return MeasuredMethod(
        method=method,
        users=len(records),
        hr10=summary["HR@10"],
        ndcg10=summary["NDCG@10"],
        seconds_per_user=base.seconds_per_user,
        cost_per_user_usd=None
        if any(c is None for c in costs)
        else sum(float(c or 0) for c in costs) / len(costs),
        tokens_per_user=sum(float(r["total_tokens"]) for r in records) / len(records),
        stages=stages,
        mote_calls_per_candidate=_mean(mote_calls),
        degraded_user_rate=sum(1.0 for r in records if r["degraded"]) / len(records),
    )


def _fmt(value: float | None, spec: str) -> str:
    return (
        "n/a"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else format(value, spec)
    )


def format_measurement(m: CostMeasurement) -> str:
    """Render `cost.md`: one row per method, then tokens per stage for the LLM methods."""
    lines = [
        f"# Measured routing costs on {m.dataset_name}",
        "",
        f"{m.methods[0].users if m.methods else 0} users, {m.negatives + 1} candidates each (full history)."
        " USD per 1,000 users scales the measured mean per user; `estimated` is the `--dry-run`"
        " estimate for the same users and candidates.",
        "",
        "| method | HR@10 [95% CI] | NDCG@10 | USD/user | USD/1,000 users | estimated USD/1,000 |"
        " tokens/user | MOTE calls/candidate | s/user | users degraded |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in m.methods:
        est = (
            None if r.estimated_cost_per_user_usd is None else 1000 * r.estimated_cost_per_user_usd
        )
        if r.tokens_per_user is None:  # a baseline: no LLM, nothing to pay per user
            lines.append(
                f"| {r.method} | {r.hr10.mean:.4f} [{r.hr10.low:.4f}, {r.hr10.high:.4f}]"
                f" | {r.ndcg10.mean:.4f} | 0 (no LLM) | 0 | | | | {r.seconds_per_user:.3g} | |"
            )
            continue
        lines.append(
            f"| {r.method} | {r.hr10.mean:.4f} [{r.hr10.low:.4f}, {r.hr10.high:.4f}] | {r.ndcg10.mean:.4f}"
            f" | {_fmt(r.cost_per_user_usd, '.6f')} | {r.cost_per_1000_users_usd:.2f} | {_fmt(est, '.2f')}"
            f" | {_fmt(r.tokens_per_user, ',.0f')} | {_fmt(r.mote_calls_per_candidate, '.3f')}"
            f" | {r.seconds_per_user:.3g} | {_fmt(r.degraded_user_rate, '.3f')} |"
        )
    staged = [r for r in m.methods if r.stages]
    if staged:
        lines += [
            "",
            "| method | stage | calls/user | input tokens/user | output tokens/user | USD/user |",
        ]
        lines.append("|---|---|---|---|---|---|")
        for r in staged:
            for stage, s in r.stages.items():
                lines.append(
                    f"| {r.method} | {stage} | {_fmt(s['calls'], '.2f')} | {_fmt(s['input_tokens'], ',.0f')}"
                    f" | {_fmt(s['output_tokens'], ',.0f')} | {_fmt(s['cost_usd'], '.6f')} |"
                )
    if m.plot:
        lines += ["", f"Cost against accuracy, with the Pareto front: [{m.plot}]({m.plot})"]
    return "\n".join(lines) + "\n"


def _plot(out_dir: Path, methods: Sequence[MeasuredMethod]) -> str | None:
    from m3rec_graph.evaluation import plots  # noqa: PLC0415  (matplotlib is an optional extra)

    points = [
        plots.CostPoint(
            label=r.method,
            cost_usd=r.cost_per_1000_users_usd,
            accuracy=r.hr10.mean,
            low=r.hr10.low,
            high=r.hr10.high,
        )
        for r in methods
    ]
    try:
        plots.plot_cost_accuracy(
            points, out_dir / COST_PLOT, title="Measured cost vs accuracy (full history)"
        )
    except plots.PlotUnavailableError:
        return None
    return COST_PLOT


def run_cost_experiment(
    settings: EvalSettings,
    presets: Sequence[str],
    out_dir: Path,
    *,
    baselines: Sequence[str] = ("random", "popularity"),
    concurrency: int = 2,
    chat_models: ChatModelFactory = openai_chat_model,
    serve: Serving = serving,
    progress: TextIO | None = None,
    n_boot: int = 2000,
) -> CostMeasurement:
    """Run `presets` (and free `baselines`) through the harness on the same cases; measure cost and accuracy.

    Raises:
        EvaluationError: Bad settings, presets or baselines (see `run_evaluation`).
        ProviderAuthError: A preset's provider refused the key (e.g. none set).
    """
    specs: list[MethodSpec] = parse_methods(
        ",".join([*baselines, *(f"m3rec:{p}" for p in presets)])
    )
    run = run_evaluation(
        settings,
        specs,
        out_dir,
        concurrency=concurrency,
        chat_models=chat_models,
        serve=serve,
        progress=progress,
        n_boot=n_boot,
    )
    results = read_results(out_dir / "results.jsonl")
    summaries = {r.method: r.metrics for r in run.reports.get("full", [])}
    users = [c.user_id for c in run.cases]
    estimate = estimate_costs(
        CostSettings(
            dataset=settings.dataset,
            users=settings.users,
            presets=tuple(s.routing for s in specs if s.kind == "m3rec" and s.routing),
            negatives=settings.negatives,
            seed=settings.seed,
        )
    )
    measured: list[MeasuredMethod] = []
    for spec in specs:
        records = [
            results[(spec.key, "full", u)] for u in users if (spec.key, "full", u) in results
        ]
        if not records:
            continue
        method = measure(spec.key, records, summaries[spec.key])
        if spec.kind == "m3rec":
            found = estimate.estimate(str(spec.routing), "listwise")
            if found is not None:
                method = replace(method, estimated_cost_per_user_usd=found.per_user(found.cost_usd))
        measured.append(method)
    plot = _plot(out_dir, measured) if measured else None
    result = CostMeasurement(
        out_dir=out_dir,
        dataset_name=estimate.dataset_name,
        negatives=settings.negatives,
        methods=measured,
        plot=plot,
        report="",
    )
    report = format_measurement(result)
    atomic_write_text(out_dir / COST_REPORT, report)
    return replace(result, report=report)
