r"""Wiring: the M-LLM3Rec state machine.

```
START -> prepare --Send--> mope ---------\
                 \--Send--> mote (x misses) --> collect_traits --Send--> mar (x chunks) --> rank -> END
                                                                                 fusion on: rank -> fuse -> rank
```

Each stage is a plain node per task plus a `<stage>_fallback` node; a rejected
answer re-sends the task to its node (stages/loop.py).

`prepare` validates the request, fixes the seeded display order and reads the
trait cache; only uncached items with text are sent to MOTE. MOPE and the MOTE
tasks run in the same superstep, so `collect_traits` runs once both are done
(if one was re-asked, `collect_traits` also runs, idle, in the step after the
others finished, and proceeds once the re-ask is answered; `rank` joins MAR the same way).

A join waits for this run's results, never for counts: `collect_traits` for a
profile and the traits of every id in `shown_order`, `rank` for the score of every
id in `shown_order`. That holds on a checkpointer thread that several runs share
(the LangGraph server, Studio, a `RemoteGraph` called with a `thread_id`), because
`prepare` starts every per-run key over: it overwrites the reduced channels
(`traits`, `scores`, `usage_log`, `degraded`) with `Overwrite`, bypassing their
reducers, sets `profile` to `None` until MOPE answers, and the input keys are
ephemeral (`state.State`). So each join proceeds exactly once per run, on that run's
results, and the output (ranking, usage, degradations) is the run's own.

Score fusion (`M3RecContext.fusion`, stages/fuse.py) adds one round trip after the
join: once every score is in, `rank` sends the run to `fuse` (`prepare` set
`fused` to `None`), which computes this run's fused scores and goes back to `rank`;
`rank` finds them and orders by `fused_score`. With fusion off nothing changes:
`rank` orders by MAR's score and `fuse` never runs.

The graph's own file I/O stays off the event loop (the LangGraph server refuses
blocking calls there): a run's first use of the tokenizer files, prompts and model
registry happens in a worker thread (`load_run_files`), and the trait cache (SQLite)
is read and written in worker threads. The chat model factory builds its clients
where the stage nodes call it, on the loop.

Profile memory (`prepare`): the stored profile of exactly this history window is
served without a MOPE call; else, if the window only grew by a few items
(`M3RecContext.max_incremental_items`) and the incremental prompt is the shorter,
the MOPE task carries the stored profile of the shorter window and reads only the
new items (`stages.incremental`); else MOPE profiles the whole window.

The ablations (`M3RecContext.ablation`) configure this same graph: `no_mope` sends
no MOPE task, `no_mote` no MOTE tasks, and `no_mar` goes from `collect_traits`
straight to `rank`, which scores every candidate by profile-trait overlap. A
fusion config that gives a signal zero weight takes the same paths for the stages
that only feed it (`fuse.runs_mar`, `fuse.needs_motivations`): `mar` at 0 skips MAR
as `no_mar` does, and `mar` and `overlap` both at 0 skip MOPE and MOTE as `no_mope`
and `no_mote` do.
"""

import asyncio
import warnings
from collections.abc import Iterable
from functools import partial
from typing import Any, Literal, cast, get_args

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.store.base import BaseStore
from langgraph.types import Command, Overwrite, Send

