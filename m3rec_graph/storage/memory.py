"""What the graph remembers in a LangGraph `BaseStore`: item traits and shopper profiles.

Traits belong to the item: one entry per item text under the MOTE model and
prompt version that produced it, so changing either misses instead of serving
stale traits. Profiles belong to the shopper: one namespace per user, keyed by
everything that determines the profile (the rendered history window with its
ids and text hashes, the MOPE model and effort, the prompt version, the
ablation), so `forget` removes a shopper with one namespace delete. Only
validated LLM answers are written; fallbacks never are.

    ("m3rec", "traits", <mote model>, <mote prompt version>)  key <item id>:<text hash>
    ("m3rec", "profiles", <user id>)                            key sha256(profile key parts)

A profile value also records its window, its MOPE settings and whether an
incremental MOPE call made it (`incremental_version`), so the shopper's stored
profiles can be searched for one whose window the current one extends.
"""

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from langgraph.store.base import BaseStore, GetOp, PutOp, SearchOp
from langgraph.store.base import Item as StoreItem

from m3rec_graph.contracts.schemas import Item, ItemTraits, MotivationProfile
from m3rec_graph.storage.store import label, run_ops
from m3rec_graph.text.item_text import text_hash

ROOT = "m3rec"
FORMAT = 1
"""Stored value format: a value of another format is ignored (a miss), never misread."""


def trait_namespace(model: str, prompt_version: str) -> tuple[str, ...]:
    """Return the namespace of the traits one MOTE model and prompt version produce."""
    return (ROOT, "traits", label(model), label(prompt_version))


def trait_key(item: Item) -> str:
    """Return an item's key in its trait namespace: its id and the hash of its text."""
    return f"{item.item_id}:{text_hash(item)}"


async def read_traits(
    store: BaseStore, items: Sequence[Item], *, model: str, prompt_version: str
) -> dict[str, ItemTraits]:
    """Return the stored traits of those `items` that have them, by item id (one `abatch`)."""
    ops = _trait_reads(items, model, prompt_version)
    return _found_traits(items, await run_ops(store, ops))


def read_traits_sync(
    store: BaseStore, items: Sequence[Item], *, model: str, prompt_version: str
) -> dict[str, ItemTraits]:
    """`read_traits` for synchronous callers (the cost dry run, the Batch API file)."""
    return _found_traits(items, store.batch(_trait_reads(items, model, prompt_version)))


async def write_traits(
    store: BaseStore, item: Item, traits: ItemTraits, *, model: str, prompt_version: str
) -> None:
    """Store one validated MOTE answer (no TTL: traits stay valid while the text is unchanged)."""
    await run_ops(store, [_trait_write(item, traits, model, prompt_version)])


async def write_many_traits(
    store: BaseStore,
    entries: Sequence[tuple[Item, ItemTraits]],
    *,
    model: str,
    prompt_version: str,
) -> None:
    """Store many validated MOTE answers in one `abatch` (the MOTE pre-pass of `m3rec_graph.scale`)."""
    if entries:
        await run_ops(store, [_trait_write(item, traits, model, prompt_version) for item, traits in entries])


def write_traits_sync(
    store: BaseStore, item: Item, traits: ItemTraits, *, model: str, prompt_version: str
) -> None:
    """`write_traits` for synchronous callers (Batch API ingestion)."""
    store.batch([_trait_write(item, traits, model, prompt_version)])


def write_trait_entry_sync(
    store: BaseStore,
    *,
    item_id: str,
    text_hash_: str,
    traits: ItemTraits,
    model: str,
    prompt_version: str,
) -> None:
    """Store traits for an item known only by id and text hash (Batch API results carry no text)."""
    value = {"format": FORMAT, "item_id": item_id, "traits": traits.model_dump(mode="json")}
    key = f"{item_id}:{text_hash_}"
    store.batch([PutOp(trait_namespace(model, prompt_version), key, value, index=False)])


