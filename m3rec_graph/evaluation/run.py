"""Run an evaluation: fixed cases, each (method, slice) pass resumed from the run directory, then the report."""

import json
import sys
import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, TextIO, cast

from langgraph.store.base import BaseStore

from m3rec_graph._internal.atomic import atomic_write_text
from m3rec_graph.errors import ConfigurationError
from m3rec_graph.evaluation.baselines import Ranker
from m3rec_graph.evaluation.breakdowns import (
    BucketReport,
    PairedGain,
    breakdowns_document,
    format_breakdowns,
    history_breakdown,
    paired_gains,
)
from m3rec_graph.evaluation.datasets import EvalCase, load_dataset
from m3rec_graph.evaluation.langsmith_pass import run_langsmith_pass
from m3rec_graph.evaluation.methods import (
    MethodEnv,
    Serving,
    env_context,
    fused_graph_config,
    fused_priors,
    m3rec_graph_for,
    m3rec_scorer,
    make_ranker,
    ranker_scorer,
    run_m3rec,
    run_ranker,
)
from m3rec_graph.evaluation.progress import ProgressBar
from m3rec_graph.evaluation.report import (
    REPORT_FILE,
    RESULTS_JSON,
    MethodReport,
    chance_metrics,
    format_report,
    results_document,
    summarise_method,
    write_plots,
)
from m3rec_graph.evaluation.run_models import check_and_record_models, resolved_models
from m3rec_graph.evaluation.run_store import check_store_for_engine, record_store, run_store_url
from m3rec_graph.evaluation.settings import (
    EvalSettings,
    EvalSlice,
    EvaluationError,
    MethodSpec,
    slices_for,
)
from m3rec_graph.evaluation.sharded import EvalEngine, ShardedUsers
from m3rec_graph.evaluation.store import (
    RESULTS_FILE,
    prepare_cases,
    read_results,
    read_settings,
    run_lock,
)
from m3rec_graph.fusion import SHIPPED_FUSION, FusionConfig, load_fusion_config
from m3rec_graph.integrations.runner import serving
from m3rec_graph.llm.factory import ChatModelFactory, openai_chat_model
from m3rec_graph.prompts.loader import PromptName, load_prompt
from m3rec_graph.state import M3RecGraph
from m3rec_graph.storage.store import open_store

HARNESS_PROMPTS = ("mope", "mote", "mar_listwise")
"""The stage prompts the harness's m3rec methods use (MAR runs listwise), so the ones `prompt_overrides` may replace."""


@dataclass(frozen=True)
class EvalRun:
    """What `run_evaluation` did: the cases, per-slice summaries and the report text."""

    out_dir: Path
    cases: list[EvalCase]
    computed: dict[tuple[str, str], int]
    """(method, slice) -> users computed by this call (the rest were already in results.jsonl)."""
    reports: dict[str, list[MethodReport]]
    """Slice name -> one summary per method with results on that slice."""
    report: str
    plots: list[str]
    experiments: dict[str, dict[str, Any]]
    """`method [slice]` -> the LangSmith experiment's name, URL and metric means (with `langsmith=True`)."""