from m3rec_graph._internal.bpe import load_encodings
from m3rec_graph.context import M3RecContext
from m3rec_graph.contracts.request import RecommendationRequest, parse_request
from m3rec_graph.contracts.schemas import AlignmentScore, Item, MotivationProfile, RankedItem
from m3rec_graph.fusion import fusion_loaded
from m3rec_graph.llm.factory import ChatModelFactory, openai_chat_model
from m3rec_graph.llm.routing import get_context, resolve
from m3rec_graph.llm.usage import usage_report
from m3rec_graph.prompts.loader import PromptName, is_loaded, load_prompt
from m3rec_graph.stages.fallbacks import fallback_profile, neutral_traits, overlap_alignment
from m3rec_graph.stages.fuse import (
    check_signals,
    fuse_scores,
    fusion_config,
    fusion_setting,
    needs_motivations,
    runs_mar,
)
from m3rec_graph.stages.incremental import find_incremental_base, incremental_version
from m3rec_graph.stages.loop import add_stage
from m3rec_graph.stages.mar import MarStage
from m3rec_graph.stages.mope import (
    DEFAULT_PROFILE_TTL_DAYS,
    MopeStage,
    incremental_saving,
    profile_key,
)
from m3rec_graph.stages.mote import MoteStage
from m3rec_graph.stages.order import shown_order
from m3rec_graph.state import (
    Degradation,
    M3RecGraph,
    MarCandidate,
    MarRationale,
    MarTask,
    MemoryReport,
    MopeState,
    MopeTask,
    MoteTask,
    RecInput,
    RecOutput,
    State,
    Truncation,
)
from m3rec_graph.storage.memory import read_profile
from m3rec_graph.storage.store import resolve_store
from m3rec_graph.storage.traits import LegacyTraitMemory, StoreTraitMemory, TraitCache, TraitMemory
from m3rec_graph.text.item_text import truncations
from m3rec_graph.text.similarity import TfidfSimilarity

PROMPT_NAMES: tuple[PromptName, ...] = get_args(PromptName)

ProgressEvent = Literal["started", "profile_ready", "items_encoded", "ranking_ready", "rationales_ready"]
"""The `m3rec` key of the custom stream events the graph writes (see `m3rec_graph.integrations.embed`)."""


def recent_history(request: RecommendationRequest, ctx: M3RecContext) -> list[Item]:
    """Return the most recent history items MOPE reads (MAR too, under `no_mope`)."""
    return request.history[-max(1, ctx.max_history_items) :] if request.history else []


def progress(event: ProgressEvent, **fields: Any) -> dict[str, Any]:
    """Return a custom stream event (`stream_mode="custom"`); writing one is a no-op when not streaming."""
    return {"m3rec": event, **fields}


def load_run_files(ctx: M3RecContext) -> None:
    """Read every file a run under `ctx` reads, so that nothing later touches the disk on the event loop.

    That is tiktoken's BPE files (and its cache directory, which `tempfile.gettempdir()`
    finds by writing probe files), the stage prompts with `ctx`'s overrides, and the
    model registry behind routing and prices. Each is memoised for the process, so
    this is cheap once done. It blocks: `prepare` runs it in a worker thread when a
    run needs something not yet loaded (the LangGraph server refuses blocking calls
    on its event loop). The OpenAI clients are the chat model factory's to build.
    """
    global _files_loaded
    load_encodings()
    for name in PROMPT_NAMES:
        load_prompt(name, ctx.prompt_overrides.get(name))
    usage_report([])  # the price table
    _files_loaded = True


_files_loaded = False
"""`load_run_files` ran once in this process (encodings, registry: never forgotten)."""


def _run_files_loaded(ctx: M3RecContext) -> bool:
    return _files_loaded and all(is_loaded(name, ctx.prompt_overrides.get(name)) for name in PROMPT_NAMES)


async def run_context(runtime: Runtime[M3RecContext]) -> M3RecContext:
    """Return the run's context with its models resolved (`routing.resolve`, cached per context).

    What the run reads from disk is loaded first, in a worker thread (`load_run_files`,
    and the fusion config file if any).

    Raises:
        ConfigurationError: A foreign context object (see `M3RecContext.coerce`), or one
            that does not resolve (an unknown preset, a retired model, ...), or a
            fusion config that is missing or invalid (`FusionConfigError`).
    """
    ctx = get_context(runtime)
    if _files_loaded:
        resolve(ctx)
    else:  # the first resolution reads the model registry
        await asyncio.to_thread(resolve, ctx)
    if not _run_files_loaded(ctx):
        await asyncio.to_thread(load_run_files, ctx)
    if not fusion_loaded(fusion_setting(ctx)):  # a fusion config file, read once per process
        await asyncio.to_thread(fusion_config, ctx)
    return ctx


