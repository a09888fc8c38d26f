"""`m3rec recommend-batch`: rank many requests (JSONL in, JSONL out), resumably, in one process or on Ray."""

import argparse
import os
import sys
from pathlib import Path

from m3rec_graph.cli.options import add_routing_options, build_context
from m3rec_graph.cli.parsing import SubParsers, add_command
from m3rec_graph.cli.store_options import store_url
from m3rec_graph.errors import ConfigurationError
from m3rec_graph.evaluation.progress import ProgressBar
from m3rec_graph.integrations.runner import serving
from m3rec_graph.llm.worker_share import ProviderLimits
from m3rec_graph.scale.batch import BatchReport, output_usage, read_requests, run_batch
from m3rec_graph.scale.config import Endpoint, WorkerConfig
from m3rec_graph.scale.engine import Engine, LocalEngine
from m3rec_graph.scale.ray_engine import RayEngine


def add_batch_parser(sub: SubParsers) -> None:
    """Register `m3rec recommend-batch`."""
    batch = add_command(
        sub,
        "recommend-batch",
        cmd_recommend_batch,
        help="rank many requests (JSONL in, one output line per request; resumable; --engine ray shards them)",
        description=(
            "Rank every request of --requests (one JSON request per line, as `m3rec recommend`"
            " takes) and append one output line per request to --out as results arrive."
            " Rerun the same command after a crash or a kill: finished lines are kept, the rest run."
        ),
    )
    batch.add_argument("--requests", required=True, metavar="IN.jsonl", help="one request per line")
    batch.add_argument("--out", required=True, metavar="OUT.jsonl", help="outputs, appended (resumed when it exists)")
    batch.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="local: one worker in this process; ray: --workers Ray actors (default: local)",
    )
    batch.add_argument(
        "--address",
        metavar="ADDR",
        help="with --engine ray, join this Ray cluster (e.g. auto, ray://head:10001);"
        " without it a local Ray runtime runs for the batch",
    )
    batch.add_argument("--workers", type=int, default=1, metavar="N", help="worker processes (Ray actors; default: 1)")
    batch.add_argument(
        "--concurrency",
        type=int,
        default=4,
        metavar="C",
        help="requests in flight PER WORKER (N workers keep N x C in flight; default: 4)",
    )
    batch.add_argument(
        "--base-url",
        metavar="URL",
        help="an OpenAI-compatible endpoint for every stage (default: routing's; $OPENAI_BASE_URL)",
    )
    batch.add_argument(
        "--requests-per-second",
        type=float,
        metavar="RPS",
        help="client-side request limit per model IN TOTAL: each of N workers takes 1/N",
    )
    batch.add_argument(
        "--tokens-per-minute",
        type=int,
        metavar="TPM",
        help="client-side token budget per model IN TOTAL (prompt + schema + max_tokens booked per"
        " request): each of N workers takes 1/N",
    )
    batch.add_argument(
        "--max-inflight-requests",
        type=int,
        metavar="CAP",
        help="at most CAP requests in flight to the endpoint IN TOTAL: each of N workers takes 1/N",
    )
    add_routing_options(batch)


def worker_config(args: argparse.Namespace) -> WorkerConfig:
    """Return the workers' config the flags name.

    The driver's `OPENAI_API_KEY` travels to the workers inside it (kept out of its
    repr), so workers on a cluster need no key of their own.

    Raises:
        ConfigurationError: A bad routing flag, store URL, concurrency or limit.
    """
    return WorkerConfig(
        context=build_context(args),
        store_url=store_url(args),
        profile_ttl_days=args.profile_ttl_days,
        concurrency=args.concurrency,
        endpoint=Endpoint(base_url=args.base_url, api_key=os.environ.get("OPENAI_API_KEY") or None),
        limits=ProviderLimits(
            requests_per_second=args.requests_per_second,
            tokens_per_minute=args.tokens_per_minute,
            max_inflight_requests=args.max_inflight_requests,
        ),
    )


def cmd_recommend_batch(args: argparse.Namespace) -> None:
    """Rank the requests file's requests not yet in the output file, appending as they finish.

    Raises:
        InvalidRequestError: The requests file is missing or has a bad line.
        ConfigurationError: A bad flag (e.g. --workers with --engine local).
        BatchFileError: The output is in use, or was written from another requests file.
        EngineError: Ray could not start, or a worker died (rerun to resume).
    """
    if args.workers < 1:
        raise ConfigurationError(f"--workers must be >= 1, got {args.workers}")
    if args.engine == "local" and (args.workers != 1 or args.address):
        raise ConfigurationError("--engine local runs one worker in this process: --workers and --address need --engine ray")
    requests = read_requests(Path(args.requests))  # every line checked before anything starts
    config = worker_config(args)

    def engine() -> Engine:
        if args.engine == "ray":
            return RayEngine(config, args.workers, address=args.address)
        return LocalEngine(config)

    bar: list[ProgressBar] = []

    def on_start(report: BatchReport) -> None:
        bar.append(ProgressBar(sys.stderr, "recommend-batch", report.total, report.already))
        bar[0].render(force=True)

    def on_output(record: dict[str, object]) -> None:
        bar[0].advance(*output_usage(record))

    with serving(config.context):
        report = run_batch(
            requests,
            Path(args.out),
            engine,
            config.context,
            concurrency=args.concurrency,
            on_start=on_start,
            on_output=on_output,
        )
    mote = report.mote
    prepass = (
        f"; MOTE pre-pass: {mote.get('items', 0):,} distinct items, {mote.get('stored', 0):,} stored,"
        f" {mote.get('encoded', 0):,} encoded, {mote.get('failed', 0):,} failed"
        if mote
        else ""
    )
    print(
        f"{report.computed:,} requests ranked, {report.already:,} already in {args.out}"
        f" ({report.total:,} in {args.requests}; engine {args.engine}, {args.workers} worker(s)){prepass}",
        file=sys.stderr,
    )
