"""`m3rec eval --engine ray` on real Ray runtimes: results identical to the local engine, kill and resume.

The in-process tests share one local runtime (2 CPUs, started once for the module);
the driver-kill test runs `tests/eval_ray_driver.py` in subprocesses, where the engine
starts (and stops) a runtime of its own. Workers build scripted models in their own
processes (`tests.fakes.scripted_models`, pickled by reference), so rankings are a
function of the request: MAR scores hash the item id.
"""

import functools
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from m3rec_graph.evaluation import (
    EvalRun,
    EvalSettings,
    parse_methods,
    read_stores,
    run_evaluation,
    sharded,
)
from m3rec_graph.evaluation.sharded import EvalEngine
from m3rec_graph.evaluation.store import append_result
from m3rec_graph.scale.engine import EngineError
from m3rec_graph.scale.ray_engine import RayEngine
from m3rec_graph.storage.memory import ROOT as STORE_ROOT
from m3rec_graph.storage.store import open_store
from tests.eval_ray_driver import METHODS as DRIVER_METHODS
from tests.fakes import recording_scripted_models, scripted_models, slow_scripted_models
from tests.unit.test_eval_engine import SMALL, comparable, outcome, results, served

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.ray

ROOT = Path(__file__).parents[2]
# Next to the checkout (`m3rec eval --dataset beauty` looks there), else the workspace's copy:
# a fresh clone elsewhere (the CI check clones into /tmp) must not skip these tests.
BEAUTY = next(
    (
        p
        for p in (ROOT.parent / "shared" / "data" / "amazon" / "beauty", Path("/work/shared/data/amazon/beauty"))
        if p.is_dir()
    ),
    ROOT.parent / "shared" / "data" / "amazon" / "beauty",
)
"""The full Beauty dataset (12,101 items), as `m3rec eval --dataset beauty` finds it."""


@pytest.fixture(scope="module")
def ray_runtime() -> Iterator[None]:
    # Bound to 127.0.0.1, as in test_scale_ray.py (the tests stay on loopback).
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    try:
        yield
    finally:
        ray.shutdown()


def evaluate(out: Path, dataset: Path, methods: str, users: int, engine: EvalEngine | None = None, **extra: Any) -> EvalRun:
    return run_evaluation(
        EvalSettings(dataset=dataset, users=users, negatives=9, seed=0),
        parse_methods(methods),
        out,
        cold_start=2,
        chat_models=scripted_models(),
        serve=served,
        progress=io.StringIO(),
        n_boot=200,
        plots=False,
        engine=engine,
        **extra,
    )


def metrics(run: EvalRun) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r.method, r.slice): {n: (m.mean, m.low, m.high) for n, m in r.metrics.items()} for rs in run.reports.values() for r in rs}


@pytest.mark.skipif(not BEAUTY.is_dir(), reason="needs ../shared/data/amazon/beauty")
def test_two_ray_workers_on_beauty_give_the_local_engines_results(ray_runtime: None, tmp_path: Path) -> None:
    methods = "popularity,m3rec:hybrid,m3rec:hybrid:fused+popularity"  # the fused one fits on validation
    local = evaluate(tmp_path / "local", BEAUTY, methods, 4, concurrency=2, fit_users=2)
    on_ray = evaluate(
        tmp_path / "ray", BEAUTY, methods, 4, EvalEngine(kind="ray", workers=2, worker_chat_models=scripted_models),
        concurrency=2, fit_users=2,
    )  # fmt: skip
    by_local, by_ray = results(tmp_path / "local"), results(tmp_path / "ray")
    assert len(by_local) == 3 * 2 * 4 and set(by_ray) == set(by_local)
    for key, line in by_local.items():  # user for user: rankings, ranks, fusion, MOPE/MAR usage
        assert comparable(by_ray[key]) == comparable(line), key
    assert metrics(on_ray) == metrics(local)  # and so the metrics and their bootstrap CIs
    # The pre-pass encoded every item before the shoppers ran (see USAGE_COLUMNS for the cost).
    assert all(r["memory"]["traits_miss"] == 0 for k, r in by_ray.items() if k[0].startswith("m3rec"))


