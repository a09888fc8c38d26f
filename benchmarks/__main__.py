"""`python -m benchmarks [--quick]`: run the suite, print tables, write docs/benchmarks.md."""

import argparse
import os
import sys
from pathlib import Path

from benchmarks.report import render_text, write_outputs
from benchmarks.suite import default_command, run
from benchmarks.tokens import DEFAULT_DATASET, QUICK_DATASET


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a few runs of each benchmark (seconds); prints only, writes no files",
    )
    parser.add_argument(
        "--dataset",
        type=Path,
        default=None,
        help="Beauty dataset directory for the cache and token benchmarks (default: "
        f"{DEFAULT_DATASET}, or {QUICK_DATASET} with --quick; relative to the repository root)",
    )
    args = parser.parse_args(argv)
    # Measure the graph, not a tracer: never send traces from a benchmark.
    for var in ("LANGSMITH_TRACING", "LANGCHAIN_TRACING_V2"):
        os.environ[var] = "false"
    results = run(
        args.quick,
        command=default_command(args.quick) + (f" --dataset {args.dataset}" if args.dataset else ""),
        progress=lambda msg: print(msg, file=sys.stderr, flush=True),
        dataset=args.dataset,
    )
    print(render_text(results))
    if not args.quick:
        for path in write_outputs(results):
            print(f"wrote {os.path.relpath(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
