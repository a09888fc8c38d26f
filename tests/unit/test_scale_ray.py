"""`m3rec recommend-batch --engine ray` on a real local Ray runtime (2 CPUs, started once for the module).

The workers are Ray actors in processes of their own, so the model they call must be
reachable from there: the fault server on 127.0.0.1, a real OpenAI-compatible HTTP
server, whose answers are a function of the prompt (MAR scores hash the item id), so
rankings do not depend on which worker ran a shopper. Its counters see every worker's calls.
"""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from m3rec_graph.cli.app import main
from m3rec_graph.scale.batch import read_requests, run_batch
from m3rec_graph.scale.config import WorkerConfig
from m3rec_graph.scale.engine import EngineError
from m3rec_graph.scale.ray_engine import RayEngine
from tests.fakes import scripted_models
from tests.fault_server import FaultConfig, FaultServer
from tests.unit.test_scale import CTX, batch_args, rankings, requests_file

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module", autouse=True)
def ray_runtime() -> Iterator[None]:
    # Bound to 127.0.0.1: Ray would otherwise look up the machine's address (and tests stay on loopback).
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultServer]:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")  # travels to the workers in their config
    with FaultServer(FaultConfig()) as running:
        yield running


def with_store(args: list[str], url: str) -> list[str]:
    at = args.index("--store")
    return [*args[: at + 1], url, *args[at + 2 :]]


def test_two_ray_workers_rank_as_one_process_and_resume(server: FaultServer, tmp_path: Path) -> None:
    requests = requests_file(tmp_path / "in.jsonl", 10)
    local, fresh, resumed = tmp_path / "local.jsonl", tmp_path / "ray.jsonl", tmp_path / "resumed.jsonl"
    main(with_store(batch_args(server, requests, local), f"sqlite:///{tmp_path / 'local.db'}"))
    ray_args = ["--engine", "ray", "--workers", "2", "--concurrency", "2"]
    main(with_store(batch_args(server, requests, fresh, *ray_args), f"sqlite:///{tmp_path / 'ray.db'}"))
    assert len(rankings(fresh)) == 10
    assert rankings(fresh) == rankings(local)  # user for user

    # Kill and resume: three finished lines and a torn fourth; a fresh store, so nothing is remembered.
    lines = local.read_text(encoding="utf-8").splitlines(keepends=True)
    resumed.write_text("".join(lines[:3]) + lines[3][:40], encoding="utf-8")
    server.reset()
    main(with_store(batch_args(server, requests, resumed, *ray_args), f"sqlite:///{tmp_path / 'resumed.db'}"))
    assert server.counts()["stage:mope"] == 7  # the finished shoppers are not run again
    assert len(resumed.read_text(encoding="utf-8").splitlines()) == 10
    assert rankings(resumed) == rankings(local)


@pytest.mark.postgres
def test_two_workers_on_one_postgres_store_encode_each_item_once(
    server: FaultServer, postgres_url: str, tmp_path: Path
) -> None:
    first = requests_file(tmp_path / "first.jsonl", 3)  # stores the shared items and users 0-2's own
    everyone = requests_file(tmp_path / "everyone.jsonl", 8)
    ray_args = ["--engine", "ray", "--workers", "2", "--concurrency", "3"]
    main(with_store(batch_args(server, first, tmp_path / "first-out.jsonl", *ray_args), postgres_url))
    assert server.counts()["stage:mote"] == 3 + 3 * 3

    server.reset()
    out = tmp_path / "everyone-out.jsonl"
    main(with_store(batch_args(server, everyone, out, *ray_args), postgres_url))
    uncached = 5 * 3  # users 3-7's own candidates; the 3 shared and users 0-2's are stored
    assert server.counts()["stage:mote"] == uncached
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(records) == 8 and all(r["memory"]["traits_miss"] == 0 for r in records)
    assert sum(r["memory"]["profile"] == "hit" for r in records) == 3  # users 0-2's profiles, stored by run 1


def test_the_provider_limits_hold_across_ray_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    requests = requests_file(tmp_path / "in.jsonl", 6)
    tpm, cap = 900_000, 4  # ~1,500 tokens a request (prompt + schema + max_tokens): ~10 requests/s
    config = FaultConfig(
        rate_limit_tpm=tpm, rate_limit_tpm_burst=tpm / 60 * 0.5, max_in_flight=cap, latency_s=0.1, retry_after_s=0.05
    )
    ray_args = ["--engine", "ray", "--workers", "2", "--concurrency", "4"]
    with FaultServer(config) as server:
        main(with_store(batch_args(server, requests, tmp_path / "unlimited.jsonl", *ray_args), f"sqlite:///{tmp_path / 'a.db'}"))
        unlimited = server.counts()
        server.reset()
        limits = ["--tokens-per-minute", str(int(tpm * 0.9)), "--max-inflight-requests", str(cap)]
        main(with_store(batch_args(server, requests, tmp_path / "limited.jsonl", *ray_args, *limits), f"sqlite:///{tmp_path / 'b.db'}"))
        limited = server.counts()
    # Without the client limits, 2 workers x 4 in flight run into the server's: 429s.
    assert unlimited.get("over_tpm", 0) + unlimited.get("over_inflight", 0) > 0
    # With them, split across the workers, the total stays under the server's limits.
    assert limited.get("over_tpm", 0) == 0 and limited.get("over_inflight", 0) == 0
    assert limited.get("status:429", 0) == 0 and limited["peak_admitted"] <= cap
    assert len(rankings(tmp_path / "limited.jsonl")) == 6


def test_a_worker_killed_mid_run_loses_nothing_finished_and_a_rerun_completes(tmp_path: Path) -> None:
    requests = read_requests(requests_file(tmp_path / "in.jsonl", 12))
    out = tmp_path / "out.jsonl"
    config = WorkerConfig(context=CTX, store_url=f"sqlite:///{tmp_path / 'store.db'}", chat_models=scripted_models, concurrency=1)
    engines: list[RayEngine] = []

    def start() -> RayEngine:
        engines.append(RayEngine(config, 2))
        return engines[-1]

    def kill_a_worker(record: dict[str, Any]) -> None:
        if len(engines) == 1:  # the first run only: its first output kills actor 0
            ray.kill(engines[0]._actors[0])

    with pytest.raises(EngineError, match="a Ray worker died"):
        run_batch(requests, out, start, CTX, concurrency=1, on_output=kill_a_worker)
    finished = [json.loads(line)["line"] for line in out.read_text(encoding="utf-8").splitlines()]
    assert 1 <= len(finished) < 12

    report = run_batch(requests, out, start, CTX, concurrency=1, on_output=kill_a_worker)
    assert (report.already, report.computed) == (len(finished), 12 - len(finished))
    lines = sorted(json.loads(line)["line"] for line in out.read_text(encoding="utf-8").splitlines())
    assert lines == list(range(1, 13))  # every request once: nothing lost, nothing twice
