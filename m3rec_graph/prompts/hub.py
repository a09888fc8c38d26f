"""Push the stage prompts to the LangSmith prompt hub and pull hub versions back into `prompts/`.

Hub names are the `name` field of each prompt file, so the files stay the one
source of truth:

| prompt file | hub name |
|---|---|
| `prompts/mope.toml` | `m3rec-mope` |
| `prompts/mope_incremental.toml` | `m3rec-mope-incremental` |
| `prompts/mote.toml` | `m3rec-mote` |
| `prompts/mar_listwise.toml` | `m3rec-mar` |
| `prompts/mar_pointwise.toml` | `m3rec-mar-pointwise` |
| `prompts/mar_scores.toml` | `m3rec-mar-scores` |
| `prompts/mar_rationales.toml` | `m3rec-mar-rationales` |

The pointwise MAR prompt is a separate hub prompt (not a tag or commit of
`m3rec-mar`) because it takes other variables (`candidate` instead of
`candidates` and `count`) and asks for another answer schema; tags stay free
for what they are for: `staging`, `prod`, experiment names.

Templates travel as LangChain `ChatPromptTemplate`s in mustache format. A pulled
version must be mustache, use only the variables the stage renders, and is
written back as the same TOML layout (plus `hub_commit`, the hub commit it came
from). The prompt version the graph records in traces
(`m3rec_prompt_version`) is the file's content hash, so it changes with the
pulled wording. When LangSmith cannot be reached or refuses, `PromptHubError`
says so in one line and nothing is written: the local files stay in use.

`hub_prompt_file` pulls one hub version into the cache directory instead, for a
single run (`m3rec recommend --prompt mar=m3rec-mar:staging`): the path goes
into `M3RecContext.prompt_overrides`, and `prompts/` is left alone.
"""

import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import tomli_w
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.prompts.chat import (
    AIMessagePromptTemplate,
    HumanMessagePromptTemplate,
    SystemMessagePromptTemplate,
)
from langchain_core.prompts.prompt import PromptTemplate
from langsmith import Client
from langsmith.utils import LangSmithConflictError, LangSmithError

from m3rec_graph._internal import langsmith_errors
from m3rec_graph._internal.atomic import atomic_write_text
from m3rec_graph._internal.paths import cache_dir
from m3rec_graph.prompts import loader as prompts
from m3rec_graph.prompts.loader import PromptName, StagePrompt, load_prompt, prompt_dir

PROMPT_NAMES: tuple[PromptName, ...] = get_args(PromptName)
_ROLES: tuple[tuple[type[Any], str], ...] = (
    (SystemMessagePromptTemplate, "system"),
    (HumanMessagePromptTemplate, "human"),
    (AIMessagePromptTemplate, "ai"),
)


class PromptHubError(langsmith_errors.LangSmithFailure):
    """LangSmith could not be reached, refused, or returned a prompt the stage cannot use.

    `.unreachable` is True when LangSmith could not be reached at all (a run may fall back
    to the local file).
    """


def hub_error(exc: LangSmithError, action: str, api_url: str) -> PromptHubError:
    """Translate a LangSmith error into a one-line `PromptHubError`."""
    message = langsmith_errors.describe(
        exc, action, api_url, not_found="not found on the LangSmith prompt hub"
    )
    return PromptHubError(
        f"{message}; the local prompt files stay in use",
        unreachable=langsmith_errors.is_unreachable(exc),
    )


def resolve_names(names: Sequence[str] | None) -> list[PromptName]:
    """Return the prompt names to act on (all four by default); accept file or hub names."""
    if not names:
        return list(PROMPT_NAMES)
    by_hub = {load_prompt(n).name: n for n in PROMPT_NAMES}
    chosen: list[PromptName] = []
    for name in names:
        if name in PROMPT_NAMES:
            chosen.append(name)
        elif name in by_hub:
            chosen.append(by_hub[name])
        else:
            raise PromptHubError(
                f"unknown prompt {name!r}: choose from {', '.join(PROMPT_NAMES)} or {', '.join(by_hub)}"
            )
    return list(dict.fromkeys(chosen))


