"""Batch evaluation survives SIGKILL: a rerun finishes with the uninterrupted results, re-asking nothing done.

`m3rec eval` runs the real graph through ChatOpenAI (`--methods m3rec:hybrid`)
against `tests.fault_server.FaultServer` on 127.0.0.1 (no faults, every request
held `DELAY_S` so the run can be killed in the middle). The server records every
request body; each is attributed from its prompt: a MOPE request to the user whose
history it shows, a MAR request to the user whose candidates it shows, a MOTE
request to the item it encodes. A `sitecustomize` refuses (and logs) any
connection beyond the loopback, so the runs are also proven offline.

The runs use `--concurrency 1` (one user at a time), so at most one user is in flight
when the process dies; that user's MOTE answers already in the trait cache are
kept, the rest of its work is redone.
"""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from m3rec_graph.evaluation import EvaluationError, run_lock
from tests.fault_server import FaultConfig, FaultServer, candidate_ids, last_block, stage_of
from tests.unit.test_langgraph_server import NET_GUARD

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs POSIX process groups")

ROOT = Path(__file__).parents[2]
METHOD = "m3rec:hybrid"
"""The method the runs score: today's routing (gpt-6-luna encoders, gpt-6.1-sol aligner)."""
USERS, NEGATIVES = 6, 9
DELAY_S = 0.05
"""Per-request delay of the fake model: a user takes a few tenths of a second."""
RUN_TIMEOUT_S = 60.0
DETERMINISTIC = (
    "method",
    "slice",
    "user_id",
    "rank",
    "n_candidates",
    "ranking",
    "degraded",
    "routing",
    "prompts",
)
"""The result fields an interrupted run must reproduce (not wall time; calls and tokens
may be lower for the user in flight, whose finished MOTE answers were cached)."""


def command(out: Path, methods: str = METHOD) -> list[str]:
    return [
        sys.executable, "-m", "m3rec_graph.cli", "eval", "--dataset", "tests/fixtures/beauty_small",
        "--users", str(USERS), "--negatives", str(NEGATIVES), "--methods", methods,
        "--concurrency", "1", "--out", str(out), "--n-boot", "50", "--no-plots",
    ]  # fmt: skip


