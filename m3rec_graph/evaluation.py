"""The offline evaluation harness: fixed candidate sets, resumable per-user results, a report.

A run lives in one directory, used by one process at a time (`run.lock`, below):

* `settings.json`: what the candidate sets were built from (dataset fingerprint,
  users, negatives, seed, cold start) and the routing of the m3rec method. A run
  directory is never reused with other settings: `prepare_cases` refuses.
* `candidates.jsonl`: one line per user (`user_id`, `target_id`, `candidates`,
  `history`, all item ids), written once and read back on every later run, so
  every method is scored on the same candidates in the same shown order.
* `results.jsonl`: one line per (method, user), appended as soon as that user is
  done. A restarted run skips the pairs already there, so a crash loses at most
  the user in flight.
* `traits.sqlite`: the m3rec trait cache (MOTE results shared across users).
* `report.md`: the per-method tables `format_report` renders.
* `run.lock`: held (an exclusive `flock`) for the whole run, so a second process on
  the same directory is refused instead of recomputing and appending the same
  pairs. The kernel drops the lock when its process dies, even by SIGKILL, so a
  rerun after a crash is never blocked by a stale lock.

No method sees `EvalCase.target_id`: the baselines get the case, the graph gets
`EvalCase.to_request()` (history and shuffled candidates only). The target is used
only afterwards, to find its rank.
"""

import asyncio
import contextlib
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, cast

if sys.platform != "win32":
    import fcntl

from m3rec_graph.baselines import (
    PopularityBaseline,
    RandomBaseline,
    Ranker,
    TextSimilarityBaseline,
)
from m3rec_graph.cache import SqliteTraitCache
from m3rec_graph.context import ABLATIONS, Ablation, M3RecContext
from m3rec_graph.datasets import (
    INTERACTIONS_FILE,
    ITEMS_FILE,
    Dataset,
    EvalCase,
    build_requests,
    load_dataset,
)
from m3rec_graph.errors import M3RecError
from m3rec_graph.graph import build_graph
from m3rec_graph.jsonl import json_lines
from m3rec_graph.metrics import (
    DEFAULT_K,
    MetricSummary,
    metric_names,
    rank_of,
    summarise,
    user_metrics,
)
from m3rec_graph.models import ChatModelFactory, openai_chat_model
from m3rec_graph.prompts import load_prompt
from m3rec_graph.routing import PRESETS, context_for
from m3rec_graph.runner import flush_traces, serving
from m3rec_graph.state import RecInput

METHODS: tuple[str, ...] = ("random", "popularity", "text", "m3rec")
"""The methods the harness knows, in report order."""

SETTINGS_FILE = "settings.json"
CANDIDATES_FILE = "candidates.jsonl"
RESULTS_FILE = "results.jsonl"
REPORT_FILE = "report.md"
TRAITS_FILE = "traits.sqlite"
LOCK_FILE = "run.lock"
SETTINGS_FORMAT = 1

_INFORMATIONAL_SETTINGS = frozenset({"dataset_path"})
"""Recorded for the reader but not compared: the same data may move to another path."""

Serving = Callable[[M3RecContext], AbstractContextManager[None]]


class EvaluationError(M3RecError, ValueError):
    """Bad harness input or a run directory that does not fit the request (CLI exit code 2)."""


@dataclass(frozen=True, kw_only=True)
class EvalSettings:
    """Everything that determines a run's candidate sets and m3rec routing."""

    dataset: Path
    """The dataset directory (`interactions.csv` + `items.jsonl`)."""
    users: int
    negatives: int
    seed: int = 0
    """Seeds the user sample, the negatives, the random baseline and the graph's display order."""
    cold_start: int | None = None
    """Keep only the last `cold_start` history items (None: the whole history)."""
    routing: str = "local"
    """Routing preset of the m3rec method."""
    ablation: Ablation = "none"
    """The m3rec configuration (`M3RecContext.ablation`): `none` is the full pipeline."""

    def validate(self) -> None:
        """Raise `EvaluationError` for a setting no run could use."""
        if self.users < 1:
            raise EvaluationError(f"--users must be >= 1, got {self.users}")
        if self.negatives < 1:
            raise EvaluationError(f"--negatives must be >= 1, got {self.negatives}")
        if self.cold_start is not None and self.cold_start < 1:
            raise EvaluationError(f"--cold-start must be >= 1, got {self.cold_start}")
        if self.routing not in PRESETS:
            raise EvaluationError(
                f"unknown routing preset {self.routing!r}; choose one of {', '.join(PRESETS)}"
            )
        if self.ablation not in ABLATIONS:
            raise EvaluationError(
                f"unknown ablation {self.ablation!r}; choose one of {', '.join(ABLATIONS)}"
            )
        if not self.dataset.is_dir():
            raise EvaluationError(f"dataset directory not found: {self.dataset}")


