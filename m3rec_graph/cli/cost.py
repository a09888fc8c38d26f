"""`m3rec cost`: tokens and USD per stage of routing presets, estimated (`--dry-run`) or measured.

* With `--dry-run` it renders every stage call's real prompt for sampled users and
  counts its tokens, offline and without a key (`cost/estimate.py`).
* Without it, it runs the presets through the evaluation harness on the same users,
  next to free baselines, and plots USD against HR@10 (`cost/measure.py`); its run
  directory (`--out`) is resumable, as `m3rec eval`'s.
"""

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from m3rec_graph.cli.eval import resolve_dataset
from m3rec_graph.cli.parsing import SubParsers, add_command
from m3rec_graph.cost.estimate import (
    MAR_MODES,
    CostSettings,
    estimate_costs,
    format_report,
    parse_output_overrides,
)
from m3rec_graph.cost.measure import run_cost_experiment
from m3rec_graph.errors import ConfigurationError
from m3rec_graph.evaluation import EvalSettings
from m3rec_graph.llm.routing import PRESETS
from m3rec_graph.storage.traits import SqliteTraitCache, TraitCache


def add_cost_parser(sub: SubParsers) -> None:
    """Register `m3rec cost`."""
    cost = add_command(
        sub,
        "cost",
        cmd_cost,
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
        raise ConfigurationError(
            "cost without --dry-run runs the presets: give --out DIR for its run directory"
        )
    if (
        args.mar_mode != "listwise"
        or args.cold_start
        or args.chunk_size != 10
        or args.output_tokens
    ):
        raise ConfigurationError(
            "--mar-mode, --cold-start, --chunk-size and --output-tokens apply to --dry-run only"
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
