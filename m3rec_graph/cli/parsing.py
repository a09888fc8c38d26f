"""How `m3rec`'s commands are declared: one parser per command, and its handler."""

import argparse
from collections.abc import Callable
from typing import Any, TypeAlias

SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
"""What `ArgumentParser.add_subparsers` returns: where commands are added."""

Handler: TypeAlias = Callable[[argparse.Namespace], None]
"""A command's body: it reads the parsed flags and prints; typed errors end it (see `app.main`)."""


def add_command(
    sub: SubParsers, name: str, handler: Handler, **kwargs: Any
) -> argparse.ArgumentParser:
    """Add the parser of command `name`, which runs `handler`; `kwargs` go to `add_parser`."""
    parser = sub.add_parser(name, **kwargs)
    parser.set_defaults(func=handler)
    return parser
