"""Incremental MOPE: when a stored profile's window is the new window minus its newest few items.

The rule, on history windows as the profile key records them ((item id, text hash)
per item, oldest first, after the cut to `N = max_history_items`): a stored window
`old` is a base for the new window `new` when, for some `g` with
1 <= g <= `max_incremental_items`,

    new == old[d:] + added,   len(added) == g,   d == max(0, len(old) + g - N),   d < len(old)

that is, the shopper bought `g` items since (`added`, the newest `g` of `new`), and
the window slid by exactly the `d` oldest items the cut to `N` pushes out (`d` > 0
only once the window is full). At least one old item stays in the window. Anything
else (an item removed or reordered, a text edit, which changes its hash, a jump of
more than `max_incremental_items`, another `max_history_items`, other MOPE settings)
has no base and gets a full re-profile. The smallest `g` wins (the fewest items to
read), then the most recently stored base.

A base is used only when the incremental prompt (stored profile plus new items) is
shorter than the full one (`stages.mope.incremental_saving`): for a short history
of short titles the profile can cost more tokens than the items it stands for.

A profile may be updated again and again: `IncrementalBase.increments` counts the
updates since the last full profile and is recorded with it.
"""

from collections.abc import Sequence

from langgraph.store.base import BaseStore

from m3rec_graph.context import M3RecContext
from m3rec_graph.prompts.loader import load_prompt
from m3rec_graph.state import IncrementalBase
from m3rec_graph.storage.memory import ProfileKey, StoredProfile, read_profile_bases

Window = Sequence[tuple[str, str]]


def incremental_version(ctx: M3RecContext) -> str | None:
    """Return the incremental MOPE prompt version under `ctx`, or None when incremental MOPE is off.

    Stored profiles an incremental call made are served only under this version
    (`storage.memory.read_profile`), so off (`max_incremental_items=0`, as `m3rec eval`
    runs) means exact-match full profiles only.
    """
    if ctx.max_incremental_items <= 0:
        return None
    return load_prompt("mope_incremental", ctx.prompt_overrides.get("mope_incremental")).version


def items_added(old: Window, new: Window, max_items: int, window_size: int) -> int | None:
    """Return how many newest items of `new` extend `old` under the rule above, or None.

    `window_size` is `max_history_items`, the length the history is cut to.
    """
    for added in range(1, max_items + 1):
        dropped = max(0, len(old) + added - max(1, window_size))
        kept = len(old) - dropped
        if kept < 1 or kept + added != len(new):
            continue
        if tuple(old[dropped:]) == tuple(new[:kept]):
            return added
    return None


def choose_base(
    stored: Sequence[StoredProfile], new: Window, max_items: int, window_size: int
) -> tuple[StoredProfile, int] | None:
    """Return the stored profile to update for window `new` and the number of added items, or None.

    `stored` is newest first; the fewest added items win, then the newest profile.
    """
    best: tuple[StoredProfile, int] | None = None
    for profile in stored:
        added = items_added(profile.window, new, max_items, window_size)
        if added is not None and (best is None or added < best[1]):
            best = (profile, added)
    return best


async def find_incremental_base(
    store: BaseStore, key: ProfileKey, ctx: M3RecContext
) -> IncrementalBase | None:
    """Return what an incremental MOPE task for `key` starts from, or None (a full re-profile)."""
    version = incremental_version(ctx)
    if version is None:
        return None
    stored = await read_profile_bases(store, key, incremental_version=version)
    chosen = choose_base(stored, key.window, ctx.max_incremental_items, ctx.max_history_items)
    if chosen is None:
        return None
    base, added = chosen
    return IncrementalBase(profile=base.profile, new_items=added, increments=base.increments + 1)
