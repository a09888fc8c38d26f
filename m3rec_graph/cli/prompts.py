"""`m3rec prompts push|pull`, and `--prompt STAGE=HUB_REF`: the stage prompts on the LangSmith hub.

LangSmith's own connection warnings are muted (`quiet_langsmith`): a hub failure is
reported in one line, as a `PromptHubError` (exit code 1; see `app.main`).
"""

import argparse
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from m3rec_graph.cli.parsing import SubParsers, add_command, add_modes
from m3rec_graph.errors import ConfigurationError
from m3rec_graph.prompts.hub import (
    PROMPT_NAMES,
    PromptHubError,
    hub_prompt_file,
    pull_prompts,
    push_prompts,
)


def langsmith_client() -> Any:
    """Return a LangSmith client configured from the environment (`LANGSMITH_API_KEY`, ...)."""
    from langsmith import Client  # noqa: PLC0415 - only prompt hub access needs a client here

    return Client()


@contextmanager
def quiet_langsmith() -> Iterator[None]:
    """Mute the LangSmith client's own connection warnings: hub failures are reported in one line."""
    logger = logging.getLogger("langsmith")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def hub_prompt_overrides(pairs: list[str], mar_mode: str) -> dict[str, str]:
    """Resolve `--prompt STAGE=HUB_REF` to prompt files pulled from the hub (prompt name -> path).

    `STAGE` is mope, mote or mar (the prompt of the run's MAR mode), or a prompt file
    name such as mar_pointwise. When LangSmith is unreachable the local file is used
    and a warning says so; a missing prompt or tag is an error.

    Raises:
        ConfigurationError: A pair that is not STAGE=HUB_REF with a known stage.
        PromptHubError: The hub has no such prompt, tag or commit.
    """
    if not pairs:
        return {}
    overrides: dict[str, str] = {}
    client = langsmith_client()
    for pair in pairs:
        stage, sep, ref = pair.partition("=")
        name = {"mar": f"mar_{mar_mode}"}.get(stage.strip().lower(), stage.strip().lower())
        if not sep or not ref.strip() or name not in PROMPT_NAMES:
            raise ConfigurationError(
                f"bad --prompt {pair!r}: expected STAGE=HUB_REF (e.g. mar=m3rec-mar:staging) with STAGE"
                f" one of mope, mote, mar, {', '.join(PROMPT_NAMES)}"
            )
        try:
            with quiet_langsmith():
                overrides[name] = str(hub_prompt_file(client, name, ref.strip()))
        except PromptHubError as exc:
            if not exc.unreachable:
                raise
            print(f"m3rec: warning: {exc}; using prompts/{name}.toml", file=sys.stderr)
    return overrides


def add_prompts_parser(sub: SubParsers) -> None:
    """Register `m3rec prompts` and its modes `push` and `pull`."""
    group = sub.add_parser(
        "prompts",
        help="push prompts to / pull them from the LangSmith prompt hub",
        description="Push the prompt files to the LangSmith prompt hub, or pull a hub version into prompts/.",
    )
    modes = add_modes(group)
    names_help = "prompt files or hub names (default: all four)"
    push = add_command(
        modes, "push", cmd_push, help="push the prompt files to the hub, one commit each"
    )
    push.add_argument("names", nargs="*", help=names_help)
    push.add_argument("--tag", help="tag the new commits, e.g. staging")
    pull = add_command(modes, "pull", cmd_pull, help="write a hub version into the prompt files")
    pull.add_argument("names", nargs="*", help=names_help)
    pull.add_argument("--tag", help="the tag (or commit) to pull (default: the latest commit)")
    pull.add_argument(
        "--dir", help="the prompts directory to write (default: the package's prompts/)"
    )


def cmd_push(args: argparse.Namespace) -> None:
    """Push the prompt files to the hub and print where each went."""
    with quiet_langsmith():
        pushed_all = push_prompts(langsmith_client(), args.names or None, tag=args.tag)
        for pushed in pushed_all:
            where = pushed.url or "unchanged on the hub"
            print(
                f"{pushed.prompt}: pushed as {pushed.hub_name} (file version {pushed.version}): {where}"
            )


def cmd_pull(args: argparse.Namespace) -> None:
    """Pull a hub version into the prompt files and print what changed."""
    directory = Path(args.dir) if args.dir else None
    with quiet_langsmith():
        pulled_all = pull_prompts(
            langsmith_client(), args.names or None, tag=args.tag, directory=directory
        )
        for pulled in pulled_all:
            state = (
                f"updated {pulled.path}"
                if pulled.changed
                else f"{pulled.path} already has this wording"
            )
            commit = f" commit {pulled.commit[:12]}" if pulled.commit else ""
            note = (
                f"; the hub version drops {', '.join(pulled.dropped_variables)}"
                if pulled.dropped_variables
                else ""
            )
            print(
                f"{pulled.prompt}: pulled {pulled.ref}{commit}: {state} (version {pulled.version}){note}"
            )
