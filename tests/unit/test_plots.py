"""Plots of evaluation and cost reports: Pareto front by hand, bar counts, PNGs, bad input."""

import ast
import inspect
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from m3rec_graph.errors import M3RecError
from m3rec_graph.evaluation import plots
from m3rec_graph.evaluation.metrics import metric_names
from m3rec_graph.evaluation.plots import (
    CostPoint,
    MetricPoint,
    PlotUnavailableError,
    pareto_front,
    plot_cold_vs_full,
    plot_cost_accuracy,
    plot_metrics,
)

if TYPE_CHECKING:
    from matplotlib.lines import Line2D

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
COLD = plots.DEFAULT_COLD_SLICE
METHODS = ("m3rec", "popularity", "random")


@pytest.fixture
def matplotlib() -> None:
    pytest.importorskip("matplotlib")


def metric_points(
    methods: tuple[str, ...] = METHODS,
    slices: tuple[str, ...] = ("full", COLD),
    metrics: tuple[str, ...] = ("HR@10", "NDCG@10"),
) -> list[MetricPoint]:
    points = []
    for i, method in enumerate(methods):
        for j, slice_name in enumerate(slices):
            for k, metric in enumerate(metrics):
                mean = 0.1 + 0.1 * i + 0.05 * j + 0.01 * k
                points.append(
                    MetricPoint(method, slice_name, metric, mean, mean - 0.04, mean + 0.06)
                )
    return points


def xdata(line: "Line2D") -> list[float]:
    import numpy as np  # installed with matplotlib

    return [float(v) for v in np.asarray(line.get_xdata())]


def ydata(line: "Line2D") -> list[float]:
    import numpy as np

    return [float(v) for v in np.asarray(line.get_ydata())]


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 5_000


# --- pareto_front ------------------------------------------------------------------------------


def test_pareto_front_removes_dominated_points() -> None:
    a = CostPoint("a", 1.0, 0.5)
    b = CostPoint("b", 2.0, 0.4)  # dearer and worse than a
    c = CostPoint("c", 3.0, 0.7)
    d = CostPoint("d", 3.0, 0.6)  # same cost as c, worse
    e = CostPoint("e", 4.0, 0.7)  # same accuracy as c, dearer
    f = CostPoint("f", 0.5, 0.5)  # same accuracy as a, cheaper: a is dominated
    assert pareto_front([a, b, c, d, e]) == [a, c]
    assert pareto_front([a, b, c, d, e, f]) == [f, c]


def test_pareto_front_keeps_exact_ties_in_a_fixed_order() -> None:
    x = CostPoint("x", 1.0, 0.5)
    w = CostPoint("w", 1.0, 0.5)
    top = CostPoint("top", 2.0, 0.9)
    assert pareto_front([x, w, top]) == [w, x, top]
    assert pareto_front([top, w, x]) == [w, x, top]


def test_pareto_front_single_empty_and_zero_cost() -> None:
    only = CostPoint("only", 3.0, 0.2, measured=False)
    assert pareto_front([only]) == [only]
    assert pareto_front([]) == []
    local = CostPoint("local", 0.0, 0.3)
    worse_local = CostPoint("worse local", 0.0, 0.2)
    api = CostPoint("api", 2.0, 0.6)
    cheap_bad_api = CostPoint("cheap api", 0.1, 0.25)
    assert pareto_front([api, cheap_bad_api, worse_local, local]) == [local, api]
    assert pareto_front([CostPoint("best and free", 0.0, 0.9), api]) == [
        CostPoint("best and free", 0.0, 0.9)
    ]


@pytest.mark.parametrize(
    ("point", "message"),
    [
        (CostPoint("neg", -1.0, 0.5), "cost must be a finite number >= 0"),
        (CostPoint("nan", float("nan"), 0.5), "cost must be a finite number >= 0"),
        (CostPoint("acc", 1.0, float("inf")), "accuracy must be a finite number"),
        (CostPoint("half", 1.0, 0.5, low=0.4), "give both low and high"),
        (CostPoint("out", 1.0, 0.5, low=0.6, high=0.7), "low <= mean <= high"),
    ],
)
def test_pareto_front_rejects_bad_points(point: CostPoint, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pareto_front([point])


costs = st.sampled_from([0.0, 0.5, 1.0, 2.0, 10.0])
accuracies = st.sampled_from([0.0, 0.1, 0.3, 0.5])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(costs, accuracies), min_size=1, max_size=8))
def test_pareto_front_matches_the_definition(pairs: list[tuple[float, float]]) -> None:
    points = [CostPoint(f"p{i}", c, a) for i, (c, a) in enumerate(pairs)]
    front = pareto_front(points)

    def dominated(p: CostPoint) -> bool:
        return any(
            q.cost_usd <= p.cost_usd
            and q.accuracy >= p.accuracy
            and (q.cost_usd < p.cost_usd or q.accuracy > p.accuracy)
            for q in points
        )

    assert front == sorted(
        (p for p in points if not dominated(p)), key=lambda p: (p.cost_usd, -p.accuracy, p.label)
    )
    assert pareto_front(list(reversed(points))) == front


