"""The `m3rec` command line: recommend, demo, eval, serve, fetch-model, graph, models, cost, encode-items, prompts.

Bad input ends with a one-line message and exit code 2; provider or server
trouble with exit code 1. Neither prints a traceback.
"""

import argparse
import json
import logging
import signal
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, NoReturn

from m3rec_graph.cli.demo import run_demo
from m3rec_graph.cli.eval import add_eval_parser, resolve_dataset
from m3rec_graph.context import M3RecContext
from m3rec_graph.contracts.request import parse_request
from m3rec_graph.cost.batch_api import (
    BatchManifest,
    format_ingest_report,
    ingest_mote_results,
    manifest_path,
    plan_mote_batch,
    write_batch,
)
from m3rec_graph.cost.estimate import (
    MAR_MODES,
    CostSettings,
    batch_file_cost,
    estimate_costs,
    format_report,
    parse_output_overrides,
)
from m3rec_graph.cost.measure import run_cost_experiment
from m3rec_graph.errors import ConfigurationError, InvalidRequestError, M3RecError
from m3rec_graph.evaluation import EvalSettings
from m3rec_graph.evaluation.datasets import build_requests, load_dataset
from m3rec_graph.graph import build_graph
from m3rec_graph.integrations.runner import recommend_many
from m3rec_graph.llm.catalogue import format_models, list_models
from m3rec_graph.llm.routing import PRESETS, context_for, parse_efforts, parse_overrides
from m3rec_graph.local.model import ensure_model
from m3rec_graph.local.server import ServerSettings, start_server
from m3rec_graph.prompts.hub import (
    PROMPT_NAMES,
    PromptHubError,
    hub_prompt_file,
    pull_prompts,
    push_prompts,
)
from m3rec_graph.state import M3RecGraph
from m3rec_graph.storage.traits import InMemoryTraitCache, SqliteTraitCache, TraitCache

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
    hub = _hub_prompts(args.prompt or [], args.mar_mode)
    if hub:
        settings["prompt_overrides"] = hub
    return context_for(
        args.routing,
        parse_overrides(args.model or []),
        efforts=parse_efforts(args.effort or []),
        allow_retired=args.allow_retired,
        **settings,
    )


def _hub_prompts(pairs: list[str], mar_mode: str) -> dict[str, str]:
    """Resolve `--prompt STAGE=HUB_REF` to prompt files pulled from the hub (prompt name -> path).

    `STAGE` is mope, mote or mar (the prompt of the run's MAR mode), or a prompt file
    name such as mar_pointwise. When LangSmith is unreachable the local file is used
    and a warning says so; a missing prompt or tag is an error.
    """
    if not pairs:
        return {}
    overrides: dict[str, str] = {}
    client = _langsmith_client()
    for pair in pairs:
        stage, sep, ref = pair.partition("=")
        name = {"mar": f"mar_{mar_mode}"}.get(stage.strip().lower(), stage.strip().lower())
        if not sep or not ref.strip() or name not in PROMPT_NAMES:
            raise ConfigurationError(
                f"bad --prompt {pair!r}: expected STAGE=HUB_REF (e.g. mar=m3rec-mar:staging) with STAGE"
                f" one of mope, mote, mar, {', '.join(PROMPT_NAMES)}"
            )
        try:
            with _quiet_langsmith():
                overrides[name] = str(hub_prompt_file(client, name, ref.strip()))
        except PromptHubError as exc:
            if not exc.unreachable:
                raise
            print(f"m3rec: warning: {exc}; using prompts/{name}.toml", file=sys.stderr)
    return overrides


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


def cmd_graph(args: argparse.Namespace) -> None:
    """Print the compiled graph as a mermaid diagram."""
    print(build_graph(trait_cache=InMemoryTraitCache()).get_graph(xray=args.xray).draw_mermaid())


def cmd_models(args: argparse.Namespace) -> None:
    """List the routed models (or every registry model) with status, prices and capabilities."""
    rows = list_models(every=args.all, check_provider=not args.offline)
    print(format_models(rows))


