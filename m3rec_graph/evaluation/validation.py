"""The validation split of a run: each user's second-last item, with seeded negatives of its own.

Fusion weights are fitted here and only here, never on the test cases. For every
test case of a run, the validation case has

* target: the user's second-last item (`LeaveOneOut.valid_target`);
* history: everything before it (`LeaveOneOut.train_history`), so neither the
  validation nor the test target is visible;
* negatives: as many as the test case has, drawn by the same code
  (`datasets.sample_candidates`, uniform or popularity-weighted like the run) with
  an rng of its own, `random.Random(f"valid:{seed}:{user_id}")`, from items the user
  never interacted with *and* that are not among the user's test candidates.

The validation and test candidate sets of a user are therefore disjoint (the test
target is in the user's sequence, so never a validation negative; the validation
target likewise never a test negative); `validation_cases` checks it and raises
`SplitOverlapError` if not. A user whose validation history would be empty (a
two-item sequence) has no validation case.
"""

import random
from collections.abc import Sequence

from m3rec_graph.evaluation.datasets import (
    Dataset,
    EvalCase,
    NegativeSampling,
    item_popularity,
    sample_candidates,
    split_leave_one_out,
)
from m3rec_graph.evaluation.settings import EvaluationError


class SplitOverlapError(EvaluationError):
    """A validation case shares a candidate with its user's test case (would leak test items into a fit)."""


def validation_rng(seed: int, user_id: str) -> random.Random:
    """The rng of a user's validation negatives: its own seed string, independent of the test draw."""
    return random.Random(f"valid:{seed}:{user_id}")


def validation_cases(
    dataset: Dataset,
    test_cases: Sequence[EvalCase],
    *,
    seed: int,
    sampling: NegativeSampling = "uniform",
) -> list[EvalCase]:
    """Return one validation case per test case (same user order), each disjoint from its test case.

    Args:
        dataset: The dataset the test cases were built from.
        test_cases: The run's test cases (full history; `candidates.jsonl`).
        seed: The run's seed.
        sampling: The run's negative sampling, used for the validation negatives too.

    Raises:
        SplitOverlapError: A validation candidate is one of the same user's test candidates.
        DatasetError: Too few items to draw the negatives from.
    """
    popularity = item_popularity(dataset) if sampling == "popularity" else None
    cases: list[EvalCase] = []
    for test in test_cases:
        split = split_leave_one_out(dataset.sequences[test.user_id])
        if not split.train_history:
            continue
        test_ids = {item.item_id for item in test.candidates}
        candidate_ids = sample_candidates(
            dataset,
            test.user_id,
            split.valid_target,
            len(test.candidates) - 1,
            validation_rng(seed, test.user_id),
            popularity,
            exclude=test_ids,
        )
        shared = test_ids.intersection(candidate_ids)
        if shared:
            raise SplitOverlapError(
                f"user {test.user_id!r}: validation and test candidates share {sorted(shared)[:3]}"
            )
        cases.append(
            EvalCase(
                user_id=test.user_id,
                history=[dataset.items[i] for i in split.train_history],
                candidates=[dataset.items[i] for i in candidate_ids],
                target_id=split.valid_target,
            )
        )
    return cases