def parse_methods(text: str) -> list[str]:
    """Parse a comma-separated method list such as `random,popularity,m3rec` (order kept, no repeats).

    Raises:
        EvaluationError: The list is empty or names an unknown method.
    """
    methods = list(dict.fromkeys(m.strip().lower() for m in text.split(",") if m.strip()))
    if not methods:
        raise EvaluationError("no methods given; choose from " + ", ".join(METHODS))
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise EvaluationError(f"unknown method {unknown[0]!r}; choose from {', '.join(METHODS)}")
    return methods


# --------------------------------------------------------------------------- run directory


def dataset_fingerprint(path: Path) -> str:
    """Return a sha256 over the dataset's two files, so a changed dataset is noticed."""
    digest = hashlib.sha256()
    for name in (INTERACTIONS_FILE, ITEMS_FILE):
        file = path / name
        if not file.is_file():
            raise EvaluationError(f"dataset file not found: {file}")
        digest.update(name.encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def settings_record(settings: EvalSettings, dataset: Dataset) -> dict[str, Any]:
    """Return the `settings.json` content for `settings` (the dataset identified by content)."""
    return {
        "format": SETTINGS_FORMAT,
        "dataset_name": dataset.name,
        "dataset_sha256": dataset_fingerprint(settings.dataset),
        "dataset_path": str(settings.dataset.resolve()),
        "users": settings.users,
        "negatives": settings.negatives,
        "seed": settings.seed,
        "cold_start": settings.cold_start,
        "routing": settings.routing,
        # Only when set, so run directories made before ablations existed still match.
        **({"ablation": settings.ablation} if settings.ablation != "none" else {}),
    }


@contextlib.contextmanager
def run_lock(out_dir: Path) -> Iterator[None]:
    """Hold `out_dir/run.lock` exclusively for the block (POSIX `flock`; no lock elsewhere).

    Raises:
        EvaluationError: Another process holds it (a run on the same directory is going on).
    """
    if sys.platform == "win32":  # no flock: run unlocked, as before
        yield
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / LOCK_FILE).open("a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise EvaluationError(
                f"{out_dir} is in use by another run (pid {holder}); wait for it or use another --out"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _check_settings(out_dir: Path, wanted: dict[str, Any]) -> None:
    path = out_dir / SETTINGS_FILE
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EvaluationError(f"cannot read {path}: {exc}") from None
    if not isinstance(stored, dict):
        raise EvaluationError(f"{path}: expected a JSON object")
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
        _write_atomically(settings_path, json.dumps(wanted, indent=2) + "\n")
    if candidates_path.exists():
        return read_cases(candidates_path, dataset)
    cases = build_requests(
        dataset,
        n_users=settings.users,
        n_negatives=settings.negatives,
        seed=settings.seed,
        cold_start=settings.cold_start,
    )
    lines = "".join(json.dumps(_case_record(c), ensure_ascii=False) + "\n" for c in cases)
    _write_atomically(candidates_path, lines)
    return cases


def read_results(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """Return the finished (method, user_id) pairs of `results.jsonl` and their records.

    A last line without its newline is what a crash mid-write leaves: it is cut
    off the file (and so recomputed). The first record of a pair wins.

    Raises:
        EvaluationError: A complete line is not a valid result record.
    """
    if not path.exists():
        return {}
    data = path.read_bytes()
    complete = data.rfind(b"\n") + 1
    if complete < len(data):
        with path.open("r+b") as handle:
            handle.truncate(complete)
    results: dict[tuple[str, str], dict[str, Any]] = {}
    lines = data[:complete].decode("utf-8").splitlines()
    for where, record in json_lines(lines, path, EvaluationError, "; fix or delete the line"):
        if not (
            isinstance(record, dict)
            and isinstance(record.get("method"), str)
            and isinstance(record.get("user_id"), str)
            and isinstance(record.get("rank"), int)
        ):
            raise EvaluationError(f"{where}: not a result record (method, user_id, rank)")
        results.setdefault((record["method"], record["user_id"]), record)
    return results


# --------------------------------------------------------------------------- methods


class _Progress:
    """`method n/N` lines on a stream, at most about twice a second (always the last)."""

    def __init__(self, stream: TextIO, method: str, total: int) -> None:
        self.stream, self.method, self.total = stream, method, total
        self.last = -math.inf

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        if done == self.total or now - self.last >= 0.5:
            self.last = now
            print(f"{self.method} {done}/{self.total}", file=self.stream, flush=True)


def _checked_rank(case: EvalCase, ranking: Sequence[str], method: str) -> int:
    if sorted(ranking) != sorted(item.item_id for item in case.candidates):
        raise RuntimeError(
            f"{method} returned a ranking that is not a permutation of user {case.user_id!r}'s candidates"
        )
    return rank_of(case.target_id, ranking)


def _record(method: str, case: EvalCase, ranking: Sequence[str], seconds: float) -> dict[str, Any]:
    return {
        "method": method,
        "user_id": case.user_id,
        "rank": _checked_rank(case, ranking, method),
        "n_candidates": len(case.candidates),
        "ranking": list(ranking),
        "seconds": round(seconds, 6),
    }


def _append(handle: TextIO, record: Mapping[str, Any]) -> None:
    handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    handle.flush()


def _run_ranker(
    method: str,
    ranker: Ranker,
    todo: Sequence[EvalCase],
    handle: TextIO,
    progress: _Progress,
    done: int,
) -> None:
    for case in todo:
        started = time.perf_counter()
        ranking = ranker.rank(case)
        _append(handle, _record(method, case, ranking, time.perf_counter() - started))
        done += 1
        progress(done)


def _prompt_versions(ctx: M3RecContext) -> dict[str, str]:
    names = ("mope", "mote", f"mar_{ctx.mar_mode}")
    return {
        name: load_prompt(name, ctx.prompt_overrides.get(name)).version  # type: ignore[arg-type]
        for name in names
    }


def _run_m3rec(
    todo: Sequence[EvalCase],
    handle: TextIO,
    progress: _Progress,
    done: int,
    *,
    ctx: M3RecContext,
    chat_models: ChatModelFactory,
    trait_cache_path: Path,
    serve: Serving,
) -> None:
    graph = build_graph(chat_models=chat_models, trait_cache=SqliteTraitCache(trait_cache_path))
    prompts = _prompt_versions(ctx)

    async def run_all() -> None:
        nonlocal done
        for case in todo:
            started = time.perf_counter()
            out: dict[str, Any] = await graph.ainvoke(
                cast(RecInput, case.to_request()), context=ctx
            )
            seconds = time.perf_counter() - started
            total = out["usage"].total
            record = _record("m3rec", case, [entry.item_id for entry in out["ranking"]], seconds)
            record.update(
                llm_calls=total.calls,
                input_tokens=total.input_tokens,
                output_tokens=total.output_tokens,
                total_tokens=total.input_tokens + total.output_tokens,
                cost_usd=total.cost_usd,
                degraded=len(out["degraded"]),
                routing=ctx.routing,
                prompts=prompts,
            )
            _append(handle, record)
            done += 1
            progress(done)

    with serve(ctx):
        try:
            asyncio.run(run_all())
        finally:
            flush_traces()


# --------------------------------------------------------------------------- report


@dataclass(frozen=True)
class MethodReport:
    """One method's summary over the users it has results for."""

    method: str
    users: int
    metrics: dict[str, MetricSummary]
    seconds_per_user: float
    llm: dict[str, float | None] = field(default_factory=dict)
    """m3rec only: mean tokens, cost, calls per user and the degraded rates."""


def chance_metrics(n_candidates: int, k_list: Sequence[int] = DEFAULT_K) -> dict[str, float]:
    """Return the expected metrics of a uniformly random ranking of `n_candidates` items."""
    names = metric_names(k_list)
    per_rank = [user_metrics(r, k_list) for r in range(1, n_candidates + 1)]
    return {name: sum(m[name] for m in per_rank) / n_candidates for name in names}


def _mean(values: Iterable[float]) -> float:
    items = list(values)
    return sum(items) / len(items) if items else math.nan


def summarise_method(
    method: str, records: Sequence[Mapping[str, Any]], *, n_boot: int = 2000, seed: int = 0
) -> MethodReport:
    """Summarise one method's result records (metrics with bootstrap CIs, cost, speed)."""
    llm: dict[str, float | None] = {}
    if records and all("total_tokens" in r for r in records):
        costs = [r.get("cost_usd") for r in records]
        llm = {
            "tokens_per_user": _mean(float(r["total_tokens"]) for r in records),
            "cost_per_user_usd": None
            if any(c is None for c in costs)
            else _mean(float(cast(float, c)) for c in costs),
            "calls_per_user": _mean(float(r["llm_calls"]) for r in records),
            "degraded_user_rate": _mean(1.0 if r["degraded"] else 0.0 for r in records),
            "degraded_per_user": _mean(float(r["degraded"]) for r in records),
        }
    return MethodReport(
        method=method,
        users=len(records),
        metrics=summarise([int(r["rank"]) for r in records], DEFAULT_K, n_boot=n_boot, seed=seed),
        seconds_per_user=_mean(float(r["seconds"]) for r in records),
        llm=llm,
    )


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:.{digits}f}"


def format_method(report: MethodReport, n_candidates: int) -> str:
    """Render one method's markdown table."""
    chance = chance_metrics(n_candidates)
    lines = [
        f"## {report.method} ({report.users} users)",
        "",
        "| metric | mean | 95% CI | chance |",
        "|---|---|---|---|",
    ]
    for name, s in report.metrics.items():
        lines.append(
            f"| {name} | {s.mean:.4f} | [{s.low:.4f}, {s.high:.4f}] | {chance[name]:.4f} |"
        )
    if report.llm:
        llm = report.llm
        rows = [
            ("tokens/user", _fmt(llm["tokens_per_user"], 1)),
            ("cost/user (USD)", _fmt(llm["cost_per_user_usd"], 6)),
            ("LLM calls/user", _fmt(llm["calls_per_user"], 2)),
            ("users with degraded results", _fmt(llm["degraded_user_rate"], 3)),
            ("degraded results/user", _fmt(llm["degraded_per_user"], 2)),
        ]
        lines += [f"| {name} | {value} | | |" for name, value in rows]
    seconds = report.seconds_per_user
    lines.append(f"| seconds/user | {seconds:.3g} | | |")
    return "\n".join(lines)


def format_report(
    settings: Mapping[str, Any], reports: Sequence[MethodReport], *, n_boot: int
) -> str:
    """Render the markdown report: the run's settings, then one table per method."""
    n_candidates = int(settings["negatives"]) + 1
    cold = settings.get("cold_start")
    head = [
        f"# Evaluation on {settings['dataset_name']}",
        "",
        f"{settings['users']} users requested; {n_candidates} candidates per user"
        f" (the held-out last item + {settings['negatives']} unseen negatives); seed {settings['seed']};"
        f" history: {'last ' + str(cold) + ' items' if cold else 'full'}; m3rec routing"
        f" `{settings['routing']}`.",
        f"95% CIs: percentile bootstrap over users ({n_boot} resamples)."
        " Chance: the expected value of a uniformly random ranking.",
    ]
    body = [format_method(r, n_candidates) for r in reports]
    return "\n\n".join(["\n".join(head), *body]) + "\n"


# --------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class EvalRun:
    """What `run_evaluation` did: the cases, per-method summaries and the report text."""

    out_dir: Path
    cases: list[EvalCase]
    computed: dict[str, int]
    """Method -> users computed by this call (the rest were already in results.jsonl)."""
    reports: list[MethodReport]
    report: str


def run_evaluation(
    settings: EvalSettings,
    methods: Sequence[str],
    out_dir: Path,
    *,
    chat_models: ChatModelFactory = openai_chat_model,
    serve: Serving = serving,
    progress: TextIO | None = None,
    n_boot: int = 2000,
) -> EvalRun:
    """Score `methods` on the run's fixed cases, resuming from `out_dir`, and write `report.md`.

    Args:
        settings: The run's settings (checked against `out_dir`'s).
        methods: Names from `METHODS`.
        out_dir: The run directory (created if needed).
        chat_models: Chat model factory of the m3rec graph (inject fakes in tests).
        serve: Context manager that makes the routed models reachable (default:
            `runner.serving`, which starts the local server for the local preset).
        progress: Where `method n/N` lines go (default: stderr).
        n_boot: Bootstrap resamples of the confidence intervals.

    Raises:
        EvaluationError: Bad settings or methods, a run directory that does not fit,
            or one another process is running in.
        DatasetError: The dataset is malformed.
    """
    settings.validate()
    methods = parse_methods(",".join(methods))
    dataset = load_dataset(settings.dataset)
    with run_lock(out_dir):
        return _run_locked(
            settings, methods, dataset, out_dir, chat_models, serve, progress, n_boot
        )


def _run_locked(
    settings: EvalSettings,
    methods: Sequence[str],
    dataset: Dataset,
    out_dir: Path,
    chat_models: ChatModelFactory,
    serve: Serving,
    progress: TextIO | None,
    n_boot: int,
) -> EvalRun:
    stream = progress if progress is not None else sys.stderr
    cases = prepare_cases(settings, dataset, out_dir)
    results_path = out_dir / RESULTS_FILE
    done = read_results(results_path)
    computed: dict[str, int] = {}
    with results_path.open("a", encoding="utf-8") as handle:
        for method in methods:
            todo = [c for c in cases if (method, c.user_id) not in done]
            computed[method] = len(todo)
            already = len(cases) - len(todo)
            bar = _Progress(stream, method, len(cases))
            if not todo:
                bar(already)
                continue
            if method == "m3rec":
                _run_m3rec(
                    todo,
                    handle,
                    bar,
                    already,
                    ctx=context_for(settings.routing, seed=settings.seed, ablation=settings.ablation),
                    chat_models=chat_models,
                    trait_cache_path=out_dir / TRAITS_FILE,
                    serve=serve,
                )
            else:
                ranker: Ranker
                if method == "random":
                    ranker = RandomBaseline(settings.seed)
                elif method == "text":
                    ranker = TextSimilarityBaseline.from_dataset(dataset)
                else:
                    ranker = PopularityBaseline.from_dataset(dataset)
                _run_ranker(method, ranker, todo, handle, bar, already)

    results = read_results(results_path)
    present = {m for m, _ in results}
    order = [*methods, *(m for m in METHODS if m in present and m not in methods)]
    reports = []
    for method in order:
        records = [results[(method, c.user_id)] for c in cases if (method, c.user_id) in results]
        if records:
            reports.append(summarise_method(method, records, n_boot=n_boot, seed=settings.seed))
    stored = json.loads((out_dir / SETTINGS_FILE).read_text(encoding="utf-8"))
    report = format_report(stored, reports, n_boot=n_boot)
    _write_atomically(out_dir / REPORT_FILE, report)
    return EvalRun(out_dir=out_dir, cases=cases, computed=computed, reports=reports, report=report)


__all__ = [
    "METHODS",
    "EvalRun",
    "EvalSettings",
    "EvaluationError",
    "MethodReport",
    "chance_metrics",
    "format_report",
    "parse_methods",
    "prepare_cases",
    "read_cases",
    "read_results",
    "run_evaluation",
    "run_lock",
    "summarise_method",
]
