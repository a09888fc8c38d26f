"""`m3rec eval --store URL`: one store for the local graph and the sharded workers, recorded, checked (no Ray).

tests/unit/test_eval_ray.py runs the same on a real Ray runtime with 2 workers on one
PostgreSQL store.
"""

import io
import json
from pathlib import Path

import pytest

from m3rec_graph.cli import app as cli
from m3rec_graph.errors import ConfigurationError
from m3rec_graph.evaluation import EvalSettings, parse_methods, read_stores, run_evaluation
from m3rec_graph.evaluation.sharded import EvalEngine
from m3rec_graph.scale.config import WorkerConfig
from m3rec_graph.storage.memory import ROOT
from m3rec_graph.storage.store import STORE_URL_ENV, open_store, redacted_url
from tests.fakes import ScriptedModels, item_id_in, scripted_models
from tests.unit.test_eval_engine import SMALL, local_workers, outcome, results, served

__all__ = ["local_workers"]  # the fixture, imported for the sharded test


def evaluate(out: Path, models: ScriptedModels, store: str | None, engine: EvalEngine | None = None) -> None:
    run_evaluation(
        EvalSettings(dataset=SMALL, users=4, negatives=9, seed=0),
        parse_methods("m3rec:hybrid"),
        out,
        chat_models=models,
        serve=served,
        progress=io.StringIO(),
        n_boot=0,
        plots=False,
        engine=engine,
        store=store,
    )


def distinct_candidates(out: Path) -> set[str]:
    lines = (out / "candidates.jsonl").read_text(encoding="utf-8").splitlines()
    return {item for line in lines for item in json.loads(line)["candidates"]}


def test_store_reaches_the_local_graph_and_is_a_cache_shared_across_runs(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'elsewhere' / 'cache.db'}"
    first, second = scripted_models(), scripted_models()
    evaluate(tmp_path / "one", first, url)
    assert not (tmp_path / "one" / "store.sqlite").exists()  # the traits went to --store
    with open_store(url) as store:
        traits = store.search((ROOT, "traits"), limit=1000)
    assert {t.key.split(":")[0] for t in traits} == distinct_candidates(tmp_path / "one")
    assert {item_id_in(prompt) for _, _, prompt in first.stage_calls("mote")} == distinct_candidates(tmp_path / "one")
    assert read_stores(tmp_path / "one") == [url]

    evaluate(tmp_path / "two", second, url)  # another run directory, the same candidates and store
    assert second.stage_calls("mote") == []  # every trait found in the shared store
    by_one, by_two = results(tmp_path / "one"), results(tmp_path / "two")
    # The same rankings and ranks; the usage differs, as the profiles (and traits) were stored.
    assert {k: outcome(v) for k, v in by_two.items()} == {k: outcome(v) for k, v in by_one.items()}
    assert all(r["memory"]["profile"] == "hit" and r["memory"]["traits_miss"] == 0 for r in by_two.values())


def test_the_default_store_is_the_run_directorys_and_is_recorded(tmp_path: Path) -> None:
    evaluate(tmp_path / "run", scripted_models(), None)
    assert (tmp_path / "run" / "store.sqlite").is_file()
    assert read_stores(tmp_path / "run") == [f"sqlite:///{(tmp_path / 'run' / 'store.sqlite').resolve()}"]


def test_store_reaches_the_sharded_workers(tmp_path: Path, local_workers: list[WorkerConfig]) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    ray = EvalEngine(kind="ray", workers=1, worker_chat_models=scripted_models)
    evaluate(tmp_path / "run", scripted_models(), url, ray)
    assert [c.store_url for c in local_workers] == [url]
    assert not (tmp_path / "run" / "store.sqlite").exists()


def test_an_unreachable_store_fails_before_any_model_call(tmp_path: Path) -> None:
    models = scripted_models()
    with pytest.raises(ConfigurationError, match="cannot reach the PostgreSQL store"):  # CLI exit code 2
        evaluate(tmp_path / "run", models, "postgresql://m3rec@127.0.0.1:1/none")  # nothing listens on port 1
    assert models.calls == []
    assert read_stores(tmp_path / "run") == []


def test_redacted_url_hides_passwords_only() -> None:
    assert redacted_url("postgresql://m3rec:s3cret@db:5432/m3rec?sslmode=require&password=x") == (
        "postgresql://m3rec:***@db:5432/m3rec?sslmode=require&password=***"
    )
    assert redacted_url("postgresql://m3rec@db/m3rec") == "postgresql://m3rec@db/m3rec"
    assert redacted_url("sqlite:///runs/a.db") == "sqlite:///runs/a.db"


@pytest.mark.parametrize(
    ("flags", "env"),
    [
        (["--store", "mysql://db/m3rec"], None),
        (["--store", "sqlite:///"], None),
        (["--engine", "ray", "--store", "memory:"], None),
        ([], "redis://cache"),  # $M3REC_STORE_URL is parsed as --store is
    ],
)
def test_cli_bad_store_exits_2_before_anything_runs(
    tmp_path: Path, flags: list[str], env: str | None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    if env is not None:
        monkeypatch.setenv(STORE_URL_ENV, env)
    argv = ["eval", "--dataset", str(SMALL), "--methods", "m3rec:hybrid", "--users", "2", "--out", str(tmp_path / "run"), *flags]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert "store" in capsys.readouterr().err.lower()
    assert not (tmp_path / "run").exists()  # refused before the dataset loaded or a model was called


def test_help_says_the_store_is_a_cache_shared_across_runs(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["eval", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--store URL" in text and "a cache shared across runs" in text
    assert "results do not depend on it" in text and "without passwords" in text


def test_cli_notes_that_a_sqlite_store_keeps_cluster_workers_on_this_machine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"  # baselines only: no Ray starts, the run completes
    argv = ["eval", "--dataset", str(SMALL), "--methods", "popularity", "--users", "2", "--negatives", "9"]
    cli.main([*argv, "--n-boot", "0", "--no-plots", "--out", str(out), "--engine", "ray", "--address", "auto"])
    err = capsys.readouterr().err
    assert f"the SQLite store {out / 'store.sqlite'}" in err and "or use --store postgresql://" in err
    assert read_stores(out) == []  # no m3rec method: no store opened, none recorded
