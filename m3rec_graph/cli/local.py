"""The offline local model: `m3rec fetch-model`, `m3rec serve` and `m3rec demo` (which runs on it by default)."""

import argparse
import signal
import sys
import time

from m3rec_graph.cli.demo import run_demo
from m3rec_graph.cli.options import add_routing_options, build_context, built_graph
from m3rec_graph.cli.parsing import SubParsers, add_command
from m3rec_graph.local.model import ensure_model
from m3rec_graph.local.server import ServerSettings, start_server


def add_local_parsers(sub: SubParsers) -> None:
    """Register `m3rec demo`, `m3rec serve` and `m3rec fetch-model`."""
    demo = add_command(sub, "demo", cmd_demo, help="recommend for a few real Amazon Beauty users")
    demo.add_argument("--users", type=int, default=3)
    add_routing_options(demo)

    serve = add_command(sub, "serve", cmd_serve, help="run the local model server")
    serve.add_argument("--port", type=int, default=8765)
    serve.add_argument("--parallel", type=int, default=2, help="parallel request slots")
    serve.add_argument("--threads", type=int, default=ServerSettings().n_threads)

    add_command(sub, "fetch-model", cmd_fetch_model, help="install the offline model weights")


def cmd_demo(args: argparse.Namespace) -> None:
    """Recommend for a few real Amazon Beauty users shipped with the package."""
    ctx = build_context(args)
    with built_graph(args) as graph:
        run_demo(graph, ctx, users=args.users)


def cmd_serve(args: argparse.Namespace) -> None:
    """Start the local model server and keep it running until interrupted."""
    url = f"http://127.0.0.1:{args.port}/v1"
    started = time.perf_counter()
    server = start_server(url, ServerSettings(n_parallel=args.parallel, n_threads=args.threads))
    print(
        f"local model server ready at {url} after {time.perf_counter() - started:.1f} s", flush=True
    )
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
