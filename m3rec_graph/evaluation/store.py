"""The run directory: settings, the fixed candidate sets, append-only results, and the run lock.

A run lives in one directory, used by one process at a time:

* `settings.json`: what the candidate sets were built from (dataset fingerprint,
  users, negatives, sampling, seed). A directory is never reused with other
  settings: `prepare_cases` refuses. Methods and slices are not settings: more
  of them can be added to a run later, on the same candidates.
* `candidates.jsonl`: one line per user (`user_id`, `target_id`, `candidates`,
  `history`, all item ids), written once and read back on every later run, so
  every method and slice is scored on the same candidates in the same shown order.
* `results.jsonl`: one line per (method, slice, user), appended and flushed as
  soon as that user is done. A restarted run skips what is there, so a crash
  loses at most the users in flight.
* `models.json`: the model (and reasoning effort) of every stage of each m3rec
  method, as resolved when it first ran, so a preset that now routes elsewhere is
  refused instead of mixing models under one method name (see `run_models`).
* `store.json`: the stores its m3rec methods cached traits and profiles in
  (`--store`, by default the directory's own `store.sqlite`; see `run_store`), with
  credentials redacted. Not a setting: a store is a cache shared across runs.
* `run.lock`: held (an exclusive `flock`) for the whole run, so a second process on
  the same directory is refused instead of recomputing and appending the same
  lines. The kernel drops the lock when its process dies, even by SIGKILL, so a
  rerun after a crash is never blocked by a stale lock.
"""

import contextlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO, cast

from m3rec_graph._internal.atomic import atomic_write_text
from m3rec_graph._internal.jsonl import complete_lines, json_lines
from m3rec_graph._internal.run_lock import exclusive_lock
from m3rec_graph.errors import DatasetError
from m3rec_graph.evaluation.datasets import (
    Dataset,
    EvalCase,
    build_requests,
    dataset_fingerprint,
)
from m3rec_graph.evaluation.settings import EvalSettings, EvaluationError

SETTINGS_FILE = "settings.json"
CANDIDATES_FILE = "candidates.jsonl"
RESULTS_FILE = "results.jsonl"
LOCK_FILE = "run.lock"
SETTINGS_FORMAT = 2

_INFORMATIONAL_SETTINGS = frozenset({"dataset_path"})
"""Recorded for the reader but not compared: the same data may move to another path."""

ResultKey = tuple[str, str, str]
"""(method key, slice name, user id)."""


def settings_record(settings: EvalSettings, dataset: Dataset) -> dict[str, Any]:
    """Return the `settings.json` content for `settings` (the dataset identified by content)."""
    return {
        "format": SETTINGS_FORMAT,
        "dataset_name": dataset.name,
        "dataset_sha256": _fingerprint(settings.dataset),
        "dataset_path": str(settings.dataset.resolve()),
        "users": settings.users,
        "negatives": settings.negatives,
        "sampling": settings.sampling,
        "seed": settings.seed,
    }


def _fingerprint(path: Path) -> str:
    try:
        return dataset_fingerprint(path)
    except DatasetError as exc:
        raise EvaluationError(str(exc)) from None


@contextlib.contextmanager
def run_lock(out_dir: Path) -> Iterator[None]:
    """Hold `out_dir/run.lock` exclusively for the block (POSIX `flock`; no lock elsewhere).

    Raises:
        EvaluationError: Another process holds it (a run on the same directory is going on).
    """

    def busy(holder: str) -> EvaluationError:
        return EvaluationError(
            f"{out_dir} is in use by another run (pid {holder}); wait for it or use another --out"
        )

    with exclusive_lock(out_dir / LOCK_FILE, busy):
        yield


def read_settings(out_dir: Path) -> dict[str, Any]:
    """Return the run's stored `settings.json`."""
    path = out_dir / SETTINGS_FILE
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EvaluationError(f"cannot read {path}: {exc}") from None
    if not isinstance(stored, dict):
        raise EvaluationError(f"{path}: expected a JSON object")
    return stored


def _check_settings(out_dir: Path, wanted: Mapping[str, Any]) -> None:
    stored = read_settings(out_dir)
    keys = sorted((set(stored) | set(wanted)) - _INFORMATIONAL_SETTINGS)
    diffs = [
        f"{k}: {stored.get(k)!r} there, {wanted.get(k)!r} now"
        for k in keys
        if stored.get(k) != wanted.get(k)
    ]
    if diffs:
        raise EvaluationError(
            f"{out_dir} was made with different settings ({'; '.join(diffs)});"
            " use another --out directory or the original settings"
        )


