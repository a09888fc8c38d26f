"""Plots for evaluation and cost reports: metric bars with confidence intervals, cost vs accuracy.

Every public function is pure: it takes plain frozen dataclasses, writes one PNG and
returns its path. Metric names are the strings of `m3rec_graph.evaluation.metrics.metric_names()`
(`HR@10`, `NDCG@10`, `MRR`, ...).

matplotlib is an optional dependency (the `eval` extra). It is imported only when a
plot is drawn, so importing this module is cheap and works without it; drawing
without it raises `PlotUnavailableError`. Figures are built as
`matplotlib.figure.Figure` objects on an Agg canvas, never through `pyplot`: no
global backend is switched, no figure is registered, so nothing is left open and
the functions are safe to call from a notebook or a worker thread.
"""

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from m3rec_graph.errors import M3RecError

if TYPE_CHECKING:
    from matplotlib.artist import Artist
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 120
"""Resolution of the written PNGs."""

DEFAULT_COLD_SLICE = "cold-start (last 2)"
"""The slice `plot_cold_vs_full` compares with `full` unless told otherwise."""

_INSTALL_HINT = "pip install 'm3rec-graph[eval]'"
_TOLERANCE = 1e-9


class PlotUnavailableError(M3RecError, ImportError):
    """matplotlib is not installed, so no plot can be drawn."""


@dataclass(frozen=True)
class MetricPoint:
    """One metric of one method on one evaluation slice, with its 95% confidence interval."""

    method: str
    slice: str
    """The evaluation slice, e.g. `full` or `cold-start (last 2)`."""
    metric: str
    """A name from `m3rec_graph.evaluation.metrics.metric_names()`, e.g. `HR@10`."""
    mean: float
    low: float
    high: float


@dataclass(frozen=True)
class CostPoint:
    """The cost and accuracy of one method or routing preset."""

    label: str
    cost_usd: float
    """Cost in the unit of the plot's `cost_label` (0 for a free local model)."""
    accuracy: float
    low: float | None = None
    """Lower bound of the accuracy's 95% interval (None: no interval)."""
    high: float | None = None
    """Upper bound of the accuracy's 95% interval (None: no interval)."""
    measured: bool = True
    """False when the cost is an estimate rather than a measurement (drawn hollow)."""


# --- validation --------------------------------------------------------------------------------


def _check_interval(what: str, mean: float, low: float, high: float) -> None:
    for name, value in (("mean", mean), ("low", low), ("high", high)):
        if not math.isfinite(value):
            raise ValueError(f"{what}: {name} must be a finite number, got {value!r}")
    slack = _TOLERANCE * max(1.0, abs(low), abs(high))
    if not low - slack <= mean <= high + slack:
        raise ValueError(f"{what}: need low <= mean <= high, got {low!r} <= {mean!r} <= {high!r}")


def _check_metric_points(points: Sequence[MetricPoint], metrics: Sequence[str]) -> None:
    if not points:
        raise ValueError("no metric points to plot")
    if not metrics:
        raise ValueError("no metrics to plot: pass at least one metric name")
    if len(set(metrics)) != len(metrics):
        raise ValueError(f"metrics are repeated: {list(metrics)}")
    seen: set[tuple[str, str, str]] = set()
    for point in points:
        key = (point.method, point.slice, point.metric)
        if key in seen:
            raise ValueError(f"duplicate metric point for method/slice/metric {key}")
        seen.add(key)
        _check_interval(
            f"{point.metric} of {point.method!r} on {point.slice!r}",
            point.mean,
            point.low,
            point.high,
        )
    available = _first_seen(point.metric for point in points)
    missing = [metric for metric in metrics if metric not in available]
    if missing:
        raise ValueError(f"metric(s) {missing} not in the points; available: {available}")


def _check_cost_points(points: Sequence[CostPoint]) -> None:
    for point in points:
        what = f"cost point {point.label!r}"
        if not math.isfinite(point.cost_usd) or point.cost_usd < 0:
            raise ValueError(f"{what}: cost must be a finite number >= 0, got {point.cost_usd!r}")
        if (point.low is None) != (point.high is None):
            raise ValueError(f"{what}: give both low and high, or neither")
        if point.low is not None and point.high is not None:
            _check_interval(what, point.accuracy, point.low, point.high)
        elif not math.isfinite(point.accuracy):
            raise ValueError(f"{what}: accuracy must be a finite number, got {point.accuracy!r}")


def _check_png_path(path: Path) -> None:
    if path.suffix.lower() != ".png":
        raise ValueError(f"plots are written as PNG: the path must end in .png, got {str(path)!r}")