async def prepare(
    state: State, runtime: Runtime[M3RecContext], *, legacy_traits: TraitMemory | None
) -> Command[Literal["mope", "mote", "collect_traits"]]:
    """Validate the request, read stored traits and profile, and fan out MOPE plus MOTE for the misses."""
    request = parse_request({key: value for key, value in state.items() if key in RecInput.__annotations__})
    ctx = await run_context(runtime)
    check_signals(ctx, request)  # a bad inline config, or one with nothing to fuse: before any call
    # Under fusion with `mar` and `overlap` at weight 0, MOPE and MOTE feed nothing:
    # they take the ablations' paths (a configuration, not a failure: not `degraded`).
    motivations = needs_motivations(ctx)
    skip_mote = ctx.ablation == "no_mote" or not motivations
    skip_mope = ctx.ablation == "no_mope" or not motivations
    mote_model = ctx.model_for("mote").name
    mote_version = load_prompt("mote", ctx.prompt_overrides.get("mote")).version
    # The run's store: the host's or platform's `runtime.store`, else the process default.
    # A deprecated `trait_cache=` graph keeps its cache and remembers no profiles.
    store = None if legacy_traits is not None else await resolve_store(runtime.store)
    trait_memory = legacy_traits or StoreTraitMemory(cast(BaseStore, store))

    traits = {}
    degraded: list[Degradation] = []
    # Over-long text is cut before any model sees it; say so next to the result.
    truncated: list[Truncation] = [
        {"item_id": item.item_id, "note": note}
        for item in (*request.history, *request.candidates)
        for note in truncations(item)
    ]
    to_look_up = []
    for item in request.candidates:
        if skip_mote:  # the configuration, not a failure
            traits[item.item_id] = neutral_traits(
                "MOTE ablated" if ctx.ablation == "no_mote" else "MOTE skipped: fusion reads no traits"
            )
        elif item.has_text():
            to_look_up.append(item)
        else:
            traits[item.item_id] = neutral_traits("item has no text")
            degraded.append({"stage": "mote", "item_id": item.item_id, "reason": "item has no text"})
    stored = await trait_memory.read(to_look_up, model=mote_model, prompt_version=mote_version)
    traits.update(stored)
    sends: list[Send] = [Send("mote", MoteTask(item=item)) for item in to_look_up if item.item_id not in stored]

    profile: MotivationProfile | None = None  # until this run's MOPE task answers
    profile_memory: Literal["hit", "incremental", "miss", "off"] = "off"
    recent = recent_history(request, ctx)
    if skip_mope:
        profile = fallback_profile(
            recent,
            "MOPE switched off: ablation no_mope"
            if ctx.ablation == "no_mope"
            else "MOPE skipped: fusion gives mar and overlap no weight",
        )
    elif request.history:
        task = MopeTask(user_id=request.user_id, history=recent)
        if store is not None:
            key = profile_key(request.user_id, recent, ctx)
            profile = await read_profile(store, key, incremental_version=incremental_version(ctx))
            profile_memory = "hit" if profile is not None else "miss"
            # Not stored: a grown history updates the shorter window's profile instead,
            # when that prompt is the shorter one (`incremental_saving`).
            if profile is None and (base := await find_incremental_base(store, key, ctx)) is not None:
                if incremental_saving(MopeState(user_id=request.user_id, history=recent, incremental=base), ctx) > 0:
                    task["incremental"] = base
                    profile_memory = "incremental"
        if profile is None:
            sends.insert(0, Send("mope", task))
    else:
        profile = fallback_profile([])
        degraded.append({"stage": "mope", "item_id": None, "reason": "empty history"})
    to_encode = sum(1 for send in sends if send.node == "mote")
    # Every per-run key starts over: on a reused thread the state still holds the last
    # run's values, which the reducers would add to and the joins would take for this run's.
    update: dict[str, Any] = {
        "request": request,
        "shown_order": shown_order([c.item_id for c in request.candidates], request.user_id, ctx.seed),
        "profile": profile,
        "traits": Overwrite(traits),
        "scores": Overwrite({}),
        "rationale_ids": None,
        "rationales": Overwrite({}),
        "usage_log": Overwrite([]),
        "degraded": Overwrite(degraded),
        "truncated": truncated,
        "ranking": [],
        "fused": None,
        "fusion": None,
        "usage": usage_report([]),
        "memory": MemoryReport(profile=profile_memory, traits_hit=len(stored), traits_miss=to_encode),
    }
    ready = len(request.candidates) - to_encode  # stored, or without text
    runtime.stream_writer(
        progress("started", candidates=len(request.candidates), to_encode=to_encode, ready=ready)
    )
    return Command(update=update, goto=sends or "collect_traits")


