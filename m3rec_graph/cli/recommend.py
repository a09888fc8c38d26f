"""`m3rec recommend` (rank one request's candidates) and `m3rec graph` (draw the graph that does it)."""

import argparse
import json
from pathlib import Path
from typing import Any

from langgraph.store.memory import InMemoryStore

from m3rec_graph.cli.options import add_routing_options, build_context, built_graph
from m3rec_graph.cli.parsing import SubParsers, add_command
from m3rec_graph.contracts.request import parse_request
from m3rec_graph.errors import InvalidRequestError
from m3rec_graph.graph import build_graph
from m3rec_graph.integrations.runner import recommend_many


def to_json(value: Any) -> Any:
    """Convert graph output (pydantic models inside dicts and lists) to JSON-able data."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_json(v) for v in value]
    return value


def add_recommend_parser(sub: SubParsers) -> None:
    """Register `m3rec recommend`."""
    rec = add_command(
        sub,
        "recommend",
        cmd_recommend,
        help="rank the candidates of one request (JSON in, JSON out)",
    )
    rec.add_argument("--request", required=True, help="request JSON: user_id, history, candidates")
    rec.add_argument("--k", type=int, help="return only the top k")
    add_routing_options(rec)


def add_graph_parser(sub: SubParsers) -> None:
    """Register `m3rec graph`."""
    draw = add_command(sub, "graph", cmd_graph, help="print the graph as mermaid")
    draw.add_argument("--xray", type=int, default=0)


def cmd_recommend(args: argparse.Namespace) -> None:
    """Rank one request's candidates and print the result as JSON.

    Raises:
        InvalidRequestError: The request file is missing, not UTF-8 JSON, or not a valid request.
    """
    try:
        data = json.loads(Path(args.request).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidRequestError(f"request file not found: {args.request}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequestError(f"request file is not valid UTF-8 JSON: {exc}") from None
    if args.k is not None and isinstance(data, dict):
        data["k"] = args.k
    request = parse_request(data)  # validate before any server starts
    ctx = build_context(args)
    with built_graph(args) as graph:
        (out,) = recommend_many(graph, [request.model_dump(exclude_none=True)], ctx)
    print(json.dumps(to_json(out), indent=2, ensure_ascii=False))


def cmd_graph(args: argparse.Namespace) -> None:
    """Print the compiled graph as a mermaid diagram."""
    print(build_graph(store=InMemoryStore()).get_graph(xray=args.xray).draw_mermaid())
