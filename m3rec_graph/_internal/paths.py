"""Where the package keeps per-user files (trait cache, server log)."""

import os
from pathlib import Path


def cache_dir() -> Path:
    """Return (and create) `$M3REC_CACHE_DIR`, else `$XDG_CACHE_HOME/m3rec` or `~/.cache/m3rec`."""
    root = os.environ.get("M3REC_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "m3rec"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path