# --- import and missing matplotlib ---------------------------------------------------------------


def test_module_does_not_import_matplotlib_at_top_level() -> None:
    tree = ast.parse(inspect.getsource(plots))
    for node in tree.body:
        if isinstance(node, ast.If):  # the TYPE_CHECKING block is not run
            continue
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        assert not any(name.split(".")[0] == "matplotlib" for name in names), names


def test_missing_matplotlib_raises_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    loaded = [n for n in sys.modules if n == "matplotlib" or n.startswith("matplotlib.")]
    for name in {"matplotlib", *loaded}:  # None in sys.modules: importing it fails
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(PlotUnavailableError, match=r"pip install 'm3rec-graph\[eval\]'") as info:
        plot_metrics(metric_points(), tmp_path / "m.png")
    assert isinstance(info.value, M3RecError)
    assert not (tmp_path / "m.png").exists()


# --- metric bars -------------------------------------------------------------------------------


def test_default_metrics_are_repo_metric_names() -> None:
    defaults = inspect.signature(plot_metrics).parameters["metrics"].default
    assert set(defaults) <= set(metric_names())


def test_metrics_figure_draws_one_bar_per_point(matplotlib: None) -> None:
    from matplotlib.container import BarContainer, ErrorbarContainer
    from matplotlib.patches import Rectangle

    points = metric_points()
    points.remove(next(p for p in points if p.method == "random" and p.slice == COLD))  # a gap
    points.append(MetricPoint("m3rec", "full", "MRR", 0.3, 0.2, 0.4))  # not plotted
    figure = plots._metrics_figure(points, ("HR@10", "NDCG@10"), chance={"HR@10": 0.099})
    hr, ndcg = figure.axes
    assert [ax.get_title() for ax in figure.axes] == ["HR@10", "NDCG@10"]
    assert sum(isinstance(p, Rectangle) for p in hr.patches) == 5  # 3 full + 2 cold start
    assert sum(isinstance(p, Rectangle) for p in ndcg.patches) == 6
    for ax in (hr, ndcg):
        assert sum(isinstance(c, BarContainer) for c in ax.containers) == 2  # one per slice
        assert sum(isinstance(c, ErrorbarContainer) for c in ax.containers) == 2
    assert [t.get_text() for t in hr.get_xticklabels()] == list(METHODS)
    dashed = [line for line in hr.get_lines() if line.get_linestyle() == "--"]
    assert len(dashed) == 1 and ydata(dashed[0]) == [0.099, 0.099]
    assert not [line for line in ndcg.get_lines() if line.get_linestyle() == "--"]
    legend_labels = [t.get_text() for t in figure.legends[0].get_texts()]
    assert legend_labels == ["full", COLD, "chance"]


def test_metrics_figure_orders_methods_as_first_seen(matplotlib: None) -> None:
    points = metric_points(methods=("zeta", "alpha", "mid"), slices=("full",), metrics=("MRR",))
    figure = plots._metrics_figure(list(reversed(points)), ("MRR",))
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == ["mid", "alpha", "zeta"]


def test_plot_metrics_writes_a_png(matplotlib: None, tmp_path: Path) -> None:
    path = tmp_path / "reports" / "metrics.png"  # the directory is created
    chance = {"HR@10": 10 / 101, "NDCG@10": 0.04}
    assert plot_metrics(metric_points(), path, chance=chance, title="t") == path
    assert_png(path)


