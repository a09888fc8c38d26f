"""Routing, token counting, pricing, the SQLite trait cache and fallbacks."""

import multiprocessing
from pathlib import Path

import pytest
import tiktoken
from langchain_core.messages import AIMessage, HumanMessage

from m3rec_graph import ConfigurationError, SqliteTraitCache, context_for
from m3rec_graph._internal.bpe import seed_bpe_files
from m3rec_graph.contracts.schemas import DimensionStrengths, Item, ItemTraits
from m3rec_graph.llm.routing import default_preset, parse_overrides
from m3rec_graph.llm.tokens import count_messages
from m3rec_graph.llm.usage import call_usage, price_table, usage_report
from m3rec_graph.stages.fallbacks import fallback_profile, neutral_traits, overlap_score
from m3rec_graph.storage.traits import trait_cache_key


def test_presets_route_like_the_paper() -> None:
    hybrid = context_for("hybrid")
    assert (hybrid.mope_model.name, hybrid.mote_model.name, hybrid.mar_model.name) == (
        "gpt-6-luna", "gpt-6-luna", "gpt-6.1-sol",
    )
    paper = context_for("paper", allow_retired=True)
    assert (paper.mope_model.name, paper.mote_model.name, paper.mar_model.name) == (
        "gpt-3.5-turbo", "gpt-3.5-turbo", "gpt-4o",
    )
    local = context_for("local")
    assert local.mar_model.base_url is not None and local.mar_model.base_url.startswith("http://127.0.0.1:")
    assert context_for("gpt-4o").mope_model.name == "gpt-4o"


def test_default_preset_depends_on_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert default_preset() == "local"
    monkeypatch.setenv("OPENAI_API_KEY", "test-placeholder")
    assert default_preset() == "hybrid"


def test_overrides_and_bad_settings() -> None:
    assert parse_overrides(["mar=gpt-4o-mini", "MOPE=local"]) == {"mar": "gpt-4o-mini", "mope": "local"}
    ctx = context_for("local", {"mar": "gpt-4o-mini"})
    assert ctx.mar_model.base_url is None and ctx.mope_model.base_url is not None
    with pytest.raises(ConfigurationError):
        parse_overrides(["mar"])
    with pytest.raises(ConfigurationError):
        context_for("nope")
    with pytest.raises(ConfigurationError):
        context_for("hybrid", colour="red")


def test_tiktoken_works_offline_from_the_shipped_bpe_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    assert sorted(seed_bpe_files()) == ["cl100k_base", "o200k_base"]
    assert seed_bpe_files() == []  # already there: nothing rewritten
    enc = tiktoken.get_encoding("o200k_base")  # --disable-socket: a download would fail
    assert enc.encode("hello world") == [24912, 2375]
    assert tiktoken.encoding_for_model("gpt-3.5-turbo").encode("hello world") == [15339, 1917]


def test_usage_falls_back_to_tiktoken_and_prices_per_stage() -> None:
    messages = [HumanMessage("hello world")]
    reported = call_usage("mar", "gpt-4o", None, messages, AIMessage("x", usage_metadata={
        "input_tokens": 1000, "output_tokens": 100, "total_tokens": 1100}), accepted=True)
    counted = call_usage("mope", "gpt-3.5-turbo", None, messages, AIMessage("{}"), accepted=False)
    assert not reported["estimated"] and counted["estimated"]
    assert counted["input_tokens"] == count_messages(messages, "gpt-3.5-turbo") == 9
    report = usage_report([reported, counted])
    assert report.stages["mar"].cost_usd == pytest.approx((1000 * 2.5 + 100 * 10) / 1e6)
    assert report.stages["mope"].wasted_tokens == counted["input_tokens"] + counted["output_tokens"]
    assert report.total.calls == 2 and report.prices_taken == price_table().taken
    unknown = call_usage("mar", "mystery-model", None, messages, AIMessage("x"), accepted=True)
    assert usage_report([unknown]).total.cost_usd is None


def _write_traits(path: str, start: int) -> None:
    cache = SqliteTraitCache(path)
    for n in range(start, start + 200):
        cache.put(f"k{n}", f"i{n}", neutral_traits("x"))


def test_sqlite_cache_persists_and_survives_two_writer_processes(tmp_path: Path) -> None:
    path = str(tmp_path / "traits.sqlite")
    ctx = multiprocessing.get_context("spawn")
    writers = [ctx.Process(target=_write_traits, args=(path, start)) for start in (0, 100)]
    for w in writers:
        w.start()
    for w in writers:
        w.join(60)
        assert w.exitcode == 0
    reopened = SqliteTraitCache(path)
    assert len(reopened) == 300
    assert reopened.get_many(["k0", "k299", "missing"]).keys() == {"k0", "k299"}


def test_cache_key_covers_text_model_and_prompt() -> None:
    item = Item(item_id="a", title="Lip balm")
    base = trait_cache_key(item, "gpt-3.5-turbo", "v1")
    assert base == trait_cache_key(Item(item_id="a", title="Lip balm"), "gpt-3.5-turbo", "v1")
    assert base != trait_cache_key(Item(item_id="a", title="Lip gloss"), "gpt-3.5-turbo", "v1")
    assert base != trait_cache_key(item, "gpt-4o", "v1")
    assert base != trait_cache_key(item, "gpt-3.5-turbo", "v2")


def test_fallbacks_are_deterministic_and_sensible() -> None:
    history = [Item(item_id="a", title="Glitter nail polish", categories=["Makeup > Nails"]),
               Item(item_id="b", title="Travel size spray", categories=["Fragrance"])]
    profile = fallback_profile(history)
    assert profile == fallback_profile(history)
    assert profile.aesthetic.strength > profile.value.strength
    assert "a" in profile.aesthetic.evidence
    strong = ItemTraits(strengths=DimensionStrengths.uniform(0.9), traits=["a", "b"])
    weak = ItemTraits(strengths=DimensionStrengths.uniform(0.1), traits=["a", "b"])
    assert overlap_score(profile, strong) > overlap_score(profile, weak)


def test_sqlite_cache_opens_while_another_connection_writes(tmp_path: Path) -> None:
    """Switching a copied (non-WAL) cache file to WAL must wait for a writer, not fail."""
    import sqlite3
    import threading
    import time as _time

    from m3rec_graph.storage.traits import SqliteTraitCache

    path = tmp_path / "copied.sqlite"
    setup = sqlite3.connect(path)
    setup.execute(
        "CREATE TABLE traits (key TEXT PRIMARY KEY, item_id TEXT NOT NULL, traits TEXT NOT NULL,"
        " created TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)"
    )
    setup.commit()
    setup.close()
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO traits (key, item_id, traits) VALUES ('k', 'i', '{}')")
    release = threading.Timer(0.3, lambda: writer.execute("COMMIT"))
    release.start()
    started = _time.monotonic()
    assert SqliteTraitCache(path).get_many(["missing"]) == {}
    release.join()
    assert _time.monotonic() - started < 10
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
