"""The fusion step: MAR's score, profile-trait overlap, text similarity and the prior, fused.

With fusion on (`M3RecContext.fusion`, or when it is unset the routing preset's
default: the offline `local` preset fuses with the shipped `local` weights), the `fuse` node runs once MAR's results are in
(the `rank` join sends the run there, and it comes back to `rank`, which orders
by `fused_score`). Each signal is z-normalised per request and weighted by the
fusion config (`m3rec_graph.fusion.fuse`); a signal that is missing (no `prior` in
the request, MAR not run) drops out and the other weights renormalise.

- `mar`: MAR's alignment score (absent when MAR did not run, or fell back for any candidate);
- `overlap`: the deterministic profile-trait overlap (`fallbacks.overlap_alignment`,
  the `no_mar` ranking);
- `text`: TF-IDF cosine between the history and each candidate
  (`text.similarity.TfidfSimilarity`, the `text` baseline's function), idf from the
  catalogue given to `build_graph(text_corpus=...)`, else from the request's own items;
- `prior`: the candidates' `prior`, when the request carries them.

A signal with zero weight is not computed, and a stage that only feeds such
signals does not run: `runs_mar` and `needs_motivations` decide it.
"""

from collections.abc import Mapping
from typing import Any, Literal

from langchain_core.runnables import RunnableLambda
from langgraph.runtime import Runtime
from langgraph.types import Command

from m3rec_graph.context import M3RecContext
from m3rec_graph.contracts.request import RecommendationRequest
from m3rec_graph.contracts.schemas import AlignmentScore, ItemTraits, MotivationProfile
from m3rec_graph.fusion import (
    PRESET_FUSION,
    FusedScore,
    FusionConfig,
    FusionConfigError,
    Signal,
    fuse,
    resolve_fusion,
)
from m3rec_graph.llm.routing import default_preset, get_context
from m3rec_graph.stages.fallbacks import overlap_alignment
from m3rec_graph.state import FusedEntry, FusionReport
from m3rec_graph.text.similarity import TfidfSimilarity


def fusion_setting(ctx: M3RecContext) -> str | Mapping[str, Any] | None:
    """The run's fusion setting: `ctx.fusion`, or when unset its routing preset's (`PRESET_FUSION`).

    A preset's default applies only with the preset's own models: its weights were
    fit on those models' signals, so a `models` override leaves fusion off.
    """
    value = ctx.fusion
    assert value is None or isinstance(value, str | Mapping)  # M3RecContext normalised it
    if value is None and not ctx.models:
        return PRESET_FUSION.get(ctx.routing or default_preset())
    return value


def fusion_config(ctx: M3RecContext) -> FusionConfig | None:
    """Return the run's fusion config, or `None` when fusion is off.

    Cheap once the run has started: `graph.run_context` read any file in a worker thread.
    """
    return resolve_fusion(fusion_setting(ctx))


def fusion_version(ctx: M3RecContext) -> str | None:
    """Return the version of the run's fusion config (`None`: fusion off), for results and traces."""
    config = fusion_config(ctx)
    return None if config is None else config.version


def _weight(config: FusionConfig | None, signal: Signal) -> float:
    return 0.0 if config is None else config.weights.get(signal, 0.0)


def runs_mar(ctx: M3RecContext) -> bool:
    """Return whether MAR runs: not under the `no_mar` ablation, nor when fusion gives `mar` no weight.

    Both take the same path: `collect_traits` goes straight to `rank`, which scores
    every candidate by profile-trait overlap (`source="fallback"`).
    """
    config = fusion_config(ctx)
    return ctx.ablation != "no_mar" and (config is None or _weight(config, "mar") != 0.0)


def needs_motivations(ctx: M3RecContext) -> bool:
    """Return whether MOPE and MOTE feed anything: MAR, or a weighted `overlap` signal.

    False only under fusion with `mar` and `overlap` both at weight 0 (text and prior
    only): then MOPE and MOTE take the paths of the `no_mope` and `no_mote`
    ablations (keyword profile, neutral traits) and make no call.
    """
    config = fusion_config(ctx)
    return config is None or runs_mar(ctx) or _weight(config, "overlap") != 0.0


