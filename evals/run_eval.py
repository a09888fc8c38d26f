"""Score recommenders on fixed leave-one-out candidate sets, resumably, and report with 95% CIs.

    python evals/run_eval.py --dataset ../shared/data/amazon/beauty --users 1000 \
        --negatives 99 --methods random,popularity,m3rec --routing local --out runs/beauty99

Candidates are built once into OUT/candidates.jsonl and reused, so every method is
scored on the same sets; OUT/results.jsonl gets one line per (method, user) as soon as
it is done, and a rerun with the same arguments skips what is already there. The
tables are printed and written to OUT/report.md. The logic is in
`m3rec_graph.evaluation`.

Exit codes: 0 done, 2 bad input (one-line message), 1 model or server trouble.
"""

import argparse
import sys
from pathlib import Path
from typing import NoReturn

from m3rec_graph.context import ABLATIONS
from m3rec_graph.errors import M3RecError
from m3rec_graph.evaluation import EvalSettings, parse_methods, run_evaluation
from m3rec_graph.routing import PRESETS

EXIT_BAD_INPUT = 2


class OneLineParser(argparse.ArgumentParser):
    """Report usage errors (a missing or non-integer option) in one line, exit code 2."""

    def error(self, message: str) -> NoReturn:
        print(f"run_eval: error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="run_eval.py", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--dataset", required=True, type=Path, help="dataset directory")
    parser.add_argument("--users", required=True, type=int, help="users to sample (all if fewer)")
    parser.add_argument(
        "--negatives", required=True, type=int, help="unseen negatives per user (19 or 99)"
    )
    parser.add_argument(
        "--methods", required=True, help="comma-separated: random, popularity, text, m3rec"
    )
    parser.add_argument(
        "--routing",
        default="local",
        help=f"m3rec routing preset ({', '.join(PRESETS)}; default: local)",
    )
    parser.add_argument(
        "--ablation",
        default="none",
        choices=ABLATIONS,
        help="m3rec configuration: none (full), no_mope, no_mote or no_mar (default: none)",
    )
    parser.add_argument(
        "--cold-start", type=int, help="keep only the last N history items of each user"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, type=Path, help="run directory, e.g. runs/NAME")
    parser.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples for the CIs")
    return parser


def fail(message: str, code: int) -> int:
    print(f"run_eval: error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = EvalSettings(
        dataset=args.dataset,
        users=args.users,
        negatives=args.negatives,
        seed=args.seed,
        cold_start=args.cold_start,
        routing=args.routing,
        ablation=args.ablation,
    )
    try:
        if args.n_boot < 0:
            return fail(f"--n-boot must be >= 0, got {args.n_boot}", EXIT_BAD_INPUT)
        methods = parse_methods(args.methods)
        run = run_evaluation(settings, methods, args.out, n_boot=args.n_boot)
    except M3RecError as exc:
        # EvaluationError, DatasetError, ConfigurationError are bad input (ValueError);
        # LocalServerError, ProviderAuthError are trouble with the models.
        return fail(str(exc), EXIT_BAD_INPUT if isinstance(exc, ValueError) else 1)
    except KeyboardInterrupt:
        return fail("interrupted (finished users are kept; rerun to resume)", 130)
    print(run.report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
