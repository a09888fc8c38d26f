"""`_internal.atomic`: the one file writer every module uses replaces a file whole."""

import threading
from pathlib import Path

import pytest

from m3rec_graph._internal.atomic import atomic_path, atomic_write_bytes, atomic_write_text


def test_write_replaces_the_file_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "new" / "dir" / "settings.json"  # the parent is created
    atomic_write_text(target, "first\n")
    atomic_write_text(target, "zweite Fassung ✓\n")
    assert target.read_bytes() == "zweite Fassung ✓\n".encode()
    atomic_write_bytes(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert [p.name for p in target.parent.iterdir()] == ["settings.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "model.pt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(target) as tmp:
        tmp.write_text("half of the new")
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_concurrent_writers_never_leave_a_mixed_file(tmp_path: Path) -> None:
    target = tmp_path / "candidates.jsonl"
    payloads = [(str(n) * 50_000).encode() for n in range(8)]
    threads = [threading.Thread(target=atomic_write_bytes, args=(target, p)) for p in payloads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert target.read_bytes() in payloads
    assert [p.name for p in tmp_path.iterdir()] == ["candidates.jsonl"]
