"""Print one markdown table from the `results.json` of several `m3rec eval` run directories.

    python evals/results_table.py runs/m3rec-beauty-n19-u20 runs/m3rec-sports-n19-u20

Rows are (dataset, slice, method); columns HR@1, HR@5, HR@10, NDCG@10 and MRR (95%
bootstrap CIs on HR@10, NDCG@10 and MRR), seconds and tokens per user. The numbers
are copied from the files, not recomputed.
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _ci(metric: dict[str, float]) -> str:
    return f"{metric['mean']:.3f} [{metric['low']:.3f}, {metric['high']:.3f}]"


def rows(doc: dict[str, Any]) -> list[str]:
    """The table rows of one run's results.json."""
    settings = doc["settings"]
    out = []
    for slice_name, methods in doc["slices"].items():
        for method, summary in methods.items():
            m = summary["metrics"]
            llm = summary.get("llm") or {}
            tokens = llm.get("tokens_per_user")
            out.append(
                f"| {settings['dataset_name']} | {settings['negatives'] + 1} | {slice_name} | {method}"
                f" | {summary['users']} | {m['HR@1']['mean']:.3f} | {m['HR@5']['mean']:.3f} | {_ci(m['HR@10'])}"
                f" | {_ci(m['NDCG@10'])} | {_ci(m['MRR'])} | {summary['seconds_per_user']:.3g}"
                f" | {'' if tokens is None else f'{tokens:,.0f}'} |"
            )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("runs", nargs="+", type=Path, help="run directories of m3rec eval")
    args = parser.parse_args(argv)
    print(
        "| dataset | candidates | slice | method | users | HR@1 | HR@5 | HR@10 [95% CI] | NDCG@10 [95% CI]"
        " | MRR [95% CI] | s/user | tokens/user |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for run in args.runs:
        path = run / "results.json"
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            print(f"results_table: error: cannot read {path}: {exc}", file=sys.stderr)
            return 2
        print("\n".join(rows(doc)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
