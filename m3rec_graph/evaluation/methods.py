"""Score one method on one slice of a run's cases, appending a result line per user as it finishes.

No method sees `EvalCase.target_id`: the baselines and SASRec get the case (and
read its history and candidates), the graph gets `EvalCase.to_request()`. The
target is used only afterwards, to find its rank.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, cast

from langchain_core.runnables import RunnableConfig, RunnableLambda
from langgraph.store.base import BaseStore

from m3rec_graph.context import M3RecContext
from m3rec_graph.evaluation.baselines import (
    PopularityBaseline,
    RandomBaseline,
    Ranker,
    TextSimilarityBaseline,
)
from m3rec_graph.evaluation.datasets import Dataset, EvalCase, NegativeSampling
from m3rec_graph.evaluation.fusion_method import (
    FusionRanker,
    check_recorded,
    checked_config,
    describe_weights,
    fit_on_validation,
    print_fit,
)
from m3rec_graph.evaluation.graph_fit import PROBE, fit_fused_graph_method
from m3rec_graph.evaluation.metrics import rank_of
from m3rec_graph.evaluation.priors import PriorScorer, prior_scorer, sasrec_ranker
from m3rec_graph.evaluation.progress import ProgressBar
from m3rec_graph.evaluation.settings import EvalSlice, EvaluationError, MethodSpec
from m3rec_graph.evaluation.store import RESULTS_FILE, append_result, read_results
from m3rec_graph.fusion import FUSION_OFF, FusionConfig
from m3rec_graph.graph import build_graph
from m3rec_graph.integrations.runner import flush_traces
from m3rec_graph.llm.factory import ChatModelFactory
from m3rec_graph.llm.routing import context_for
from m3rec_graph.prompts.loader import load_prompt
from m3rec_graph.state import M3RecGraph, RecInput
from m3rec_graph.text.similarity import TfidfSimilarity

SASREC_FILE = "sasrec.pt"

Serving = Callable[[M3RecContext], AbstractContextManager[None]]
"""Makes the models of a context reachable for a block (starts the local server if needed)."""


@dataclass(frozen=True, kw_only=True)
class MethodEnv:
    """What running a method needs besides its cases."""

    dataset: Dataset
    dataset_path: Path
    out_dir: Path
    store_url: str
    """The store of every m3rec method's graph and Ray worker (`run_store.run_store_url`)."""
    seed: int
    stream: TextIO
    chat_models: ChatModelFactory
    serve: Serving
    concurrency: int
    """m3rec users in flight at once (each user's own LLM calls fan out as the graph allows)."""
    sasrec_config: Any = None
    """A `m3rec_graph.evaluation.sasrec.SASRecConfig` (None: its defaults)."""
    prompt_overrides: Mapping[str, str] = field(default_factory=dict)
    """Stage prompt name -> prompt file for every m3rec method (`M3RecContext.prompt_overrides`)."""
    cases: Sequence[EvalCase] = ()
    """The run's test cases (full history): fusion methods build their validation split from them."""
    sampling: NegativeSampling = "uniform"
    """The run's negative sampling (a fusion config fit under another is refused unless allowed)."""
    fusion_config: FusionConfig | None = None
    """`--fusion FILE`: the weights of every fused method (None: fit on the validation split)."""
    fusion_source: str = ""
    """Where `fusion_config` came from (its path), for messages and result lines."""
    allow_sampling_mismatch: bool = False
    fit_users: int | None = None
    """Validation users a fused graph method fits on (the first N of the run's users; None: all)."""
    allow_retired: bool = False
    """`--allow-retired`: let a model past its shutdown date run (an endpoint that still serves it)."""
    fitted_configs: dict[str, FusionConfig] = field(default_factory=dict)
    """Fused graph method -> the config fitted on the validation split in this process (fit once per run)."""


