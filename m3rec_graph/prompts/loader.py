"""Stage prompts: one TOML file per stage under `prompts/`, versioned by content hash.

Each file holds a mustache chat template. Data goes in through triple-brace
variables (no HTML escaping) inside tagged blocks, and the system message tells
the model that tagged blocks are data, never instructions.
"""

import functools
import hashlib
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from langchain_core.messages import BaseMessage
from langchain_core.prompts import ChatPromptTemplate

from m3rec_graph.errors import ConfigurationError

PromptName = Literal[
    "mope", "mope_incremental", "mote", "mar_listwise", "mar_pointwise", "mar_scores", "mar_rationales"
]


def prompt_dir() -> Path:
    """Return the directory of the shipped prompt files (wheel copy, else the source tree)."""
    package = Path(__file__).resolve().parents[1]  # m3rec_graph/
    packaged = package / "_prompts"
    return packaged if packaged.is_dir() else package.parent / "prompts"


@dataclass(frozen=True)
class StagePrompt:
    """A loaded prompt: its hub name, content-hash version and chat template."""

    name: str
    version: str
    """First 12 hex digits of the file's sha256: changes whenever the wording does."""
    template: ChatPromptTemplate
    path: Path

    def format(self, **variables: Any) -> list[BaseMessage]:
        """Render the chat messages; `feedback` defaults to empty (no re-ask block)."""
        return self.template.format_messages(**{"feedback": "", **variables})


@functools.cache
def _load(path: Path) -> StagePrompt:
    raw = path.read_bytes()
    try:
        spec = tomllib.loads(raw.decode("utf-8"))
        messages = [(m["role"], m["template"]) for m in spec["messages"]]
        template = ChatPromptTemplate.from_messages(messages, template_format="mustache")
        name = str(spec["name"])
    except (tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ConfigurationError(f"bad prompt file {path}: {exc}") from exc
    return StagePrompt(name, hashlib.sha256(raw).hexdigest()[:12], template, path)


def load_prompt(name: PromptName, override: str | None = None) -> StagePrompt:
    """Load a stage prompt, from `override` (a file path) when given.

    Memoised per (name, override), like the file's content (`_load`): the graph
    asks for its prompt on every stage call, and finding and resolving the path
    cost file-system calls each time. A missing file is not memoised.
    """
    key = (name, override)
    prompt = _found.get(key)
    if prompt is None:
        prompt = _found[key] = _find_and_load(name, override)
    return prompt


def is_loaded(name: PromptName, override: str | None = None) -> bool:
    """Return whether `load_prompt(name, override)` is memoised (then it reads no file).

    Async hosts load prompts in a worker thread first (`graph.prepare` does) so that
    the stage nodes, which call `load_prompt` on the event loop, never block it.
    """
    return (name, override) in _found


_found: dict[tuple[PromptName, str | None], StagePrompt] = {}
"""`load_prompt`'s memo (prompt names x override paths: a handful in practice)."""


def _find_and_load(name: PromptName, override: str | None) -> StagePrompt:
    path = Path(override) if override else prompt_dir() / f"{name}.toml"
    if not path.is_file():
        raise ConfigurationError(f"prompt file not found: {path}")
    return _load(path.resolve())


def forget_loaded() -> None:
    """Drop the memoised prompts, so the next `load_prompt` re-reads the files (after a rewrite)."""
    _found.clear()
    _load.cache_clear()
