"""One process per output at a time: an exclusive `flock` on a lock file, held for a whole run.

The `m3rec eval` run directory and `m3rec recommend-batch`'s output file both append
results a rerun resumes from; a second process on the same output would recompute and
append the same lines, so it is refused instead. The kernel drops the lock when its
process dies, even by SIGKILL, so a rerun after a crash is never blocked by a stale lock.
"""

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

if sys.platform != "win32":
    import fcntl


@contextlib.contextmanager
def exclusive_lock(lock_path: Path, busy: Callable[[str], Exception]) -> Iterator[None]:
    """Hold `lock_path` exclusively for the block (POSIX `flock`; no lock elsewhere).

    The file records the holder's pid, for the message of the process refused.

    Args:
        lock_path: The lock file (created, with its directory, if missing).
        busy: Builds the error raised when another process holds the lock, from the
            holder's pid (or "unknown").
    """
    if sys.platform == "win32":  # no flock: run unlocked
        yield
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise busy(handle.read().strip() or "unknown") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
