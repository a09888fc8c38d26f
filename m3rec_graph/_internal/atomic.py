"""Replacing a file whole: a reader (or a crashed writer) sees the old file or the new one, never half.

Every writer of the package goes through here: the eval store's settings, candidates and
reports, the Batch API files, pulled prompt files, SASRec checkpoints and the seeded BPE files.

The data goes to a temporary file in the target's own directory (so `os.replace` is a rename
on one filesystem, atomic on POSIX and Windows), which then replaces the target. The name is
hidden and unique to the process and the call, so concurrent writers of one path never share a
temporary file; the last replace wins. A failed write removes its temporary file and leaves the
target as it was.

Durability: no `fsync`. This protects against a crashed or killed process (the case the callers
need: an interrupted eval or batch run resumes from whole files), not against power loss, where
a filesystem may lose the new contents. None of the callers asked for more.
"""

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to `path` to write; on a clean exit it replaces `path`.

    For writers that want a path rather than bytes (e.g. `torch.save`). The parent
    directory is created if missing. If the block raises, the temporary file is removed
    and `path` is left untouched.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # gone after the replace; a partial file after a failure


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace `path` with `data` atomically (see the module doc)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path, text: str) -> None:
    """Replace `path` with `text` (UTF-8) atomically (see the module doc)."""
    atomic_write_bytes(path, text.encode("utf-8"))