async def collect_traits(state: State, runtime: Runtime[M3RecContext]) -> Command[Literal["mar", "rank"]]:
    """Join MOPE and MOTE, then send MAR one task per listwise chunk (or per candidate).

    The `no_mar` ablation goes straight to `rank` instead, and so does a fusion config
    that gives `mar` zero weight (`fuse.runs_mar`). Every finished MOPE/MOTE
    task leads here: until this run's profile and the traits of every candidate in
    `shown_order` are in (a re-ask may still be pending), this does nothing and the
    last task to finish comes back. `prepare` reset both, so it proceeds exactly once per run.
    """
    profile, traits, order = state.get("profile"), state["traits"], state["shown_order"]
    if profile is None or any(item_id not in traits for item_id in order):
        return Command()
    ctx = get_context(runtime)
    runtime.stream_writer(progress("profile_ready", summary=profile.summary))
    runtime.stream_writer(progress("items_encoded", encoded=len(order), total=len(order)))
    if not runs_mar(ctx):
        return Command(goto="rank")
    items = {item.item_id: item for item in state["request"].candidates}
    candidates = [MarCandidate(item=items[i], traits=traits[i]) for i in order]
    size = 1 if ctx.mar_mode == "pointwise" else max(1, ctx.mar_chunk_size)
    mode = _mar_task_mode(ctx)
    tasks = [
        MarTask(profile=profile, candidates=candidates[i : i + size], mode=mode)
        for i in range(0, len(candidates), size)
    ]
    for task in tasks:
        if ctx.ablation == "no_mope":
            task["history"] = recent_history(state["request"], ctx)
        elif ctx.ablation == "no_mote":
            task["raw_item_text"] = True
    return Command(goto=[Send("mar", task) for task in tasks])


def _mar_task_mode(ctx: M3RecContext) -> Literal["listwise", "pointwise", "scores"]:
    """Return what each MAR chunk task asks for: pointwise, the paper's listwise answer, or scores only."""
    if ctx.mar_mode == "pointwise":
        return "pointwise"
    return "scores" if ctx.mar_answer == "scores_first" else "listwise"


def _rationales_task(state: State, ctx: M3RecContext, top_ids: list[str]) -> MarTask:
    """Return the `scores_first` second call: the top items, best first, for rationales only."""
    profile = state["profile"]
    assert profile is not None  # collect_traits proceeded
    items = {item.item_id: item for item in state["request"].candidates}
    candidates = [MarCandidate(item=items[i], traits=state["traits"][i]) for i in top_ids]
    task = MarTask(profile=profile, candidates=candidates, mode="rationales")
    if ctx.ablation == "no_mope":
        task["history"] = recent_history(state["request"], ctx)
    elif ctx.ablation == "no_mote":
        task["raw_item_text"] = True
    return task


