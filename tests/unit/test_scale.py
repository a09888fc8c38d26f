"""`m3rec recommend-batch` on the local engine, and the pieces both engines share: the limit split,
the MOTE pre-pass shards, resume from a partial output, the run lock. The Ray engine: test_scale_ray.py.
"""

import json
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from m3rec_graph._internal.run_lock import exclusive_lock
from m3rec_graph.cli.app import main
from m3rec_graph.context import M3RecContext
from m3rec_graph.errors import ConfigurationError
from m3rec_graph.llm.worker_share import ProviderLimits, worker_share
from m3rec_graph.scale.batch import (
    BatchFileError,
    lock_path,
    mote_shards,
    read_requests,
    run_batch,
)
from m3rec_graph.scale.config import Endpoint, WorkerConfig
from m3rec_graph.scale.engine import LocalEngine
from tests.fakes import scripted_models
from tests.fault_server import FaultConfig, FaultServer

MODEL = "fault-model"
CTX = M3RecContext(models={"mope": MODEL, "mote": MODEL, "mar": MODEL})


def item(item_id: str, n: int) -> dict[str, Any]:
    return {"item_id": item_id, "title": f"Long-wear shade {n} nail polish", "brand": f"Brand{n % 5}"}


def requests_file(path: Path, users: int, *, candidates: int = 6, shared: int = 3) -> Path:
    """Users whose candidates overlap: `shared` items every user sees, the rest their own."""
    lines = []
    for u in range(users):
        own = [item(f"u{u}-c{j}", u * 10 + j) for j in range(candidates - shared)]
        common = [item(f"common-{j}", 100 + j) for j in range(shared)]
        history = [item(f"u{u}-h{j}", u + j) for j in range(2)]
        lines.append(json.dumps({"user_id": f"user-{u}", "history": history, "candidates": [*common, *own]}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def rankings(out: Path) -> dict[str, list[str]]:
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    return {r["user_id"]: [x["item_id"] for x in r["ranking"]] for r in records}


def batch_args(server: FaultServer, requests: Path, out: Path, *extra: str) -> list[str]:
    models = [arg for stage in ("mope", "mote", "mar") for arg in ("--model", f"{stage}={MODEL}")]
    return [
        "recommend-batch", "--requests", str(requests), "--out", str(out), "--routing", "hybrid",
        *models, "--base-url", server.url, "--store", "memory:", *extra,
    ]


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultServer]:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    with FaultServer(FaultConfig()) as running:
        yield running


# --- the limit split ------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2, 3, 7])
def test_worker_shares_sum_to_the_limits(workers: int) -> None:
    limits = ProviderLimits(requests_per_second=10.0, tokens_per_minute=90_001, max_inflight_requests=16)
    shares = [worker_share(limits, workers, i) for i in range(workers)]
    assert sum(s.tokens_per_minute or 0 for s in shares) == 90_001
    assert sum(s.max_inflight_requests or 0 for s in shares) == 16
    assert sum(s.requests_per_second or 0 for s in shares) == pytest.approx(10.0)
    assert shares == [worker_share(limits, workers, i) for i in range(workers)]  # deterministic
    assert max(s.max_inflight_requests or 0 for s in shares) - min(s.max_inflight_requests or 0 for s in shares) <= 1


def test_a_limit_too_small_to_split_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="cannot be split across 4 workers"):
        worker_share(ProviderLimits(max_inflight_requests=3), 4, 0)
    assert worker_share(ProviderLimits(), 4, 3).unlimited


def test_the_worker_config_pickles_without_its_key_in_the_repr() -> None:
    config = WorkerConfig(context=CTX, endpoint=Endpoint(api_key="sk-secret"), chat_models=scripted_models)
    assert pickle.loads(pickle.dumps(config)) == config
    assert "sk-secret" not in repr(config)


# --- the MOTE pre-pass ----------------------------------------------------------------------


def test_mote_shards_deal_each_distinct_item_to_one_worker(tmp_path: Path) -> None:
    requests = read_requests(requests_file(tmp_path / "in.jsonl", 4, candidates=5, shared=2))
    shards = mote_shards(requests, CTX, 2)
    ids = [i["item_id"] for shard in shards for i in shard]
    assert len(ids) == len(set(ids)) == 2 + 4 * 3  # the shared items once
    assert abs(len(shards[0]) - len(shards[1])) <= 1
    assert mote_shards(requests, M3RecContext(ablation="no_mote"), 2) == [[], []]