@pytest.mark.postgres
@pytest.mark.skipif(not BEAUTY.is_dir(), reason="needs ../shared/data/amazon/beauty")
def test_two_ray_workers_on_one_postgres_store_encode_each_item_once(
    ray_runtime: None, postgres_url: str, tmp_path: Path
) -> None:
    """`m3rec eval --engine ray --workers 2 --store postgresql://...` against the local engine's default SQLite store."""
    methods = "popularity,m3rec:hybrid"
    local = evaluate(tmp_path / "local", BEAUTY, methods, 4, concurrency=2)
    log = tmp_path / "mote-calls.tsv"  # every worker's MOTE calls, one line each
    workers = EvalEngine(kind="ray", workers=2, worker_chat_models=functools.partial(recording_scripted_models, str(log)))
    # With a password in the URL (trust auth ignores it), so that store.json shows it redacted.
    url = postgres_url.replace("postgresql://m3rec@", "postgresql://m3rec:not-a-secret@")
    on_ray = evaluate(tmp_path / "ray", BEAUTY, methods, 4, workers, concurrency=2, store=url)
    by_local, by_ray = results(tmp_path / "local"), results(tmp_path / "ray")
    assert len(by_local) == 2 * 2 * 4 and set(by_ray) == set(by_local)
    for key, line in by_local.items():
        assert comparable(by_ray[key]) == comparable(line), key
    assert metrics(on_ray) == metrics(local)

    # The store was fresh: every distinct candidate item of the run was uncached. The two
    # workers together called MOTE once per item, each item on one of them (the pre-pass),
    # and no shopper called it again (the cold slice shows the same items: all stored).
    calls = [line.split("\t") for line in log.read_text(encoding="utf-8").splitlines()]
    candidates = (tmp_path / "ray" / "candidates.jsonl").read_text(encoding="utf-8").splitlines()
    distinct = {item for line in candidates for item in json.loads(line)["candidates"]}
    assert sorted(item for _, item in calls) == sorted(distinct)
    assert len({pid for pid, _ in calls}) == 2  # both workers encoded a share
    assert all(r["stages"].get("mote", {"calls": 0})["calls"] == 0 for k, r in by_ray.items() if k[0] != "popularity")
    with open_store(postgres_url) as store:  # the traits are in the shared store, not the run directory
        assert len(store.search((STORE_ROOT, "traits"), limit=1000)) == len(distinct)
    assert not (tmp_path / "ray" / "store.sqlite").exists()
    assert read_stores(tmp_path / "ray") == [url.replace(":not-a-secret@", ":***@")]