def checked_rank(case: EvalCase, ranking: Sequence[str], method: str) -> int:
    """Return the target's 1-based rank, after checking `ranking` is a permutation of the candidates."""
    if sorted(ranking) != sorted(item.item_id for item in case.candidates):
        raise RuntimeError(
            f"{method} returned a ranking that is not a permutation of user {case.user_id!r}'s candidates"
        )
    return rank_of(case.target_id, ranking)


def base_record(
    method: str, slice_: EvalSlice, case: EvalCase, ranking: Sequence[str], seconds: float
) -> dict[str, Any]:
    """The fields every result line has."""
    return {
        "method": method,
        "slice": slice_.name,
        "user_id": case.user_id,
        "rank": checked_rank(case, ranking, method),
        "n_candidates": len(case.candidates),
        "history_items": len(case.history),
        "ranking": list(ranking),
        "seconds": round(seconds, 6),
    }


# --------------------------------------------------------------------------- rankers


def make_ranker(spec: MethodSpec, env: MethodEnv) -> Ranker:
    """Build (or, for SASRec, train or load) the ranker of a non-LLM method."""
    if spec.kind == "random":
        return RandomBaseline(env.seed)
    if spec.kind == "popularity":
        return PopularityBaseline.from_dataset(env.dataset)
    if spec.kind == "text":
        return TextSimilarityBaseline.from_dataset(env.dataset)
    if spec.kind == "sasrec":
        return _sasrec_ranker(env)
    if spec.kind == "fusion":
        return _fusion_ranker(spec, env)
    raise AssertionError(f"not a ranker method: {spec.key}")


def _sasrec_ranker(env: MethodEnv) -> Ranker:
    """Train SASRec on the dataset's training splits once per run directory (then load it)."""
    return sasrec_ranker(
        env.dataset, env.dataset_path, env.out_dir / SASREC_FILE, env.sasrec_config, env.stream
    )


def fusion_config_file(spec: MethodSpec) -> str:
    """The run directory's file of the config a fitted `fusion:PRIOR+text` method used."""
    return f"fusion-{spec.prior}.json"


def method_prior(spec: MethodSpec, env: MethodEnv) -> PriorScorer | None:
    """The prior scorer of a fusion or fused method (`None` for `none`); SASRec trains or loads once per run."""
    return prior_scorer(
        spec.prior,
        env.dataset,
        dataset_path=env.dataset_path,
        sasrec_path=env.out_dir / SASREC_FILE,
        sasrec_config=env.sasrec_config,
        stream=env.stream,
    )


def file_config(env: MethodEnv, config: FusionConfig) -> FusionConfig:
    """`--fusion FILE`'s config, refused when it was fit under another negative sampling than the run's.

    Raises:
        FusionSamplingMismatchError: The sampling differs and the mismatch is not allowed.
    """
    return checked_config(
        config,
        env.sampling,
        allow_sampling_mismatch=env.allow_sampling_mismatch,
        source=env.fusion_source,
    )


def _fusion_ranker(spec: MethodSpec, env: MethodEnv) -> Ranker:
    """`fusion:PRIOR+text`: the config of `--fusion`, or one fitted on the run's validation split."""
    text = TfidfSimilarity(env.dataset.items.values())
    prior = method_prior(spec, env)
    if env.fusion_config is not None:
        config = file_config(env, env.fusion_config)
        signals = {"text", *(["prior"] if prior is not None else [])}
        if not signals.intersection(config.active()):
            raise EvaluationError(
                f"fusion config {env.fusion_source} gives no weight to {' or '.join(sorted(signals))},"
                f" the signals of {spec.key}"
            )
        fitted, source = False, env.fusion_source
    else:
        fit = fit_on_validation(
            env.dataset,
            env.cases,
            seed=env.seed,
            sampling=env.sampling,
            text=text,
            prior=prior,
            prior_name=spec.prior,
        )
        config, fitted, source = fit.config, True, "validation"
        config.dump(env.out_dir / fusion_config_file(spec))
        print_fit(env.stream, spec.key, fit)
    done = read_results(env.out_dir / RESULTS_FILE)
    check_recorded(
        spec.key, config, [r for (m, _, _), r in done.items() if m == spec.key], env.out_dir
    )
    print(
        f"{spec.key}: fusion config {config.version} ({'fitted on validation' if fitted else source}):"
        f" {describe_weights(config)}",
        file=env.stream,
        flush=True,
    )
    return FusionRanker(text, prior, config, fitted=fitted, source=source)