def _first_seen(values: Iterable[str]) -> list[str]:
    """Return the distinct `values` in the order they first appear."""
    return list(dict.fromkeys(values))


def _check_chance(chance: Mapping[str, float] | None) -> Mapping[str, float]:
    for metric, value in (chance or {}).items():
        if not math.isfinite(value):
            raise ValueError(f"chance value of {metric} must be a finite number, got {value!r}")
    return chance or {}


# --- Pareto front ------------------------------------------------------------------------------


def _dominates(a: CostPoint, b: CostPoint) -> bool:
    """Return whether `a` costs no more and scores no less than `b`, and is better in one."""
    no_worse = a.cost_usd <= b.cost_usd and a.accuracy >= b.accuracy
    return no_worse and (a.cost_usd < b.cost_usd or a.accuracy > b.accuracy)


def pareto_front(points: Sequence[CostPoint]) -> list[CostPoint]:
    """Return the points no other point dominates, cheapest first.

    A point dominates another when its cost is `<=` and its accuracy `>=`, with
    at least one strict. Points with equal cost and accuracy do not dominate each
    other, so they are all kept. The result is sorted by cost, then accuracy
    (highest first), then label, so it does not depend on the input order (only
    points equal in all three keep their input order). The confidence intervals
    are not used: the front is of the point estimates.

    Raises:
        ValueError: A cost is negative or not finite, an accuracy is not finite,
            or an interval is half given or does not contain its accuracy.
    """
    _check_cost_points(points)
    front = [p for p in points if not any(_dominates(q, p) for q in points)]
    return sorted(front, key=lambda p: (p.cost_usd, -p.accuracy, p.label))


# --- matplotlib plumbing -----------------------------------------------------------------------


