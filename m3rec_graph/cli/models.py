"""`m3rec models`: the routed models (or every registry model) with lifecycle status, prices and capabilities."""

import argparse

from m3rec_graph.cli.parsing import SubParsers, add_command
from m3rec_graph.llm.catalogue import format_models, list_models


def add_models_parser(sub: SubParsers) -> None:
    """Register `m3rec models`."""
    models = add_command(
        sub,
        "models",
        cmd_models,
        help="routed models: lifecycle status, prices and capabilities (model registry)",
    )
    models.add_argument("--all", action="store_true", help="every model in the registry")
    models.add_argument(
        "--offline", action="store_true", help="do not read GET /v1/models even when a key is set"
    )


def cmd_models(args: argparse.Namespace) -> None:
    """List the routed models (or every registry model) with status, prices and capabilities."""
    rows = list_models(every=args.all, check_provider=not args.offline)
    print(format_models(rows))
