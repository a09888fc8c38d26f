"""The driver of `m3rec recommend-batch`: requests in, one output line per request, resumable.

    IN.jsonl    one request per line (user_id, history, candidates[, k]), as `m3rec recommend` takes
    OUT.jsonl   one line per finished request: {"line": <its line in IN>, **the graph's output}

The driver keeps what makes a run trustworthy, whichever engine runs the workers:

* Every request is validated before any worker starts (a bad line: exit 2, nothing run).
* `OUT.jsonl.lock` is held for the whole run: a second run on the same output is refused.
* Outputs are appended and flushed as they arrive (chunk by chunk, in completion order).
  A rerun reads `OUT.jsonl` back (a torn last line, what a kill mid-write leaves, is cut
  off) and runs only the lines not there: nothing finished is lost or redone.
* Before shoppers are sharded, a MOTE pre-pass stores the traits of the run's distinct
  candidate items the store does not have yet. The driver splits the distinct items
  (by id and text hash) across the workers, each item to one worker, and waits for
  all of them; only then do shoppers run, and every MOTE lookup they make is a hit.
  So two workers never encode the same item, without a compare-and-set the store
  does not have (`BaseStore` has none). An item whose MOTE answers all fail is not
  stored, and the shoppers that show it ask again.
"""

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from m3rec_graph._internal.jsonl import complete_lines, json_lines
from m3rec_graph._internal.run_lock import exclusive_lock
from m3rec_graph.context import M3RecContext
from m3rec_graph.contracts.request import RecommendationRequest, item_dict, parse_request
from m3rec_graph.contracts.schemas import Item
from m3rec_graph.errors import InvalidRequestError, M3RecError
from m3rec_graph.scale.engine import Engine
from m3rec_graph.stages.fuse import needs_motivations
from m3rec_graph.storage.memory import trait_key


class BatchFileError(M3RecError, ValueError):
    """A requests or output file that cannot be used, or an output in use (CLI exit code 2)."""


@dataclass(frozen=True)
class BatchRequest:
    """One line of the requests file, validated."""

    line: int
    request: RecommendationRequest


@dataclass
class BatchReport:
    """What a `run_batch` call did."""

    total: int
    already: int
    """Lines found finished in the output file (resumed, not run again)."""
    computed: int = 0
    mote: dict[str, int] = field(default_factory=dict)
    """The MOTE pre-pass, summed over workers: items, stored, encoded, failed."""


