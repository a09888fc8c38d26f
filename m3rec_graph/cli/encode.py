"""`m3rec encode-items`: MOTE through the OpenAI Batch API, at the batch price.

* `--batch-api` writes one MOTE request per item that has text and is not yet in the
  trait cache, as a Batch API requests file, and its manifest next to it.
* `--ingest RESULTS` reads a finished batch's output file back: each valid answer goes
  into the trait cache under the key a live MOTE call would use.

Synchronous encoding is what `m3rec recommend` does, item by item, as a run needs them.
"""

import argparse
from pathlib import Path

from m3rec_graph.cli.options import add_effort_options, add_model_options
from m3rec_graph.cli.parsing import SubParsers, add_command
from m3rec_graph.cost.batch_api import (
    BatchManifest,
    format_ingest_report,
    ingest_mote_results,
    manifest_path,
    plan_mote_batch,
    write_batch,
)
from m3rec_graph.cost.estimate import batch_file_cost
from m3rec_graph.errors import ConfigurationError
from m3rec_graph.evaluation.datasets import build_requests, load_dataset
from m3rec_graph.llm.routing import PRESETS, context_for, parse_efforts, parse_overrides
from m3rec_graph.storage.traits import InMemoryTraitCache, SqliteTraitCache, TraitCache

CACHE_HELP = "trait cache SQLite file (default: ~/.cache/m3rec/traits.sqlite)"


def add_encode_parser(sub: SubParsers) -> None:
    """Register `m3rec encode-items`."""
    enc = add_command(
        sub,
        "encode-items",
        cmd_encode_items,
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
    add_model_options(enc, example="mote=gpt-6-luna")
    add_effort_options(enc)
    enc.add_argument("--cache", help=CACHE_HELP)
    enc.add_argument(
        "--no-cache", action="store_true", help="with --batch-api: ignore what is already cached"
    )


def cmd_encode_items(args: argparse.Namespace) -> None:
    """Write MOTE requests as an OpenAI Batch API file, or ingest a batch's results into the trait cache.

    Raises:
        ConfigurationError: Neither mode, or a mode without its files.
    """
    if args.ingest:
        if not args.requests:
            raise ConfigurationError(
                "--ingest needs --requests FILE.jsonl (the file --batch-api wrote; its manifest sits next to it)"
            )
        cmd_ingest(args)
        return
    if not args.batch_api:
        raise ConfigurationError(
            "pass --batch-api to write a Batch API file (synchronous encoding is what `recommend` does)"
        )
    if not args.dataset or not args.out:
        raise ConfigurationError("--batch-api needs --dataset PATH and --out FILE.jsonl")
    cmd_write(args)


def _trait_cache(args: argparse.Namespace) -> TraitCache:
    return SqliteTraitCache(args.cache)


def cmd_ingest(args: argparse.Namespace) -> None:
    """Store a batch's valid MOTE answers in the trait cache and print what was skipped.

    Raises:
        BatchFileError: The manifest or the results file is missing or malformed.
    """
    manifest = BatchManifest.read(manifest_path(Path(args.requests)))
    # Ingesting makes no call: a batch encoded by a model retired since is still readable.
    ctx = context_for("hybrid", {"mote": manifest.model}, allow_retired=True)
    report = ingest_mote_results(Path(args.ingest), manifest, _trait_cache(args), ctx)
    print(format_ingest_report(report))


def cmd_write(args: argparse.Namespace) -> None:
    """Write the MOTE requests of a dataset's items (or of sampled users' candidates) as a Batch API file.

    Raises:
        ConfigurationError: The MOTE model is not OpenAI's, or a bad override or effort.
        DatasetError: The dataset directory is missing a file or has a malformed row.
    """
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
