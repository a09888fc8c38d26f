"""`m3rec eval --engine`: the sharded driver (evaluation/sharded.py) without Ray, and its bad input.

Here the workers are one `LocalEngine` standing in for `RayEngine` (the same
`GraphWorker`, the config through pickle), so the driver's mechanics (pre-pass,
chunks, result lines, resume) are tested in seconds; tests/unit/test_eval_ray.py runs
the same on a real Ray runtime.
"""

import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from m3rec_graph.cli import app as cli
from m3rec_graph.context import M3RecContext
from m3rec_graph.evaluation import (
    EvalSettings,
    EvaluationError,
    parse_methods,
    run_evaluation,
    sharded,
)
from m3rec_graph.evaluation.sharded import EvalEngine
from m3rec_graph.scale.config import WorkerConfig
from m3rec_graph.scale.engine import LocalEngine
from tests.fakes import scripted_models

SMALL = Path(__file__).parents[1] / "fixtures" / "beauty_small"

USAGE_COLUMNS = (
    "seconds",
    "llm_calls",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "wasted_tokens",
    "cost_usd",
)
"""Per-user columns that differ between engines. `seconds` is timing. The rest include the
user's MOTE calls: the local engine encodes an item when the first user who shows it runs
(that user pays for it), while the sharded engines encode every item in a MOTE pre-pass
that belongs to no user. So only MOTE's share differs: `comparable` keeps every other
stage's calls, tokens and cost, and the profile part of `memory`."""


def comparable(record: dict[str, Any]) -> dict[str, Any]:
    """A result line without what legitimately differs between engines (see USAGE_COLUMNS)."""
    kept = {k: v for k, v in record.items() if k not in USAGE_COLUMNS}
    if "stages" in kept:
        kept["stages"] = {name: s for name, s in kept["stages"].items() if name != "mote"}
    if "memory" in kept:
        kept["memory"] = {"profile": kept["memory"]["profile"]}
    return kept


def outcome(record: dict[str, Any]) -> dict[str, Any]:
    """A result line without its usage: what a resumed run must reproduce. A rerun finds the
    profiles (and traits) that the interrupted run stored, so its MOPE calls and `memory` differ."""
    return {k: v for k, v in comparable(record).items() if k not in ("stages", "memory")}


def results(out: Path) -> dict[tuple[str, str, str], dict[str, Any]]:
    """(method, slice, user) -> the line; fails on a line written twice."""
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    keyed = {(r["method"], r["slice"], r["user_id"]): r for r in lines}
    assert len(keyed) == len(lines), "a result line was written twice"
    return keyed


@contextmanager
def served(ctx: M3RecContext) -> Iterator[None]:
    yield


def evaluate(out: Path, methods: str, engine: EvalEngine | None = None, **extra: Any) -> str:
    progress = io.StringIO()
    run_evaluation(
        EvalSettings(dataset=SMALL, users=4, negatives=9, seed=0),
        parse_methods(methods),
        out,
        cold_start=2,
        concurrency=2,
        chat_models=scripted_models(),
        serve=served,
        progress=progress,
        n_boot=0,
        plots=False,
        engine=engine,
        **extra,
    )
    return progress.getvalue()


@pytest.fixture
def local_workers(monkeypatch: pytest.MonkeyPatch) -> list[WorkerConfig]:
    """`--engine ray` served by a `LocalEngine` (no Ray); records the configs the driver built."""
    configs: list[WorkerConfig] = []

    def start(config: WorkerConfig, workers: int, *, address: str | None = None) -> LocalEngine:
        configs.append(config)
        return LocalEngine(config)

    monkeypatch.setattr(sharded, "RayEngine", start)
    return configs


RAY = EvalEngine(kind="ray", workers=1, worker_chat_models=scripted_models)