def _new_figure(width: float, height: float) -> "Figure":
    """Return an empty figure on an Agg canvas (no pyplot, no global state)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415 - optional
        from matplotlib.figure import Figure  # noqa: PLC0415 - optional
    except ImportError as exc:
        raise PlotUnavailableError(
            f"plotting needs matplotlib, which is not installed: {_INSTALL_HINT}"
        ) from exc
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: "Figure", path: Path) -> Path:
    """Write `figure` to `path` as a PNG (creating the parent directory) and return `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=DPI)
    figure.clear()  # drop the artists now; there is no pyplot registry to close it in
    return path


def _set_value_limits(ax: "Axes", values: Sequence[float], headroom: float) -> None:
    """Start the y axis at 0 (or the lowest value) and leave `headroom` above the highest."""
    low = min(0.0, *values)
    high = max(0.0, *values)
    span = (high - low) or 1.0
    ax.set_ylim(low, high + headroom * span)


# --- metric bars -------------------------------------------------------------------------------


def _draw_grouped_bars(
    ax: "Axes",
    points: Sequence[MetricPoint],
    metric: str,
    methods: Sequence[str],
    slices: Sequence[str],
    chance: float | None,
) -> None:
    """Draw one group of bars per method, one bar per slice, with asymmetric CI error bars."""
    by_key = {(p.method, p.slice): p for p in points if p.metric == metric}
    width = 0.8 / len(slices)
    for index, slice_name in enumerate(slices):
        xs: list[float] = []
        means: list[float] = []
        below: list[float] = []
        above: list[float] = []
        for position, method in enumerate(methods):
            point = by_key.get((method, slice_name))
            if point is None:  # this method was not run on this slice: leave a gap
                continue
            xs.append(position - 0.4 + width * (index + 0.5))
            means.append(point.mean)
            below.append(max(0.0, point.mean - point.low))
            above.append(max(0.0, point.high - point.mean))
        if xs:
            ax.bar(
                xs,
                means,
                width * 0.92,
                yerr=[below, above],
                capsize=3,
                color=f"C{index}",
                label=slice_name,
                error_kw={"elinewidth": 1, "ecolor": "0.2"},
            )
    limits = [v for p in by_key.values() for v in (p.low, p.high)]
    if chance is not None:
        ax.axhline(chance, color="0.35", linestyle="--", linewidth=1, label="chance", zorder=3)
        limits.append(chance)
    long_names = len(methods) > 4 or any(len(m) > 10 for m in methods)
    ax.set_xticks(
        list(range(len(methods))),
        list(methods),
        rotation=25 if long_names else 0,
        ha="right" if long_names else "center",
    )
    ax.set_xlim(-0.6, len(methods) - 0.4)
    ax.set_title(metric)
    ax.set_ylabel(metric)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    _set_value_limits(ax, limits, headroom=0.12)


def _add_figure_legend(figure: "Figure") -> None:
    """Add one legend under the panels, with each label once (the chance line last)."""
    entries: dict[str, Artist] = {}
    for ax in figure.axes:
        handles, labels = ax.get_legend_handles_labels()
        for handle, label in zip(handles, labels, strict=True):
            entries.setdefault(label, handle)
    if "chance" in entries:  # the slices first, the reference line last
        entries["chance"] = entries.pop("chance")
    if entries:
        figure.legend(
            list(entries.values()),
            list(entries),
            loc="outside lower center",
            ncols=min(len(entries), 4),
            fontsize=9,
            frameon=False,
        )


def _metrics_figure(
    points: Sequence[MetricPoint],
    metrics: Sequence[str],
    chance: Mapping[str, float] | None = None,
    title: str = "",
) -> "Figure":
    """Build (without writing) the figure of `plot_metrics`; one axes per metric."""
    _check_metric_points(points, metrics)
    chance_of = _check_chance(chance)
    shown = [p for p in points if p.metric in metrics]
    methods = _first_seen(p.method for p in shown)
    slices = _first_seen(p.slice for p in shown)
    panel_width = max(3.4, 1.0 + len(methods) * (0.3 * len(slices) + 0.35))
    figure = _new_figure(panel_width * len(metrics), 4.2)
    axes = figure.subplots(1, len(metrics), squeeze=False)[0]
    for ax, metric in zip(axes, metrics, strict=True):
        _draw_grouped_bars(ax, shown, metric, methods, slices, chance_of.get(metric))
    _add_figure_legend(figure)
    if title:
        figure.suptitle(title)
    return figure


def plot_metrics(
    points: Sequence[MetricPoint],
    path: Path,
    *,
    metrics: Sequence[str] = ("HR@10", "NDCG@10"),
    chance: Mapping[str, float] | None = None,
    title: str = "",
) -> Path:
    """Plot grouped bars of `metrics` with their 95% intervals and write them to a PNG.

    There is one panel per metric. In each, the bars are grouped by method (in the
    order the methods first appear in `points`), with one bar per slice (same
    colour in every panel) and asymmetric error bars from `low` to `high`. A
    method missing on a slice leaves a gap.

    Args:
        points: The metric values; points of metrics not in `metrics` are ignored.
        path: Where to write the PNG (must end in `.png`; parents are created).
        metrics: Metric names as in `m3rec_graph.evaluation.metrics.metric_names()`.
        chance: Metric name -> the value of a random ranker (e.g. `{"HR@10": 10 / 101}`),
            drawn as a dashed line in that metric's panel.
        title: Figure title (none when empty).

    Returns:
        `path`.

    Raises:
        ValueError: No points, a metric with no points, a duplicate
            (method, slice, metric), an interval that does not contain its mean,
            a non-finite value, or a path not ending in `.png`.
        PlotUnavailableError: matplotlib is not installed.
    """
    _check_png_path(path)
    return _save(_metrics_figure(points, metrics, chance, title), path)


# --- cold start vs full history -------------------------------------------------------------------


def _cold_vs_full_figure(
    points: Sequence[MetricPoint],
    metric: str,
    full: str,
    cold: str,
    chance: float | None,
    title: str,
) -> "Figure":
    """Build (without writing) the figure of `plot_cold_vs_full`."""
    if full == cold:
        raise ValueError(f"full and cold slices must differ, both are {full!r}")
    _check_metric_points(points, [metric])
    chance_of = _check_chance({} if chance is None else {metric: chance})
    shown = [p for p in points if p.metric == metric and p.slice in (full, cold)]
    available = _first_seen(p.slice for p in points if p.metric == metric)
    for slice_name in (full, cold):
        if slice_name not in available:
            raise ValueError(
                f"slice {slice_name!r} has no {metric} points; available slices: {available}"
            )
    methods = _first_seen(p.method for p in shown)
    figure = _new_figure(max(4.2, 1.2 + 1.1 * len(methods)), 4.4)
    ax = figure.add_subplot()
    _draw_grouped_bars(ax, shown, metric, methods, [full, cold], chance_of.get(metric))
    by_key = {(p.method, p.slice): p for p in shown}
    for position, method in enumerate(methods):
        before, after = by_key.get((method, full)), by_key.get((method, cold))
        if before is None or after is None:
            continue
        change = after.mean - before.mean
        text = f"Δ {change:+.3f}"
        if before.mean > 0:
            text += f"\n({change / before.mean:+.0%})"
        ax.annotate(
            text,
            (position, max(before.high, after.high)),
            xytext=(0, 4),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=8,
            multialignment="center",
        )
    limits = [v for p in shown for v in (p.low, p.high)] + list(chance_of.values())
    _set_value_limits(ax, limits, headroom=0.25)  # room for the change labels
    _add_figure_legend(figure)
    ax.set_title(title or f"{metric}: {full} vs {cold}")
    return figure


def plot_cold_vs_full(
    points: Sequence[MetricPoint],
    path: Path,
    *,
    metric: str = "HR@10",
    full: str = "full",
    cold: str = DEFAULT_COLD_SLICE,
    chance: float | None = None,
    title: str = "",
) -> Path:
    """Plot, per method, `metric` on the full history next to the cold-start slice, as a PNG.

    Each method gets a pair of bars (`full`, then `cold`) with 95% error bars and,
    when both exist, a label above them with the change from full to cold start
    (`Δ`: cold minus full, absolute, and relative when the full value is above 0).
    Points of other metrics or slices are ignored.

    Args:
        points: The metric values (as for `plot_metrics`).
        path: Where to write the PNG (must end in `.png`; parents are created).
        metric: The metric to compare, e.g. `HR@10`.
        full: The slice name of the full-history evaluation.
        cold: The slice name of the cold-start evaluation.
        chance: The metric's value for a random ranker, drawn as a dashed line.
        title: Axes title (`"<metric>: <full> vs <cold>"` when empty).

    Returns:
        `path`.

    Raises:
        ValueError: As for `plot_metrics`, or `full`/`cold` has no point of `metric`.
        PlotUnavailableError: matplotlib is not installed.
    """
    _check_png_path(path)
    return _save(_cold_vs_full_figure(points, metric, full, cold, chance, title), path)


# --- cost vs accuracy ----------------------------------------------------------------------------


def _cost_figure(
    points: Sequence[CostPoint],
    cost_label: str,
    accuracy_label: str,
    title: str,
) -> "Figure":
    """Build (without writing) the figure of `plot_cost_accuracy`."""
    if not points:
        raise ValueError("no cost points to plot")
    front = pareto_front(points)  # also validates the points
    labels = [p.label for p in points]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise ValueError(f"cost point labels must be unique, repeated: {repeated}")
    figure = _new_figure(6.4, 4.6)
    ax = figure.add_subplot()

    costs = [p.cost_usd for p in points]
    positive = [c for c in costs if c > 0]
    scale_note = ""
    linthresh = 0.0
    if positive and max(positive) > 10 * min(positive):
        if len(positive) == len(costs):
            ax.set_xscale("log")
            scale_note = " (log scale)"
        else:  # a free (e.g. local) model: symlog keeps 0 on the axis, linear up to the cheapest
            linthresh = 10.0 ** math.floor(math.log10(min(positive)))  # ticks 0, then decades
            ax.set_xscale("symlog", linthresh=linthresh, linscale=0.6)
            scale_note = f" (log scale; linear from 0 to {linthresh:g})"

    for point in points:
        yerr = None
        if point.low is not None and point.high is not None:
            yerr = [[max(0.0, point.accuracy - point.low)], [max(0.0, point.high - point.accuracy)]]
        ax.errorbar(
            [point.cost_usd],
            [point.accuracy],
            yerr=yerr,
            fmt="o",
            color="C0",
            markerfacecolor="C0" if point.measured else "white",
            markeredgecolor="C0",
            markersize=7,
            capsize=3,
            elinewidth=1,
            zorder=3,
        )
        ax.annotate(
            point.label,
            (point.cost_usd, point.accuracy),
            xytext=(6, 4),
            textcoords="offset points",
            fontsize=8,
        )

    xs = [p.cost_usd for p in front]
    ys = [p.accuracy for p in front]
    if max(costs) > xs[-1]:  # carry the best accuracy on to the most expensive point
        xs.append(max(costs))
        ys.append(ys[-1])
    ax.step(xs, ys, where="post", color="C3", linewidth=1.2, alpha=0.8, zorder=2)

    from matplotlib.lines import Line2D  # noqa: PLC0415 - optional; present once a figure exists

    handles = [
        Line2D([], [], color="C3", linewidth=1.2, label="Pareto front (best accuracy per cost)")
    ]
    if any(p.measured for p in points):
        handles.append(Line2D([], [], linestyle="none", marker="o", color="C0", label="measured"))
    if not all(p.measured for p in points):
        handles.append(
            Line2D(
                [],
                [],
                linestyle="none",
                marker="o",
                color="C0",
                markerfacecolor="white",
                label="estimated",
            )
        )
    if any(p.low is not None for p in points):
        handles.append(Line2D([], [], color="C0", linewidth=1, label="95% interval"))
    ax.legend(handles=handles, fontsize=8, loc="best")

    ax.margins(x=0.12, y=0.12)
    if linthresh > 0:  # keep the margin left of 0 inside the linear part (no negative ticks)
        ax.set_xlim(left=-0.4 * linthresh)
    ax.set_xlabel(cost_label + scale_note)
    ax.set_ylabel(accuracy_label)
    ax.grid(alpha=0.3)
    ax.set_axisbelow(True)
    if title:
        ax.set_title(title)
    return figure


def plot_cost_accuracy(
    points: Sequence[CostPoint],
    path: Path,
    *,
    cost_label: str = "USD per 1,000 users",
    accuracy_label: str = "HR@10",
    title: str = "",
) -> Path:
    """Scatter accuracy against cost, with the Pareto front, and write it to a PNG.

    Each point is labelled; its 95% interval is drawn when given; estimated
    (`measured=False`) points are hollow. The Pareto front (`pareto_front`) is drawn
    as a step line: the best accuracy reachable at each cost. When the positive
    costs span more than 10x the cost axis is logarithmic; if some costs are 0
    (a local model) it is symmetric-log instead, linear from 0 up to the power of
    10 at or below the cheapest paid point, so the free points stay on the chart at
    0, and the axis label says so.

    Args:
        points: One point per method or preset; labels must be unique.
        path: Where to write the PNG (must end in `.png`; parents are created).
        cost_label: Label of the cost axis (the unit of `CostPoint.cost_usd`).
        accuracy_label: Label of the accuracy axis, e.g. a metric name.
        title: Axes title (none when empty).

    Returns:
        `path`.

    Raises:
        ValueError: No points, repeated labels, a negative or non-finite cost,
            a bad interval, or a path not ending in `.png`.
        PlotUnavailableError: matplotlib is not installed.
    """
    _check_png_path(path)
    return _save(_cost_figure(points, cost_label, accuracy_label, title), path)


# --- serving latency ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LatencyPoint:
    """Time to the ranked list of one serving state under one variant (seconds)."""

    state: str
    """e.g. `warm shopper, warm catalogue`."""
    variant: str
    """e.g. `scores_first, reasoning 256`."""
    p50: float
    p95: float


def plot_time_to_ranking(
    points: Sequence[LatencyPoint], path: Path, *, goals: Mapping[str, float] | None = None
) -> Path:
    """Plot p50 bars and p95 whiskers of time to the ranked list, one group per state, one bar per variant.

    `goals` maps a state to its p95 goal (seconds), drawn as a short dashed line over its group.
    """
    _check_png_path(path)
    if not points:
        raise ValueError("no latency points to plot")
    if any(not (0 <= p.p50 <= p.p95) or not math.isfinite(p.p95) for p in points):
        raise ValueError("every latency point needs 0 <= p50 <= p95 (finite)")
    states, variants = _first_seen(p.state for p in points), _first_seen(p.variant for p in points)
    by_key = {(p.state, p.variant): p for p in points}
    figure = _new_figure(max(7.0, 1.9 * len(states) + 2.0), 4.6)
    ax = figure.add_subplot()
    width = 0.8 / len(variants)
    for index, variant in enumerate(variants):
        xs, p50s, above = [], [], []
        for position, state in enumerate(states):
            point = by_key.get((state, variant))
            if point is None:
                continue
            xs.append(position - 0.4 + width * (index + 0.5))
            p50s.append(point.p50)
            above.append(point.p95 - point.p50)
        ax.bar(xs, p50s, width * 0.92, yerr=[[0.0] * len(xs), above], capsize=3, color=f"C{index}", label=variant,
               error_kw={"elinewidth": 1, "ecolor": "0.2"})
    for position, state in enumerate(states):
        goal = (goals or {}).get(state)
        if goal is not None:
            ax.hlines(goal, position - 0.45, position + 0.45, colors="0.2", linestyles="--", linewidth=1.2, zorder=3)
            ax.annotate(f"goal {goal:g} s (p95)", (position, goal), textcoords="offset points", xytext=(0, 3),
                        ha="center", fontsize=7)
    ax.set_xticks(list(range(len(states))), [s.replace(", ", ",\n") for s in states])
    ax.set_ylabel("seconds to the ranked list (bar p50, whisker p95)")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    _set_value_limits(ax, [p.p95 for p in points] + list((goals or {}).values()), headroom=0.1)
    ax.legend(fontsize=7, ncols=2, loc="upper right")
    return _save(figure, path)
