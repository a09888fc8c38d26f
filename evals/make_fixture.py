"""Cut a small test fixture out of a dataset directory (interactions.csv + items.jsonl).

    python evals/make_fixture.py --dataset ../shared/data/amazon/beauty --users 300 \
        --seed 0 --out tests/fixtures/beauty_small

Every interaction row of the chosen users is kept (same header and columns, original
order) and only the items they touch, as verbatim items.jsonl lines. Users are
chosen with `random.Random(seed)`:

* `--strategy dense` (default): starting from the first user of a seeded shuffle,
  repeatedly add the user who brings the fewest items not yet included (ties go to
  the earlier user in the shuffle). Users who share items keep the fixture small:
  300 Beauty users touch about 380 items instead of about 2,100.
* `--strategy random`: a plain seeded sample of users.
"""

import argparse
import csv
import json
import random
from pathlib import Path

INTERACTIONS = "interactions.csv"
ITEMS = "items.jsonl"


def read_interactions(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        return header, [row for row in reader if row]


def sequences_by_user(header: list[str], rows: list[list[str]]) -> dict[str, set[str]]:
    user_col, item_col = header.index("user_id"), header.index("item_id")
    items: dict[str, set[str]] = {}
    for row in rows:
        items.setdefault(row[user_col], set()).add(row[item_col])
    return items


def choose_dense(user_items: dict[str, set[str]], n_users: int, seed: int) -> list[str]:
    order = sorted(user_items)
    random.Random(seed).shuffle(order)
    rank = {user: n for n, user in enumerate(order)}
    users_of: dict[str, list[str]] = {}
    for user, items in user_items.items():
        for item in items:
            users_of.setdefault(item, []).append(user)
    new_items = {user: len(items) for user, items in user_items.items()}
    covered: set[str] = set()
    chosen: list[str] = []
    remaining = set(order)
    while remaining and len(chosen) < n_users:
        user = order[0] if not chosen else min(remaining, key=lambda u: (new_items[u], rank[u]))
        remaining.discard(user)
        chosen.append(user)
        for item in user_items[user] - covered:
            covered.add(item)
            for other in users_of[item]:
                new_items[other] -= 1
    return chosen


def choose_random(user_items: dict[str, set[str]], n_users: int, seed: int) -> list[str]:
    users = sorted(user_items)
    return random.Random(seed).sample(users, min(n_users, len(users)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, required=True, help="source dataset directory")
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strategy", choices=("dense", "random"), default="dense")
    parser.add_argument("--out", type=Path, required=True, help="fixture directory to write")
    args = parser.parse_args(argv)

    header, rows = read_interactions(args.dataset / INTERACTIONS)
    user_items = sequences_by_user(header, rows)
    choose = choose_dense if args.strategy == "dense" else choose_random
    users = set(choose(user_items, args.users, args.seed))
    item_ids = set().union(*(user_items[u] for u in users))

    args.out.mkdir(parents=True, exist_ok=True)
    user_col = header.index("user_id")
    with (args.out / INTERACTIONS).open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(row for row in rows if row[user_col] in users)
    kept = 0
    with (
        (args.dataset / ITEMS).open(encoding="utf-8") as source,
        (args.out / ITEMS).open("w", encoding="utf-8") as target,
    ):
        for line in source:
            if line.strip() and json.loads(line)["item_id"] in item_ids:
                target.write(line)
                kept += 1
    n_rows = sum(1 for row in rows if row[user_col] in users)
    print(f"wrote {args.out}: {len(users)} users, {n_rows} interactions, {kept} items")


if __name__ == "__main__":
    main()
