"""`m3rec cost estimate|measure`: tokens and USD per stage of routing presets.

* `estimate` renders every stage call's real prompt for sampled users and counts its
  tokens, offline and without a key (`cost/estimate.py`).
* `measure` runs the presets through the evaluation harness on the same users, next to
  free baselines, and plots USD against HR@10 (`cost/measure.py`); its run directory is
  resumable, as `m3rec eval`'s.

The flags only one mode takes belong to that mode's parser. Until the next release the
old spellings still run, with a note on stderr (`upgrade_old_spelling`):
`m3rec cost --dry-run ...` is `m3rec cost estimate ...`, and `m3rec cost ...` without
a mode is `m3rec cost measure ...`.
"""

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

from m3rec_graph.cli.eval import resolve_dataset
from m3rec_graph.cli.parsing import SubParsers, add_command, add_modes
from m3rec_graph.cli.store_options import add_store_options, store_url
from m3rec_graph.cost.estimate import (
    MAR_MODES,
    CostSettings,
    estimate_costs,
    format_report,
    parse_output_overrides,
)
from m3rec_graph.cost.measure import run_cost_experiment
from m3rec_graph.evaluation import EvalSettings
from m3rec_graph.llm.routing import PRESETS
from m3rec_graph.storage.store import STORE_URL_ENV, open_store

MODES = ("estimate", "measure")


def add_cost_parser(sub: SubParsers) -> None:
    """Register `m3rec cost` and its modes `estimate` and `measure`."""
    group = sub.add_parser(
        "cost",
        help="tokens and USD per stage of routing presets: estimate (offline, no key) or measure",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="`m3rec cost --dry-run ...` (now `cost estimate`) and `m3rec cost ...` without a mode"
        " (now `cost measure`) still run until the next release, with a note on stderr.",
    )
    modes = add_modes(group)
    estimate = add_command(
        modes,
        "estimate",
        cmd_estimate,
        help="estimate offline from the real prompts (no key, nothing is sent)",
        description="Render every stage call's real prompt for sampled users and count its tokens,"
        " offline: USD per stage and per 1,000 users for each preset.",
    )
    estimate.add_argument(
        "--dataset", required=True, help="dataset directory (interactions.csv + items.jsonl)"
    )
    _add_sample_options(estimate)
    estimate.add_argument(
        "--mar-mode",
        choices=["listwise", "pointwise", "both"],
        default="listwise",
        help="the MAR prompt to price (both: each)",
    )
    estimate.add_argument("--cold-start", type=int, help="keep only the last N history items")
    estimate.add_argument(
        "--chunk-size", type=int, default=10, help="candidates per listwise MAR call"
    )
    estimate.add_argument(
        "--no-schema-tokens", action="store_true", help="do not count the answer schemas as input"
    )
    estimate.add_argument(
        "--output-tokens",
        metavar="STAGE=N,...",
        help="measured output tokens per call (MOPE, MOTE) or per scored candidate (MAR), instead of the size model",
    )
    add_store_options(
        estimate,
        memory_help="count nothing as already encoded (the default)",
    )
    measure = add_command(
        modes,
        "measure",
        cmd_measure,
        help="run the presets through the evaluation harness: measured USD against HR@10",
        description="Run each preset as the m3rec:PRESET method of the evaluation harness, next to"
        " free baselines, and write cost.md and cost_accuracy.png into the run directory.",
    )
    measure.add_argument(
        "--dataset", required=True, help="dataset directory, or a name under ../shared/data/amazon"
    )
    _add_sample_options(measure)
    measure.add_argument(
        "--out", required=True, help="the run directory (resumable, as m3rec eval's)"
    )
    measure.add_argument(
        "--baselines", default="random,popularity", help="free methods to plot alongside"
    )
    measure.add_argument("--concurrency", type=int, default=2, help="users in flight")


def _add_sample_options(sample: argparse.ArgumentParser) -> None:
    """Add the flags both modes take: the user sample, the presets and the JSON copy."""
    sample.add_argument("--users", type=int, required=True, help="users to sample (all if fewer)")
    sample.add_argument(
        "--presets",
        default="hybrid,gpt-6.1-sol,paper,gpt-4o",
        help=f"comma-separated, from {', '.join(PRESETS)}",
    )
    sample.add_argument("--negatives", type=int, default=99, help="negatives per user (19 or 99)")
    sample.add_argument(
        "--seed", type=int, default=0, help="user/candidate sample and shown-order seed"
    )
    sample.add_argument("--json", help="also write the report as JSON to this file")


def upgrade_old_spelling(rest: list[str]) -> tuple[list[str], str] | None:
    """Return the arguments after `cost` in the new spelling and a one-line deprecation note, or None.

    `rest` is an old spelling when it does not start with a mode (or `-h`): with
    `--dry-run` it is `estimate`, without it `measure`, with the same other flags.
    """
    if not rest or rest[0] in (*MODES, "-h", "--help"):
        return None
    if "--dry-run" in rest:
        new = ["estimate", *(arg for arg in rest if arg != "--dry-run")]
        return new, (
            "`m3rec cost --dry-run` is deprecated and will be removed in the next release;"
            " use `m3rec cost estimate` (the same flags, without --dry-run)"
        )
    return ["measure", *rest], (
        "`m3rec cost` without a mode is deprecated and will be removed in the next release;"
        " use `m3rec cost measure` (the same flags)"
    )


def _presets(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def cmd_estimate(args: argparse.Namespace) -> None:
    """Estimate tokens and USD per stage offline and print the report.

    Raises:
        ConfigurationError: An unknown preset, a bad `--output-tokens` or a bad setting.
    """
    modes = MAR_MODES if args.mar_mode == "both" else (args.mar_mode,)
    settings = CostSettings(
        dataset=Path(args.dataset),
        users=args.users,
        presets=tuple(_presets(args.presets)),
        negatives=args.negatives,
        mar_modes=modes,
        seed=args.seed,
        cold_start=args.cold_start,
        chunk_size=args.chunk_size,
        include_schema=not args.no_schema_tokens,
        output_overrides=parse_output_overrides(args.output_tokens),
    )
    # Only an explicitly named store counts as already encoded (default: nothing is).
    named = args.store or args.cache or os.environ.get(STORE_URL_ENV)
    with open_store(store_url(args) if named else "memory:") as store:
        report = estimate_costs(settings, store=store)
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_dict(), indent=1) + "\n", encoding="utf-8")
    print(
        "no cost-vs-accuracy plot in a dry run: it has no measured accuracy (`m3rec cost measure` has)",
        file=sys.stderr,
    )


def cmd_measure(args: argparse.Namespace) -> None:
    """Run the presets and free baselines through the harness and print measured cost and accuracy.

    Raises:
        EvaluationError: A missing dataset, an unknown method, or a run directory of other settings.
    """
    settings = EvalSettings(
        dataset=resolve_dataset(args.dataset),
        users=args.users,
        negatives=args.negatives,
        seed=args.seed,
    )
    measured = run_cost_experiment(
        settings,
        _presets(args.presets),
        Path(args.out),
        baselines=_presets(args.baselines),
        concurrency=args.concurrency,
    )
    print(measured.report)
    if args.json:
        rows = [
            {**asdict(m), "cost_per_1000_users_usd": m.cost_per_1000_users_usd}
            for m in measured.methods
        ]
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
