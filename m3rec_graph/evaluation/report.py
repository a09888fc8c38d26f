"""Summaries of a run's result lines: metrics with CIs, cost and speed; `report.md`, `results.json`, plots."""

import datetime as dt
import json
import math
import os
import platform
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, cast

from m3rec_graph.evaluation.metrics import (
    DEFAULT_K,
    MetricSummary,
    metric_names,
    summarise,
    user_metrics,
)

REPORT_FILE = "report.md"
RESULTS_JSON = "results.json"
METRICS_PLOT = "metrics.png"
COLD_PLOT = "cold_vs_full.png"
RESULTS_FORMAT = 1

_VERSIONED = (
    "m3rec-graph",
    "langgraph",
    "langchain-core",
    "langchain-openai",
    "langsmith",
    "torch",
)


@dataclass(frozen=True)
class MethodReport:
    """One method's summary on one slice, over the users it has results for."""

    method: str
    slice: str
    users: int
    metrics: dict[str, MetricSummary]
    seconds_per_user: float
    llm: dict[str, float | None] = field(default_factory=dict)
    """LLM methods only: mean tokens, cost, calls per user and the degraded rates."""
    config: dict[str, Any] = field(default_factory=dict)
    """LLM methods only: routing, ablation and prompt versions (as recorded with the results)."""


def chance_metrics(n_candidates: int, k_list: Sequence[int] = DEFAULT_K) -> dict[str, float]:
    """Return the expected metrics of a uniformly random ranking of `n_candidates` items."""
    names = metric_names(k_list)
    per_rank = [user_metrics(r, k_list) for r in range(1, n_candidates + 1)]
    return {name: sum(m[name] for m in per_rank) / n_candidates for name in names}


def _mean(values: Iterable[float]) -> float:
    items = list(values)
    return sum(items) / len(items) if items else math.nan


def summarise_method(
    method: str,
    slice_name: str,
    records: Sequence[Mapping[str, Any]],
    *,
    n_boot: int = 2000,
    seed: int = 0,
) -> MethodReport:
    """Summarise one method's result records on one slice (metrics with bootstrap CIs, cost, speed)."""
    llm: dict[str, float | None] = {}
    config: dict[str, Any] = {}
    if records and all("total_tokens" in r for r in records):
        costs = [r.get("cost_usd") for r in records]
        llm = {
            "tokens_per_user": _mean(float(r["total_tokens"]) for r in records),
            "input_tokens_per_user": _mean(float(r["input_tokens"]) for r in records),
            "output_tokens_per_user": _mean(float(r["output_tokens"]) for r in records),
            "cost_per_user_usd": None
            if any(c is None for c in costs)
            else _mean(float(cast(float, c)) for c in costs),
            "calls_per_user": _mean(float(r["llm_calls"]) for r in records),
            "degraded_user_rate": _mean(1.0 if r["degraded"] else 0.0 for r in records),
            "degraded_per_user": _mean(float(r["degraded"]) for r in records),
        }
        first = records[0]
        config = {key: first.get(key) for key in ("routing", "ablation", "prompts")}
        prompt_sets = {tuple(sorted((r.get("prompts") or {}).items())) for r in records}
        if len(prompt_sets) > 1:  # a prompt changed between a crash and the resume
            config["prompts"] = "mixed: " + "; ".join(str(dict(p)) for p in sorted(prompt_sets))
    # Canonical JSON as the set key: the graph's fusion report holds a list of signals.
    fusions = {json.dumps(r["fusion"], sort_keys=True) for r in records if r.get("fusion")}
    if fusions:  # which fusion config ranked these lines (one per method: see fusion_method)
        config["fusion"] = json.loads(fusions.pop()) if len(fusions) == 1 else "mixed"
    return MethodReport(
        method=method,
        slice=slice_name,
        users=len(records),
        metrics=summarise([int(r["rank"]) for r in records], DEFAULT_K, n_boot=n_boot, seed=seed),
        seconds_per_user=_mean(float(r["seconds"]) for r in records),
        llm=llm,
        config=config,
    )


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:.{digits}f}"


_WITH_CI = ("HR@10", "NDCG@10", "MRR")