async def rank(
    state: State, runtime: Runtime[M3RecContext]
) -> Command[Literal["fuse", "mar"]] | dict[str, Any]:
    """Order candidates by alignment (ties by the shown order) and assemble the output.

    Every finished MAR task leads here: until every candidate in `shown_order` has
    this run's score (a re-ask may still be pending), this does nothing and the
    last task to finish comes back. When MAR does not run (`no_mar`, or fusion gives
    it zero weight) it comes once, from `collect_traits`, and scores every candidate
    by profile-trait overlap. With fusion on, the first pass that finds every score
    sends the run to `fuse`, and the pass after it orders by `fused_score`.

    Under `mar_answer="scores_first"` the first pass with every score (and fusion) in
    has the final order: it streams `ranking_ready` and sends the top
    `mar_rationale_k` to MAR for rationales (one task, re-asked like any other); the
    pass that finds them all assembles the output and streams `rationales_ready`.
    """
    ctx = get_context(runtime)
    order, scores = state["shown_order"], state["scores"]
    if runs_mar(ctx) and any(item_id not in scores for item_id in order):
        return {}
    fused = state.get("fused")
    if fused is None and fusion_config(ctx) is not None:
        return Command(goto="fuse")
    request, profile = state["request"], state["profile"]
    assert profile is not None  # collect_traits proceeded
    aligned = [
        scores[item_id] if item_id in scores else overlap_alignment(item_id, profile, state["traits"][item_id])
        for item_id in order
    ]

    def key(pair: tuple[int, Any]) -> tuple[float, int]:
        n, s = pair
        return (-(fused[s.item_id]["fused"] if fused else s.score), n)

    ordered = [s for _, s in sorted(enumerate(aligned), key=key)]
    top = ordered[: request.k] if request.k else ordered
    explained = state.get("rationales") or {}
    if runs_mar(ctx) and ctx.mar_mode == "listwise" and ctx.mar_answer == "scores_first":
        asked = state.get("rationale_ids")
        if asked is None:  # the ranking is final: stream it, then ask why for the top k only
            want = [s.item_id for s in top[: ctx.mar_rationale_k]]
            runtime.stream_writer(
                progress("ranking_ready", top=[s.item_id for s in top[:5]], rationales="pending")
            )
            return Command(update={"rationale_ids": want}, goto=Send("mar", _rationales_task(state, ctx, want)))
        if any(item_id not in explained for item_id in asked):
            return {}
        top = [_with_rationale(s, explained.get(s.item_id)) for s in top]
    ranking = [
        RankedItem(
            **s.model_dump(),
            rank=n,
            fused_score=fused[s.item_id]["fused"] if fused else None,
            score_parts=dict(fused[s.item_id]["parts"]) if fused else None,
        )
        for n, s in enumerate(top, start=1)
    ]
    if explained:
        runtime.stream_writer(progress("rationales_ready", explained=len(explained)))
    else:
        runtime.stream_writer(progress("ranking_ready", top=[r.item_id for r in ranking[:5]]))
    return {
        "user_id": request.user_id,
        "ranking": ranking,
        "usage": usage_report(state["usage_log"]),
        "memory": state["memory"],
        "fusion": state.get("fusion"),
    }


def _with_rationale(score: AlignmentScore, explained: MarRationale | None) -> AlignmentScore:
    """Return `score` with the matched motivations and rationale of its rationales answer, if any."""
    if explained is None:
        return score
    why = explained["rationale"]
    return score.model_copy(
        update={"matched_motivations": list(dict.fromkeys(why.matched)), "rationale": why.rationale.strip()}
    )