def check_signals(ctx: M3RecContext, request: RecommendationRequest) -> None:
    """Refuse, before any call, a run in which no weighted signal will be present.

    `fuse` would raise the same at the end; `prepare` calls this so that the
    error comes before MOPE, MOTE and MAR spend anything.

    Raises:
        FusionConfigError: E.g. a config weighing only `prior` and `mar`, under the
            `no_mar` ablation, for a request without priors.
    """
    config = fusion_config(ctx)
    if config is None:
        return
    present: list[Signal] = ["overlap", "text"]
    if runs_mar(ctx):
        present.append("mar")
    if request.priors is not None:
        present.append("prior")
    if not any(_weight(config, s) for s in present):
        raise FusionConfigError(
            f"fusion config {config.version}: none of its weighted signals "
            f"({', '.join(config.active())}) will be present in this run "
            f"(MAR {'runs' if runs_mar(ctx) else 'does not run'}; the request "
            f"{'has' if request.priors is not None else 'has no'} priors)"
        )


def signals(
    config: FusionConfig,
    request: RecommendationRequest,
    order: list[str],
    profile: MotivationProfile,
    traits: dict[str, ItemTraits],
    scores: dict[str, AlignmentScore],
    text_idf: TfidfSimilarity | None,
) -> dict[Signal, dict[str, float]]:
    """Return each weighted, present signal's raw value per candidate id."""
    out: dict[Signal, dict[str, float]] = {}
    # MAR's signal only when MAR itself scored every candidate: a failed chunk's fallback
    # scores are the overlap's, on another scale, and would pose as MAR's (then `mar`
    # drops out like any missing signal, and the report's `signals` says so).
    if _weight(config, "mar") and all(
        item_id in scores and scores[item_id].source == "llm" for item_id in order
    ):
        out["mar"] = {item_id: scores[item_id].score for item_id in order}
    if _weight(config, "overlap"):
        out["overlap"] = {
            item_id: overlap_alignment(item_id, profile, traits[item_id]).score for item_id in order
        }
    if _weight(config, "text"):
        # A fresh object per request: the vector cache must not outlive the request's items.
        similarity = (
            TfidfSimilarity.sharing_idf(text_idf)
            if text_idf is not None
            else TfidfSimilarity([*request.history, *request.candidates])
        )
        out["text"] = similarity.scores(request.history, request.candidates)
    priors = request.priors
    if _weight(config, "prior") and priors is not None:
        out["prior"] = priors
    return out


async def fuse_scores(
    state: dict[str, Any], runtime: Runtime[M3RecContext], *, text_idf: TfidfSimilarity | None
) -> Command[Literal["rank"]]:
    """The `fuse` node: compute the signals, fuse them, and hand the result back to `rank`.

    `rank` sends the run here once this run's MAR scores are all in (or MAR is
    skipped), so this runs once per run; `prepare` reset `fused`, so `rank` cannot
    take a previous run's fused scores on a reused thread.

    Raises:
        FusionConfigError: No weighted signal is present (a config that weighs only
            `prior`, for a request without priors).
    """
    ctx = get_context(runtime)
    config = fusion_config(ctx)
    assert config is not None  # rank sends the run here only with fusion on
    profile = state["profile"]
    assert profile is not None  # collect_traits proceeded
    order: list[str] = state["shown_order"]

    def compute(_: object) -> tuple[dict[Signal, dict[str, float]], dict[str, FusedScore]]:
        values = signals(
            config, state["request"], order, profile, state["traits"], state["scores"], text_idf
        )
        return values, fuse(values, config, order)

    # A traced child run, so the trace records the config's version as the LLM runs
    # record their prompt's; being sync, it runs in a worker thread (TF-IDF is CPU).
    traced = RunnableLambda(compute, name="fusion")
    values, fused = await traced.ainvoke(
        None,
        {
            "run_name": "fusion",
            "tags": ["m3rec:fusion"],
            "metadata": {"m3rec_fusion_version": config.version, "m3rec_fusion_sampling": config.sampling},
        },
    )
    report = FusionReport(version=config.version, signals=list(values), sampling=config.sampling)
    entries = {i: FusedEntry(fused=f.fused, parts=f.parts) for i, f in fused.items()}
    return Command(update={"fused": entries, "fusion": report}, goto="rank")
