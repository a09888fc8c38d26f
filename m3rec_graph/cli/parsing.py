"""How `m3rec`'s commands are declared: one parser per command or mode, and its handler.

argparse hands the flags a subcommand does not know to the top-level parser, whose
message then shows `m3rec`'s usage instead of the subcommand's. `main` parses with
`parse_known_args` instead and lets the command that received the flags refuse them
(`Command.refuse`), naming the sibling mode that has them: `m3rec cost measure
--mar-mode both` says that `--mar-mode` is a flag of `m3rec cost estimate`.
"""

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn, TypeAlias

SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
"""What `ArgumentParser.add_subparsers` returns: where commands (or a group's modes) are added."""

Handler: TypeAlias = Callable[[argparse.Namespace], None]
"""A command's body: it reads the parsed flags and prints; typed errors end it (see `app.main`)."""


@dataclass(frozen=True)
class Command:
    """A parsed command's own parser and its siblings (the other commands or modes beside it)."""

    parser: argparse.ArgumentParser
    siblings: Mapping[str, argparse.ArgumentParser]

    def refuse(self, extras: list[str]) -> NoReturn:
        """Exit 2 with this command's usage: it does not take `extras`."""
        flags = dict.fromkeys(arg.split("=", 1)[0] for arg in extras if arg.startswith("-"))
        hints = []
        for sibling in self.siblings.values():
            theirs = [flag for flag in flags if flag in sibling._option_string_actions]
            if sibling is not self.parser and theirs:
                are = "is a flag" if len(theirs) == 1 else "are flags"
                hints.append(f"{', '.join(theirs)} {are} of `{sibling.prog}`")
        hint = f" ({'; '.join(hints)})" if hints else ""
        self.parser.error(f"unrecognized arguments: {' '.join(extras)}{hint}")


def add_command(
    sub: SubParsers, name: str, handler: Handler, **kwargs: Any
) -> argparse.ArgumentParser:
    """Add the parser of command (or mode) `name`, which runs `handler`; `kwargs` go to `add_parser`."""
    parser = sub.add_parser(name, **kwargs)
    parser.set_defaults(func=handler, parsed_command=Command(parser, sub.choices))
    return parser


def add_modes(parser: argparse.ArgumentParser) -> SubParsers:
    """Give a command group (`cost`, `encode-items`, `prompts`) its required modes."""
    return parser.add_subparsers(dest="mode", required=True, metavar="MODE", title="modes")