def _trait_reads(items: Sequence[Item], model: str, prompt_version: str) -> list[GetOp]:
    namespace = trait_namespace(model, prompt_version)
    return [GetOp(namespace, trait_key(item)) for item in items]


def _trait_write(item: Item, traits: ItemTraits, model: str, prompt_version: str) -> PutOp:
    value = {"format": FORMAT, "item_id": item.item_id, "traits": traits.model_dump(mode="json")}
    return PutOp(trait_namespace(model, prompt_version), trait_key(item), value, index=False)


def _found_traits(items: Sequence[Item], results: Sequence[Any]) -> dict[str, ItemTraits]:
    found: dict[str, ItemTraits] = {}
    for item, result in zip(items, results, strict=True):
        traits = _traits_value(result)
        if traits is not None:
            found[item.item_id] = traits
    return found


def _traits_value(result: Any) -> ItemTraits | None:
    if not isinstance(result, StoreItem) or result.value.get("format") != FORMAT:
        return None
    return ItemTraits.model_validate(result.value["traits"])


# --------------------------------------------------------------------------- profiles


@dataclass(frozen=True)
class ProfileKey:
    """Everything that determines a MOPE profile, and the store key it hashes to."""

    user_id: str
    window: tuple[tuple[str, str], ...]
    """The history window MOPE reads, oldest first: (item id, text hash) per item."""
    model: str
    effort: str | None
    prompt_version: str
    ablation: str

    @classmethod
    def of(
        cls,
        user_id: str,
        window: Sequence[Item],
        *,
        model: str,
        effort: str | None,
        prompt_version: str,
        ablation: str,
    ) -> "ProfileKey":
        """Build the key of the profile MOPE would write for this window and these settings."""
        return cls(
            user_id=user_id,
            window=tuple((item.item_id, text_hash(item)) for item in window),
            model=model,
            effort=effort,
            prompt_version=prompt_version,
            ablation=ablation,
        )

    @property
    def key(self) -> str:
        """The store key: a sha256 over every part, so any change is a different key."""
        parts = [list(self.window), self.model, self.effort, self.prompt_version, self.ablation]
        return hashlib.sha256(json.dumps(parts).encode("utf-8")).hexdigest()


def profile_namespace(user_id: str) -> tuple[str, ...]:
    """Return the namespace that holds every stored profile of one shopper."""
    return (ROOT, "profiles", label(user_id))


@dataclass(frozen=True)
class StoredProfile:
    """A stored profile with what it was made from (a base for an incremental update)."""

    profile: MotivationProfile
    window: tuple[tuple[str, str], ...]
    """The history window it profiles, oldest first: (item id, text hash) per item."""
    incremental_version: str | None
    """The incremental MOPE prompt version that updated it last; None: a full MOPE profile."""
    increments: int
    """Incremental updates since the last full profile (0 for a full one)."""
    updated_at: datetime


async def read_profile(
    store: BaseStore, key: ProfileKey, *, incremental_version: str | None = None
) -> MotivationProfile | None:
    """Return the profile stored under exactly `key`, or None.

    A profile an incremental MOPE call produced is returned only when
    `incremental_version` is the version of the incremental prompt that made it; by
    default only full profiles are (exact-match memory, as `m3rec eval` uses it, so
    a result never depends on which histories were served before).
    """
    (result,) = await run_ops(store, [GetOp(profile_namespace(key.user_id), key.key)])
    stored = _stored_profile(result)
    if stored is None or not _servable(stored, incremental_version):
        return None
    return stored.profile


async def read_profile_bases(
    store: BaseStore, key: ProfileKey, *, incremental_version: str, limit: int = 100
) -> list[StoredProfile]:
    """Return the shopper's stored profiles made under `key`'s MOPE settings, newest first.

    These are the candidate bases of an incremental update (their windows are compared
    with `key.window` by the caller). Only the `limit` most recently written are read:
    SQLite and PostgreSQL stores search newest first.
    """
    (found,) = await run_ops(store, [SearchOp(profile_namespace(key.user_id), limit=limit)])
    bases = []
    for result in found if isinstance(found, list) else []:
        stored = _stored_profile(result)
        if (
            isinstance(result, StoreItem)
            and stored is not None
            and _servable(stored, incremental_version)
            and all(result.value.get(f) == getattr(key, f) for f in _SETTINGS)
        ):
            bases.append(stored)
    return sorted(bases, key=lambda b: b.updated_at, reverse=True)


