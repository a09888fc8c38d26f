"""`python -m benchmarks.import_time [--runs N] [--against DIR]`: time `import m3rec_graph`.

Each run is a fresh interpreter (`python -X importtime`-free wall clock of
`python -c "import m3rec_graph"`), so module caches of one run never help the next.
`--against DIR` times another checkout too (for example the commit before the layout
change, `git worktree add /tmp/old 0383511^`), interleaving the two so that machine
load affects both alike; the medians are printed side by side.

`import m3rec_graph` is meant to be cheap: it compiles no graph and loads neither the
evaluation stack nor the CLI (PEP 562 `__getattr__` builds the default graph on first
access to `m3rec_graph.graph`). The second line times that first access.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATEMENTS = {
    "import m3rec_graph": "import m3rec_graph",
    "import + first access to m3rec_graph.graph": "import m3rec_graph; m3rec_graph.graph",
}


def time_once(checkout: Path, statement: str) -> float:
    """Seconds for one fresh interpreter to run `statement` with `checkout` first on sys.path."""
    env = {**os.environ, "PYTHONPATH": str(checkout), "LANGSMITH_TRACING": "false"}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", statement], env=env, check=True, cwd=checkout)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.import_time", description=__doc__)
    parser.add_argument("--runs", type=int, default=7, help="fresh interpreters per statement (default 7)")
    parser.add_argument("--against", type=Path, help="another checkout to time alongside this one")
    args = parser.parse_args(argv)
    checkouts = [ROOT] + ([args.against.resolve()] if args.against else [])
    load = os.getloadavg()[0]
    print(f"{args.runs} fresh interpreters each, Python {sys.version.split()[0]}, {os.cpu_count()} cores,"
          f" load average {load:.2f} at start")
    for label, statement in STATEMENTS.items():
        samples: dict[Path, list[float]] = {c: [] for c in checkouts}
        for _ in range(args.runs):
            for checkout in checkouts:  # interleaved: load drifts affect every checkout alike
                samples[checkout].append(time_once(checkout, statement))
        cells = ", ".join(f"{c.name}: median {statistics.median(s):.2f} s" for c, s in samples.items())
        print(f"{label:<44} {cells}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