def rank_cases(ranker: Ranker, cases: Sequence[EvalCase]) -> list[list[str]]:
    """Rank several cases at once when the ranker can (SASRec scores a batch in one pass)."""
    rank_many = getattr(ranker, "rank_many", None)
    if callable(rank_many):
        return cast(list[list[str]], rank_many(cases))
    return [ranker.rank(case) for case in cases]


def run_ranker(
    spec: MethodSpec,
    ranker: Ranker,
    slice_: EvalSlice,
    todo: Sequence[EvalCase],
    handle: TextIO,
    bar: ProgressBar,
    batch_size: int = 256,
) -> None:
    """Rank the cases, a batch at a time, appending each user's line."""
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        started = time.perf_counter()
        rankings = rank_cases(ranker, batch)
        seconds = (time.perf_counter() - started) / len(batch)
        extra = getattr(ranker, "record_fields", {})
        for case, ranking in zip(batch, rankings, strict=True):
            append_result(
                handle, {**base_record(spec.key, slice_, case, ranking, seconds), **extra}
            )
            bar.advance()


def ranker_scorer(spec: MethodSpec, ranker: Ranker, slice_: EvalSlice) -> "Scorer":
    """Score one case with a ranker (the LangSmith pass predicts one example at a time)."""

    async def score(case: EvalCase) -> dict[str, Any]:
        started = time.perf_counter()
        ranking = ranker.rank(case)
        record = base_record(spec.key, slice_, case, ranking, time.perf_counter() - started)
        return {**record, **getattr(ranker, "record_fields", {})}

    return score


# --------------------------------------------------------------------------- m3rec


def m3rec_context(
    spec: MethodSpec,
    seed: int,
    prompt_overrides: Mapping[str, str] | None = None,
    fusion: FusionConfig | None = None,
    *,
    allow_retired: bool = False,
) -> M3RecContext:
    """The graph context of an m3rec method (its preset, ablation and, when fused, fusion config; the run's seed and prompt files).

    Profile memory is exact-match only (`max_incremental_items=0`): an incrementally
    updated profile depends on which shorter history was profiled before, so serving
    one would make a user's result depend on the order users run in.
    """
    # An unfused method is the paper's ranking even on a preset that fuses by default.
    extra: dict[str, Any] = {"fusion": fusion if spec.fused and fusion is not None else FUSION_OFF}
    return context_for(
        cast(str, spec.routing),
        seed=seed,
        ablation=spec.ablation,
        prompt_overrides=dict(prompt_overrides or {}),
        max_incremental_items=0,
        allow_retired=allow_retired,
        **extra,
    )


def env_context(spec: MethodSpec, env: MethodEnv, fusion: FusionConfig | None = None) -> M3RecContext:
    """`m3rec_context` with the run's seed, prompt files and `--allow-retired` (`env`)."""
    return m3rec_context(
        spec, env.seed, env.prompt_overrides, fusion, allow_retired=env.allow_retired
    )


def with_priors(request: dict[str, Any], priors: Sequence[float] | None) -> dict[str, Any]:
    """`request` with each candidate's `prior` set (in shown order), or unchanged without priors."""
    if priors is None:
        return request
    candidates = [
        {**item, "prior": float(p)} for item, p in zip(request["candidates"], priors, strict=True)
    ]
    return {**request, "candidates": candidates}


def prompt_versions(ctx: M3RecContext) -> dict[str, str]:
    """Stage prompt -> content version, as the graph will use them (recorded with every result)."""
    names = ("mope", "mote", f"mar_{ctx.mar_mode}")
    return {
        name: load_prompt(name, ctx.prompt_overrides.get(name)).version  # type: ignore[arg-type]
        for name in names
    }


