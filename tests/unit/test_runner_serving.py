"""`serving`: the local model server starts only when a stage that will run calls it."""

import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from m3rec_graph.context import M3RecContext
from m3rec_graph.evaluation import EvalSettings, parse_methods, run_evaluation
from m3rec_graph.integrations import runner
from tests.fakes import ScriptedModels, default_responder

BEAUTY = Path(__file__).parents[1] / "fixtures" / "beauty_small"


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []

    @contextmanager
    def recording_server() -> Iterator[str]:
        calls.append("started")
        yield "http://127.0.0.1:1/v1"

    monkeypatch.setattr(runner, "local_server", recording_server)
    return calls


@pytest.mark.parametrize(
    ("ctx", "starts"),
    [
        # the offline default's shipped weights leave MOPE, MOTE and MAR out: no call, no server
        (M3RecContext(routing="local"), False),
        (M3RecContext(routing="local", fusion="off"), True),  # the paper's ranking calls every stage
        (M3RecContext(routing="local", fusion={"weights": {"overlap": 1.0}}), True),  # overlap needs MOPE/MOTE
        (M3RecContext(routing="hybrid", fusion="off"), False),  # remote models: nothing local to start
    ],
)
def test_the_local_server_starts_only_for_a_stage_that_calls_it(
    ctx: M3RecContext, starts: bool, started: list[str]
) -> None:
    with runner.serving(ctx):
        pass
    assert started == (["started"] if starts else [])


def test_an_eval_of_the_offline_default_starts_no_server(started: list[str], tmp_path: Path) -> None:
    """`m3rec eval --methods m3rec:local:fused --fusion local`: text only, so the local server stays off."""
    run_evaluation(
        EvalSettings(dataset=BEAUTY, users=2, negatives=9, seed=0), parse_methods("m3rec:local:fused"),
        tmp_path / "run", chat_models=ScriptedModels(default_responder()), progress=io.StringIO(),
        n_boot=0, plots=False, fusion=Path("local"),
    )  # fmt: skip
    assert started == []
    lines = (tmp_path / "run" / "results.jsonl").read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(line)["llm_calls"] == 0 for line in lines)
