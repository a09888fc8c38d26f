"""`m3rec encode-items write|ingest`: MOTE through the OpenAI Batch API, at the batch price.

* `write` writes one MOTE request per item that has text and is not yet in the store,
  as a Batch API requests file, and its manifest next to it.
* `ingest` reads a finished batch's output file back: each valid answer goes into the
  store under the namespace and key a live MOTE call would use.

There is no third mode: synchronous encoding is what `m3rec recommend` does, item by
item, as a run needs them. Until the next release the old spellings still run, with a
note on stderr (`upgrade_old_spelling`): `m3rec encode-items --batch-api ...` is
`m3rec encode-items write ...`, and `m3rec encode-items --ingest RESULTS ...` is
`m3rec encode-items ingest RESULTS ...`.
"""

import argparse
from pathlib import Path

from m3rec_graph.cli.options import add_effort_options, add_model_options
from m3rec_graph.cli.parsing import SubParsers, add_command, add_modes
from m3rec_graph.cli.store_options import add_store_options, store_url
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
from m3rec_graph.storage.store import open_store

MODES = ("write", "ingest")


def add_encode_parser(sub: SubParsers) -> None:
    """Register `m3rec encode-items` and its modes `write` and `ingest`."""
    group = sub.add_parser(
        "encode-items",
        help="MOTE through the OpenAI Batch API: write the requests, or ingest the results",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="There is no direct mode: `m3rec recommend` encodes the items it needs. The old"
        " spellings `encode-items --batch-api` (now `write`) and `encode-items --ingest RESULTS`"
        " (now `ingest RESULTS`) still run until the next release, with a note on stderr.",
    )
    modes = add_modes(group)
    write = add_command(
        modes,
        "write",
        cmd_write,
        help="write a Batch API requests file (and its manifest) for the items not yet stored",
    )
    write.add_argument(
        "--dataset", required=True, help="dataset directory (interactions.csv + items.jsonl)"
    )
    write.add_argument(
        "--out",
        required=True,
        metavar="FILE.jsonl",
        help="the requests file to write (FILE.manifest.json goes next to it)",
    )
    write.add_argument(
        "--users", type=int, help="only the candidates of N sampled users (default: every item)"
    )
    write.add_argument("--negatives", type=int, default=99, help="negatives per user, with --users")
    write.add_argument(
        "--seed", type=int, default=0, help="user/candidate sample seed, with --users"
    )
    write.add_argument(
        "--cold-start", type=int, help="history cut, with --users (does not change the items)"
    )
    write.add_argument(
        "--routing",
        choices=sorted(PRESETS),
        help="preset whose MOTE model encodes (default: hybrid)",
    )
    add_model_options(write, example="mote=gpt-6-luna")
    add_effort_options(write)
    add_store_options(write, memory_help="ignore what is already stored")
    ingest = add_command(
        modes,
        "ingest",
        cmd_ingest,
        help="load a Batch API output file into the store",
    )
    ingest.add_argument("results", metavar="RESULTS.jsonl", help="the batch's output file")
    ingest.add_argument(
        "--requests",
        required=True,
        metavar="FILE.jsonl",
        help="the requests file `write` made the batch from (its manifest sits next to it)",
    )
    add_store_options(ingest)


def upgrade_old_spelling(rest: list[str]) -> tuple[list[str], str] | None:
    """Return the arguments after `encode-items` in the new spelling and a one-line deprecation note.

    None when `rest` starts with a mode (or `-h`). `--ingest RESULTS` (or
    `--ingest=RESULTS`) becomes `ingest RESULTS`; otherwise `--batch-api` becomes `write`.

    Raises:
        ConfigurationError: `rest` starts with a flag but names neither mode.
    """
    if not rest or rest[0] in (*MODES, "-h", "--help"):
        return None
    note = "`m3rec encode-items {old}` is deprecated and will be removed in the next release; use `m3rec encode-items {new}`"
    for n, arg in enumerate(rest):
        if arg == "--ingest" or arg.startswith("--ingest="):
            results = [arg.removeprefix("--ingest=")] if arg != "--ingest" else []
            new = ["ingest", *rest[:n], *results, *rest[n + 1 :]]
            return new, note.format(old="--ingest RESULTS", new="ingest RESULTS")
    if "--batch-api" in rest:
        new = ["write", *(arg for arg in rest if arg != "--batch-api")]
        return new, note.format(old="--batch-api", new="write")
    raise ConfigurationError(
        "encode-items takes a mode: `m3rec encode-items write` writes a Batch API file,"
        " `m3rec encode-items ingest RESULTS.jsonl` reads its results (synchronous encoding is what"
        " `recommend` does)"
    )


def cmd_ingest(args: argparse.Namespace) -> None:
    """Store a batch's valid MOTE answers in the trait cache and print what was skipped.

    Raises:
        BatchFileError: The manifest or the results file is missing or malformed.
    """
    manifest = BatchManifest.read(manifest_path(Path(args.requests)))
    with open_store(store_url(args)) as store:
        report = ingest_mote_results(Path(args.results), manifest, store)
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
    with open_store(store_url(args)) as store:
        plan = plan_mote_batch(items, spec, store)
    out = Path(args.out)
    manifest_file = write_batch(plan, out)
    input_tokens, output_tokens, usd = batch_file_cost(plan.lines, spec.name)
    print(
        f"wrote {len(plan.lines):,} MOTE requests for {scope} to {out}"
        f" ({plan.cached:,} items already stored, {plan.without_text:,} without text) and {manifest_file}"
    )
    print(
        f"model {spec.name} (schema as {plan.manifest.transport}), prompt {plan.manifest.prompt}"
        f" {plan.manifest.prompt_version}; estimated {input_tokens:,} input + {output_tokens:,} output tokens,"
        f" {'n/a' if usd is None else f'${usd:,.2f}'} at the batch price"
    )
    print(
        f"next: upload {out.name} as a batch (endpoint {plan.lines[0]['url'] if plan.lines else '/v1/chat/completions'}),"
        f" download its output, then: m3rec encode-items ingest RESULTS.jsonl --requests {out}"
    )
