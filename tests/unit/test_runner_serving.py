"""`serving`: the local model server starts only when a stage that will run calls it."""

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from m3rec_graph.context import M3RecContext
from m3rec_graph.integrations import runner


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