def run_evaluation(
    settings: EvalSettings,
    methods: Sequence[MethodSpec],
    out_dir: Path,
    *,
    cold_start: int | None = None,
    concurrency: int = 2,
    chat_models: ChatModelFactory = openai_chat_model,
    serve: Serving = serving,
    progress: TextIO | None = None,
    n_boot: int = 2000,
    sasrec_config: Any = None,
    plots: bool = True,
    langsmith: bool = False,
    prompt_overrides: Mapping[str, str] | None = None,
    fusion: Path | None = None,
    allow_sampling_mismatch: bool = False,
    fit_users: int | None = None,
    engine: EvalEngine | None = None,
    report_only: bool = False,
    store: str | None = None,
    allow_retired: bool = False,
) -> EvalRun:
    """Score `methods` on the run's fixed cases (full history, and a cold-start slice), resuming from `out_dir`.

    Args:
        settings: The candidate-set settings (checked against `out_dir`'s).
        methods: From `parse_methods`.
        out_dir: The run directory (created if needed).
        cold_start: Also score every method with only the last `cold_start` history items.
        concurrency: Users in flight at once for m3rec methods (per worker with a
            `ray` engine).
        chat_models: Chat model factory of the m3rec graph (inject fakes in tests).
        serve: Makes the routed models reachable (default: starts the local server
            for the local preset).
        progress: Where progress lines go (default: stderr).
        n_boot: Bootstrap resamples of the confidence intervals.
        sasrec_config: A `SASRecConfig` for the sasrec method (default: its defaults).
        plots: Draw `metrics.png` (and `cold_vs_full.png`) when matplotlib is installed.
        langsmith: Run every (method, slice) as a LangSmith experiment on an uploaded
            dataset (needs `LANGSMITH_API_KEY`; see `langsmith_pass`).
        prompt_overrides: Stage prompt name (`mope`, `mote`, `mar_listwise`) -> a prompt
            file to use instead of the shipped one, for every m3rec method
            (`M3RecContext.prompt_overrides`). Each result line records the prompt
            versions it was made with. Results are keyed by method, slice and user,
            not by prompt, so give each prompt variant its own `out_dir` (the same
            settings draw the same candidates) and compare the reports.
        fusion: A fusion config file for every fused method (None: fit on validation).
        allow_sampling_mismatch: Use `fusion` even when fit under another sampling.
        fit_users: A fused graph method (`m3rec...:fused`) fits on the validation
            cases of the run's first `fit_users` users only (None: all of them).
        engine: Where the m3rec methods' users run (None: `local`, in this process).
            With `ray`, they are sharded across `engine.workers` Ray actors
            (`sharded`); the baselines, the fused methods' priors and validation fit,
            the lock, results and progress stay in this process.
        report_only: Compute nothing: report the users that every one of `methods`
            has finished on every slice (an interrupted run's interim, paired figures;
            the report says how many of the run's users that is).
        store: The store URL the m3rec methods cache item traits and shopper profiles
            in, for the local graph and every Ray worker alike (`memory:`,
            `sqlite:///PATH`, `postgresql://...`; None: `out_dir`'s store.sqlite). A
            cache shared across runs, so results do not depend on it (`run_store`);
            `store.json` records it, credentials redacted.
        allow_retired: Let a method's model past its shutdown date run, against an
            endpoint that still serves it (`M3RecContext.allow_retired`); without it
            such a method is refused before any call (`ModelRetiredError`).

    Raises:
        EvaluationError: Bad settings or methods, a run directory that does not fit,
            or one another process is running in; `memory:` with a `ray` engine.
        StoreURLError: A malformed `store` URL (a `ConfigurationError`).
        ConfigurationError: The store cannot be opened (checked before any model call).
        MethodModelsChangedError: An m3rec method of `out_dir` now resolves to other
            models than its results were made with (see `run_models`; also an
            `EvaluationError` and a `ConfigurationError`).
        DatasetError: The dataset is malformed.
        EngineError: With a `ray` engine, Ray could not start or a worker died (what
            finished is in `results.jsonl`; rerun to resume).
    """
    settings.validate()
    if not methods:
        raise EvaluationError("no methods given")
    if concurrency < 1:
        raise EvaluationError(f"--concurrency must be >= 1, got {concurrency}")
    if n_boot < 0:
        raise EvaluationError(f"--n-boot must be >= 0, got {n_boot}")
    if fit_users is not None and fit_users < 1:
        raise EvaluationError(f"--fit-users must be >= 1, got {fit_users}")
    engine = engine or EvalEngine()
    engine.validate()
    if langsmith and engine.kind == "ray":
        raise EvaluationError("--langsmith runs its experiments in this process: not with --engine ray")
    store_url = run_store_url(out_dir, store)
    check_store_for_engine(store_url, engine.kind)
    overrides = _checked_prompt_overrides(prompt_overrides or {})
    fusion_config = _checked_fusion(fusion)
    slices = slices_for(cold_start)
    dataset = load_dataset(settings.dataset)
    with run_lock(out_dir):
        cases = prepare_cases(settings, dataset, out_dir)
        env = MethodEnv(
            dataset=dataset,
            dataset_path=settings.dataset,
            out_dir=out_dir,
            store_url=store_url,
            seed=settings.seed,
            stream=progress if progress is not None else sys.stderr,
            chat_models=chat_models,
            serve=serve,
            concurrency=concurrency,
            sasrec_config=sasrec_config,
            prompt_overrides=overrides,
            cases=cases,
            sampling=settings.sampling,
            fusion_config=fusion_config,
            fusion_source=str(fusion) if fusion is not None else "",
            allow_sampling_mismatch=allow_sampling_mismatch,
            fit_users=fit_users,
            allow_retired=allow_retired,
        )
        if report_only:
            return _interim_report(out_dir, cases, methods, slices, n_boot=n_boot, plots=plots)
        computed, wall, experiments = _score(
            methods, slices, cases, env, langsmith=langsmith, engine=engine
        )
        return _report(
            out_dir, cases, methods, slices, computed, wall, experiments, n_boot=n_boot, plots=plots
        )