def build_graph(
    *,
    chat_models: ChatModelFactory = openai_chat_model,
    store: BaseStore | None = None,
    profile_ttl_days: float | None = DEFAULT_PROFILE_TTL_DAYS,
    trait_cache: TraitCache | None = None,
    checkpointer: BaseCheckpointSaver[Any] | None = None,
    context_schema: type[M3RecContext] = M3RecContext,
    text_corpus: Iterable[Item] | TfidfSimilarity | None = None,
) -> M3RecGraph:
    """Compile the recommender graph.

    Args:
        chat_models: Builds the chat model for each stage's `ModelSpec`
            (default: a cached `ChatOpenAI`). Inject fakes or shared clients here.
        store: Where item traits and shopper profiles persist: any LangGraph
            `BaseStore` (`InMemoryStore`, `SqliteStore`, `PostgresStore`, or
            `m3rec_graph.open_store(url)`). Leave it `None` under the LangGraph
            platform, which supplies its own store; a graph run with no store at all
            uses the process default (`$M3REC_STORE_URL`, else a SQLite file in the
            per-user cache directory, opened on first use).
        profile_ttl_days: How long a stored shopper profile is served (`None`: no expiry;
            stores without TTL support keep it for their lifetime).
        trait_cache: Deprecated: pass `store=` instead. A `TraitCache` keeps MOTE traits
            as before this release and disables profile memory.
        checkpointer: Only for standalone durable runs; hosts and the LangGraph
            server supply their own.
        context_schema: What a dict `context=` (JSON from a remote caller, Studio) is
            turned into: `M3RecContext`, the one run context (or a subclass). Any other
            context object raises `ConfigurationError` when the run starts.
        text_corpus: The catalogue the fusion's `text` signal fits its idf on, once, here
            (the evaluation harness passes the dataset's items; ~2 s for 12k items on 2
            cores), or a `TfidfSimilarity` already fit (e.g. the `text` baseline's, so the
            two share one fit). `None`: each request's own history and candidates.
            Only used with fusion on.
    """
    legacy: TraitMemory | None = None
    if trait_cache is not None:
        warnings.warn(
            "build_graph(trait_cache=...) is deprecated and will be removed in the next release: "
            "pass store= (a LangGraph BaseStore, e.g. InMemoryStore() or m3rec_graph.open_store(url)); "
            "with trait_cache= no shopper profiles are remembered",
            DeprecationWarning,
            stacklevel=2,
        )
        legacy = LegacyTraitMemory(trait_cache)
    # Nodes read the context through `get_context()`, which also takes a dict and refuses foreign objects.
    builder = StateGraph(State, context_schema=context_schema, input_schema=RecInput, output_schema=RecOutput)
    # `destinations` draws the Command edges: partial() hides the return annotation.
    builder.add_node(
        "prepare",
        partial(prepare, legacy_traits=legacy),
        destinations=("mope", "mote", "collect_traits"),
    )
    # Each stage is two plain nodes (`mope` + `mope_fallback`, ...; see stages/loop.py).
    # A re-ask is a new task sent after its siblings finished, so the joins
    # (`collect_traits`, `rank`) proceed only once every result is in.
    mope = MopeStage(remember_profiles=legacy is None, profile_ttl_days=profile_ttl_days)
    add_stage(builder, mope, then="collect_traits", chat_models=chat_models)
    add_stage(builder, MoteStage(legacy), then="collect_traits", chat_models=chat_models)
    builder.add_node("collect_traits", collect_traits, destinations=("mar", "rank"))
    add_stage(builder, MarStage(), then="rank", chat_models=chat_models)
    builder.add_node("rank", rank, destinations=("fuse", "mar"))
    text_idf = (
        text_corpus
        if isinstance(text_corpus, TfidfSimilarity) or text_corpus is None
        else TfidfSimilarity(text_corpus)
    )
    builder.add_node("fuse", partial(fuse_scores, text_idf=text_idf), destinations=("rank",))
    builder.add_edge(START, "prepare")
    builder.add_edge("rank", END)
    # The LangGraph server refuses a graph compiled with its own store and injects the
    # platform's; the module-level `graph` below is compiled without one.
    return builder.compile(checkpointer=checkpointer, store=store, name="m3rec")


graph = build_graph()
"""Module-level graph for `langgraph.json`, LangGraph Studio and quick use (default routing
unless a run passes an `M3RecContext` or its JSON)."""