@pytest.mark.parametrize(
    ("points", "metrics", "message"),
    [
        ([], ("HR@10",), "no metric points"),
        (metric_points(), (), "no metrics to plot"),
        (metric_points(), ("HR@10", "MRR"), r"metric\(s\) \['MRR'\] not in the points"),
        (metric_points() + metric_points()[:1], ("HR@10",), "duplicate metric point"),
        ([MetricPoint("m", "full", "HR@10", 0.5, 0.6, 0.7)], ("HR@10",), "low <= mean <= high"),
        (
            [MetricPoint("m", "full", "HR@10", float("nan"), 0.1, 0.7)],
            ("HR@10",),
            "must be a finite number",
        ),
    ],
)
def test_plot_metrics_rejects_bad_input(
    tmp_path: Path, points: list[MetricPoint], metrics: tuple[str, ...], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        plot_metrics(points, tmp_path / "m.png", metrics=metrics)


def test_plot_metrics_needs_a_png_path(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"must end in \.png"):
        plot_metrics(metric_points(), tmp_path / "m.svg")


# --- cold start vs full --------------------------------------------------------------------------


def test_cold_vs_full_figure_pairs_bars_and_labels_the_change(matplotlib: None) -> None:
    points = metric_points(slices=("full", COLD, "other"))
    figure = plots._cold_vs_full_figure(points, "HR@10", "full", COLD, 0.1, "")
    (ax,) = figure.axes
    assert len(ax.patches) == 6  # 3 methods x (full, cold start); "other" and NDCG@10 ignored
    labels = [t.get_text() for t in ax.texts]
    assert labels == ["Δ +0.050\n(+50%)", "Δ +0.050\n(+25%)", "Δ +0.050\n(+17%)"]
    assert ax.get_title() == f"HR@10: full vs {COLD}"


def test_plot_cold_vs_full_writes_a_png(matplotlib: None, tmp_path: Path) -> None:
    path = tmp_path / "cold.png"
    assert plot_cold_vs_full(metric_points(), path, chance=0.1) == path
    assert_png(path)


def test_plot_cold_vs_full_rejects_a_missing_slice(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"slice 'cold-start \(last 5\)' has no HR@10 points"):
        plot_cold_vs_full(metric_points(), tmp_path / "c.png", cold="cold-start (last 5)")
    with pytest.raises(ValueError, match="must differ"):
        plot_cold_vs_full(metric_points(), tmp_path / "c.png", cold="full")


# --- cost vs accuracy ----------------------------------------------------------------------------

COST_POINTS = [
    CostPoint("local", 0.0, 0.21, 0.15, 0.27),
    CostPoint("nano", 0.4, 0.31, 0.25, 0.37, measured=False),
    CostPoint("mini", 1.8, 0.42, measured=False),
    CostPoint("full", 9.0, 0.40, measured=False),
    CostPoint("tiered", 2.5, 0.45, 0.38, 0.52),
]


def test_cost_axis_scale(matplotlib: None) -> None:
    def scale(points: list[CostPoint]) -> tuple[str, str]:
        ax = plots._cost_figure(points, "USD", "HR@10", "").axes[0]
        return ax.get_xscale(), ax.get_xlabel()

    assert scale(COST_POINTS[1:]) == ("log", "USD (log scale)")
    assert scale(COST_POINTS) == ("symlog", "USD (log scale; linear from 0 to 0.1)")
    assert scale(COST_POINTS[1:3]) == ("linear", "USD")  # 0.4 .. 1.8: under 10x
    assert scale([CostPoint("a", 0.0, 0.1), CostPoint("b", 0.0, 0.2)]) == ("linear", "USD")


def test_cost_figure_markers_front_and_legend(matplotlib: None) -> None:
    ax = plots._cost_figure(COST_POINTS, "USD", "HR@10", "title").axes[0]
    markers = [line for line in ax.get_lines() if line.get_marker() == "o"]
    hollow = [line for line in markers if line.get_markerfacecolor() == "white"]
    assert len(markers) == 5 and len(hollow) == 3
    (step,) = [line for line in ax.get_lines() if line.get_drawstyle() == "steps-post"]
    assert xdata(step) == [0.0, 0.4, 1.8, 2.5, 9.0]  # front, then on to the dearest
    assert ydata(step) == [0.21, 0.31, 0.42, 0.45, 0.45]
    assert [t.get_text() for t in ax.texts] == [p.label for p in COST_POINTS]
    legend = ax.get_legend()
    assert legend is not None
    assert [t.get_text() for t in legend.get_texts()] == [
        "Pareto front (best accuracy per cost)",
        "measured",
        "estimated",
        "95% interval",
    ]
    assert ax.get_xlim()[0] < 0.0  # the free model is inside the axes
    assert ax.get_title() == "title"


def test_plot_cost_accuracy_writes_a_png(matplotlib: None, tmp_path: Path) -> None:
    path = tmp_path / "cost.png"
    assert plot_cost_accuracy(COST_POINTS, path, title="cost vs accuracy") == path
    assert_png(path)


@pytest.mark.parametrize(
    ("points", "message"),
    [
        ([], "no cost points"),
        ([CostPoint("a", 1.0, 0.2), CostPoint("a", 2.0, 0.3)], r"repeated: \['a'\]"),
        ([CostPoint("a", -0.1, 0.2)], "cost must be a finite number >= 0"),
    ],
)
def test_plot_cost_accuracy_rejects_bad_input(
    tmp_path: Path, points: list[CostPoint], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        plot_cost_accuracy(points, tmp_path / "c.png")