def m3rec_graph_for(env: MethodEnv, store: BaseStore, *, fused: bool = False) -> M3RecGraph:
    """The graph every m3rec method of a run uses, on the run's store (`env.store_url`, opened by the caller).

    Trait namespaces name the MOTE model and prompt version, and profile keys the
    MOPE settings and ablation, so methods with other routings (and other runs)
    share the store without sharing answers. Profile memory is exact-match only (the history
    window must be identical), so results never depend on the order users run in.
    With `fused` (a fused m3rec method runs), the fusion's `text` signal takes its idf
    from the dataset's catalogue, as the `text` baseline and `fusion:PRIOR+text` do
    (fitting it takes seconds on a full catalogue, so only then).
    """
    corpus = TfidfSimilarity(env.dataset.items.values()) if fused else None
    return build_graph(chat_models=env.chat_models, store=store, text_corpus=corpus)


def m3rec_record(
    spec: MethodSpec,
    slice_: EvalSlice,
    case: EvalCase,
    out: dict[str, Any],
    seconds: float,
    prompts: dict[str, str],
) -> dict[str, Any]:
    """A result line with the graph's usage: tokens, cost, calls, degraded parts, per stage too."""
    usage = out["usage"]
    total = usage.total
    record = base_record(
        spec.key, slice_, case, [entry.item_id for entry in out["ranking"]], seconds
    )
    record.update(
        llm_calls=total.calls,
        input_tokens=total.input_tokens,
        output_tokens=total.output_tokens,
        total_tokens=total.input_tokens + total.output_tokens,
        wasted_tokens=total.wasted_tokens,
        cost_usd=total.cost_usd,
        stages={
            name: {
                "calls": s.calls,
                "input_tokens": s.input_tokens,
                "output_tokens": s.output_tokens,
                "cost_usd": s.cost_usd,
                "models": s.models,
            }
            for name, s in usage.stages.items()
        },
        degraded=len(out["degraded"]),
        memory=dict(out["memory"]),
        routing=spec.routing,
        ablation=spec.ablation,
        prompts=prompts,
    )
    if out.get("fusion"):  # the graph's fusion report: config version, signals, sampling
        record["fusion"] = dict(out["fusion"])
    return record


Scorer = Callable[[EvalCase], Awaitable[dict[str, Any]]]
"""Scores one (sliced) case and returns its result line (not yet written)."""


def m3rec_scorer(
    spec: MethodSpec,
    slice_: EvalSlice,
    graph: M3RecGraph,
    seed: int,
    prompt_overrides: Mapping[str, str] | None = None,
    fusion: FusionConfig | None = None,
    priors: Mapping[str, Sequence[float]] | None = None,
    *,
    allow_retired: bool = False,
) -> Scorer:
    """Score one case with the graph under the method's context, timing the user's own run.

    A fused method runs with `fusion` in its context and, when `priors` (user id ->
    candidate scores in shown order) are given, each candidate's `prior` in the request.
    """
    ctx = m3rec_context(spec, seed, prompt_overrides, fusion, allow_retired=allow_retired)
    prompts = prompt_versions(ctx)

    async def score(case: EvalCase, config: RunnableConfig | None = None) -> dict[str, Any]:
        # A batch's max_concurrency bounds users in flight; inside a user the graph
        # fans out freely (the provider's or local server's own limits queue the calls).
        inner: dict[str, Any] = {k: v for k, v in (config or {}).items() if k != "max_concurrency"}
        inner["run_name"] = "m3rec"
        inner["metadata"] = {
            **inner.get("metadata", {}),
            "eval_method": spec.key,
            "eval_slice": slice_.name,
        }
        started = time.perf_counter()
        request = with_priors(case.to_request(), (priors or {}).get(case.user_id))
        out = await graph.ainvoke(cast(RecInput, request), cast(RunnableConfig, inner), context=ctx)
        return m3rec_record(
            spec, slice_, case, cast(dict[str, Any], out), time.perf_counter() - started, prompts
        )

    return score