_SETTINGS = ("model", "effort", "prompt_version", "ablation")
"""The MOPE settings of a profile key besides its window: a base must match them all."""


def _stored_profile(result: Any) -> StoredProfile | None:
    if not isinstance(result, StoreItem) or result.value.get("format") != FORMAT:
        return None
    value = result.value
    return StoredProfile(
        profile=MotivationProfile.model_validate(value["profile"]),
        window=tuple((str(item_id), str(hash_)) for item_id, hash_ in value["window"]),
        incremental_version=value.get("incremental_version"),
        increments=int(value.get("increments", 0)),
        updated_at=result.updated_at,
    )


def _servable(stored: StoredProfile, incremental_version: str | None) -> bool:
    return stored.incremental_version is None or stored.incremental_version == incremental_version


async def write_profile(
    store: BaseStore,
    key: ProfileKey,
    profile: MotivationProfile,
    *,
    ttl_minutes: float | None,
    incremental_version: str | None = None,
    increments: int = 0,
) -> None:
    """Store one validated MOPE profile under `key`, expiring after `ttl_minutes` (None: never).

    A store without TTL support (`InMemoryStore`) keeps it for its own lifetime. An
    incrementally updated profile goes under its window's key like a full one, marked
    with the incremental prompt's version (which `read_profile` checks) and the number
    of `increments` since the last full profile; a later full profile replaces it.
    """
    value = {
        "format": FORMAT,
        "profile": profile.model_dump(mode="json"),
        "window": [list(pair) for pair in key.window],
        "model": key.model,
        "effort": key.effort,
        "prompt_version": key.prompt_version,
        "ablation": key.ablation,
        "incremental_version": incremental_version,
        "increments": increments,
    }
    # A PutOp passed to `abatch` carries its own TTL (the store's `default_ttl` applies
    # only through `put`), so the expiry is always explicit here.
    ttl = ttl_minutes if store.supports_ttl else None
    op = PutOp(profile_namespace(key.user_id), key.key, value, index=False, ttl=ttl)
    await run_ops(store, [op])


async def stored_profile_summary(store: BaseStore, user_id: str) -> str | None:
    """Return the summary of the shopper's most recently stored profile ("what drives them")."""
    items = [
        i
        for i in await _search(store, profile_namespace(user_id))
        if i.value.get("format") == FORMAT
    ]
    if not items:
        return None
    latest = max(items, key=lambda i: i.updated_at)
    return str(latest.value["profile"]["summary"])


async def aforget(store: BaseStore, user_id: str) -> int:
    """Delete every stored profile of `user_id`; return how many were deleted.

    Traits are not per user and stay. What this does not reach (a host's
    checkpointed threads, LangSmith traces) is listed in docs/privacy.md.
    """
    namespace = profile_namespace(user_id)
    deleted = 0
    while True:
        found = await _search(store, namespace)
        if not found:
            return deleted
        await run_ops(store, [PutOp(namespace, item.key, None) for item in found])
        deleted += len(found)


async def _search(store: BaseStore, namespace: tuple[str, ...]) -> list[StoreItem]:
    (found,) = await run_ops(store, [SearchOp(namespace, limit=100)])
    return (
        [item for item in found if isinstance(item, StoreItem)] if isinstance(found, list) else []
    )


def forget(store: BaseStore, user_id: str) -> int:
    """`aforget` for synchronous callers (the `m3rec forget` command)."""
    namespace = profile_namespace(user_id)
    deleted = 0
    while found := store.search(namespace, limit=100):
        store.batch([PutOp(namespace, item.key, None) for item in found])
        deleted += len(found)
    return deleted