def cmd_cost(args: argparse.Namespace) -> None:
    """Estimate (--dry-run) or measure tokens, USD and accuracy per routing preset."""
    if not args.dry_run:
        _cmd_cost_measured(args)
        return
    modes = MAR_MODES if args.mar_mode == "both" else (args.mar_mode,)
    settings = CostSettings(
        dataset=Path(args.dataset),
        users=args.users,
        presets=tuple(p.strip() for p in args.presets.split(",") if p.strip()),
        negatives=args.negatives,
        mar_modes=modes,
        seed=args.seed,
        cold_start=args.cold_start,
        chunk_size=args.chunk_size,
        include_schema=not args.no_schema_tokens,
        output_overrides=parse_output_overrides(args.output_tokens),
    )
    cache: TraitCache | None = SqliteTraitCache(args.cache) if args.cache else None
    report = estimate_costs(settings, cache=cache)
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_dict(), indent=1) + "\n", encoding="utf-8")
    print(
        "no cost-vs-accuracy plot in a dry run: it has no measured accuracy (run without --dry-run)",
        file=sys.stderr,
    )


def _cmd_cost_measured(args: argparse.Namespace) -> None:
    if not args.out:
        _fail(
            "cost without --dry-run runs the presets: give --out DIR for its run directory",
            EXIT_BAD_INPUT,
        )
    if (
        args.mar_mode != "listwise"
        or args.cold_start
        or args.chunk_size != 10
        or args.output_tokens
    ):
        _fail(
            "--mar-mode, --cold-start, --chunk-size and --output-tokens apply to --dry-run only",
            EXIT_BAD_INPUT,
        )
    settings = EvalSettings(
        dataset=resolve_dataset(args.dataset),
        users=args.users,
        negatives=args.negatives,
        seed=args.seed,
    )
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    baselines = [b.strip() for b in args.baselines.split(",") if b.strip()]
    measured = run_cost_experiment(
        settings, presets, Path(args.out), baselines=baselines, concurrency=args.concurrency
    )
    print(measured.report)
    if args.json:
        rows = [
            {**asdict(m), "cost_per_1000_users_usd": m.cost_per_1000_users_usd}
            for m in measured.methods
        ]
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")


def _trait_cache(args: argparse.Namespace) -> TraitCache:
    return SqliteTraitCache(args.cache)


def cmd_encode_items(args: argparse.Namespace) -> None:
    """Write MOTE requests as an OpenAI Batch API file, or ingest a batch's results into the trait cache."""
    if args.ingest:
        if not args.requests:
            _fail(
                "--ingest needs --requests FILE.jsonl (the file --batch-api wrote; its manifest sits next to it)",
                EXIT_BAD_INPUT,
            )
        manifest = BatchManifest.read(manifest_path(Path(args.requests)))
        # Ingesting makes no call: a batch encoded by a model retired since is still readable.
        ctx = context_for("hybrid", {"mote": manifest.model}, allow_retired=True)
        report = ingest_mote_results(Path(args.ingest), manifest, _trait_cache(args), ctx)
        print(format_ingest_report(report))
        return
    if not args.batch_api:
        _fail(
            "pass --batch-api to write a Batch API file (synchronous encoding is what `recommend` does)",
            EXIT_BAD_INPUT,
        )
    if not args.dataset or not args.out:
        _fail("--batch-api needs --dataset PATH and --out FILE.jsonl", EXIT_BAD_INPUT)
    dataset = load_dataset(args.dataset)
    if args.users:
        cases = build_requests(
            dataset,
            n_users=args.users,
            n_negatives=args.negatives,
            seed=args.seed,
            cold_start=args.cold_start,
        )
        items = [item for case in cases for item in case.candidates]
        scope = (
            f"the candidates of {len(cases):,} users ({args.negatives} negatives, seed {args.seed})"
        )
    else:
        items = list(dataset.items.values())
        scope = f"every item of {dataset.name}"
    ctx = context_for(
        args.routing or "hybrid",
        parse_overrides(args.model or []),
        efforts=parse_efforts(args.effort or []),
        allow_retired=args.allow_retired,
    )
    spec = ctx.model_for("mote")
    cache: TraitCache = InMemoryTraitCache() if args.no_cache else _trait_cache(args)
    plan = plan_mote_batch(items, spec, cache)
    out = Path(args.out)
    manifest_file = write_batch(plan, out)
    input_tokens, output_tokens, usd = batch_file_cost(plan.lines, spec.name)
    print(
        f"wrote {len(plan.lines):,} MOTE requests for {scope} to {out}"
        f" ({plan.cached:,} items already cached, {plan.without_text:,} without text) and {manifest_file}"
    )
    print(
        f"model {spec.name} (schema as {plan.manifest.transport}), prompt {plan.manifest.prompt}"
        f" {plan.manifest.prompt_version}; estimated {input_tokens:,} input + {output_tokens:,} output tokens,"
        f" {'n/a' if usd is None else f'${usd:,.2f}'} at the batch price"
    )
    print(
        f"next: upload {out.name} as a batch (endpoint {plan.lines[0]['url'] if plan.lines else '/v1/chat/completions'}),"
        f" download its output, then: m3rec encode-items --ingest RESULTS.jsonl --requests {out}"
    )