def _interim_report(
    out_dir: Path,
    cases: Sequence[EvalCase],
    methods: Sequence[MethodSpec],
    slices: Sequence[EvalSlice],
    *,
    n_boot: int,
    plots: bool,
) -> EvalRun:
    """The report of `report_only`: the users every method finished on every slice, and how many.

    Restricting every method to the same users keeps the comparison paired, as in a
    finished run; the other methods' extra users would otherwise enter their figures.

    Raises:
        EvaluationError: No user is finished by every method.
    """
    results = read_results(out_dir / RESULTS_FILE)
    finished = [
        c
        for c in cases
        if all((m.key, s.name, c.user_id) in results for m in methods for s in slices)
    ]
    if not finished:
        raise EvaluationError(
            f"--report-only: no user of {out_dir} is finished by every one of "
            f"{', '.join(m.key for m in methods)}"
        )
    run = _report(out_dir, finished, methods, slices, {}, {}, {}, n_boot=n_boot, plots=plots)
    note = (
        f"Interim report (--report-only): the {len(finished)} of the run's {len(cases)} users"
        f" that {', '.join(m.key for m in methods)} all finished; rerun without it to resume.\n\n"
    )
    atomic_write_text(out_dir / REPORT_FILE, note + run.report)
    return replace(run, report=note + run.report)


def _checked_prompt_overrides(overrides: Mapping[str, str]) -> dict[str, str]:
    """Return `overrides` as a dict after loading every file, so a bad name or file fails before the run."""
    for name, path in overrides.items():
        if name not in HARNESS_PROMPTS:
            raise EvaluationError(
                f"cannot override prompt {name!r}: the harness uses {', '.join(HARNESS_PROMPTS)}"
            )
        try:
            load_prompt(cast(PromptName, name), path)
        except ConfigurationError as exc:
            raise EvaluationError(str(exc)) from None
    return dict(overrides)


def _checked_fusion(path: Path | None) -> FusionConfig | None:
    """Load `--fusion` before anything runs (None: every fused method fits its weights on validation)."""
    if path is None:
        return None
    try:  # a shipped config's name (`local`, `default`) or a file
        return load_fusion_config(SHIPPED_FUSION.get(str(path), path))
    except ConfigurationError as exc:
        raise EvaluationError(str(exc)) from None


def _score(
    methods: Sequence[MethodSpec],
    slices: Sequence[EvalSlice],
    cases: Sequence[EvalCase],
    env: MethodEnv,
    *,
    langsmith: bool,
    engine: EvalEngine,
) -> tuple[dict[tuple[str, str], int], dict[str, float], dict[str, dict[str, Any]]]:
    results_path = env.out_dir / RESULTS_FILE
    done = read_results(results_path)
    settings = read_settings(env.out_dir)
    # Before anything runs: a method whose preset now routes to other models is refused.
    llm_methods = {
        spec: resolved_models(env_context(spec, env))
        for spec in methods
        if spec.kind == "m3rec"
    }
    check_and_record_models(env.out_dir, llm_methods, done)
    computed: dict[tuple[str, str], int] = {}
    wall: dict[str, float] = {}
    experiments: dict[str, dict[str, Any]] = {}
    graph: M3RecGraph | None = None
    fused = any(s.kind == "m3rec" and s.fused for s in methods)

    store: BaseStore | None = None

    def local_graph() -> M3RecGraph:
        nonlocal graph
        assert store is not None  # opened below whenever an m3rec method is listed
        graph = graph or m3rec_graph_for(env, store, fused=fused)
        return graph

    with ExitStack() as stores, results_path.open("a", encoding="utf-8") as handle:
        if llm_methods:
            # Opened before anything runs, so an unreachable store fails before any model call.
            store = stores.enter_context(open_store(env.store_url))
            record_store(env.out_dir, env.store_url)
        sharded = ShardedUsers(env, engine, fused=fused) if engine.kind == "ray" else None
        if sharded is not None:
            stores.callback(sharded.close)
        for spec in methods:
            ranker = None
            for slice_ in slices:
                label = f"{spec.key} [{slice_.name}]"
                todo = [
                    slice_.apply(c) for c in cases if (spec.key, slice_.name, c.user_id) not in done
                ]
                computed[(spec.key, slice_.name)] = len(todo)
                bar = ProgressBar(env.stream, label, len(cases), len(cases) - len(todo))
                if not todo and not langsmith:
                    bar.render(force=True)
                    continue
                started = time.perf_counter()
                if sharded is not None and spec.kind == "m3rec":
                    # Only the validation fit of a fused method runs the driver's own graph.
                    fusion = fused_graph_config(spec, env, local_graph)
                    priors = fused_priors(spec, env, todo)
                    sharded.run(spec, slice_, todo, handle, bar, fusion, priors)
                    wall[label] = round(time.perf_counter() - started, 3)
                    continue
                if spec.kind == "m3rec":
                    local_graph()
                else:
                    ranker = ranker or make_ranker(spec, env)
                if langsmith:
                    scorer = (
                        m3rec_scorer(
                            spec,
                            slice_,
                            graph,
                            env.seed,
                            env.prompt_overrides,
                            fused_graph_config(spec, env, local_graph),
                            allow_retired=env.allow_retired,
                        )
                        if graph is not None and spec.kind == "m3rec"
                        else ranker_scorer(spec, cast(Ranker, ranker), slice_)
                    )
                    sliced = [slice_.apply(c) for c in cases]
                    summary = run_langsmith_pass(
                        spec, slice_, sliced, done, handle, bar, env, scorer, settings
                    )
                    experiments[label] = asdict(summary)
                    bar.render(force=True)
                elif graph is not None and spec.kind == "m3rec":
                    run_m3rec(spec, slice_, todo, handle, bar, env, graph)
                else:
                    run_ranker(spec, cast(Ranker, ranker), slice_, todo, handle, bar)
                wall[label] = round(time.perf_counter() - started, 3)
    return computed, wall, experiments