def test_local_engine_encodes_each_item_once_then_every_shopper_hits(tmp_path: Path) -> None:
    requests = read_requests(requests_file(tmp_path / "in.jsonl", 5))
    config = WorkerConfig(context=CTX, chat_models=scripted_models, concurrency=2)
    report = run_batch(requests, tmp_path / "out.jsonl", lambda: LocalEngine(config), CTX, concurrency=2)
    assert report.computed == 5 and report.mote == {"items": 3 + 5 * 3, "stored": 0, "encoded": 18, "failed": 0}
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert sorted(r["line"] for r in records) == [1, 2, 3, 4, 5]
    assert all(r["memory"]["traits_miss"] == 0 and r["memory"]["traits_hit"] == 6 for r in records)
    assert all(r["degraded"] == [] and len(r["ranking"]) == 6 for r in records)


# --- the command ----------------------------------------------------------------------------


def test_recommend_batch_local_ranks_every_request(server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    requests = requests_file(tmp_path / "in.jsonl", 4)
    out = tmp_path / "out.jsonl"
    main(batch_args(server, requests, out, "--concurrency", "2"))
    assert sorted(rankings(out)) == [f"user-{u}" for u in range(4)]
    err = capsys.readouterr().err
    assert "recommend-batch 4/4 users (100%)" in err
    assert "4 requests ranked, 0 already" in err
    assert "15 distinct items, 0 stored, 15 encoded" in err
    assert server.counts()["stage:mote"] == 15 and server.counts()["stage:mope"] == 4


def test_a_rerun_after_a_partial_output_runs_only_the_rest(server: FaultServer, tmp_path: Path) -> None:
    requests = requests_file(tmp_path / "in.jsonl", 5)
    full, out = tmp_path / "full.jsonl", tmp_path / "out.jsonl"
    main(batch_args(server, requests, full))
    lines = full.read_text(encoding="utf-8").splitlines(keepends=True)
    # Two finished lines, then a line torn by a kill mid-write.
    out.write_text(lines[0] + lines[1] + lines[2][: len(lines[2]) // 2], encoding="utf-8")
    server.reset()
    main(batch_args(server, requests, out))
    assert server.counts()["stage:mope"] == 3  # the two finished users are not run again
    assert rankings(out) == rankings(full)
    assert len(out.read_text(encoding="utf-8").splitlines()) == 5  # none lost, none twice
    server.reset()
    main(batch_args(server, requests, out))  # all done: nothing runs
    assert server.counts().get("requests", 0) == 0


def test_an_output_in_use_or_from_other_requests_is_refused(server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    requests = requests_file(tmp_path / "in.jsonl", 2)
    out = tmp_path / "out.jsonl"
    with exclusive_lock(lock_path(out), BatchFileError):
        with pytest.raises(SystemExit) as busy:
            main(batch_args(server, requests, out))
    assert busy.value.code == 2 and "is in use by another run" in capsys.readouterr().err
    out.write_text(json.dumps({"line": 1, "user_id": "someone-else", "ranking": []}) + "\n")
    with pytest.raises(SystemExit) as other:
        main(batch_args(server, requests, out))
    assert other.value.code == 2 and "written from another requests file" in capsys.readouterr().err
    assert server.counts().get("requests", 0) == 0


def test_bad_input_exits_2_before_anything_runs(server: FaultServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    requests = tmp_path / "in.jsonl"
    requests.write_text(json.dumps({"user_id": "u", "history": [], "candidates": [item("a", 1)]}) + '\n{"nope": 1}\n')
    with pytest.raises(SystemExit) as bad:
        main(batch_args(server, requests, tmp_path / "out.jsonl"))
    assert bad.value.code == 2 and "in.jsonl:2: unknown request field(s): nope" in capsys.readouterr().err
    good = requests_file(tmp_path / "good.jsonl", 1)
    with pytest.raises(SystemExit) as local_workers:
        main(batch_args(server, good, tmp_path / "out.jsonl", "--workers", "2"))
    assert local_workers.value.code == 2 and "--engine local runs one worker" in capsys.readouterr().err
    with pytest.raises(SystemExit) as split:
        main(batch_args(server, good, tmp_path / "out.jsonl", "--engine", "ray", "--workers", "3", "--max-inflight-requests", "2"))
    assert split.value.code == 2 and "cannot be split across 3 workers" in capsys.readouterr().err
    with pytest.raises(SystemExit) as memory:  # batch_args uses --store memory:
        main(batch_args(server, good, tmp_path / "out.jsonl", "--engine", "ray", "--workers", "2"))
    assert memory.value.code == 2 and "cannot be shared by 2 worker processes" in capsys.readouterr().err
    assert server.counts().get("requests", 0) == 0


def test_help_says_concurrency_is_per_worker(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["recommend-batch", "--help"])
    assert "in flight PER WORKER" in capsys.readouterr().out
