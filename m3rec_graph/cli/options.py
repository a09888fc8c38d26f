"""The flags several `m3rec` commands share, and what they build: the run context and the graph.

`recommend` and `demo` take the routing flags (`add_routing_options`); `encode-items
write` takes the model and effort flags only (`add_model_options`, `add_effort_options`).
"""

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from m3rec_graph.cli.prompts import hub_prompt_overrides
from m3rec_graph.cli.store_options import add_profile_ttl_option, add_store_options, store_url
from m3rec_graph.context import M3RecContext
from m3rec_graph.fusion.config import resolve_fusion
from m3rec_graph.graph import build_graph
from m3rec_graph.llm.routing import PRESETS, context_for, parse_efforts, parse_overrides
from m3rec_graph.state import M3RecGraph
from m3rec_graph.storage.store import open_store


def add_routing_options(parser: argparse.ArgumentParser) -> None:
    """Add the flags of a run: routing, models, efforts, MAR mode, hub prompts, seed, store."""
    parser.add_argument(
        "--routing",
        choices=sorted(PRESETS),
        help="model routing preset (default: hybrid with OPENAI_API_KEY, else local)",
    )
    add_model_options(parser, example="mar=gpt-6-sol")
    add_effort_options(parser)
    parser.add_argument("--mar-mode", choices=["listwise", "pointwise"], default="listwise")
    parser.add_argument(
        "--mar-answer",
        choices=["listwise", "scores_first"],
        default="listwise",
        help="listwise: the paper's full answer per candidate (default); scores_first: scores only, the"
        " ranking streamed, then rationales for the top --rationale-k (docs/serving.md)",
    )
    parser.add_argument("--rationale-k", type=int, default=5, help="scores_first: how many top items get a rationale")
    parser.add_argument(
        "--prompt",
        action="append",
        metavar="STAGE=HUB_REF",
        help="use a LangSmith hub prompt for one stage in this run, e.g. mar=m3rec-mar:staging",
    )
    parser.add_argument(
        "--fusion",
        metavar="CONFIG",
        help="rank by fused_score: 'default' (hand-set weights), 'local' (fit for the offline"
        " model) or a fusion config file (m3rec fit-fusion writes one); 'off' ranks by MAR's score"
        " as the paper does. Default: the preset's (local fuses with 'local', OpenAI presets are off)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the candidate display order")
    add_store_options(parser)
    add_profile_ttl_option(parser)


def add_model_options(parser: argparse.ArgumentParser, *, example: str) -> None:
    """Add `--model STAGE=NAME` (repeatable): a per-stage override of the preset's model."""
    parser.add_argument(
        "--model",
        action="append",
        metavar="STAGE=NAME",
        help=f"per-stage override, e.g. {example}",
    )


def add_effort_options(parser: argparse.ArgumentParser) -> None:
    """Add `--effort STAGE=EFFORT` (repeatable) and `--allow-retired`."""
    parser.add_argument(
        "--effort",
        action="append",
        metavar="STAGE=EFFORT",
        help="per-stage reasoning effort, e.g. mar=medium (default: mope=none, mote=none, mar=low,"
        " moved to the nearest effort each model accepts)",
    )
    parser.add_argument(
        "--allow-retired",
        action="store_true",
        help="let a model past its shutdown date run, against an endpoint that still serves it",
    )


def build_context(args: argparse.Namespace) -> M3RecContext:
    """Return the run context the routing flags name (`--prompt` pulls from the hub first).

    Raises:
        ConfigurationError: An unknown preset, a bad override or effort, a retired
            model, a `--prompt` that names no prompt or a missing hub version, or a
            `--fusion` config that is missing or breaks the schema (`FusionConfigError`).
    """
    settings: dict[str, Any] = {
        "mar_mode": args.mar_mode,
        "mar_answer": getattr(args, "mar_answer", "listwise"),
        "mar_rationale_k": getattr(args, "rationale_k", 5),
        "seed": args.seed,
    }
    if args.fusion is not None:
        resolve_fusion(args.fusion)  # a bad file exits 2 here, before any server starts
        settings["fusion"] = args.fusion
    hub = hub_prompt_overrides(args.prompt or [], args.mar_mode)
    if hub:
        settings["prompt_overrides"] = hub
    return context_for(
        args.routing,
        parse_overrides(args.model or []),
        efforts=parse_efforts(args.effort or []),
        allow_retired=args.allow_retired,
        **settings,
    )


@contextmanager
def built_graph(args: argparse.Namespace) -> Iterator[M3RecGraph]:
    """Build the graph on the store the flags name; the store stays open while the graph runs."""
    with open_store(store_url(args)) as store:
        yield build_graph(store=store, profile_ttl_days=args.profile_ttl_days)
