"""SASRec baseline: learns a trivial pattern, causal masking, no target peeking, checkpoints."""

import json
import random
from dataclasses import replace
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from evals import sasrec as sasrec_cli  # noqa: E402
from m3rec_graph.contracts.schemas import Item  # noqa: E402
from m3rec_graph.evaluation import sasrec  # noqa: E402
from m3rec_graph.evaluation.baselines import RandomBaseline  # noqa: E402
from m3rec_graph.evaluation.datasets import (  # noqa: E402
    Dataset,
    EvalCase,
    build_requests,
    load_dataset,
    split_leave_one_out,
)
from m3rec_graph.evaluation.metrics import rank_of  # noqa: E402

BEAUTY = Path(__file__).parents[1] / "fixtures" / "beauty_small"
FAST = sasrec.SASRecConfig(
    max_len=20,
    hidden=32,
    dropout=0.1,
    lr=5e-3,
    batch_size=64,
    epochs=40,
    patience=40,
    valid_negatives=19,
)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def successor_dataset(n_items: int = 40, n_users: int = 200, length: int = 8) -> Dataset:
    """Every user walks i, i+1, i+2, ... (mod n_items) from a random start."""
    rng = random.Random(0)
    ids = [f"i{k:03d}" for k in range(n_items)]
    sequences = {}
    for u in range(n_users):
        start = rng.randrange(n_items)
        sequences[f"u{u:03d}"] = [ids[(start + j) % n_items] for j in range(length)]
    return Dataset(
        name="successor", items={i: Item(item_id=i, title=i) for i in ids}, sequences=sequences
    )


def test_learns_the_successor_pattern() -> None:
    dataset = successor_dataset()
    model, vocab, log = sasrec.train_sasrec(dataset, replace(FAST, epochs=10, patience=10))
    assert log.epochs[-1]["loss"] < log.epochs[0]["loss"]
    assert log.best_valid["HR@10"] > 0.95
    cases = build_requests(dataset, n_users=200, n_negatives=19, seed=0)
    ranker = sasrec.SASRecRanker(model, vocab)
    ranks = [rank_of(c.target_id, r) for c, r in zip(cases, ranker.rank_many(cases), strict=True)]
    hr1 = sum(r == 1 for r in ranks) / len(ranks)
    assert hr1 > 0.95


def test_training_uses_only_the_training_split() -> None:
    dataset = successor_dataset(n_users=5)
    vocab = sasrec.Vocab(dataset.sorted_item_ids)
    data = sasrec.training_data(dataset, vocab, max_len=10)
    for row, user_id in enumerate(sorted(dataset.sequences)):
        seq = vocab.encode(dataset.sequences[user_id])
        inputs = [i for i in data.inputs[row].tolist() if i]
        targets = [i for i in data.targets[row].tolist() if i]
        assert inputs == seq[:-3] and targets == seq[1:-2]
        assert int(data.lengths[row]) == len(seq) - 3


def test_negatives_avoid_each_rows_training_items() -> None:
    dataset = successor_dataset(n_items=12, n_users=30, length=9)
    vocab = sasrec.Vocab(dataset.sorted_item_ids)
    data = sasrec.training_data(dataset, vocab, max_len=10)
    generator = torch.Generator().manual_seed(0)
    rows = torch.arange(len(data.inputs))
    neg = sasrec.sample_negatives(rows, torch.Size([len(rows), 50]), 12, data.seen_keys, generator)
    for row, user_id in enumerate(sorted(dataset.sequences)):
        train = set(vocab.encode(dataset.sequences[user_id][:-2]))
        assert not train & set(neg[row].tolist())
        assert set(neg[row].tolist()) <= set(range(1, 13))


def _model(n_items: int = 30, max_len: int = 12) -> "sasrec.SASRec":
    torch.manual_seed(0)
    model = sasrec.SASRec(n_items, replace(FAST, max_len=max_len))
    return model.eval()


def test_causal_masking() -> None:
    model = _model()
    seqs = torch.randint(1, 31, (6, 12))
    seqs[0, :4] = 0  # left padding
    seqs[1, :11] = 0
    with torch.no_grad():
        base = model.encode(seqs)
        for t in range(12):
            changed = seqs.clone()
            changed[:, t + 1 :] = torch.randint(1, 31, changed[:, t + 1 :].shape)
            out = model.encode(changed)
            assert torch.allclose(out[:, : t + 1], base[:, : t + 1], atol=1e-5)
        # ... while the last output does depend on earlier items.
        changed = seqs.clone()
        changed[2, 5] = 1 + changed[2, 5] % 30
        assert not torch.allclose(model.encode(changed)[2, -1], base[2, -1])


