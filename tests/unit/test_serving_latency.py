"""benchmarks/serving_latency.py's pieces: the critical path, percentiles, the plot, one pool for all models."""

from pathlib import Path
from typing import Any, cast

import openai
import pytest
from langgraph.store.memory import InMemoryStore

from benchmarks.serving_latency import (
    Call,
    PoolProbe,
    critical_path,
    describe_path,
    graph_for,
    percentile,
)
from m3rec_graph import context_for
from m3rec_graph.evaluation.plots import LatencyPoint, plot_time_to_ranking
from m3rec_graph.state import RecInput
from tests.latency_server import LatencyModel, ModelLatency
from tests.unit.test_langgraph_server import TODAY, beauty_requests
from tests.unit.test_latency_server import start


def test_the_critical_path_is_the_chain_of_calls_that_ends_last() -> None:
    calls = [
        Call("mote", 0.0, 1.2),
        Call("mope", 0.0, 2.6),
        Call("mote", 0.0, 1.9),
        Call("mar-scores", 2.7, 6.0),
        Call("mar-scores", 2.7, 5.1),
        Call("mar-rationales", 6.1, 9.0),
    ]
    assert [c.name for c in critical_path(calls, 6.05)] == ["mope", "mar-scores"]
    path = critical_path(calls, 9.2)
    assert [(c.name, c.end) for c in path] == [("mope", 2.6), ("mar-scores", 6.0), ("mar-rationales", 9.0)]
    assert describe_path(path, 9.2) == "mope 2.60 -> mar-scores 3.30 -> mar-rationales 2.90 (+0.40 graph)"
    assert describe_path([], 0.1) == "no model call (+0.10 graph)"


def test_percentile_interpolates_between_order_statistics() -> None:
    assert percentile([3.0], 95) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 50) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 95) == pytest.approx(4.8)


def test_the_time_to_ranking_plot_is_a_png_and_refuses_bad_points(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    points = [
        LatencyPoint(state, variant, p50, p50 * 1.2)
        for state in ("cold", "warm")
        for variant, p50 in (("listwise", 8.0), ("scores_first", 4.5))
    ]
    path = plot_time_to_ranking(points, tmp_path / "t.png", goals={"warm": 2.5})
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(ValueError, match="p50 <= p95"):
        plot_time_to_ranking([LatencyPoint("s", "v", 3.0, 2.0)], tmp_path / "bad.png")


async def test_every_stage_model_sends_through_the_one_pool_given() -> None:
    fast = {"gpt-6-luna": ModelLatency(0.01, 5000.0), "gpt-6.1-sol": ModelLatency(0.01, 5000.0)}
    _, url, task = await start(LatencyModel(fast, {"none": 0, "low": 10}, 0.0, 0.0))
    probe = PoolProbe()
    try:
        async with openai.DefaultAsyncHttpxClient(event_hooks={"request": [probe.on_request]}) as client:
            graph = graph_for(url, client, InMemoryStore())
            out: dict[str, Any] = await graph.ainvoke(
                cast(RecInput, beauty_requests()[1]), context=context_for("hybrid", today=TODAY)
            )
    finally:
        task.cancel()
    assert not out["degraded"]
    assert len(probe.waits) == out["usage"].total.calls == 12  # MOPE, 10 MOTE, 1 MAR: all through the probe
