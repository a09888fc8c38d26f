"""Prompt tokens of an incremental MOPE call against a full re-profile, on real histories.

    python -m evals.incremental_tokens --dataset /work/shared/data/amazon/beauty [--users 2000]

For each sampled user the history is the sequence minus its last (leave-one-out
test) item; the previous window is that history minus its newest item, so the
history grew by one item, as a returning shopper's does. Both windows are cut to
`max_history_items` as the graph cuts them, and the incremental rule
(`stages.incremental.items_added`) must accept the pair. The full call's prompt is
the MOPE prompt over the new window; the incremental call's is the incremental
prompt over the stored profile plus the new item. Both are rendered by the MOPE
stage itself and counted as `call_usage` counts a prompt (`llm.tokens.count_messages`,
the MOPE model's encoding). The graph sends the incremental call only when it is
the cheaper (`stages.mope.incremental_saving`); the last line of each table is
the saving under that choice. The answer schema is the same in both calls (the same
contract over the same window ids), so it is left out of both counts; so are the
answers, which have the same shape.

No MOPE answer is available offline, so the stored profile is a stand-in, in three
sizes: the deterministic keyword profile (`fallback_profile`, what MOPE's fallback
writes: evidence on most dimensions, a one-line summary), the same with a
400-character summary (a paragraph, as the MOPE prompt asks for), and the largest
profile the schema allows (five evidence ids on every dimension, an 800-character
summary), the worst case for the incremental prompt.
"""

import argparse
import random
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from m3rec_graph.context import M3RecContext
from m3rec_graph.contracts.schemas import Dimension, Item, MotivationProfile
from m3rec_graph.evaluation.datasets import load_dataset
from m3rec_graph.llm.routing import context_for
from m3rec_graph.stages.fallbacks import fallback_profile
from m3rec_graph.stages.incremental import items_added
from m3rec_graph.stages.mope import prompt_tokens
from m3rec_graph.state import IncrementalBase, MopeState
from m3rec_graph.storage.memory import ProfileKey


@dataclass(frozen=True)
class Measured:
    """The prompt tokens of one user's full and incremental MOPE calls."""

    window: int
    """Items in the new history window."""
    full: int
    incremental: int

    @property
    def saved(self) -> int:
        """Prompt tokens the incremental call saves (positive: it is cheaper)."""
        return self.full - self.incremental


PARAGRAPH = 400
"""Characters of a one-paragraph summary, the middle stand-in (the schema allows 800)."""


def with_summary(profile: MotivationProfile, chars: int) -> MotivationProfile:
    """`profile` with its summary padded to `chars` characters (a longer paragraph, same evidence)."""
    summary = (profile.summary + " Buys for the look first, then for skin care and value." * 20)[:chars]
    return profile.model_copy(update={"summary": summary})


def largest_profile(window: Sequence[Item]) -> MotivationProfile:
    """The largest profile the schema allows over `window`: 5 evidence ids per dimension, 800-character summary."""
    evidence = [item.item_id for item in window][-5:]
    entry = {"strength": 0.7, "evidence": evidence}
    summary = ("Buys for the look first, then for skin care and value; " * 20)[:800]
    return MotivationProfile.model_validate({**{dim.value: entry for dim in Dimension}, "summary": summary})


def measure_growth(
    user_id: str,
    history: Sequence[Item],
    ctx: M3RecContext,
    *,
    profile: MotivationProfile | None = None,
) -> Measured | None:
    """Measure one history grown by its newest item; None when the incremental rule refuses the pair.

    `profile` is the stored profile of the previous window (default: its keyword profile).
    """
    size = max(1, ctx.max_history_items)
    new, old = list(history[-size:]), list(history[:-1][-size:])
    if not old:
        return None
    added = items_added(
        _window(user_id, old), _window(user_id, new), ctx.max_incremental_items, ctx.max_history_items
    )
    if added is None:
        return None
    base = IncrementalBase(profile=profile or fallback_profile(old), new_items=added, increments=1)
    full = prompt_tokens(MopeState(user_id=user_id, history=new), ctx)
    incremental = prompt_tokens(MopeState(user_id=user_id, history=new, incremental=base), ctx)
    return Measured(window=len(new), full=full, incremental=incremental)


def _window(user_id: str, items: Sequence[Item]) -> tuple[tuple[str, str], ...]:
    """The window as a profile key records it (ids and text hashes); the settings do not matter here."""
    return ProfileKey.of(user_id, items, model="-", effort=None, prompt_version="-", ablation="none").window


def _row(name: str, values: Sequence[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[int(0.9 * (len(ordered) - 1))]
    return f"{name:<28} {statistics.mean(values):>8.1f} {statistics.median(values):>8.1f} {p90:>8.1f}"


def report(title: str, rows: Sequence[Measured]) -> list[str]:
    """Format mean, median and p90 of the full and incremental prompt tokens and the saving."""
    full_tokens = sum(r.full for r in rows)
    saved = sum(r.saved for r in rows)
    cheaper = sum(r.saved > 0 for r in rows)
    chosen = sum(max(0, r.saved) for r in rows)
    return [
        f"{title}: {len(rows)} users",
        f"{'':<28} {'mean':>8} {'median':>8} {'p90':>8}",
        _row("full re-profile (tokens)", [r.full for r in rows]),
        _row("incremental (tokens)", [r.incremental for r in rows]),
        _row("saved (tokens)", [r.saved for r in rows]),
        f"saved overall: {saved} of {full_tokens} prompt tokens ({100 * saved / full_tokens:.1f}%); "
        f"incremental cheaper for {sum(r.saved > 0 for r in rows)} of {len(rows)} users",
        f"as the graph chooses (incremental only when cheaper): saved {chosen} tokens "
        f"({100 * chosen / full_tokens:.1f}%), {chosen / max(1, cheaper):.1f} per incremental call",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--dataset", type=Path, required=True, help="a dataset directory (interactions.csv, items.jsonl)")
    parser.add_argument("--users", type=int, default=2000, help="users sampled (seeded)")
    parser.add_argument("--routing", default="hybrid", help="routing preset: its MOPE model's encoding counts")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    ctx = context_for(args.routing)
    dataset = load_dataset(args.dataset)
    users = sorted(u for u, seq in dataset.sequences.items() if len(seq) >= 3)
    sample = random.Random(args.seed).sample(users, min(args.users, len(users)))
    tables: dict[str, list[Measured]] = {
        "stored profile = keyword profile": [],
        f"stored profile = keyword profile, {PARAGRAPH}-character summary": [],
        "stored profile = largest allowed": [],
    }
    for user_id in sample:
        history = [dataset.items[i] for i in dataset.sequences[user_id][:-1]]  # the test item held out
        old = history[:-1][-max(1, ctx.max_history_items) :]
        profiles = (fallback_profile(old), with_summary(fallback_profile(old), PARAGRAPH), largest_profile(old))
        for rows, profile in zip(tables.values(), profiles, strict=True):
            measured = measure_growth(user_id, history, ctx, profile=profile)
            if measured is not None:
                rows.append(measured)
    spec = ctx.model_for("mope")
    print(
        f"{dataset.name}: history grown by one item; MOPE {spec.name} ({spec.tokenizer_model or spec.name} "
        f"encoding), max_history_items={ctx.max_history_items}, prompt tokens per call"
    )
    for title, rows in tables.items():
        print("\n".join(report(title, rows)))
        full_windows = [r for r in rows if r.window == ctx.max_history_items]
        if full_windows:
            print(_row(f"  saved, full {ctx.max_history_items}-item windows", [r.saved for r in full_windows])
                  + f"  ({len(full_windows)} users)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