def test_padding_and_trimming_do_not_change_outputs() -> None:
    model = _model()
    seqs = torch.randint(1, 31, (4, 12))
    seqs[:, :7] = 0  # every row has 5 items
    with torch.no_grad():
        full = model.encode(seqs)
        trimmed = model.encode(sasrec.trim(seqs))
        assert trimmed.shape[1] == 5
        assert torch.allclose(full[:, -5:], trimmed, atol=1e-5)
        assert not torch.isnan(full).any()
        empty = model.score(torch.zeros(2, 12, dtype=torch.long), torch.tensor([[1, 2], [3, 4]]))
        assert not torch.isnan(empty).any()


@pytest.fixture(scope="module")
def beauty() -> Dataset:
    return load_dataset(BEAUTY)


@pytest.fixture(scope="module")
def trained(beauty: Dataset) -> tuple["sasrec.SASRec", "sasrec.Vocab", "sasrec.TrainLog"]:
    torch.set_num_threads(1)
    return sasrec.train_sasrec(beauty, replace(FAST, max_len=50, epochs=15, patience=15))


def test_fixture_training_lowers_loss_and_beats_random(
    beauty: Dataset, trained: tuple["sasrec.SASRec", "sasrec.Vocab", "sasrec.TrainLog"]
) -> None:
    model, vocab, log = trained
    losses = [e["loss"] for e in log.epochs]
    assert losses[-1] < 0.8 * losses[0]
    assert 1 <= log.best_epoch <= len(log.epochs)
    cases = build_requests(beauty, n_users=300, n_negatives=19, seed=0)
    ranker = sasrec.SASRecRanker(model, vocab)
    baseline = RandomBaseline(0)
    ours = [rank_of(c.target_id, r) for c, r in zip(cases, ranker.rank_many(cases), strict=True)]
    chance = [rank_of(c.target_id, baseline.rank(c)) for c in cases]
    hr10 = sum(r <= 10 for r in ours) / len(ours)
    assert hr10 > sum(r <= 10 for r in chance) / len(chance) + 0.1
    assert sum(1 / r for r in ours) > sum(1 / r for r in chance)


def test_scoring_reads_only_history_and_candidates(
    beauty: Dataset, trained: tuple["sasrec.SASRec", "sasrec.Vocab", "sasrec.TrainLog"]
) -> None:
    model, vocab, _ = trained
    ranker = sasrec.SASRecRanker(model, vocab)
    cases = build_requests(beauty, n_users=40, n_negatives=19, seed=3)
    scores = ranker.scores(cases)
    rng = random.Random(0)
    for case, case_scores in zip(cases, scores, strict=True):
        perm = list(range(len(case.candidates)))
        rng.shuffle(perm)
        decoy = next(i.item_id for i in case.candidates if i.item_id != case.target_id)
        shuffled = EvalCase(
            user_id="someone else",
            history=case.history,
            candidates=[case.candidates[j] for j in perm],
            target_id=decoy,  # a wrong label changes nothing
        )
        permuted = ranker.scores([shuffled])[0]
        assert permuted == pytest.approx([case_scores[j] for j in perm], abs=1e-5)
        ranking = ranker.rank(shuffled)
        assert sorted(ranking) == sorted(i.item_id for i in case.candidates)
        assert ranking == ranker.rank(case)
    # Batching (cases regrouped by history length) gives the same scores.
    one_by_one = [ranker.scores([c])[0] for c in cases]
    for batched, single in zip(ranker.scores(cases, batch_size=7), one_by_one, strict=True):
        assert batched == pytest.approx(single, abs=1e-5)
    # The score is a function of the history: the test history is the split's.
    case = cases[0]
    split = split_leave_one_out(beauty.sequences[case.user_id])
    assert [i.item_id for i in case.history] == split.test_history


def test_cli_trains_once_then_reuses_the_checkpoint(tmp_path: Path) -> None:
    model_path, out = tmp_path / "m.pt", tmp_path / "r.json"
    args = ["--dataset", str(BEAUTY), "--negatives", "19", "99", "--epochs", "2",
            "--hidden", "16", "--users", "50", "--n-boot", "50",
            "--model-out", str(model_path), "--out", str(out)]  # fmt: skip
    assert sasrec_cli.main(args) == 0
    first = json.loads(out.read_text())
    assert model_path.exists() and not first["loaded_checkpoint"]
    assert first["training"]["epochs_run"] == 2
    assert [e["negatives"] for e in first["evaluations"]] == [19, 99]
    assert all(e["users"] == 50 for e in first["evaluations"])
    metrics = first["evaluations"][0]["metrics"]
    assert set(metrics) == {"HR@1", "HR@5", "HR@10", "HR@20", "NDCG@5", "NDCG@10", "NDCG@20", "MRR"}
    assert sasrec_cli.main(args) == 0
    second = json.loads(out.read_text())
    assert second["loaded_checkpoint"]
    assert second["evaluations"][0]["ranks"] == first["evaluations"][0]["ranks"]
    assert sasrec_cli.main([*args[:-4], "--hidden", "8", *args[-4:]]) == 2  # other settings