def _breakdowns(
    results: Mapping[tuple[str, str, str], Mapping[str, Any]],
    users: Sequence[str],
    methods: Sequence[str],
    slices: Sequence[str],
    n_boot: int,
    seed: int,
) -> tuple[list[PairedGain], list[BucketReport]]:
    """Paired gains over SASRec on every slice, and the full slice by history length."""

    def by_method(slice_name: str) -> dict[str, dict[str, Mapping[str, Any]]]:
        found = {
            m: {u: results[(m, slice_name, u)] for u in users if (m, slice_name, u) in results}
            for m in methods
        }
        return {m: lines for m, lines in found.items() if lines}

    gains = [g for s in slices for g in paired_gains(s, by_method(s), n_boot=n_boot, seed=seed)]
    return gains, history_breakdown(by_method("full"), n_boot=n_boot, seed=seed)


def _report(
    out_dir: Path,
    cases: Sequence[EvalCase],
    methods: Sequence[MethodSpec],
    slices: Sequence[EvalSlice],
    computed: dict[tuple[str, str], int],
    wall: dict[str, float],
    experiments: dict[str, dict[str, Any]],
    *,
    n_boot: int,
    plots: bool,
) -> EvalRun:
    """Summarise everything in results.jsonl (also methods and slices of earlier calls), write the outputs."""
    results = read_results(out_dir / RESULTS_FILE)
    settings = read_settings(out_dir)
    users = [c.user_id for c in cases]
    wanted = [s.key for s in methods]
    method_order = [*wanted, *sorted({m for m, _, _ in results} - set(wanted))]
    slice_order = [
        *(s.name for s in slices),
        *sorted({s for _, s, _ in results} - {s.name for s in slices}),
    ]
    by_slice: dict[str, list[MethodReport]] = {}
    for slice_name in slice_order:
        reports = []
        for method in method_order:
            records = [
                results[(method, slice_name, u)]
                for u in users
                if (method, slice_name, u) in results
            ]
            if records:
                reports.append(
                    summarise_method(
                        method, slice_name, records, n_boot=n_boot, seed=settings["seed"]
                    )
                )
        by_slice[slice_name] = reports
    chance = chance_metrics(int(settings["negatives"]) + 1)
    drawn = write_plots(out_dir, by_slice, chance) if plots else []
    report = format_report(settings, by_slice, n_boot=n_boot, plots=drawn)
    gains, buckets = _breakdowns(
        results, users, method_order, slice_order, n_boot, settings["seed"]
    )
    extra = format_breakdowns(gains, buckets)
    report = report + "\n" + extra + "\n" if extra else report
    atomic_write_text(out_dir / REPORT_FILE, report)
    document = results_document(settings, by_slice, n_boot=n_boot, wall_seconds=wall)
    document.update(breakdowns_document(gains, buckets))
    if experiments:
        document["langsmith_experiments"] = experiments
    atomic_write_text(
        out_dir / RESULTS_JSON, json.dumps(document, indent=1, ensure_ascii=False) + "\n"
    )
    return EvalRun(
        out_dir=out_dir,
        cases=list(cases),
        computed=computed,
        reports=by_slice,
        report=report,
        plots=drawn,
        experiments=experiments,
    )
