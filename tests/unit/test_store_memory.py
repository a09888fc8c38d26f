"""Traits and shopper profiles in langgraph's own stores: memory:, SQLite and a real PostgreSQL."""

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from langgraph.store.base import BaseStore

from m3rec_graph.contracts.schemas import Item, ItemTraits, MotivationProfile
from m3rec_graph.errors import ConfigurationError
from m3rec_graph.stages.fallbacks import fallback_profile, neutral_traits
from m3rec_graph.storage.memory import (
    ProfileKey,
    aforget,
    forget,
    read_profile,
    read_traits,
    stored_profile_summary,
    trait_namespace,
    write_profile,
    write_traits,
)
from m3rec_graph.storage.store import StoreURLError, label, open_store, sqlite_path, store_kind

ITEMS = [
    Item(item_id="B001", title="Rose water toner", description="Alcohol-free toner."),
    Item(item_id="B002", title="Matte lipstick", brand="Acme"),
    Item(item_id="B003.v2", title="SPF 50 sunscreen"),
]


def _traits(item: Item) -> ItemTraits:
    return neutral_traits(f"test traits of {item.item_id}")


def _profile(history: list[Item]) -> MotivationProfile:
    return fallback_profile(history)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "memory":
        yield "memory:"
    elif request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.sqlite'}"
    else:
        yield request.getfixturevalue("postgres_url")


@pytest.fixture
def store(store_url: str) -> Iterator[BaseStore]:
    with open_store(store_url) as opened:
        yield opened


async def test_traits_round_trip_per_model_and_prompt_version(store: BaseStore) -> None:
    for item in ITEMS[:2]:
        await write_traits(store, item, _traits(item), model="gpt-6-luna", prompt_version="v1")
    found = await read_traits(store, ITEMS, model="gpt-6-luna", prompt_version="v1")
    assert found == {item.item_id: _traits(item) for item in ITEMS[:2]}
    # Another model or prompt version never sees them; nor does changed item text.
    assert await read_traits(store, ITEMS, model="gpt-6.1-sol", prompt_version="v1") == {}
    assert await read_traits(store, ITEMS, model="gpt-6-luna", prompt_version="v2") == {}
    edited = ITEMS[0].model_copy(update={"description": "Now with alcohol."})
    assert await read_traits(store, [edited], model="gpt-6-luna", prompt_version="v1") == {}


async def test_profiles_are_exact_match_and_isolated_per_user(store: BaseStore) -> None:
    history = ITEMS[:2]
    settings = {"model": "gpt-6-luna", "effort": "none", "prompt_version": "p1", "ablation": "none"}
    alice = ProfileKey.of("alice", history, **settings)
    bob = ProfileKey.of("bob", history, **settings)
    await write_profile(store, alice, _profile(history), ttl_minutes=None)

    assert await read_profile(store, alice) == _profile(history)
    assert await read_profile(store, bob) is None  # same history, other shopper
    for changed in (
        ProfileKey.of("alice", ITEMS, **settings),  # the window grew
        ProfileKey.of("alice", history, **{**settings, "effort": "low"}),
        ProfileKey.of("alice", history, **{**settings, "prompt_version": "p2"}),
        ProfileKey.of("alice", history, **{**settings, "ablation": "no_mote"}),
        ProfileKey.of("alice", history, **{**settings, "model": "gpt-6.1-sol"}),
    ):
        assert changed.key != alice.key
        assert await read_profile(store, changed) is None
    assert await stored_profile_summary(store, "alice") == _profile(history).summary
    assert await stored_profile_summary(store, "bob") is None