def test_the_sharded_driver_ranks_as_the_local_engine_and_prepasses_mote(tmp_path: Path, local_workers: list[WorkerConfig]) -> None:
    methods = "popularity,m3rec:hybrid,m3rec:hybrid:fused+popularity"
    evaluate(tmp_path / "local", methods, fit_users=2)
    progress = evaluate(tmp_path / "sharded", methods, RAY, fit_users=2)
    local, shard = results(tmp_path / "local"), results(tmp_path / "sharded")
    assert len(local) == 3 * 2 * 4 and set(shard) == set(local)
    for key, line in local.items():
        assert comparable(shard[key]) == comparable(line), key
    # One engine for the run; the fused method's workers get the catalogue corpus.
    assert len(local_workers) == 1 and local_workers[0].text_corpus is not None
    assert "m3rec:hybrid [full]: MOTE pre-pass over" in progress
    for key, line in shard.items():
        if key[0].startswith("m3rec"):  # every trait was stored by the pre-pass
            assert line["stages"].get("mote", {"calls": 0})["calls"] == 0
            assert line["memory"]["traits_miss"] == 0


def test_a_sharded_rerun_runs_only_the_missing_lines(tmp_path: Path, local_workers: list[WorkerConfig]) -> None:
    out = tmp_path / "run"
    evaluate(out, "m3rec:hybrid", RAY)
    whole = results(out)
    lines = (out / "results.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (out / "results.jsonl").write_text("".join(lines[:3]) + lines[3][:30], encoding="utf-8")  # a kill mid-write
    evaluate(out, "m3rec:hybrid", RAY)
    again = results(out)
    assert set(again) == set(whole)
    assert [json.loads(line) for line in lines[:3]] == [again[k] for k in list(whole)[:3]]  # kept, not redone
    assert {k: outcome(v) for k, v in again.items()} == {k: outcome(v) for k, v in whole.items()}
    redone = [again[k] for k in list(whole)[3:]]
    assert all(r["memory"]["profile"] == "hit" for r in redone)  # why `outcome`, not `comparable`


def test_baselines_under_ray_run_here_and_start_no_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_ray(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("Ray started for baselines")

    monkeypatch.setattr(sharded, "RayEngine", no_ray)
    evaluate(tmp_path / "run", "random,popularity", EvalEngine(kind="ray", workers=2))
    assert len(results(tmp_path / "run")) == 2 * 2 * 4


def test_a_finished_m3rec_method_under_ray_starts_no_engine(tmp_path: Path, local_workers: list[WorkerConfig]) -> None:
    evaluate(tmp_path / "run", "m3rec:hybrid", RAY)
    evaluate(tmp_path / "run", "m3rec:hybrid", RAY)
    assert len(local_workers) == 1


@pytest.mark.parametrize(
    ("engine", "message"),
    [
        (EvalEngine(kind="ray", workers=0), "--workers must be >= 1"),
        (EvalEngine(kind="local", workers=2), "--workers and --address need --engine ray"),
        (EvalEngine(kind="local", address="auto"), "--workers and --address need --engine ray"),
    ],
)
def test_bad_engine_flags_are_refused(tmp_path: Path, engine: EvalEngine, message: str) -> None:
    with pytest.raises(EvaluationError, match=message):
        evaluate(tmp_path / "run", "popularity", engine)
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_langsmith_under_ray_is_refused(tmp_path: Path) -> None:
    with pytest.raises(EvaluationError, match="--langsmith .* not with --engine ray"):
        evaluate(tmp_path / "run", "popularity", EvalEngine(kind="ray", workers=2), langsmith=True)


@pytest.mark.parametrize(
    "flags",
    [
        ["--engine", "ray", "--workers", "0"],
        ["--workers", "2"],
        ["--engine", "local", "--address", "auto"],
        ["--engine", "spark"],
    ],
)
def test_cli_bad_engine_flags_exit_2(tmp_path: Path, flags: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["eval", "--dataset", str(SMALL), "--methods", "popularity", "--users", "2", "--out", str(tmp_path / "run"), *flags]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip()
    assert not (tmp_path / "run").exists()


def test_help_says_concurrency_is_per_worker_under_ray(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["eval", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "with --engine ray, PER WORKER" in text and "--workers N" in text
