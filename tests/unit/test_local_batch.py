"""`benchmarks.local_batch`: latency percentiles and throughput read back from an eval run directory."""

import io
from pathlib import Path

import pytest

from benchmarks import local_batch
from m3rec_graph.evaluation import EvalSettings, parse_methods, run_evaluation
from tests.fakes import ScriptedModels, default_responder
from tests.unit.test_evaluation import Served

BEAUTY = Path(__file__).parents[2] / "tests" / "fixtures" / "beauty_small"


def test_percentile_interpolates() -> None:
    assert local_batch.percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert local_batch.percentile([5.0], 0.95) == 5.0
    assert local_batch.percentile([0.0, 10.0], 0.95) == pytest.approx(9.5)


def test_summary_of_a_fresh_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    run_evaluation(
        EvalSettings(dataset=BEAUTY, users=4, negatives=9),
        parse_methods("m3rec:hybrid"),
        out,
        cold_start=1,
        chat_models=ScriptedModels(default_responder()),
        serve=Served([]),
        progress=io.StringIO(),
        n_boot=20,
        plots=False,
    )
    rows = local_batch.summarise(out, "m3rec:hybrid")
    assert [r["slice"] for r in rows] == ["full", "cold-start-1"]
    for row in rows:
        assert row["users"] == 4 and 0 < row["p50_s"] <= row["p95_s"] <= row["max_s"]
        assert row["recs_per_min"] is not None and row["recs_per_min"] > 0
    assert local_batch.main([str(out), "--method", "m3rec:hybrid"]) == 0
    assert "| full | 4 |" in capsys.readouterr().out
    assert local_batch.main([str(out), "--method", "m3rec:local"]) == 2
