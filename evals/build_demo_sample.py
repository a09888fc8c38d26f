"""Write a small leave-one-out demo sample (a few users, their history and candidates) as JSON.

    python evals/build_demo_sample.py --dataset ../shared/data/amazon/beauty --users 3 \
        --negatives 19 --seed 7 --out m3rec_graph/data/demo_beauty.json

Only users whose test-time history has `--min-history`..`--max-history` items are
eligible (so the demo prints compactly); among them `--users` are drawn with the seed.
"""

import argparse
import json
from pathlib import Path
from typing import Any

from m3rec_graph.evaluation.datasets import Dataset, build_requests, load_dataset


def protocol(n_negatives: int, seed: int, min_history: int, max_history: int) -> str:
    return (
        "leave-one-out on each user's chronological sequence: target = last item, history ="
        f" all earlier items; candidates = target + {n_negatives} negatives drawn uniformly"
        " without replacement from items the user never interacted with, shuffled"
        f" (random.Random(f'{seed}:{{user_id}}')); users with {min_history}-{max_history}"
        f" history items sampled with random.Random({seed})"
    )


def build_sample(
    dataset: Dataset,
    *,
    n_users: int,
    n_negatives: int,
    seed: int,
    min_history: int = 3,
    max_history: int = 6,
) -> dict[str, Any]:
    eligible = {
        user: seq
        for user, seq in dataset.sequences.items()
        if min_history <= len(seq) - 1 <= max_history
    }
    subset = Dataset(name=dataset.name, items=dataset.items, sequences=eligible)
    cases = build_requests(subset, n_users=n_users, n_negatives=n_negatives, seed=seed)
    return {
        "dataset": dataset.name,
        "seed": seed,
        "protocol": protocol(n_negatives, seed, min_history, max_history),
        "cases": [{**case.to_request(), "target_id": case.target_id} for case in cases],
    }


def render(sample: dict[str, Any]) -> str:
    """JSON with one item per line: compact, yet readable and diff-friendly."""

    def dump(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False)

    lines = ["{"]
    lines += [f" {dump(key)}: {dump(value)}," for key, value in sample.items() if key != "cases"]
    lines.append(' "cases": [')
    cases = sample["cases"]
    for n, case in enumerate(cases):
        lines += ["  {", f'   "user_id": {dump(case["user_id"])},']
        for key in ("history", "candidates"):
            lines.append(f'   "{key}": [')
            lines.append(",\n".join("    " + dump(item) for item in case[key]))
            lines.append("   ],")
        lines.append(f'   "target_id": {dump(case["target_id"])}')
        lines.append("  }," if n < len(cases) - 1 else "  }")
    lines += [" ]", "}"]
    text = "\n".join(lines) + "\n"
    assert json.loads(text) == sample
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, required=True, help="dataset directory")
    parser.add_argument("--users", type=int, default=3)
    parser.add_argument("--negatives", type=int, default=19)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--min-history", type=int, default=3)
    parser.add_argument("--max-history", type=int, default=6)
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    args = parser.parse_args(argv)

    sample = build_sample(
        load_dataset(args.dataset),
        n_users=args.users,
        n_negatives=args.negatives,
        seed=args.seed,
        min_history=args.min_history,
        max_history=args.max_history,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = render(sample)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}: {len(sample['cases'])} cases, {len(text.encode())} bytes")


if __name__ == "__main__":
    main()
