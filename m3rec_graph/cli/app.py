"""The `m3rec` command line: recommend, recommend-batch, graph, demo, serve, fetch-model, eval, fit-fusion, models, cost, encode-items, forget, prompts.

Each command group has its module in `m3rec_graph.cli`; this one builds the top-level
parser and runs the command. Bad input ends with a one-line message and exit code 2;
provider or server trouble with exit code 1. Neither prints a traceback.
"""

import argparse
import sys
import warnings
from collections.abc import Callable
from typing import Any, NoReturn

from m3rec_graph.cli import cost, encode
from m3rec_graph.cli.batch import add_batch_parser
from m3rec_graph.cli.eval import add_eval_parser
from m3rec_graph.cli.forget import add_forget_parser
from m3rec_graph.cli.fusion import add_fit_fusion_parser
from m3rec_graph.cli.local import add_local_parsers
from m3rec_graph.cli.models import add_models_parser
from m3rec_graph.cli.parsing import Command
from m3rec_graph.cli.prompts import add_prompts_parser
from m3rec_graph.cli.recommend import add_graph_parser, add_recommend_parser
from m3rec_graph.errors import ConfigurationError, InvalidRequestError, M3RecError

EXIT_BAD_INPUT = 2
EXIT_TROUBLE = 1
EXIT_INTERRUPTED = 130

OLD_SPELLINGS: dict[str, Callable[[list[str]], tuple[list[str], str] | None]] = {
    "cost": cost.upgrade_old_spelling,
    "encode-items": encode.upgrade_old_spelling,
}
"""Command -> rewrites its deprecated spellings (flags that picked a mode) to the mode's."""


def _fail(message: str, code: int) -> NoReturn:
    print(f"m3rec: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of `m3rec`."""
    parser = argparse.ArgumentParser(
        prog="m3rec", description=__doc__.splitlines()[0] if __doc__ else None
    )
    sub = parser.add_subparsers(dest="command", required=True)
    add_recommend_parser(sub)
    add_batch_parser(sub)
    add_graph_parser(sub)
    add_local_parsers(sub)
    add_eval_parser(sub)
    add_fit_fusion_parser(sub)
    add_models_parser(sub)
    cost.add_cost_parser(sub)
    encode.add_encode_parser(sub)
    add_forget_parser(sub)
    add_prompts_parser(sub)
    return parser


def upgrade_old_spelling(argv: list[str]) -> list[str]:
    """Return `argv` in the current spelling; a deprecated one gets a one-line note on stderr.

    Raises:
        ConfigurationError: An old-style command line that names no mode.
    """
    upgrade = OLD_SPELLINGS.get(argv[0]) if argv else None
    upgraded = upgrade(argv[1:]) if upgrade else None
    if upgraded is None:
        return argv
    rest, note = upgraded
    print(f"m3rec: note: {note}", file=sys.stderr)
    return [argv[0], *rest]


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse `argv`; a flag the command does not take is refused by that command (see `parsing`)."""
    args, extras = parser.parse_known_args(argv)
    if extras:
        command: Command | None = getattr(args, "parsed_command", None)
        if command is None:
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
        command.refuse(extras)
    return args


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """Print a warning (a model shutting down soon, an unknown model) as one line."""
    print(f"m3rec: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `m3rec` command."""
    parser = build_parser()
    try:
        args = parse(parser, upgrade_old_spelling(list(sys.argv[1:] if argv is None else argv)))
    except ConfigurationError as exc:
        _fail(str(exc), EXIT_BAD_INPUT)
    warnings.showwarning = _show_warning
    try:
        args.func(args)
    except (InvalidRequestError, ConfigurationError) as exc:
        _fail(str(exc), EXIT_BAD_INPUT)
    except M3RecError as exc:
        # Errors that are also ValueErrors (dataset, batch file) are bad input; the rest are
        # trouble with a server or provider (local model, OpenAI, LangSmith).
        _fail(str(exc), EXIT_BAD_INPUT if isinstance(exc, ValueError) else EXIT_TROUBLE)
    except KeyboardInterrupt:
        _fail("interrupted", EXIT_INTERRUPTED)


if __name__ == "__main__":
    main()
