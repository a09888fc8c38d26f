"""The store an evaluation's m3rec methods use: `--store URL`, else the run directory's SQLite file.

A store is a cache, not part of a run's results: trait namespaces name the MOTE model
and prompt version, and profile keys the MOPE settings and ablation, so any number of
runs (and methods with other routings) can share one store without sharing answers,
and a run's results do not depend on which store it used. The local graph and every
Ray worker open the same URL (`--engine ray --address` needs one all nodes reach:
PostgreSQL). `store.json` in the run directory records each store the run has used,
in the order first used, with credentials redacted.
"""

import json
from pathlib import Path

from m3rec_graph._internal.atomic import atomic_write_text
from m3rec_graph.evaluation.settings import EvaluationError
from m3rec_graph.storage.store import redacted_url, sqlite_path, store_kind

STORE_FILE = "store.sqlite"
"""The run directory's store (SQLite), the default: item traits and exact-match shopper profiles."""
STORE_RECORD = "store.json"
"""Which stores a run used (`{"stores": [URL, ...]}`, credentials redacted)."""


def run_store_url(out_dir: Path, store: str | None) -> str:
    """Return the store URL of a run: `store`, else `out_dir`'s store.sqlite; SQLite paths made absolute.

    Absolute, because Ray workers need not share the driver's working directory.

    Raises:
        StoreURLError: `store` is not `memory:`, `sqlite:///PATH` or `postgresql://...`
            (a `ConfigurationError`: CLI exit code 2).
    """
    url = store or f"sqlite:///{out_dir / STORE_FILE}"
    if store_kind(url) == "sqlite":
        return f"sqlite:///{sqlite_path(url).resolve()}"
    return url


def check_store_for_engine(url: str, engine_kind: str) -> None:
    """Refuse an in-memory store with `--engine ray`: the driver and each worker would have their own.

    Raises:
        EvaluationError: `url` is `memory:` and `engine_kind` is `ray`.
    """
    if engine_kind == "ray" and store_kind(url) == "memory":
        raise EvaluationError(
            "--store memory: is one process's: with --engine ray use postgresql://..."
            " (any cluster) or sqlite:///PATH (one machine)"
        )


def record_store(out_dir: Path, url: str) -> None:
    """Add `url` (credentials redacted) to `out_dir/store.json` unless it is there already."""
    path = out_dir / STORE_RECORD
    shown = redacted_url(url)
    stores = read_stores(out_dir)
    if shown in stores:
        return
    atomic_write_text(path, json.dumps({"stores": [*stores, shown]}, indent=2) + "\n")


def read_stores(out_dir: Path) -> list[str]:
    """Return the stores `out_dir/store.json` records (none when it is missing or unreadable)."""
    try:
        stored = json.loads((out_dir / STORE_RECORD).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return []  # a record for the reader only: a damaged one is rewritten, never fatal
    stores = stored.get("stores") if isinstance(stored, dict) else None
    return [s for s in stores if isinstance(s, str)] if isinstance(stores, list) else []