async def test_forget_deletes_one_shoppers_profiles_only(store: BaseStore) -> None:
    def key_of(user: str, n: int) -> ProfileKey:
        return ProfileKey.of(user, ITEMS[:n], model="m", effort=None, prompt_version="p", ablation="none")

    keys = [key_of("a.b", n) for n in (1, 2, 3)]
    other = key_of("a", 1)  # a prefix of the other user's id
    for key in [*keys, other]:
        await write_profile(store, key, _profile(ITEMS[:1]), ttl_minutes=None)
    await write_traits(store, ITEMS[0], _traits(ITEMS[0]), model="m", prompt_version="p")

    assert await aforget(store, "a.b") == 3
    assert all([await read_profile(store, key) is None for key in keys])
    assert await read_profile(store, other) is not None
    assert await read_traits(store, ITEMS[:1], model="m", prompt_version="p")  # traits stay
    assert await aforget(store, "a.b") == 0
    await write_profile(store, other, _profile(ITEMS[:1]), ttl_minutes=None)
    assert await asyncio.to_thread(forget, store, "a") == 1  # the sync twin (the CLI's)
    assert await read_profile(store, other) is None


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_profile_ttl_expires(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    url = (
        f"sqlite:///{tmp_path / 'ttl.sqlite'}"
        if kind == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    key = ProfileKey.of("u", ITEMS[:1], model="m", effort=None, prompt_version="p", ablation="none")
    with open_store(url) as store:
        assert store.supports_ttl
        await write_profile(store, key, _profile(ITEMS[:1]), ttl_minutes=1 / 60)  # one second
        kept = ProfileKey.of("v", ITEMS[:1], model="m", effort=None, prompt_version="p", ablation="none")
        await write_profile(store, kept, _profile(ITEMS[:1]), ttl_minutes=60)
        assert await read_profile(store, key) is not None
        await asyncio.sleep(2.2)  # SQLite sweeps on a whole-second clock: up to 1 s late
        swept = await asyncio.to_thread(store.sweep_ttl)  # type: ignore[attr-defined]
        assert swept == 1
        assert await read_profile(store, key) is None
        assert await read_profile(store, kept) is not None


def test_store_urls_are_checked_before_anything_opens(tmp_path: Path) -> None:
    assert store_kind("memory:") == "memory"
    assert store_kind("postgresql://u@127.0.0.1:1/db") == "postgres"
    assert sqlite_path("sqlite:////abs/x.db") == Path("/abs/x.db")
    assert sqlite_path("sqlite:///rel/x.db") == Path("rel/x.db")
    for bad in ("redis://x", "sqlite://", "sqlite:///", "traits.sqlite", ""):
        with pytest.raises(StoreURLError):
            store_kind(bad)
    with pytest.raises(ConfigurationError, match="cannot reach the PostgreSQL store"):
        started = time.monotonic()
        with open_store("postgresql://nobody@127.0.0.1:9/none?connect_timeout=1"):
            pass
    assert time.monotonic() - started < 15


def test_labels_escape_periods_reversibly() -> None:
    assert label("gpt-6.1-sol") == "gpt-6%2E1-sol"
    assert label("a%2Eb") != label("a.b")
    assert "." not in "".join(trait_namespace("SmolLM2-135M.gguf", "v.1"))
    with pytest.raises(ConfigurationError):
        label("")


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_processes_opening_a_fresh_store_at_once_all_succeed(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # Racing `setup()`s on a fresh database fail without the setup lock (UniqueViolation,
    # "duplicate column name"); four processes open the same fresh store at once.
    url = (
        f"sqlite:///{tmp_path / 'fresh.sqlite'}"
        if kind == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    code = (
        "import sys\nfrom m3rec_graph.storage.store import open_store\n"
        "with open_store(sys.argv[1]) as store:\n    store.put(('t',), sys.argv[2], {'ok': 1})\n"
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", code, url, str(n)], stderr=subprocess.PIPE)
        for n in range(4)
    ]
    errors = [p.communicate(timeout=60)[1].decode() for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0, 0], errors
    with open_store(url) as store:
        assert sorted(i.key for i in store.search(("t",))) == ["0", "1", "2", "3"]
