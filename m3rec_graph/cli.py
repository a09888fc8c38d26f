"""The `m3rec` command line: recommend, demo, serve, fetch-model, graph.

Bad input ends with a one-line message and exit code 2; provider or server
trouble with exit code 1. Neither prints a traceback.
"""

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

from m3rec_graph.cache import InMemoryTraitCache, SqliteTraitCache
from m3rec_graph.context import M3RecContext
from m3rec_graph.demo import run_demo
from m3rec_graph.errors import ConfigurationError, InvalidRequestError, M3RecError
from m3rec_graph.graph import M3RecGraph, build_graph
from m3rec_graph.local.model import ensure_model
from m3rec_graph.local.server import ServerSettings, start_server
from m3rec_graph.request import parse_request
from m3rec_graph.routing import PRESETS, context_for, parse_overrides
from m3rec_graph.runner import recommend_many

EXIT_BAD_INPUT = 2


def _fail(message: str, code: int) -> NoReturn:
    print(f"m3rec: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def to_json(value: Any) -> Any:
    """Convert graph output (pydantic models inside dicts and lists) to JSON-able data."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_json(v) for v in value]
    return value


def _context(args: argparse.Namespace) -> M3RecContext:
    settings: dict[str, Any] = {"mar_mode": args.mar_mode, "seed": args.seed}
    return context_for(args.routing, parse_overrides(args.model or []), **settings)


def _build(args: argparse.Namespace) -> M3RecGraph:
    cache = InMemoryTraitCache() if args.no_cache else SqliteTraitCache(args.cache)
    return build_graph(trait_cache=cache)


def cmd_recommend(args: argparse.Namespace) -> None:
    """Rank one request's candidates and print the result as JSON."""
    try:
        data = json.loads(Path(args.request).read_text(encoding="utf-8"))
    except FileNotFoundError:
        _fail(f"request file not found: {args.request}", EXIT_BAD_INPUT)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        _fail(f"request file is not valid UTF-8 JSON: {exc}", EXIT_BAD_INPUT)
    if args.k is not None and isinstance(data, dict):
        data["k"] = args.k
    request = parse_request(data)  # validate before any server starts
    ctx = _context(args)
    (out,) = recommend_many(_build(args), [request.model_dump(exclude_none=True)], ctx)
    print(json.dumps(to_json(out), indent=2, ensure_ascii=False))


def cmd_demo(args: argparse.Namespace) -> None:
    """Recommend for a few real Amazon Beauty users shipped with the package."""
    run_demo(_build(args), _context(args), users=args.users)


def cmd_serve(args: argparse.Namespace) -> None:
    """Start the local model server and keep it running until interrupted."""
    url = f"http://127.0.0.1:{args.port}/v1"
    started = time.perf_counter()
    server = start_server(url, ServerSettings(n_parallel=args.parallel, n_threads=args.threads))
    print(f"local model server ready at {url} after {time.perf_counter() - started:.1f} s", flush=True)
    print("set M3REC_LOCAL_URL to this URL if you changed the port; Ctrl-C stops it", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


def cmd_fetch_model(args: argparse.Namespace) -> None:
    """Install the offline model's weights if they are missing, and print their path."""
    print(ensure_model())


def cmd_graph(args: argparse.Namespace) -> None:
    """Print the compiled graph as a mermaid diagram."""
    print(build_graph(trait_cache=InMemoryTraitCache()).get_graph(xray=args.xray).draw_mermaid())


def _routing_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--routing",
        choices=sorted(PRESETS),
        help="model routing preset (default: hybrid with OPENAI_API_KEY, else local)",
    )
    parser.add_argument(
        "--model", action="append", metavar="STAGE=NAME", help="per-stage override, e.g. mar=gpt-4o-mini"
    )
    parser.add_argument("--mar-mode", choices=["listwise", "pointwise"], default="listwise")
    parser.add_argument("--seed", type=int, default=0, help="seed of the candidate display order")
    parser.add_argument("--cache", help="trait cache SQLite file (default: ~/.cache/m3rec/traits.sqlite)")
    parser.add_argument("--no-cache", action="store_true", help="keep traits in memory only")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of `m3rec`."""
    parser = argparse.ArgumentParser(prog="m3rec", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)

    rec = sub.add_parser("recommend", help="rank the candidates of one request (JSON in, JSON out)")
    rec.add_argument("--request", required=True, help="request JSON: user_id, history, candidates")
    rec.add_argument("--k", type=int, help="return only the top k")
    _routing_options(rec)
    rec.set_defaults(func=cmd_recommend)

    demo = sub.add_parser("demo", help="recommend for a few real Amazon Beauty users")
    demo.add_argument("--users", type=int, default=3)
    _routing_options(demo)
    demo.set_defaults(func=cmd_demo)

    serve = sub.add_parser("serve", help="run the local model server")
    serve.add_argument("--port", type=int, default=8765)
    serve.add_argument("--parallel", type=int, default=2, help="parallel request slots")
    serve.add_argument("--threads", type=int, default=2)
    serve.set_defaults(func=cmd_serve)

    fetch = sub.add_parser("fetch-model", help="install the offline model weights")
    fetch.set_defaults(func=cmd_fetch_model)

    draw = sub.add_parser("graph", help="print the graph as mermaid")
    draw.add_argument("--xray", type=int, default=0)
    draw.set_defaults(func=cmd_graph)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `m3rec` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (InvalidRequestError, ConfigurationError) as exc:
        _fail(str(exc), EXIT_BAD_INPUT)
    except M3RecError as exc:
        _fail(str(exc), 1)
    except KeyboardInterrupt:
        _fail("interrupted", 130)


if __name__ == "__main__":
    main()