def format_slice(
    slice_name: str, reports: Sequence[MethodReport], chance: Mapping[str, float]
) -> str:
    """One slice's markdown: a metric table (CIs on HR@10, NDCG@10, MRR) and, for LLM methods, a cost table."""
    names = metric_names()
    lines = [
        f"## {slice_name}",
        "",
        "| method | users | "
        + " | ".join(n + (" [95% CI]" if n in _WITH_CI else "") for n in names)
        + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for r in reports:
        cells = []
        for name in names:
            s = r.metrics[name]
            cells.append(
                f"{s.mean:.4f} [{s.low:.4f}, {s.high:.4f}]" if name in _WITH_CI else f"{s.mean:.4f}"
            )
        lines.append(f"| {r.method} | {r.users} | " + " | ".join(cells) + " |")
    lines.append("| chance | | " + " | ".join(f"{chance[n]:.4f}" for n in names) + " |")
    lines += [
        "",
        "| method | s/user | tokens/user | cost/user (USD) | LLM calls/user | users degraded | prompts / fusion config |",
    ]
    lines.append("|---|---|---|---|---|---|---|")
    for r in reports:
        if not r.llm:
            fusion = r.config.get("fusion")
            shown = (
                f"fusion@{fusion.get('version')} ({'fitted on validation' if fusion.get('fitted') else fusion.get('source')})"
                if isinstance(fusion, dict)
                else str(fusion or "")
            )
            lines.append(f"| {r.method} | {r.seconds_per_user:.3g} | | | | | {shown} |")
            continue
        prompts = r.config.get("prompts")
        shown = (
            ", ".join(f"{k}@{v}" for k, v in prompts.items())
            if isinstance(prompts, dict)
            else str(prompts)
        )
        lines.append(
            f"| {r.method} | {r.seconds_per_user:.3g} | {_fmt(r.llm['tokens_per_user'], 0)}"
            f" | {_fmt(r.llm['cost_per_user_usd'], 6)} | {_fmt(r.llm['calls_per_user'], 1)}"
            f" | {_fmt(r.llm['degraded_user_rate'], 3)} | {shown} |"
        )
    return "\n".join(lines)


def format_report(
    settings: Mapping[str, Any],
    by_slice: Mapping[str, Sequence[MethodReport]],
    *,
    n_boot: int,
    plots: Sequence[str] = (),
) -> str:
    """Render `report.md`: the run's settings, then one section per slice."""
    n_candidates = int(settings["negatives"]) + 1
    chance = chance_metrics(n_candidates)
    head = [
        f"# Evaluation on {settings['dataset_name']}",
        "",
        f"{settings['users']} users requested; {n_candidates} candidates per user"
        f" (the held-out last item + {settings['negatives']} unseen negatives,"
        f" {settings.get('sampling', 'uniform')} sampling); seed {settings['seed']}.",
        f"95% CIs: percentile bootstrap over users ({n_boot} resamples)."
        " Chance: the expected value of a uniformly random ranking."
        " `cold-start-N` slices score the same users and candidates with only the last N history items.",
    ]
    body = [format_slice(name, reports, chance) for name, reports in by_slice.items() if reports]
    tail = ["Plots: " + ", ".join(f"[{p}]({p})" for p in plots)] if plots else []
    return "\n\n".join(["\n".join(head), *body, *tail]) + "\n"


def environment() -> dict[str, Any]:
    """Package versions and the machine, recorded with every result file."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    machine = {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.machine(),
    }
    return {"versions": versions, "machine": machine}


def results_document(
    settings: Mapping[str, Any],
    by_slice: Mapping[str, Sequence[MethodReport]],
    *,
    n_boot: int,
    wall_seconds: Mapping[str, float],
) -> dict[str, Any]:
    """The `results.json` content: every summary number, the settings, versions and seeds."""
    n_candidates = int(settings["negatives"]) + 1
    return {
        "format": RESULTS_FORMAT,
        "written": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "settings": dict(settings),
        "bootstrap": {"resamples": n_boot, "seed": settings["seed"], "interval": 0.95},
        "chance": chance_metrics(n_candidates),
        **environment(),
        "wall_seconds_this_process": dict(wall_seconds),
        "slices": {
            name: {
                r.method: {
                    "users": r.users,
                    "metrics": {
                        m: {"mean": s.mean, "low": s.low, "high": s.high}
                        for m, s in r.metrics.items()
                    },
                    "seconds_per_user": r.seconds_per_user,
                    **({"llm": r.llm} if r.llm else {}),
                    **({"config": r.config} if r.config else {}),
                }
                for r in reports
            }
            for name, reports in by_slice.items()
        },
    }


def write_plots(
    out_dir: Path, by_slice: Mapping[str, Sequence[MethodReport]], chance: Mapping[str, float]
) -> list[str]:
    """Draw the metric and cold-start plots; return the files written (none without matplotlib)."""
    from m3rec_graph.evaluation import plots  # noqa: PLC0415  (matplotlib is an optional extra)

    points = [
        plots.MetricPoint(
            method=r.method, slice=name, metric=m, mean=s.mean, low=s.low, high=s.high
        )
        for name, reports in by_slice.items()
        for r in reports
        for m, s in r.metrics.items()
    ]
    if not points:
        return []
    try:
        plots.plot_metrics(points, out_dir / METRICS_PLOT, chance=chance)
        written = [METRICS_PLOT]
        cold = [name for name in by_slice if name != "full" and by_slice[name]]
        if cold and by_slice.get("full"):
            plots.plot_cold_vs_full(
                points, out_dir / COLD_PLOT, cold=cold[0], chance=chance.get("HR@10")
            )
            written.append(COLD_PLOT)
    except plots.PlotUnavailableError:
        return []
    return written