def _spec(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- push


@dataclass(frozen=True)
class PushResult:
    """One prompt pushed (or found unchanged) on the hub."""

    prompt: PromptName
    hub_name: str
    version: str
    """The local file's content hash."""
    url: str | None
    """The commit's URL; `None` when the hub already had this exact prompt."""


def push_prompts(
    client: Client, names: Sequence[str] | None = None, *, tag: str | None = None
) -> list[PushResult]:
    """Push each prompt file to the hub as a new commit (tagged `tag` if given).

    Raises:
        PromptHubError: LangSmith is unreachable or refused (earlier prompts may
            already have been pushed: each push is one commit).
    """
    results = []
    for name in resolve_names(names):
        prompt = load_prompt(name)
        description = str(_spec(prompt.path).get("description", ""))
        try:
            url: str | None = client.push_prompt(
                prompt.name,
                object=prompt.template,
                description=description,
                tags=["m3rec", name],
                commit_tags=[tag] if tag else None,
                commit_description=f"m3rec {name} prompt, file version {prompt.version}",
            )
        except LangSmithConflictError:
            url = None  # the hub answers 409 when nothing changed since the latest commit
        except LangSmithError as exc:
            raise hub_error(exc, f"push {prompt.name}", client.api_url) from exc
        results.append(
            PushResult(prompt=name, hub_name=prompt.name, version=prompt.version, url=url)
        )
    return results


# --------------------------------------------------------------------------- pull


@dataclass(frozen=True)
class PullResult:
    """One prompt pulled from the hub."""

    prompt: PromptName
    ref: str
    """What was pulled, e.g. `m3rec-mar:staging`."""
    commit: str | None
    path: Path
    changed: bool
    """False when the hub version equals the local file's messages (nothing written)."""
    version: str
    """The file's content hash after the pull (what traces record)."""
    dropped_variables: tuple[str, ...] = ()
    """Variables the stage renders that the hub version does not use."""


def _messages(template: Any, ref: str) -> list[tuple[str, str]]:
    """Return (role, mustache template) pairs of a pulled prompt, or raise why it is unusable."""
    if not isinstance(template, ChatPromptTemplate):
        raise PromptHubError(f"{ref} is a {type(template).__name__}, not a chat prompt template")
    pairs: list[tuple[str, str]] = []
    for message in template.messages:
        role_name = next((role for cls, role in _ROLES if isinstance(message, cls)), None)
        prompt = getattr(message, "prompt", None)
        if role_name is None or not isinstance(prompt, PromptTemplate):
            raise PromptHubError(
                f"{ref}: message {type(message).__name__} is not a system/human/ai text template"
            )
        if prompt.template_format != "mustache":
            raise PromptHubError(
                f"{ref}: template format is {prompt.template_format!r}; the stages render mustache"
            )
        pairs.append((role_name, prompt.template))
    if not pairs:
        raise PromptHubError(f"{ref}: the prompt has no messages")
    return pairs


def prompt_file_text(
    name: str, description: str, messages: Sequence[tuple[str, str]], hub_commit: str | None
) -> str:
    r"""Render a prompt file in the layout of `prompts/*.toml` (what `tomllib` reads back is the input).

    Multi-line templates are written as TOML multi-line strings, so the file reads like
    the shipped ones (tomli-w may write short one-line messages as an inline array of
    tables: the same data). tomli-w writes a `\r\n` inside a multi-line string as a
    newline; a template holding one is written with one-line escaped strings instead,
    which read back exactly.
    """
    document: dict[str, Any] = {"name": name, "description": description}
    if hub_commit:
        document["hub_commit"] = hub_commit
    document["messages"] = [{"role": role, "template": template} for role, template in messages]
    text = tomli_w.dumps(document, multiline_strings=True)
    if tomllib.loads(text) != document:
        text = tomli_w.dumps(document)
    return text


def _variables(template: ChatPromptTemplate) -> set[str]:
    return set(template.input_variables) | set(template.optional_variables)


@dataclass(frozen=True)
class _Fetched:
    prompt: PromptName
    ref: str
    commit: str | None
    messages: list[tuple[str, str]]
    dropped: tuple[str, ...]


def _fetch(client: Client, name: PromptName, ref: str, local: StagePrompt) -> _Fetched:
    """Pull `ref` and check the stage can render it (mustache, only the stage's variables)."""
    try:
        pulled = client.pull_prompt(ref, skip_cache=True)
    except LangSmithError as exc:
        raise hub_error(exc, f"pull {ref}", client.api_url) from exc
    pairs = _messages(pulled, ref)
    provided = _variables(local.template)
    used = _variables(pulled)
    unknown = sorted(used - provided)
    if unknown:
        raise PromptHubError(
            f"{ref} uses variable(s) {', '.join(unknown)} that the {name} stage does not provide"
            f" (it provides {', '.join(sorted(provided))})"
        )
    commit = (pulled.metadata or {}).get("lc_hub_commit_hash")
    dropped = tuple(sorted(provided - used - {"feedback"}))
    return _Fetched(name, ref, str(commit) if commit else None, pairs, dropped)


def pull_prompts(
    client: Client,
    names: Sequence[str] | None = None,
    *,
    tag: str | None = None,
    directory: Path | None = None,
) -> list[PullResult]:
    """Pull the hub version (latest, or `tag`) of each prompt and write it to `directory`.

    Every prompt is fetched and checked before any file is written, so a failure
    leaves all local files as they were.

    Raises:
        PromptHubError: LangSmith is unreachable or refused, a prompt or tag does
            not exist, or a hub version is not a mustache chat template using
            only the stage's variables.
    """
    folder = directory or prompt_dir()
    staged: list[tuple[Path, _Fetched]] = []
    for name in resolve_names(names):
        local_path = folder / f"{name}.toml"
        local: StagePrompt = load_prompt(name, str(local_path) if local_path.is_file() else None)
        ref = f"{local.name}:{tag}" if tag else local.name
        staged.append((local_path, _fetch(client, name, ref, local)))

    results = []
    for path, fetched in staged:
        name = fetched.prompt
        spec = _spec(path) if path.is_file() else {}
        current = [(m["role"], m["template"]) for m in spec.get("messages", [])]
        changed = current != fetched.messages
        if changed:  # same wording: leave the file (and so its version hash) alone
            text = prompt_file_text(
                str(spec.get("name") or load_prompt(name).name),
                str(spec.get("description", "")),
                fetched.messages,
                fetched.commit,
            )
            _write(path, text)
        version = load_prompt(name, str(path)).version
        results.append(
            PullResult(
                prompt=name,
                ref=fetched.ref,
                commit=fetched.commit,
                path=path,
                changed=changed,
                version=version,
                dropped_variables=fetched.dropped,
            )
        )
    return results


def _write(path: Path, text: str) -> None:
    atomic_write_text(path, text)
    prompts.forget_loaded()  # the loader caches by path: re-read the new wording


# --------------------------------------------------------------------------- one run, one hub prompt


def hub_prompt_file(
    client: Client, prompt: PromptName, ref: str, *, directory: Path | None = None
) -> Path:
    """Pull `ref` (e.g. `m3rec-mar:staging`) for `prompt` into a cache file and return its path.

    The path goes into `M3RecContext.prompt_overrides[prompt]`, so one run uses
    the hub version without changing `prompts/`. The file is named after the
    ref and its content hash is the prompt version traces record.

    Raises:
        PromptHubError: as `pull_prompts`; `.unreachable` tells a connection problem apart.
    """
    local = load_prompt(prompt)
    fetched = _fetch(client, prompt, ref, local)
    description = str(_spec(local.path).get("description", ""))
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in ref)
    path = (directory or cache_dir() / "hub_prompts") / f"{prompt}--{safe}.toml"
    text = prompt_file_text(local.name, description, fetched.messages, fetched.commit)
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        _write(path, text)
    return path