def test_a_ray_worker_killed_mid_eval_loses_nothing_and_a_rerun_completes(
    ray_runtime: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engines: list[RayEngine] = []

    def tracked(*args: Any, **kwargs: Any) -> RayEngine:
        engines.append(RayEngine(*args, **kwargs))
        return engines[-1]

    killed: list[bool] = []

    def append_then_kill(handle: Any, record: dict[str, Any]) -> None:
        append_result(handle, record)
        if len(engines) == 1 and not killed:  # the first run's first line: both workers die
            for actor in engines[0]._actors:
                ray.kill(actor)
            killed.append(True)

    monkeypatch.setattr(sharded, "RayEngine", tracked)
    monkeypatch.setattr(sharded, "append_result", append_then_kill)
    ray_engine = EvalEngine(kind="ray", workers=2, worker_chat_models=slow_scripted_models)
    with pytest.raises(EngineError, match="a Ray worker died"):
        evaluate(tmp_path / "ray", SMALL, "m3rec:hybrid", 6, ray_engine, concurrency=1)
    first = results(tmp_path / "ray")
    assert 1 <= len(first) < 12

    evaluate(tmp_path / "ray", SMALL, "m3rec:hybrid", 6, ray_engine, concurrency=1)
    again = results(tmp_path / "ray")  # fails on a line written twice
    assert all(again[k] == line for k, line in first.items())  # finished lines kept, not redone
    evaluate(tmp_path / "local", SMALL, "m3rec:hybrid", 6, concurrency=1)
    reference = results(tmp_path / "local")
    assert set(again) == set(reference)
    assert {k: outcome(v) for k, v in again.items()} == {k: outcome(v) for k, v in reference.items()}


def driver(out: Path, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.eval_ray_driver", str(out), "6", "2", *extra],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def descendants(pid: int) -> set[int]:
    """Every process below `pid` (from /proc: Linux, as Ray's own fate-sharing is)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended while listed
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


CORE = {"gcs_server", "raylet"}
"""The Ray runtime's core processes, which end with the driver that started them (as do
the `ray::GraphWorker` actors). Ray 2.60's DashboardAgent and RuntimeEnvAgent do not: they
outlive a SIGKILLed driver, idle, for a minute or two (they log the raylet's death through the GCS,
which is gone); they hold no CPU, lock or file of the run."""


def process_name(pid: int) -> str:
    """`pid`'s command: its executable's base name, or Ray's `ray::...` title."""
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return ""
    return argv0 if argv0.startswith("ray::") else Path(argv0.split()[0] if argv0 else "").name


def still_running(pids: set[int], timeout: float) -> set[int]:
    """The `pids` still running (zombies do not count) after waiting up to `timeout` s for them to end."""

    def running(pid: int) -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    deadline = time.monotonic() + timeout
    while (alive := {p for p in pids if running(p)}) and time.monotonic() < deadline:
        time.sleep(0.2)
    return alive


def m3rec_lines(out: Path) -> int:
    path = out / "results.jsonl"
    if not path.exists():
        return 0
    return sum('"m3rec:' in line for line in path.read_text(encoding="utf-8").splitlines())


def test_the_driver_killed_mid_eval_resumes_and_the_engine_starts_its_own_runtime(tmp_path: Path) -> None:
    """Not under the module's runtime: each driver process has none, so `RayEngine` starts one."""
    out = tmp_path / "run"
    process = driver(out, "slow")
    try:
        deadline = time.monotonic() + 120
        while m3rec_lines(out) < 2 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert process.poll() is None, process.communicate()[1][-2000:]
        runtime = descendants(process.pid)  # the Ray runtime it started, and its workers
        names = {pid: process_name(pid) for pid in runtime}
        process.send_signal(signal.SIGKILL)  # the driver: lock, results handle and Ray runtime with it
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=60)
    core = {pid for pid, name in names.items() if name in CORE or name.startswith("ray::GraphWorker")}
    alive = still_running(core, timeout=30)
    for pid in still_running(runtime, timeout=0):  # this test's processes (see CORE): none left behind
        if process_name(pid) == names[pid]:  # the same process, not a reused pid
            os.kill(pid, signal.SIGKILL)
    assert len(core) >= 4 and not alive, [names[p] for p in alive]
    first = results(out)
    assert 2 <= sum(k[0] == "m3rec:hybrid" for k in first) < 12

    rerun = driver(out)
    stdout, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, stderr[-2000:]
    assert "runtime: started by the engine and stopped" in stdout
    again = results(out)  # fails on a line written twice
    assert len(again) == len(DRIVER_METHODS.split(",")) * 2 * 6
    assert all(again[k] == line for k, line in first.items())  # nothing finished lost or redone
    reference = tmp_path / "local"
    evaluate(reference, SMALL, DRIVER_METHODS, 6, concurrency=1)
    assert {k: outcome(v) for k, v in again.items()} == {k: outcome(v) for k, v in results(reference).items()}