def _case_record(case: EvalCase) -> dict[str, Any]:
    return {
        "user_id": case.user_id,
        "target_id": case.target_id,
        "candidates": [item.item_id for item in case.candidates],
        "history": [item.item_id for item in case.history],
    }


def _ids(value: Any, key: str, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise EvaluationError(f"{where}: {key!r} must be a list of item ids")
    return cast(list[str], value)


def _case_from_record(record: Any, dataset: Dataset, where: str) -> EvalCase:
    if not isinstance(record, dict):
        raise EvaluationError(f"{where}: expected a JSON object")
    user_id, target_id = record.get("user_id"), record.get("target_id")
    if not isinstance(user_id, str) or not isinstance(target_id, str):
        raise EvaluationError(f"{where}: missing 'user_id' or 'target_id'")
    candidates = _ids(record.get("candidates"), "candidates", where)
    history = _ids(record.get("history"), "history", where)
    unknown = [i for i in [*candidates, *history] if i not in dataset.items]
    if unknown:
        raise EvaluationError(f"{where}: item {unknown[0]!r} is not in dataset {dataset.name!r}")
    if target_id not in candidates:
        raise EvaluationError(f"{where}: the target {target_id!r} is not among the candidates")
    return EvalCase(
        user_id=user_id,
        history=[dataset.items[i] for i in history],
        candidates=[dataset.items[i] for i in candidates],
        target_id=target_id,
    )


def read_cases(path: Path, dataset: Dataset) -> list[EvalCase]:
    """Read `candidates.jsonl` back into cases (items taken from `dataset`)."""
    cases: list[EvalCase] = []
    with path.open(encoding="utf-8") as handle:
        for where, record in json_lines(handle, path, EvaluationError):
            cases.append(_case_from_record(record, dataset, where))
    if not cases:
        raise EvaluationError(f"{path}: no cases")
    return cases


def prepare_cases(settings: EvalSettings, dataset: Dataset, out_dir: Path) -> list[EvalCase]:
    """Return the run's cases: read from `out_dir` when it has them, else built and written there.

    `settings.json` is written before `candidates.jsonl` (atomically, both), so a
    crash in between leaves settings without candidates, which are rebuilt.

    Raises:
        EvaluationError: `out_dir` was made with other settings, or holds
            candidates without settings, or a malformed candidates file.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    wanted = settings_record(settings, dataset)
    settings_path, candidates_path = out_dir / SETTINGS_FILE, out_dir / CANDIDATES_FILE
    if settings_path.exists():
        _check_settings(out_dir, wanted)
    elif candidates_path.exists():
        raise EvaluationError(
            f"{candidates_path} exists without {SETTINGS_FILE}: its settings are unknown;"
            " use another --out directory"
        )
    else:
        atomic_write_text(settings_path, json.dumps(wanted, indent=2) + "\n")
    if candidates_path.exists():
        return read_cases(candidates_path, dataset)
    cases = build_requests(
        dataset,
        n_users=settings.users,
        n_negatives=settings.negatives,
        seed=settings.seed,
        sampling=settings.sampling,
    )
    lines = "".join(json.dumps(_case_record(c), ensure_ascii=False) + "\n" for c in cases)
    atomic_write_text(candidates_path, lines)
    return cases


def read_results(path: Path) -> dict[ResultKey, dict[str, Any]]:
    """Return the finished (method, slice, user_id) triples of `results.jsonl` and their records.

    A last line without its newline is what a crash mid-write leaves: it is cut
    off the file (and so recomputed). The first record of a triple wins.

    Raises:
        EvaluationError: A complete line is not a valid result record.
    """
    results: dict[ResultKey, dict[str, Any]] = {}
    lines = complete_lines(path)
    for where, record in json_lines(lines, path, EvaluationError, "; fix or delete the line"):
        if not (
            isinstance(record, dict)
            and all(isinstance(record.get(k), str) for k in ("method", "slice", "user_id"))
            and isinstance(record.get("rank"), int)
        ):
            raise EvaluationError(f"{where}: not a result record (method, slice, user_id, rank)")
        results.setdefault((record["method"], record["slice"], record["user_id"]), record)
    return results


def append_result(handle: TextIO, record: Mapping[str, Any]) -> None:
    """Append one result line and flush it, so it survives the process being killed right after."""
    handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    handle.flush()