def read_requests(path: Path) -> list[BatchRequest]:
    """Read and validate every request of a JSONL file.

    Raises:
        InvalidRequestError: The file is missing or not UTF-8, a line is not JSON or not
            a valid request (the message names the line), or it has no requests.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidRequestError(f"requests file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"cannot read the requests file {path}: {exc}") from None
    requests = []
    for where, value in json_lines(text.splitlines(), path, InvalidRequestError):
        line = int(where.rsplit(":", 1)[1])
        try:
            requests.append(BatchRequest(line, parse_request(value)))
        except InvalidRequestError as exc:
            raise InvalidRequestError(f"{where}: {exc}") from None
    if not requests:
        raise InvalidRequestError(f"{path}: no requests")
    return requests


def finished_lines(out: Path, requests: Sequence[BatchRequest]) -> set[int]:
    """Return the request lines `out` already has (a torn last line is cut off first).

    Raises:
        BatchFileError: A complete line is not an output record, or names a line the
            requests file does not have or another user (another requests file made it).
    """
    users = {r.line: r.request.user_id for r in requests}
    done: set[int] = set()
    for where, record in json_lines(complete_lines(out), out, BatchFileError, "; fix or delete the line"):
        line = record.get("line") if isinstance(record, dict) else None
        if not isinstance(line, int) or not isinstance(record.get("user_id"), str):
            raise BatchFileError(f"{where}: not an output record (line, user_id, ranking)")
        if users.get(line) != record["user_id"]:
            raise BatchFileError(
                f"{where}: line {line} of the requests is not user {record['user_id']!r}:"
                f" {out} was written from another requests file; use another --out"
            )
        done.add(line)
    return done


def mote_shards(
    requests: Sequence[BatchRequest], ctx: M3RecContext, workers: int
) -> list[list[dict[str, Any]]]:
    """Split the distinct candidate items of `requests` across `workers` (`item_shards`)."""
    candidates = (c for r in requests for c in r.request.candidates)
    return item_shards(candidates, ctx, workers)


def item_shards(
    candidates: Iterable[Item], ctx: M3RecContext, workers: int
) -> list[list[dict[str, Any]]]:
    """Split the distinct `candidates` across `workers`, each item to one worker (the MOTE pre-pass).

    Distinct by id and text hash (the trait key), in first-seen order, dealt round
    robin; items without text (MOTE never reads them) and runs that make no MOTE
    call (`no_mote`, or a fusion that reads no traits) give no items.
    """
    if ctx.ablation == "no_mote" or not needs_motivations(ctx):
        return [[] for _ in range(workers)]
    distinct: dict[str, dict[str, Any]] = {}
    for candidate in candidates:
        if candidate.has_text():  # as an `Item`: MOTE reads no `prior`
            fields = {k: v for k, v in item_dict(candidate).items() if k in Item.model_fields}
            distinct.setdefault(trait_key(candidate), fields)
    shards: list[list[dict[str, Any]]] = [[] for _ in range(workers)]
    for n, item in enumerate(distinct.values()):
        shards[n % workers].append(item)
    return shards


def chunked(requests: Sequence[BatchRequest], size: int) -> list[list[BatchRequest]]:
    """Cut `requests` into chunks of `size` (the last one shorter)."""
    return [list(requests[i : i + size]) for i in range(0, len(requests), size)]


def lock_path(out: Path) -> Path:
    """Return the lock file of an output file: `OUT.jsonl.lock` beside it."""
    return out.with_name(out.name + ".lock")


def run_batch(
    requests: Sequence[BatchRequest],
    out: Path,
    engine: Callable[[], Engine],
    ctx: M3RecContext,
    *,
    concurrency: int,
    on_start: Callable[[BatchReport], None] | None = None,
    on_output: Callable[[dict[str, Any]], None] | None = None,
) -> BatchReport:
    """Run the requests of `requests` that `out` does not have yet, appending their outputs to `out`.

    Args:
        requests: From `read_requests`.
        out: The output file (created, with its directory, if missing).
        engine: Starts the engine, once the lock is held and something is left to run.
        ctx: The run context the workers use (for the MOTE pre-pass's items).
        concurrency: Requests in flight per worker; a chunk is twice that, so a worker
            call carries enough requests to keep its slots busy.
        on_start: Called once, with the counts, before anything runs.
        on_output: Called with each output as it is appended (the progress line).

    Raises:
        BatchFileError: The output is in use by another run, or was written from
            another requests file.
        EngineError: A worker died (what finished is in `out`; rerun to resume).
    """

    def busy(holder: str) -> BatchFileError:
        return BatchFileError(f"{out} is in use by another run (pid {holder}); wait for it or use another --out")

    with exclusive_lock(lock_path(out), busy):
        done = finished_lines(out, requests)
        todo = [r for r in requests if r.line not in done]
        report = BatchReport(total=len(requests), already=len(requests) - len(todo))
        if on_start is not None:
            on_start(report)
        if not todo:
            return report
        running = engine()
        try:
            shards = mote_shards(todo, ctx, running.workers)
            report.mote = _sum(running.encode(shards)) if any(shards) else {}
            chunks = chunked(todo, max(1, 2 * concurrency))
            payloads = [[r.request.model_dump(exclude_none=True) for r in c] for c in chunks]
            with out.open("a", encoding="utf-8") as handle:
                for index, outputs in running.recommend(payloads):
                    for batch_request, output in zip(chunks[index], outputs, strict=True):
                        record = {"line": batch_request.line, **output}
                        handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                        handle.flush()
                        report.computed += 1
                        if on_output is not None:
                            on_output(record)
        finally:
            running.close()
        return report


def _sum(reports: Sequence[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for report in reports:
        for key, value in report.items():
            total[key] = total.get(key, 0) + value
    return total


def output_usage(record: dict[str, Any]) -> tuple[int | None, float | None]:
    """Return an output's total tokens and cost (for the progress line)."""
    total = (record.get("usage") or {}).get("total") or {}
    tokens = (total.get("input_tokens") or 0) + (total.get("output_tokens") or 0)
    cost = total.get("cost_usd")
    return tokens, cost if isinstance(cost, float | int) and math.isfinite(cost) else None
