"""Load sequential-recommendation datasets and build leave-one-out evaluation cases.

A dataset is a directory with two files:

* `interactions.csv` with at least the columns `user_id`, `item_id` and `position`
  (the 0-based chronological index within the user's sequence; row order is ignored);
* `items.jsonl`, one JSON object per item with `item_id` and any of `title`, `brand`,
  `categories` (category paths, root first), `category_terms`, `description` and
  `keywords`. Missing or null fields are simply absent from the `Item`.

Nothing here depends on a dataset's name: any directory in this format loads.
"""

import csv
import hashlib
import heapq
import random
from bisect import bisect_right
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import accumulate
from pathlib import Path
from typing import Any, Literal, NamedTuple

from m3rec_graph.contracts.request import item_dict
from m3rec_graph.contracts.schemas import Item
from m3rec_graph.errors import DatasetError
from m3rec_graph.storage.item_file import load_items, require_file

INTERACTIONS_FILE = "interactions.csv"
ITEMS_FILE = "items.jsonl"

NegativeSampling = Literal["uniform", "popularity"]
NEGATIVE_SAMPLING: tuple[NegativeSampling, ...] = ("uniform", "popularity")
"""How test negatives are drawn: uniformly, or in proportion to item popularity."""
REQUIRED_COLUMNS = ("user_id", "item_id", "position")


@dataclass(frozen=True)
class Dataset:
    """A loaded dataset: items by id and each user's chronological item sequence."""

    name: str
    items: dict[str, Item]
    sequences: dict[str, list[str]]
    """user_id -> item ids, oldest first (ordered by `position`)."""

    @cached_property
    def sorted_item_ids(self) -> list[str]:
        """All item ids, sorted, so sampling does not depend on file order."""
        return sorted(self.items)


class LeaveOneOut(NamedTuple):
    """A leave-one-out split of one chronological sequence."""

    train_history: list[str]
    """Everything before the validation target (`seq[:-2]`): training data and validation input."""
    valid_target: str
    """The second-last item."""
    test_target: str
    """The last item."""

    @property
    def test_history(self) -> list[str]:
        """The input at test time: everything before the last item (`seq[:-1]`)."""
        return [*self.train_history, self.valid_target]


@dataclass(frozen=True)
class EvalCase:
    """One evaluation case: a user's history, the shuffled candidates and the held-out target."""

    user_id: str
    history: list[Item]
    candidates: list[Item]
    target_id: str

    def to_request(self) -> dict[str, Any]:
        """Return the JSON-able recommendation request (the target appears only as a candidate)."""
        return {
            "user_id": self.user_id,
            "history": [item_dict(item) for item in self.history],
            "candidates": [item_dict(item) for item in self.candidates],
        }


