"""Print docs/cost.md's tables from `m3rec cost estimate --json` reports.

    python evals/cost_tables.py beauty_99.json beauty_19.json

Then, per report and MAR mode, the per-stage table of `PER_STAGE`'s presets.

For each report and MAR mode: USD per 1,000 users per preset, each comparison of
`costing.COMPARISONS` (a hybrid routing against its all-strong routing) with the
stage shares that cap its saving, and the sensitivity of the saving to schema
tokens, a pre-encoded catalogue and no trait cache, all priced with the
report's own per-stage figures and the shipped model registry.
"""

import json
import sys
from pathlib import Path
from typing import Any

from m3rec_graph.cost.estimate import COMPARISONS
from m3rec_graph.llm.usage import price_table

PRICES = price_table()
PER_STAGE = ("hybrid", "gpt-6.1-sol")
"""The presets whose per-stage tables docs/cost.md shows: today's hybrid and its all-strong routing."""


def usd(stage: dict[str, Any], *, schema: bool = True) -> float:
    tokens = stage["input_tokens"] if schema else stage["prompt_tokens"]
    cost = PRICES.cost(stage["model"], tokens, stage["output_tokens"])
    if cost is None:
        raise SystemExit(f"no price for {stage['model']}")
    return cost


def total(e: dict[str, Any], *, schema: bool = True, mote: str | None = "mote") -> float:
    stages = e["stages"]
    cost = usd(stages["mope"], schema=schema) + usd(stages["mar"], schema=schema)
    if mote == "mote":
        cost += usd(stages["mote"], schema=schema)
    elif mote == "without_cache":
        cost += usd(e["mote_without_cache"], schema=schema)
    return cost


def main(paths: list[str]) -> None:
    reports = [json.loads(Path(p).read_text()) for p in paths]
    presets = list(dict.fromkeys(e["preset"] for r in reports for e in r["estimates"]))
    print(f"prices of {PRICES.taken}; USD per 1,000 users\n")
    print("| negatives | MAR | " + " | ".join(presets) + " | trait cache hit rate |")
    print("|---:|---|" + "---:|" * len(presets) + "---:|")
    for r in reports:
        negatives = r["settings"]["negatives"]
        for mode in r["settings"]["mar_modes"]:
            rows = {e["preset"]: e for e in r["estimates"] if e["mar_mode"] == mode}
            per_1000 = [f"${rows[p]['cost_usd'] / r['users'] * 1000:,.2f}" if p in rows else "" for p in presets]
            hit = next(iter(rows.values()))["cache"]["hit_rate"]
            print(f"| {negatives} | {mode} | " + " | ".join(per_1000) + f" | {hit:.1%} |")
    print("\n| negatives | MAR | comparison | MOPE share | MOTE share | MAR share | cap on the saving | saving |")
    print("|---:|---|---|---:|---:|---:|---:|---:|")
    for r in reports:
        for c in r["comparisons"]:
            share = c["cost_share"]
            cap = share["mope"] + share["mote"]
            print(
                f"| {r['settings']['negatives']} | {c['mar_mode']} | {c['hybrid']} vs {c['strong']} "
                f"| {share['mope']:.1%} | {share['mote']:.1%} | {share['mar']:.1%} | {cap:.1%} | {c['reduction']:.1%} |"
            )
    print(
        "\n| negatives | MAR | comparison | as estimated | schema tokens excluded "
        "| catalogue already encoded (MOPE + MAR only) | no trait cache |"
    )
    print("|---:|---|---|---:|---:|---:|---:|")
    for r in reports:
        for c in r["comparisons"]:
            rows = {e["preset"]: e for e in r["estimates"] if e["mar_mode"] == c["mar_mode"]}
            cheap, strong = rows[c["hybrid"]], rows[c["strong"]]
            cells = []
            for kwargs in ({}, {"schema": False}, {"mote": None}, {"mote": "without_cache"}):
                a, b = total(cheap, **kwargs) / r["users"] * 1000, total(strong, **kwargs) / r["users"] * 1000
                cells.append(f"−{1 - a / b:.1%} (${a:,.2f} vs ${b:,.2f})")
            print(f"| {r['settings']['negatives']} | {c['mar_mode']} | {c['hybrid']} vs {c['strong']} | " + " | ".join(cells) + " |")
    pairs = ", ".join(f"{a} vs {b}" for a, b in COMPARISONS)
    print(f"\n(comparisons: {pairs})")
    for r in reports:
        for mode in r["settings"]["mar_modes"]:
            per_stage_table(r, mode)


def per_stage_table(report: dict[str, Any], mode: str) -> None:
    """Print one report's per-stage table (calls, tokens, USD per 1,000 users) for `PER_STAGE`'s presets."""
    users = report["users"]
    print(f"\n#### {report['settings']['negatives']} negatives, MAR {mode}\n")
    print(
        "| preset | stage | model (effort) | calls | input tokens | of which schema | output tokens"
        " | of which reasoning | USD per 1,000 users |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for e in report["estimates"]:
        if e["preset"] not in PER_STAGE or e["mar_mode"] != mode:
            continue
        for name in ("mope", "mote", "mar"):
            st = e["stages"][name]
            print(
                f"| {e['preset']} | {name} | {st['model']} ({st.get('reasoning_effort') or 'none'})"
                f" | {st['calls']:,} | {st['input_tokens']:,} | {st['schema_tokens']:,}"
                f" | {st['output_tokens']:,} | {st.get('reasoning_tokens', 0):,}"
                f" | ${st['cost_usd'] / users * 1000:,.2f} |"
            )
        batch = e.get("cost_usd_batch_mote")
        via = f" (MOTE via Batch API: ${batch / users * 1000:,.2f})" if batch is not None else ""
        print(
            f"| **{e['preset']}** | **total** | | | {e['input_tokens']:,} | | {e['output_tokens']:,} |"
            f" | **${e['cost_usd'] / users * 1000:,.2f}**{via} |"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
