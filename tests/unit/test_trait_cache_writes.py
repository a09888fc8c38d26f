"""Trait-cache writes are best-effort: a cache that cannot store traits never costs the run its traits.

A write the storage refuses (a locked SQLite file, a full disk) is logged once per
kind and the MOTE answer is used as is: LLM traits in MAR's prompt, no `degraded`
entry. A cache raising a programming error (`TypeError`, `sqlite3.ProgrammingError`)
still fails the run.
"""

import logging
import re
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from m3rec_graph import SqliteTraitCache, build_graph, context_for
from m3rec_graph.contracts.schemas import ItemTraits, TraitsAnswer
from m3rec_graph.state import RecInput
from tests.fakes import ScriptedModels, default_responder, traits_answer
from tests.unit.test_graph import CANDIDATES, REQUEST

HYBRID = context_for("hybrid", mar_chunk_size=10)
LLM_TRAITS = TraitsAnswer.model_validate(traits_answer()).to_traits()
MOTE_LOGGER = "m3rec_graph.stages.mote"


class FailingCache:
    """Misses every key and refuses every write with `error`."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.puts = 0

    def get_many(self, keys: Iterable[str]) -> dict[str, ItemTraits]:
        return {}

    def put(self, key: str, item_id: str, traits: ItemTraits) -> None:
        self.puts += 1
        raise self.error


class QuickSqliteTraitCache(SqliteTraitCache):
    """A `SqliteTraitCache` whose connections wait 50 ms for a lock instead of 30 s."""

    def _conn(self) -> sqlite3.Connection:
        conn = super()._conn()
        conn.execute("PRAGMA busy_timeout = 50")
        return conn


async def recommend(models: ScriptedModels, cache: Any) -> dict[str, Any]:
    graph = build_graph(chat_models=models, trait_cache=cache)
    out: dict[str, Any] = await graph.ainvoke(cast(RecInput, REQUEST), context=HYBRID)
    return out


def assert_llm_traits_used(out: dict[str, Any], models: ScriptedModels) -> None:
    """Every candidate was encoded by MOTE, and MAR saw those traits (no neutral fallback)."""
    assert out["degraded"] == []
    assert out["usage"].stages["mote"].calls == len(CANDIDATES)
    assert len(out["ranking"]) == len(CANDIDATES)
    (mar_prompt,) = [p for _, stage, p in models.calls if stage == "mar"]
    assert mar_prompt.count(LLM_TRAITS.traits[0]) == len(CANDIDATES)
    assert "traits unknown" not in mar_prompt


@pytest.mark.parametrize(
    "error",
    [
        sqlite3.OperationalError("database is locked"),
        sqlite3.DatabaseError("database disk image is malformed"),
        OSError(28, "No space left on device"),
    ],
    ids=["locked", "malformed", "disk-full"],
)
async def test_a_refused_write_keeps_the_llm_traits_and_warns_once(
    error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    cache = FailingCache(error)
    models = ScriptedModels(default_responder())
    with caplog.at_level(logging.DEBUG, logger=MOTE_LOGGER):
        out = await recommend(models, cache)
    assert cache.puts == len(CANDIDATES)
    assert_llm_traits_used(out, models)
    warnings = [r for r in caplog.records if r.name == MOTE_LOGGER and r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]  # once for six failed writes
    assert str(error) in warnings[0].getMessage()
    assert "without storing it" in warnings[0].getMessage()


@pytest.mark.parametrize(
    "error",
    [TypeError("put() got an unexpected keyword"), sqlite3.ProgrammingError("closed database")],
    ids=["type-error", "programming-error"],
)
async def test_a_programming_error_of_the_cache_still_fails(error: Exception) -> None:
    with pytest.raises(type(error), match=re.escape(str(error))):
        await recommend(ScriptedModels(default_responder()), FailingCache(error))


@pytest.fixture
def locked_cache(tmp_path: Path) -> Iterator[QuickSqliteTraitCache]:
    """A real SQLite trait cache whose file another connection holds in an exclusive transaction."""
    path = tmp_path / "traits.sqlite"
    cache = QuickSqliteTraitCache(path)
    assert len(cache) == 0  # create the file (WAL mode, the table) before the lock is taken
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        yield cache
    finally:
        holder.execute("ROLLBACK")
        holder.close()


async def test_a_locked_sqlite_cache_file_keeps_the_llm_traits(
    locked_cache: QuickSqliteTraitCache, caplog: pytest.LogCaptureFixture
) -> None:
    models = ScriptedModels(default_responder())
    with caplog.at_level(logging.WARNING, logger=MOTE_LOGGER):
        out = await recommend(models, locked_cache)
    assert_llm_traits_used(out, models)
    assert any("database is locked" in r.getMessage() for r in caplog.records)
    assert len(locked_cache) == 0  # nothing could be stored


async def test_once_the_lock_is_gone_the_traits_are_cached_again(tmp_path: Path) -> None:
    path = tmp_path / "traits.sqlite"
    cache = QuickSqliteTraitCache(path)
    assert len(cache) == 0
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    await recommend(ScriptedModels(default_responder()), cache)
    holder.execute("ROLLBACK")
    holder.close()
    assert len(cache) == 0
    again = ScriptedModels(default_responder())
    out = await recommend(again, cache)  # the misses are encoded again, and stored this time
    assert_llm_traits_used(out, again)
    assert len(cache) == len(CANDIDATES)
    cached = ScriptedModels(default_responder())
    await recommend(cached, cache)
    assert cached.stage_calls("mote") == []