def environment(server: FaultServer, tmp: Path, name: str) -> dict[str, str]:
    guard = tmp / "guard"
    guard.mkdir(exist_ok=True)
    (guard / "sitecustomize.py").write_text(NET_GUARD)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENAI_", "LANGSMITH_", "LANGCHAIN_"))
    }
    env.update(
        OPENAI_API_KEY="test-key",
        OPENAI_BASE_URL=server.url,  # ends in /v1
        LANGSMITH_TRACING="false",
        LANGCHAIN_TRACING_V2="false",
        M3REC_CACHE_DIR=str(tmp / f"cache-{name}"),
        M3REC_NET_GUARD_LOG=str(tmp / "network-attempts.log"),
        PYTHONPATH=os.pathsep.join([str(guard), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    )
    return env


def start(
    out: Path, env: dict[str, str], log: Path, methods: str = METHOD
) -> subprocess.Popen[bytes]:
    with log.open("ab") as handle:
        return subprocess.Popen(
            command(out, methods),
            cwd=ROOT,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, killed as a whole
        )


def finish(process: subprocess.Popen[bytes], log: Path) -> None:
    try:
        code = process.wait(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise AssertionError(f"run_eval did not finish:\n{log.read_text()[-3000:]}") from None
    assert code == 0, log.read_text()[-3000:]


def result_lines(path: Path) -> list[dict[str, Any]]:
    """The complete lines of results.jsonl (a line cut by the kill has no newline yet)."""
    if not path.exists():
        return []
    data = path.read_bytes()
    return [
        json.loads(line)
        for line in data[: data.rfind(b"\n") + 1].decode().splitlines()
        if line.strip()
    ]


def wait_for_lines(path: Path, process: subprocess.Popen[bytes], count: int, log: Path) -> None:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while len(result_lines(path)) < count:
        if process.poll() is not None:
            raise AssertionError(
                f"run_eval ended (code {process.returncode}) early:\n{log.read_text()[-3000:]}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(
                f"no {count} results within {RUN_TIMEOUT_S} s:\n{log.read_text()[-3000:]}"
            )
        time.sleep(0.005)


def settle(server: FaultServer) -> list[dict[str, Any]]:
    """The recorded bodies once no request is still arriving (the client is dead)."""
    bodies = server.bodies()
    while True:
        time.sleep(2 * DELAY_S)
        again = server.bodies()
        if len(again) == len(bodies):
            return again
        bodies = again


class Attribution:
    """Which user (MOPE, MAR) or item (MOTE) a recorded request was for, from its prompt."""

    def __init__(self, candidates_file: Path) -> None:
        cases = [
            json.loads(line) for line in candidates_file.read_text().splitlines() if line.strip()
        ]
        self.history = {c["user_id"]: set(c["history"]) for c in cases}
        self.candidates = {c["user_id"]: set(c["candidates"]) for c in cases}

    def __call__(self, body: dict[str, Any]) -> tuple[str, str]:
        prompt = "\n".join(str(m.get("content") or "") for m in body["messages"])
        stage = stage_of(prompt)
        if stage == "mope":
            shown = set(candidate_ids(f"<candidates>{last_block(prompt, 'history')}</candidates>"))
            users = [u for u, history in self.history.items() if shown and shown <= history]
        elif stage == "mar":
            shown = set(candidate_ids(prompt))
            users = [u for u, candidates in self.candidates.items() if shown == candidates]
        elif stage == "mote":
            items = candidate_ids(f"<candidates>{last_block(prompt, 'item')}</candidates>")
            assert len(items) == 1, prompt[-500:]
            return stage, items[0]
        else:
            raise AssertionError(f"not an m3rec prompt: {prompt[:200]!r}")
        assert len(users) == 1, f"{stage} request matches users {users}"
        return stage, users[0]


def by_stage(requests: list[tuple[str, str]]) -> dict[str, Counter[str]]:
    counts: dict[str, Counter[str]] = {"mope": Counter(), "mote": Counter(), "mar": Counter()}
    for stage, key in requests:
        counts[stage][key] += 1
    return counts


def test_sigkilled_run_resumes_to_the_uninterrupted_results_without_redoing_finished_users(
    tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    log = tmp_path / "run.log"
    out_a, out_b = tmp_path / "a", tmp_path / "b"
    results_a = out_a / "results.jsonl"

    # Run A: killed (SIGKILL, whole process group) once two users are written and the
    # next one's requests are on their way (held DELAY_S by the server), then rerun.
    with FaultServer(FaultConfig(record_bodies=True, delay_s=DELAY_S)) as server:
        env = environment(server, tmp_path, "a")
        process = start(out_a, env, log)
        wait_for_lines(results_a, process, 2, log)
        asked = len(server.bodies())
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while (
            len(server.bodies()) == asked and process.poll() is None and time.monotonic() < deadline
        ):
            time.sleep(0.002)
        os.killpg(process.pid, signal.SIGKILL)
        assert process.wait(timeout=10) == -signal.SIGKILL
        bodies_before = settle(server)
        done_at_kill = {r["user_id"] for r in result_lines(results_a)}
        assert 2 <= len(done_at_kill) < USERS, "the kill must land in the middle of the batch"

        finish(start(out_a, env, log), log)
        bodies_after = server.bodies()[len(bodies_before) :]
        # No fault was injected; the raw `requests` count may also hold a body cut by the
        # kill (answered 400 "unreadable"), which never reached a model: not counted below.
        assert not any(server.faults().values()) and "answerer_error" not in server.counts()

    # Run B: the same command, uninterrupted, on a fresh server.
    with FaultServer(FaultConfig(record_bodies=True)) as fresh:
        finish(start(out_b, environment(fresh, tmp_path, "b"), log), log)
        bodies_b = fresh.bodies()

    assert (out_a / "candidates.jsonl").read_bytes() == (out_b / "candidates.jsonl").read_bytes()
    attribute = Attribution(out_a / "candidates.jsonl")
    before = by_stage([attribute(b) for b in bodies_before])
    after = by_stage([attribute(b) for b in bodies_after])
    uninterrupted = by_stage([attribute(b) for b in bodies_b])
    users = set(attribute.candidates)
    assert uninterrupted["mope"] == uninterrupted["mar"] == Counter(users)

    # The same results: every (method, user) once, identical ranks and rankings.
    lines_a, lines_b = result_lines(results_a), result_lines(out_b / "results.jsonl")
    assert results_a.read_bytes().endswith(b"\n") and len(lines_a) == len(
        results_a.read_bytes().splitlines()
    )
    for lines in (lines_a, lines_b):
        pairs = [(r["method"], r["user_id"]) for r in lines]
        assert len(pairs) == len(set(pairs)) == USERS, pairs
        assert {u for _, u in pairs} == users
    deterministic_a = {r["user_id"]: {k: r[k] for k in DETERMINISTIC} for r in lines_a}
    deterministic_b = {r["user_id"]: {k: r[k] for k in DETERMINISTIC} for r in lines_b}
    assert deterministic_a == deterministic_b
    assert all(r["degraded"] == 0 for r in lines_a)

    # Who was in flight: asked for before the kill, not written. The harness is sequential.
    in_flight = set(before["mope"]) - done_at_kill
    assert len(in_flight) <= 1, in_flight  # usually 1; 0 if the kill fell between two users
    assert set(before["mope"]) == done_at_kill | in_flight
    assert set(before["mar"]) <= done_at_kill | in_flight

    # The rerun asked nothing for a user already written, and everything else exactly once.
    assert not (set(after["mope"]) | set(after["mar"])) & done_at_kill
    assert after["mope"] == Counter(users - done_at_kill)
    assert after["mar"] == Counter(users - done_at_kill)
    # An item encoded before the kill is re-encoded only if its answer was lost with the in-flight user.
    lost = set(before["mote"]) & set(after["mote"])
    assert lost <= set().union(*(attribute.candidates[u] for u in in_flight)), lost
    assert max([*before["mote"].values(), *after["mote"].values()]) == 1

    # Counting the calls: killed + resumed costs the uninterrupted run plus at most the in-flight user.
    total_a, total_b = len(bodies_before) + len(bodies_after), len(bodies_b)
    redo_bound = sum(2 + len(attribute.candidates[u]) for u in in_flight)  # its MOPE, MAR and MOTEs
    assert total_a - total_b == (
        sum(before["mope"][u] + before["mar"][u] for u in in_flight) + len(lost)
    ), (total_a, total_b)
    assert total_b <= total_a <= total_b + redo_bound
    assert len(bodies_after) < total_b
    # Per user, calls recorded in results: equal, except the in-flight user (cached MOTEs kept).
    calls_a = {r["user_id"]: r["llm_calls"] for r in lines_a}
    calls_b = {r["user_id"]: r["llm_calls"] for r in lines_b}
    assert {u: c for u, c in calls_a.items() if u not in in_flight} == {
        u: c for u, c in calls_b.items() if u not in in_flight
    }
    assert all(calls_a[u] <= calls_b[u] for u in in_flight)

    guard_log = tmp_path / "network-attempts.log"
    assert not guard_log.exists() or not guard_log.read_text(), guard_log.read_text()
    record_property(
        "requests",
        {
            "uninterrupted": total_b,
            "before_kill": len(bodies_before),
            "after_kill": len(bodies_after),
            "users_written_at_kill": len(done_at_kill),
            "in_flight": sorted(in_flight),
            "re_asked": total_a - total_b,
        },
    )


def test_a_second_run_on_the_same_directory_is_refused_while_the_first_runs(tmp_path: Path) -> None:
    """Two harness processes on one run directory would both compute and append every pair:
    the second is refused (exit code 2, one line) and the first finishes cleanly."""
    log, other_log = tmp_path / "first.log", tmp_path / "second.log"
    out = tmp_path / "run"
    # Slow answers (two rounds a user: MOPE and MOTEs, then MAR) keep the first busy for
    # seconds after its random results are written, longer than the second takes to start.
    with FaultServer(FaultConfig(delay_s=0.4)) as server:
        env = environment(server, tmp_path, "shared")
        first = start(out, env, log, methods=f"random,{METHOD}")
        wait_for_lines(out / "results.jsonl", first, USERS, log)  # random done: the lock is held
        second = subprocess.run(
            command(out, f"random,{METHOD}"), cwd=ROOT, env=env, capture_output=True, text=True,
            timeout=RUN_TIMEOUT_S,
        )  # fmt: skip
        other_log.write_text(second.stdout + second.stderr)
        overlapped = len(result_lines(out / "results.jsonl")) < 2 * USERS
        assert overlapped, "the first run must still be computing for this test to mean anything"
        finish(first, log)
        requests = server.counts()["requests"]

    assert second.returncode == 2, second.stderr
    message = second.stderr.strip()
    assert len(message.splitlines()) == 1 and "is in use by another run" in message, message
    assert f"pid {first.pid}" in message
    lines = result_lines(out / "results.jsonl")
    pairs = [(r["method"], r["user_id"]) for r in lines]
    assert len(pairs) == len(set(pairs)) == 2 * USERS
    assert requests <= 12 * USERS  # one run's worth (1 MOPE + <= 10 MOTE + 1 MAR per user)
    # Once the first is done the directory is free again: a rerun resumes (nothing to do).
    subprocess.run(
        command(out, f"random,{METHOD}"), cwd=ROOT, env=env, check=True, capture_output=True
    )
    assert len(result_lines(out / "results.jsonl")) == 2 * USERS


def test_run_lock_is_exclusive_and_released(tmp_path: Path) -> None:
    with run_lock(tmp_path):
        with pytest.raises(EvaluationError, match="in use by another run"):
            with run_lock(tmp_path):
                pass
    with run_lock(tmp_path):  # released on exit
        pass