def dataset_fingerprint(path: Path) -> str:
    """Return a sha256 over the dataset's two files (names and bytes), so a changed dataset is noticed."""
    digest = hashlib.sha256()
    for name in (INTERACTIONS_FILE, ITEMS_FILE):
        file = path / name
        if not file.is_file():
            raise DatasetError(f"dataset file not found: {file}")
        digest.update(name.encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- loading


def load_dataset(path: str | Path, *, use_keywords: bool = False) -> Dataset:
    """Load `interactions.csv` and `items.jsonl` from the directory `path`.

    Args:
        path: The dataset directory; its name becomes `Dataset.name`.
        use_keywords: Use the (model-generated) `keywords` field as the title of items
            that have no title. Off by default.

    Raises:
        DatasetError: A file is missing, or a row is malformed (the message names the
            file and line), or an interaction refers to an item not in `items.jsonl`.
    """
    root = Path(path)
    if not root.is_dir():
        raise DatasetError(f"dataset directory not found: {root}")
    items = load_items(root / ITEMS_FILE, use_keywords=use_keywords)
    sequences = _load_sequences(root / INTERACTIONS_FILE, items)
    return Dataset(name=root.resolve().name, items=items, sequences=sequences)


def _load_sequences(path: Path, items: dict[str, Item]) -> dict[str, list[str]]:
    require_file(path)
    rows: dict[str, list[tuple[int, int, str]]] = {}  # user -> (position, line, item)
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        missing = [c for c in REQUIRED_COLUMNS if header is None or c not in header]
        if header is None or missing:
            raise DatasetError(f"{path}:1: header lacks column(s) {', '.join(missing)}")
        width = len(header)
        user_col, item_col, pos_col = (header.index(c) for c in REQUIRED_COLUMNS)
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if not row:
                continue
            if len(row) != width:
                raise DatasetError(f"{where}: expected {width} fields, got {len(row)}")
            user_id, item_id = row[user_col].strip(), row[item_col].strip()
            if not user_id or not item_id:
                raise DatasetError(f"{where}: empty user_id or item_id")
            try:
                position = int(row[pos_col])
            except ValueError:
                raise DatasetError(
                    f"{where}: position {row[pos_col]!r} is not an integer"
                ) from None
            if item_id not in items:
                raise DatasetError(f"{where}: item_id {item_id!r} is not in {ITEMS_FILE}")
            rows.setdefault(user_id, []).append((position, reader.line_num, item_id))
    if not rows:
        raise DatasetError(f"{path}: no interactions")
    sequences: dict[str, list[str]] = {}
    for user_id, events in rows.items():
        events.sort()
        for (pos_a, _, _), (pos_b, line_no, _) in zip(events, events[1:], strict=False):
            if pos_a == pos_b:
                raise DatasetError(f"{path}:{line_no}: user {user_id!r} repeats position {pos_b}")
        sequences[user_id] = [item_id for _, _, item_id in events]
    return sequences


# --------------------------------------------------------------------------- splits


def split_leave_one_out(seq: Sequence[str]) -> LeaveOneOut:
    """Split a chronological sequence: last = test target, second-last = validation target.

    Unpacks as `(train_history, valid_target, test_target)`; `.test_history` is
    everything before the last item.

    Raises:
        ValueError: The sequence has fewer than two items.
    """
    if len(seq) < 2:
        raise ValueError(f"leave-one-out needs at least 2 items, got {len(seq)}")
    return LeaveOneOut(list(seq[:-2]), seq[-2], seq[-1])


def item_popularity(dataset: Dataset) -> Counter[str]:
    """Count the interactions of every item (for popularity-weighted negative sampling)."""
    counts: Counter[str] = Counter()
    for seq in dataset.sequences.values():
        counts.update(seq)
    return counts


def sample_candidates(
    dataset: Dataset,
    user_id: str,
    target: str,
    n_negatives: int,
    rng: random.Random,
    popularity: Counter[str] | None = None,
    exclude: Collection[str] = (),
) -> list[str]:
    """Return `target` plus `n_negatives` items the user never interacted with, shuffled.

    Negatives are drawn without replacement, uniformly, or with probability
    proportional to `popularity` when it is given (items with zero count are used
    only if there are too few positive ones). Items in `exclude` are never drawn (the
    validation split keeps its negatives apart from the test candidates). The result
    depends only on `rng`'s state.

    Raises:
        DatasetError: Unknown user or target, or too few items to draw from.
        ValueError: `n_negatives` is negative.
    """
    if n_negatives < 0:
        raise ValueError(f"n_negatives must be >= 0, got {n_negatives}")
    if user_id not in dataset.sequences:
        raise DatasetError(f"unknown user_id {user_id!r} in dataset {dataset.name!r}")
    if target not in dataset.items:
        raise DatasetError(f"unknown target item_id {target!r} in dataset {dataset.name!r}")
    seen = set(dataset.sequences[user_id])
    seen.add(target)
    seen.update(exclude)
    pool = [item_id for item_id in dataset.sorted_item_ids if item_id not in seen]
    if len(pool) < n_negatives:
        raise DatasetError(
            f"dataset {dataset.name!r}: only {len(pool)} unseen items for user {user_id!r},"
            f" {n_negatives} negatives requested"
        )
    if popularity is None:
        negatives = rng.sample(pool, n_negatives)
    else:
        negatives = _weighted_sample(pool, popularity, n_negatives, rng)
    candidates = [*negatives, target]
    rng.shuffle(candidates)
    return candidates


def _weighted_sample(
    pool: list[str], weights: Counter[str], k: int, rng: random.Random
) -> list[str]:
    """Draw `k` items of `pool` without replacement, with probability proportional to weight.

    Successive weighted draws, rejecting repeats; if repeats pile up (a few heavy
    items), the rest is drawn with Efraimidis-Spirakis keys `u ** (1 / w)`. Both
    are exact successive sampling, so the mix is too.
    """
    get = weights.get
    positive = [i for i in pool if get(i, 0) > 0]
    if len(positive) <= k:
        # Everything with weight goes in; the remainder is uniform over the rest.
        rest = [i for i in pool if get(i, 0) <= 0]
        return positive + rng.sample(rest, k - len(positive))
    cum = list(accumulate(weights[i] for i in positive))
    total = cum[-1]
    chosen: dict[str, None] = {}
    attempts = 0
    while len(chosen) < k and attempts < 10 * k + 100:
        attempts += 1
        pick = positive[min(bisect_right(cum, rng.random() * total), len(positive) - 1)]
        chosen.setdefault(pick)
    if len(chosen) < k:
        keyed = [(rng.random() ** (1.0 / weights[i]), i) for i in positive if i not in chosen]
        chosen.update(dict.fromkeys(i for _, i in heapq.nlargest(k - len(chosen), keyed)))
    return list(chosen)


def build_requests(
    dataset: Dataset,
    *,
    n_users: int,
    n_negatives: int = 19,
    seed: int = 0,
    history_len: int | None = None,
    cold_start: int | None = None,
    sampling: NegativeSampling = "uniform",
) -> list[EvalCase]:
    """Build leave-one-out test cases for `n_users` users sampled with `seed`.

    Users (with at least two interactions) are drawn with `random.Random(seed)`
    from the sorted user ids; if there are fewer than `n_users`, all are used. The
    target is each user's last item, the history is everything before it, cut to
    the last `history_len` items and, when `cold_start` is set, to the last
    `cold_start` items (the smaller limit wins). Candidates are sampled with an
    rng seeded by `(seed, user_id)`, so they do not depend on the history cut or
    on which other users were drawn. `sampling="popularity"` draws the negatives
    with probability proportional to their interaction counts (harder negatives
    than uniform ones, which are mostly unpopular items).

    Raises:
        ValueError: A count is not positive.
        DatasetError: Too few items to draw the negatives from.
    """
    if n_users < 1:
        raise ValueError(f"n_users must be >= 1, got {n_users}")
    for name, limit in (("history_len", history_len), ("cold_start", cold_start)):
        if limit is not None and limit < 1:
            raise ValueError(f"{name} must be >= 1, got {limit}")
    limits = [n for n in (history_len, cold_start) if n is not None]
    keep = min(limits) if limits else None

    eligible = sorted(u for u, seq in dataset.sequences.items() if len(seq) >= 2)
    users = random.Random(seed).sample(eligible, min(n_users, len(eligible)))
    if sampling not in NEGATIVE_SAMPLING:
        raise ValueError(
            f"sampling must be one of {', '.join(NEGATIVE_SAMPLING)}, got {sampling!r}"
        )
    popularity = item_popularity(dataset) if sampling == "popularity" else None
    cases: list[EvalCase] = []
    for user_id in users:
        split = split_leave_one_out(dataset.sequences[user_id])
        history_ids = split.test_history
        if keep is not None:
            history_ids = history_ids[-keep:]
        candidate_ids = sample_candidates(
            dataset,
            user_id,
            split.test_target,
            n_negatives,
            random.Random(f"{seed}:{user_id}"),
            popularity,
        )
        cases.append(
            EvalCase(
                user_id=user_id,
                history=[dataset.items[i] for i in history_ids],
                candidates=[dataset.items[i] for i in candidate_ids],
                target_id=split.test_target,
            )
        )
    return cases