def _langsmith_client() -> Any:
    from langsmith import Client  # noqa: PLC0415 - only prompt hub access needs a client here

    return Client()


@contextmanager
def _quiet_langsmith() -> Iterator[None]:
    """Mute the LangSmith client's own connection warnings: hub failures are reported in one line."""
    logger = logging.getLogger("langsmith")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def cmd_prompts(args: argparse.Namespace) -> None:
    """Push the prompt files to the LangSmith prompt hub, or pull a hub version into prompts/."""
    with _quiet_langsmith():
        _prompts_action(_langsmith_client(), args)


def _prompts_action(client: Any, args: argparse.Namespace) -> None:
    names = args.names or None
    if args.action == "push":
        for pushed in push_prompts(client, names, tag=args.tag):
            where = pushed.url or "unchanged on the hub"
            print(
                f"{pushed.prompt}: pushed as {pushed.hub_name} (file version {pushed.version}): {where}"
            )
        return
    directory = Path(args.dir) if args.dir else None
    for pulled in pull_prompts(client, names, tag=args.tag, directory=directory):
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


def _routing_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--routing",
        choices=sorted(PRESETS),
        help="model routing preset (default: hybrid with OPENAI_API_KEY, else local)",
    )
    parser.add_argument(
        "--model",
        action="append",
        metavar="STAGE=NAME",
        help="per-stage override, e.g. mar=gpt-6-sol",
    )
    _effort_options(parser)
    parser.add_argument("--mar-mode", choices=["listwise", "pointwise"], default="listwise")
    parser.add_argument(
        "--prompt",
        action="append",
        metavar="STAGE=HUB_REF",
        help="use a LangSmith hub prompt for one stage in this run, e.g. mar=m3rec-mar:staging",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the candidate display order")
    parser.add_argument(
        "--cache", help="trait cache SQLite file (default: ~/.cache/m3rec/traits.sqlite)"
    )
    parser.add_argument("--no-cache", action="store_true", help="keep traits in memory only")


def _effort_options(parser: argparse.ArgumentParser) -> None:
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


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of `m3rec`."""
    parser = argparse.ArgumentParser(
        prog="m3rec", description=__doc__.splitlines()[0] if __doc__ else None
    )
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

    add_eval_parser(sub)

    serve = sub.add_parser("serve", help="run the local model server")
    serve.add_argument("--port", type=int, default=8765)
    serve.add_argument("--parallel", type=int, default=2, help="parallel request slots")
    serve.add_argument("--threads", type=int, default=ServerSettings().n_threads)
    serve.set_defaults(func=cmd_serve)

    fetch = sub.add_parser("fetch-model", help="install the offline model weights")
    fetch.set_defaults(func=cmd_fetch_model)

    draw = sub.add_parser("graph", help="print the graph as mermaid")
    draw.add_argument("--xray", type=int, default=0)
    draw.set_defaults(func=cmd_graph)

    models = sub.add_parser(
        "models", help="routed models: lifecycle status, prices and capabilities (model registry)"
    )
    models.add_argument("--all", action="store_true", help="every model in the registry")
    models.add_argument(
        "--offline", action="store_true", help="do not read GET /v1/models even when a key is set"
    )
    models.set_defaults(func=cmd_models)

    cost = sub.add_parser(
        "cost",
        help="estimate tokens and USD per stage of routing presets (--dry-run: offline, no key)",
    )
    cost.add_argument(
        "--dataset", required=True, help="dataset directory (interactions.csv + items.jsonl)"
    )
    cost.add_argument("--users", type=int, required=True, help="users to sample (all if fewer)")
    cost.add_argument(
        "--presets",
        default="hybrid,gpt-6.1-sol,paper,gpt-4o",
        help=f"comma-separated, from {', '.join(PRESETS)}",
    )
    cost.add_argument("--negatives", type=int, default=99, help="negatives per user (19 or 99)")
    cost.add_argument("--mar-mode", choices=["listwise", "pointwise", "both"], default="listwise")
    cost.add_argument(
        "--dry-run", action="store_true", help="estimate offline from the real prompts"
    )
    cost.add_argument(
        "--seed", type=int, default=0, help="user/candidate sample and shown-order seed"
    )
    cost.add_argument("--cold-start", type=int, help="keep only the last N history items")
    cost.add_argument("--chunk-size", type=int, default=10, help="candidates per listwise MAR call")
    cost.add_argument(
        "--no-schema-tokens", action="store_true", help="do not count the answer schemas as input"
    )
    cost.add_argument(
        "--output-tokens",
        metavar="STAGE=N,...",
        help="measured output tokens per call (MOPE, MOTE) or per scored candidate (MAR), instead of the size model",
    )
    cost.add_argument(
        "--cache", help="trait cache SQLite file whose items count as already encoded"
    )
    cost.add_argument("--json", help="also write the report as JSON to this file")
    cost.add_argument(
        "--out", help="without --dry-run: the run directory (resumable, as m3rec eval's)"
    )
    cost.add_argument(
        "--baselines",
        default="random,popularity",
        help="without --dry-run: free methods to plot alongside",
    )
    cost.add_argument(
        "--concurrency", type=int, default=2, help="without --dry-run: users in flight"
    )
    cost.set_defaults(func=cmd_cost)

    enc = sub.add_parser(
        "encode-items",
        help="MOTE through the OpenAI Batch API: write the requests, or ingest the results",
    )
    enc.add_argument("--dataset", help="dataset directory (with --batch-api)")
    enc.add_argument(
        "--users", type=int, help="only the candidates of N sampled users (default: every item)"
    )
    enc.add_argument("--negatives", type=int, default=99, help="negatives per user, with --users")
    enc.add_argument("--seed", type=int, default=0, help="user/candidate sample seed, with --users")
    enc.add_argument(
        "--cold-start", type=int, help="history cut, with --users (does not change the items)"
    )
    enc.add_argument("--batch-api", action="store_true", help="write a Batch API requests file")
    enc.add_argument(
        "--out", help="the requests file to write (FILE.jsonl; FILE.manifest.json goes next to it)"
    )
    enc.add_argument(
        "--ingest",
        metavar="RESULTS.jsonl",
        help="a Batch API output file to load into the trait cache",
    )
    enc.add_argument("--requests", help="with --ingest: the requests file the batch was made from")
    enc.add_argument(
        "--routing",
        choices=sorted(PRESETS),
        help="preset whose MOTE model encodes (default: hybrid)",
    )
    enc.add_argument("--model", action="append", metavar="STAGE=NAME", help="e.g. mote=gpt-6-luna")
    _effort_options(enc)
    enc.add_argument(
        "--cache", help="trait cache SQLite file (default: ~/.cache/m3rec/traits.sqlite)"
    )
    enc.add_argument(
        "--no-cache", action="store_true", help="with --batch-api: ignore what is already cached"
    )
    enc.set_defaults(func=cmd_encode_items)

    hub = sub.add_parser(
        "prompts", help="push prompts to / pull them from the LangSmith prompt hub"
    )
    hub.add_argument("action", choices=["push", "pull"])
    hub.add_argument("names", nargs="*", help="prompt files or hub names (default: all four)")
    hub.add_argument("--tag", help="push: tag the new commits; pull: the tag (or commit) to pull")
    hub.add_argument(
        "--dir", help="pull: the prompts directory to write (default: the package's prompts/)"
    )
    hub.set_defaults(func=cmd_prompts)
    return parser


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
    args = parser.parse_args(argv)
    warnings.showwarning = _show_warning
    try:
        args.func(args)
    except (InvalidRequestError, ConfigurationError) as exc:
        _fail(str(exc), EXIT_BAD_INPUT)
    except M3RecError as exc:
        # Errors that are also ValueErrors (dataset, batch file) are bad input; the rest are
        # trouble with a server or provider (local model, OpenAI, LangSmith).
        _fail(str(exc), EXIT_BAD_INPUT if isinstance(exc, ValueError) else 1)
    except KeyboardInterrupt:
        _fail("interrupted", 130)


if __name__ == "__main__":
    main()
