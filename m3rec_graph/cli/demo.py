"""`m3rec demo`: recommend for a few real Amazon Beauty users shipped with the package.

Each case is a real user's history (all but the last interaction) and 20
candidates: the held-out next item plus 19 items the user never touched,
shuffled. The demo shows where the held-out item landed; with the offline
SmolLM2-135M model that is close to chance (see docs/local-model.md).
"""

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from m3rec_graph.context import M3RecContext
from m3rec_graph.contracts.schemas import Item
from m3rec_graph.fusion import FusionConfig
from m3rec_graph.integrations.runner import flush_traces, serving
from m3rec_graph.llm.routing import default_preset
from m3rec_graph.stages.fuse import fusion_config, fusion_setting, needs_motivations, runs_mar
from m3rec_graph.state import M3RecGraph, RecInput
from m3rec_graph.text.item_text import clean_text, item_text

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "demo_beauty.json"


def load_cases(path: Path = SAMPLE) -> list[dict[str, Any]]:
    """Return the shipped demo cases (history, candidates, held-out target id)."""
    cases: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))["cases"]
    return cases


def _title(item: dict[str, Any]) -> str:
    return clean_text(item_text(Item.model_validate(item)), 90)


def _report(case: dict[str, Any], out: dict[str, Any], seconds: float) -> None:
    titles = {c["item_id"]: _title(c) for c in case["candidates"]}
    print(f"\n=== user {case['user_id']}  ({seconds:.1f} s)")
    print("history (oldest first):")
    for item in case["history"]:
        print(f"  - {_title(item)}")
    profile = out["profile"]
    strengths = ", ".join(
        f"{d.value} {v:.1f}" for d, v in sorted(profile.strengths().items(), key=lambda kv: -kv[1])
    )
    print(f"profile: {strengths}")
    print(f"  summary: {clean_text(profile.summary, 200)}")
    print("top 5:")
    for entry in out["ranking"][:5]:
        mark = "  <== held-out next item" if entry.item_id == case["target_id"] else ""
        motives = ", ".join(m.value for m in entry.matched_motivations) or "-"
        print(f"  {entry.rank}. [{entry.score:.1f}] {titles[entry.item_id]}{mark}")
        if entry.score_parts is not None:  # fused: what each signal added to the fused score
            parts = ", ".join(f"{name} {value:+.2f}" for name, value in entry.score_parts.items())
            print(f"       fused {entry.fused_score:+.2f} = {parts}")
        print(f"       matches: {motives}; {clean_text(entry.rationale, 110)}")
    rank = next(e.rank for e in out["ranking"] if e.item_id == case["target_id"])
    print(
        f"held-out next item ranked #{rank} of {len(out['ranking'])}: {titles[case['target_id']]}"
    )
    if out["degraded"]:
        stages = sorted({d["stage"] for d in out["degraded"]})
        print(f"degraded: {len(out['degraded'])} result(s) from fallbacks in {', '.join(stages)}")
    usage = out["usage"].total
    print(
        f"usage: {usage.calls} LLM calls, {usage.input_tokens} in / {usage.output_tokens} out tokens"
    )


def describe(config: FusionConfig) -> str:
    """The config's weighted signals, e.g. `overlap 0.30, text 0.70` (a zero-weight signal's stage does not run)."""
    return ", ".join(f"{s} {config.weights[s]:.2f}" for s in config.active())


def run_demo(graph: M3RecGraph, ctx: M3RecContext, *, users: int = 3) -> None:
    """Recommend for the first `users` demo cases and print what happened."""
    cases = load_cases()[:users]
    fusion = fusion_config(ctx)
    fused = "off (MAR's score)" if fusion is None else f"{fusion_setting(ctx)} ({fusion.version}: {describe(fusion)})"
    print(
        f"m3rec demo: {len(cases)} Amazon Beauty users, routing '{ctx.routing or default_preset()}' "
        f"(MOPE {ctx.mope_model.name}, MOTE {ctx.mote_model.name}, MAR {ctx.mar_model.name}); "
        f"fusion {fused}"
    )
    skipped = [name for name, runs in (("MOPE, MOTE", needs_motivations(ctx)), ("MAR", runs_mar(ctx))) if not runs]
    if skipped:  # zero-weight signals cost nothing: say which stages that leaves out
        print(
            f"  these weights leave {' and '.join(skipped)} out (their signals have weight 0);"
            " `m3rec demo --fusion off` runs MOPE -> MOTE -> MAR and ranks by MAR's score"
        )

    async def run_all() -> list[int]:
        # One event loop for all users: HTTP clients are bound to the loop that opened them.
        ranks = []
        for n, case in enumerate(cases, start=1):
            print(
                f"[{n}/{len(cases)}] recommending for {case['user_id']} ...",
                file=sys.stderr,
                flush=True,
            )
            request = RecInput(
                user_id=case["user_id"], history=case["history"], candidates=case["candidates"]
            )
            started = time.perf_counter()
            out = await graph.ainvoke(request, context=ctx)
            _report(case, dict(out), time.perf_counter() - started)
            ranks.append(next(e.rank for e in out["ranking"] if e.item_id == case["target_id"]))
        return ranks

    with serving(ctx):
        try:
            ranks = asyncio.run(run_all())
        finally:
            flush_traces()
    hits = sum(r <= 10 for r in ranks)
    print(
        f"\nheld-out items in the top 10: {hits}/{len(ranks)} (chance: 10 of 20 candidates). "
        "A handful of users says nothing about quality: use the evaluation harness for that."
    )