def fused_priors(
    spec: MethodSpec, env: MethodEnv, cases: Sequence[EvalCase]
) -> dict[str, list[float]] | None:
    """User id -> the prior of each candidate (shown order) for `m3rec...:fused+PRIOR`, else None."""
    if not spec.fused or spec.prior == "none":
        return None
    scorer = method_prior(spec, env)
    if scorer is None:
        return None
    return {case.user_id: scores for case, scores in zip(cases, scorer(cases), strict=True)}


def fused_graph_config(
    spec: MethodSpec, env: MethodEnv, graph: Callable[[], M3RecGraph]
) -> FusionConfig | None:
    """The fusion config of an m3rec method: None unfused; `--fusion FILE`; else fit on validation.

    The fit runs the graph (`graph()`, called only then) on the validation split (resumable, `graph_fit`), once per
    method and process; the method's existing result lines must have been made with
    the same config version.

    Raises:
        FusionSamplingMismatchError: `--fusion FILE` was fit under another sampling.
        FusionConfigChangedError: The method's lines record another config version.
        EvaluationError: The fit has nothing to fit on.
    """
    if not spec.fused:
        return None
    if spec.key in env.fitted_configs:
        return env.fitted_configs[spec.key]
    if env.fusion_config is not None:
        config = file_config(env, env.fusion_config)
    else:
        prior = method_prior(spec, env)
        probe = env_context(spec, env, PROBE)
        with env.serve(probe):
            try:
                config = fit_fused_graph_method(
                    spec,
                    graph(),
                    probe,
                    dataset=env.dataset,
                    test_cases=env.cases,
                    seed=env.seed,
                    sampling=env.sampling,
                    prior=prior,
                    out_dir=env.out_dir,
                    stream=env.stream,
                    concurrency=env.concurrency,
                    fit_users=env.fit_users,
                )
            finally:
                flush_traces()
    done = read_results(env.out_dir / RESULTS_FILE)
    check_recorded(
        spec.key, config, [r for (m, _, _), r in done.items() if m == spec.key], env.out_dir
    )
    env.fitted_configs[spec.key] = config
    return config


def run_m3rec(
    spec: MethodSpec,
    slice_: EvalSlice,
    todo: Sequence[EvalCase],
    handle: TextIO,
    bar: ProgressBar,
    env: MethodEnv,
    graph: M3RecGraph,
) -> None:
    """Run the graph for every case, `env.concurrency` users in flight, appending each as it finishes.

    Users start in `todo` order and each line is written as soon as its user is
    done, so a crash loses only the users in flight. The start order matters:
    the first user to meet an uncached item pays its MOTE call, so per-user calls
    and costs are reproducible only if every run starts users in the same order.
    (`Runnable.abatch_as_completed` starts them in `asyncio.as_completed`'s
    set order, which varies from process to process.)
    """
    priors = fused_priors(spec, env, todo)
    fusion = fused_graph_config(spec, env, lambda: graph)
    per_user = RunnableLambda(
        m3rec_scorer(
            spec, slice_, graph, env.seed, env.prompt_overrides, fusion, priors,
            allow_retired=env.allow_retired,
        ),
        name="m3rec_eval_user",
    )

    async def run_all() -> None:
        gate = asyncio.Semaphore(env.concurrency)  # FIFO: waiters enter in the order they queued

        async def one(case: EvalCase) -> dict[str, Any]:
            async with gate:
                return await per_user.ainvoke(case)

        tasks = [asyncio.create_task(one(case)) for case in todo]  # scheduled in todo order
        try:
            for finished in asyncio.as_completed(tasks):
                record = await finished
                append_result(handle, record)
                bar.advance(record["total_tokens"], record["cost_usd"])
        finally:  # a failed user stops the run: the others are cancelled, not left running
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # The method's own context: weights that leave every LLM stage out need no server.
    with env.serve(env_context(spec, env, fusion)):
        try:
            asyncio.run(run_all())
        finally:
            flush_traces()
