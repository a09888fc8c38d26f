"""Latency (p50/p95) and throughput of the offline default model over a batch, from an `m3rec eval` run.

    python -m benchmarks.local_batch runs/m3rec-sports-n19-u20 [--method m3rec:local]

The batch is the run itself: `m3rec eval --methods m3rec:local --concurrency 2` keeps
two users in flight (the local server's two slots) and records each user's own wall
time (queueing at the server included) and each pass's wall time. This prints,
per slice: users, p50/p95/max seconds per recommendation, recommendations per
minute (users / the pass's wall time, when the pass ran in one process), LLM calls
and tokens per recommendation, and the machine the run directory records.
"""

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolation percentile (q in [0, 1]) of a non-empty list."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def summarise(run: Path, method: str) -> list[dict[str, Any]]:
    """One row per slice of `method` in the run directory."""
    doc = json.loads((run / "results.json").read_text(encoding="utf-8"))
    lines = [
        json.loads(x) for x in (run / "results.jsonl").read_text(encoding="utf-8").splitlines() if x
    ]
    rows = []
    for slice_name in doc["slices"]:
        records = [r for r in lines if r["method"] == method and r["slice"] == slice_name]
        if not records:
            continue
        seconds = [float(r["seconds"]) for r in records]
        wall = doc.get("wall_seconds_this_process", {}).get(f"{method} [{slice_name}]")
        complete_pass = (
            wall is not None and len(records) == doc["slices"][slice_name][method]["users"]
        )
        rows.append(
            {
                "slice": slice_name,
                "users": len(records),
                "p50_s": percentile(seconds, 0.5),
                "p95_s": percentile(seconds, 0.95),
                "max_s": max(seconds),
                "recs_per_min": 60 * len(records) / wall if complete_pass and wall else None,
                "calls": statistics.fmean(float(r["llm_calls"]) for r in records),
                "tokens": statistics.fmean(float(r["total_tokens"]) for r in records),
                "degraded_users": sum(1 for r in records if r["degraded"]),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("run", type=Path, help="an m3rec eval run directory")
    parser.add_argument("--method", default="m3rec:local")
    args = parser.parse_args(argv)
    try:
        rows = summarise(args.run, args.method)
        machine = json.loads((args.run / "results.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, KeyError) as exc:
        print(f"local_batch: error: cannot read {args.run}: {exc}", file=sys.stderr)
        return 2
    if not rows:
        print(f"local_batch: error: no {args.method} results in {args.run}", file=sys.stderr)
        return 2
    print(
        f"{args.method} in {args.run} ({machine['settings']['dataset_name']},"
        f" {machine['settings']['negatives'] + 1} candidates per user)"
    )
    print(
        "| slice | users | p50 s/rec | p95 s/rec | max s | recs/min | LLM calls/rec | tokens/rec | users degraded |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        rpm = "n/a (resumed pass)" if r["recs_per_min"] is None else f"{r['recs_per_min']:.2f}"
        print(
            f"| {r['slice']} | {r['users']} | {r['p50_s']:.1f} | {r['p95_s']:.1f} | {r['max_s']:.1f} | {rpm}"
            f" | {r['calls']:.1f} | {r['tokens']:,.0f} | {r['degraded_users']} |"
        )
    m, v = machine["machine"], machine["versions"]
    print(
        f"machine: {m['cpu_count']} CPUs, {m['platform']}; Python {v['python']}, langgraph {v['langgraph']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
