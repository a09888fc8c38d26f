"""Shopper and item memory as a host sees it: a second `m3rec recommend` answers from the store."""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from m3rec_graph.cli.app import main
from m3rec_graph.storage.memory import write_traits
from m3rec_graph.storage.store import open_store
from tests.fault_server import FaultConfig, FaultServer
from tests.unit.test_langgraph_server import TODAY, beauty_requests, stage_calls


@pytest.fixture
def strict_openai(monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultServer]:
    with FaultServer(FaultConfig(strict=True, today=TODAY)) as server:
        monkeypatch.setenv("OPENAI_API_KEY", "test-key")
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)
        yield server


def recommend(request_file: Path, *flags: str, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    main(["recommend", "--request", str(request_file), "--routing", "hybrid", *flags])
    out: dict[str, Any] = json.loads(capsys.readouterr().out)
    return out


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_second_recommend_for_the_same_history_calls_neither_mope_nor_mote(
    kind: str,
    tmp_path: Path,
    strict_openai: FaultServer,
    capsys: pytest.CaptureFixture[str],
    request: pytest.FixtureRequest,
) -> None:
    store = f"sqlite:///{tmp_path / 'store.sqlite'}" if kind == "sqlite" else request.getfixturevalue("postgres_url")
    shopper = beauty_requests()[5]
    request_file = tmp_path / "request.json"
    request_file.write_text(json.dumps(shopper), encoding="utf-8")

    first = recommend(request_file, "--store", store, capsys=capsys)
    after_first = stage_calls(strict_openai)
    assert after_first["mope"] == 1 and after_first["mote"] == 10
    assert first["memory"] == {"profile": "miss", "traits_hit": 0, "traits_miss": 10}

    second = recommend(request_file, "--store", store, capsys=capsys)
    calls = {stage: stage_calls(strict_openai)[stage] - after_first[stage] for stage in after_first}
    assert calls == {"mope": 0, "mote": 0, "mar": after_first["mar"]}
    assert second["memory"] == {"profile": "hit", "traits_hit": 10, "traits_miss": 0}
    assert second["usage"]["stages"]["mope"]["calls"] == 0
    assert second["profile"] == first["profile"]

    # One more item in the history: another window, so MOPE runs again (traits stay),
    # as an incremental update of the stored profile: one MOPE call, on its own prompt.
    grown = {**shopper, "history": [*shopper["history"], shopper["candidates"][0]]}
    request_file.write_text(json.dumps(grown), encoding="utf-8")
    before = stage_calls(strict_openai)
    third = recommend(request_file, "--store", store, capsys=capsys)
    assert third["memory"]["profile"] == "incremental" and third["memory"]["traits_hit"] == 10
    assert stage_calls(strict_openai)["mope"] - before["mope"] == 1

    # forget: the shopper's profiles are gone, so the original history misses again.
    main(["forget", shopper["user_id"], "--store", store])
    assert "forgot 2 stored profile(s)" in capsys.readouterr().out
    request_file.write_text(json.dumps(shopper), encoding="utf-8")
    assert recommend(request_file, "--store", store, capsys=capsys)["memory"]["profile"] == "miss"


def test_the_deprecated_cache_flag_is_a_sqlite_store_with_a_note(
    tmp_path: Path, strict_openai: FaultServer, capsys: pytest.CaptureFixture[str]
) -> None:
    request_file = tmp_path / "request.json"
    request_file.write_text(json.dumps(beauty_requests()[6]), encoding="utf-8")
    cache = tmp_path / "old.sqlite"
    main(["recommend", "--request", str(request_file), "--routing", "hybrid", "--cache", str(cache)])
    captured = capsys.readouterr()
    assert "--cache FILE is deprecated" in captured.err and f"--store sqlite:///{cache}" in captured.err
    assert json.loads(captured.out)["memory"]["profile"] == "miss"
    main(["recommend", "--request", str(request_file), "--routing", "hybrid", "--store", f"sqlite:///{cache}"])
    assert json.loads(capsys.readouterr().out)["memory"]["profile"] == "hit"


def test_bad_store_urls_exit_2_before_any_call(
    tmp_path: Path, strict_openai: FaultServer, capsys: pytest.CaptureFixture[str]
) -> None:
    request_file = tmp_path / "request.json"
    request_file.write_text(json.dumps(beauty_requests()[6]), encoding="utf-8")
    for flags in (["--store", "redis://x"], ["--store", "memory:", "--cache", "f.sqlite"]):
        with pytest.raises(SystemExit) as exit_:
            main(["recommend", "--request", str(request_file), *flags])
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
    assert sum(stage_calls(strict_openai).values()) == 0


async def test_postgres_store_survives_a_server_restart_mid_run(
    postgres_server: Any, postgres_url: str
) -> None:
    from m3rec_graph.contracts.schemas import Item
    from m3rec_graph.stages.fallbacks import neutral_traits
    from m3rec_graph.storage.memory import read_traits

    items = [Item(item_id=f"i{n}", title=f"Product {n}") for n in range(6)]
    traits = neutral_traits("restart test")
    with open_store(postgres_url) as store:
        for item in items[:3]:
            await write_traits(store, item, traits, model="m", prompt_version="p")
        postgres_server.restart(mode="immediate")  # like a crash: every pooled connection dies
        for item in items[3:]:  # the pool checks connections before lending them
            await write_traits(store, item, traits, model="m", prompt_version="p")
        found = await read_traits(store, items, model="m", prompt_version="p")
    assert sorted(found) == [item.item_id for item in items]  # nothing acknowledged was lost
