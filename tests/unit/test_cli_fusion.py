"""`m3rec recommend --fusion`: the CLI ranks by fused_score, and a bad config exits 2 before any call."""

import json
from pathlib import Path

import pytest

from m3rec_graph.cli.app import main
from tests.fault_server import FaultServer
from tests.unit.test_langgraph_server import beauty_requests, stage_calls
from tests.unit.test_memory_serving import recommend, strict_openai

__all__ = ["strict_openai"]  # the fixture, imported for this module's tests


def test_recommend_with_the_default_fusion_ranks_by_fused_score(
    tmp_path: Path, strict_openai: FaultServer, capsys: pytest.CaptureFixture[str]
) -> None:
    shopper = beauty_requests()[5]
    shopper["candidates"] = [{**item, "prior": float(i)} for i, item in enumerate(shopper["candidates"])]
    request_file = tmp_path / "request.json"
    request_file.write_text(json.dumps(shopper), encoding="utf-8")

    out = recommend(request_file, "--no-cache", "--fusion", "default", capsys=capsys)

    assert out["fusion"]["version"] and set(out["fusion"]["signals"]) == {"mar", "overlap", "text", "prior"}
    fused = [item["fused_score"] for item in out["ranking"]]
    assert fused == sorted(fused, reverse=True)
    assert all(set(item["score_parts"]) == {"mar", "overlap", "text", "prior"} for item in out["ranking"])


def test_recommend_without_fusion_has_no_fused_scores(
    tmp_path: Path, strict_openai: FaultServer, capsys: pytest.CaptureFixture[str]
) -> None:
    request_file = tmp_path / "request.json"
    request_file.write_text(json.dumps(beauty_requests()[5]), encoding="utf-8")
    out = recommend(request_file, "--no-cache", capsys=capsys)
    assert out["fusion"] is None
    assert all(item.get("fused_score") is None for item in out["ranking"])


def test_a_missing_fusion_config_exits_2_before_any_model_call(
    tmp_path: Path, strict_openai: FaultServer, capsys: pytest.CaptureFixture[str]
) -> None:
    request_file = tmp_path / "request.json"
    request_file.write_text(json.dumps(beauty_requests()[5]), encoding="utf-8")
    with pytest.raises(SystemExit) as exit_info:
        main(["recommend", "--request", str(request_file), "--routing", "hybrid", "--no-cache",
              "--fusion", str(tmp_path / "nope.json")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "fusion" in err and "Traceback" not in err
    assert sum(stage_calls(strict_openai).values()) == 0
