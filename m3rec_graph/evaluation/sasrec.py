"""SASRec baseline (Kang & McAuley, ICDM 2018), trained and scored on the leave-one-out protocol.

The model is the original's: item embeddings (scaled by sqrt(d)) plus learned
absolute positional embeddings over the last `max_len` items, `blocks` pre-norm
causal self-attention blocks (Q = LayerNorm(x); x = Q + Attn(Q, x, x); x =
x + FFN(LayerNorm(x))), a final LayerNorm, and the item embedding table shared
as the output layer. Sequences are left-padded; padded keys are masked (each
padded row attends only to itself, so no row is fully masked), and padded
outputs are zeroed after every block.

Training follows the original: for each user, inputs `items[:-3]` predict the
next items `items[1:-2]` (the last `max_len` positions), binary cross-entropy
of each positive against one negative per position, drawn uniformly from the
items outside the user's *training* items and redrawn every epoch; Adam
(lr 1e-3, betas 0.9/0.98), batch 128, dropout 0.5 (the paper's value for the
sparse Amazon data). After every epoch the model is scored on the validation
targets (second-last item; history = `items[:-2]`; target + `valid_negatives`
uniform negatives the user never interacted with, a fixed seeded set) and
training stops after `patience` epochs without a better validation NDCG@10;
the best epoch's weights are kept. The test item is never used in training,
negative sampling or model selection.

Test cases come from `m3rec_graph.evaluation.datasets.build_requests(dataset,
n_users=..., n_negatives=N, seed=...)`, the same candidate sets every other
method of the harness is scored on; history = everything before the last item
(the last `max_len` of it). `SASRecRanker` satisfies `baselines.Ranker`: it
reads only a case's history and candidates, never `target_id`.

The trained model is saved to `--model-out` (default `runs/sasrec_<dataset>.pt`)
with its config and a hash of the dataset files; a re-run with the same training
settings loads it instead of training again (`--retrain` forces training).
"""

import copy
import math
import random
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from m3rec_graph._internal.atomic import atomic_path
from m3rec_graph.evaluation.datasets import Dataset, EvalCase, dataset_fingerprint
from m3rec_graph.evaluation.metrics import rank_of, summarise

with warnings.catch_warnings():
    # torch works without numpy (not installed here) but warns about it on import.
    warnings.filterwarnings("ignore", message=".*Failed to initialize NumPy.*")
    import torch
    from torch import Tensor, nn

CHECKPOINT_FORMAT = 1
PUBLISHED_99 = {
    # S3-Rec (CIKM 2020) reproduce/README.md, "SASRec in paper", 99 uniform negatives.
    "beauty": {"HR@1": 0.1870, "HR@5": 0.3741, "NDCG@5": 0.2848, "HR@10": 0.4696,
               "NDCG@10": 0.3156, "MRR": 0.2852},
    "sports": {"HR@1": 0.1455, "HR@5": 0.3466, "NDCG@5": 0.2497, "HR@10": 0.4622,
               "NDCG@10": 0.2869, "MRR": 0.2520},
}  # fmt: skip


@dataclass(frozen=True)
class SASRecConfig:
    """Model and training hyper-parameters (everything that determines the trained weights)."""

    max_len: int = 50
    hidden: int = 64
    blocks: int = 2
    heads: int = 1
    dropout: float = 0.5
    lr: float = 1e-3
    batch_size: int = 128
    epochs: int = 200
    """Upper bound; early stopping usually ends training well before."""
    patience: int = 10
    """Stop after this many epochs without a better validation NDCG@10."""
    valid_negatives: int = 99
    valid_users: int | None = None
    """Score validation on a seeded sample of this many users (None: every user)."""
    seed: int = 0
    """Seeds initialisation, dropout, batch order, training negatives and validation candidates."""


@dataclass
class TrainLog:
    """What training did: per-epoch loss and validation metrics, the chosen epoch, the time."""

    epochs: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_valid: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    """Wall-clock time of training (inflated when other processes share the CPU)."""
    cpu_seconds: float = 0.0
    """CPU time of this process during training (what it would take on an idle core)."""
    threads: int = 1


# --------------------------------------------------------------------------- the model


class PointWiseFeedForward(nn.Module):
    """Two position-wise linear layers with ReLU, dropout and a residual connection."""

    def __init__(self, hidden: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Apply the two-layer feed-forward net with a residual connection."""
        out: Tensor = self.net(x)
        return x + out


class SASRec(nn.Module):
    """Self-attentive sequential recommender; item index 0 is padding, items are 1..n_items."""

    def __init__(self, n_items: int, config: SASRecConfig) -> None:
        super().__init__()
        self.n_items, self.max_len, self.hidden = n_items, config.max_len, config.hidden
        self.item_emb = nn.Embedding(n_items + 1, config.hidden, padding_idx=0)
        self.pos_emb = nn.Embedding(config.max_len, config.hidden)
        self.emb_dropout = nn.Dropout(config.dropout)
        self.attn_norms = nn.ModuleList(
            nn.LayerNorm(config.hidden, eps=1e-8) for _ in range(config.blocks)
        )
        self.attns = nn.ModuleList(
            nn.MultiheadAttention(
                config.hidden, config.heads, dropout=config.dropout, batch_first=True
            )
            for _ in range(config.blocks)
        )
        self.ffn_norms = nn.ModuleList(
            nn.LayerNorm(config.hidden, eps=1e-8) for _ in range(config.blocks)
        )
        self.ffns = nn.ModuleList(
            PointWiseFeedForward(config.hidden, config.dropout) for _ in range(config.blocks)
        )
        self.last_norm = nn.LayerNorm(config.hidden, eps=1e-8)
        self.heads = config.heads
        for name, param in self.named_parameters():  # the original's Xavier init
            if param.dim() > 1:
                nn.init.xavier_normal_(param)
            elif "bias" in name:
                nn.init.zeros_(param)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def encode(self, seqs: Tensor) -> Tensor:
        """Return the hidden state at every position of left-padded `seqs` [B, L], L <= max_len.

        Positions are absolute within the `max_len` window (the newest item is
        always position `max_len - 1`), so a shorter unpadded input gives the same
        outputs as its left-padded version.
        """
        batch, length = seqs.shape
        if length > self.max_len:
            raise ValueError(f"sequence length {length} exceeds max_len {self.max_len}")
        positions = torch.arange(self.max_len - length, self.max_len, device=seqs.device)
        x = self.item_emb(seqs) * math.sqrt(self.hidden) + self.pos_emb(positions)
        x = self.emb_dropout(x)
        pad = seqs == 0
        keep = (~pad).unsqueeze(-1).to(x.dtype)
        x = x * keep
        causal = torch.ones(length, length, dtype=torch.bool, device=seqs.device).triu(1)
        eye = torch.eye(length, dtype=torch.bool, device=seqs.device)
        # True = may not attend: later positions, and padded keys except a padded row's own.
        mask = causal | (pad.unsqueeze(1) & ~eye)
        mask = mask.repeat_interleave(self.heads, dim=0)
        for attn_norm, attn, ffn_norm, ffn in zip(
            self.attn_norms, self.attns, self.ffn_norms, self.ffns, strict=True
        ):
            q = attn_norm(x)
            attended: Tensor = attn(q, x, x, attn_mask=mask, need_weights=False)[0]
            x = q + attended
            x = ffn(ffn_norm(x))
            x = x * keep
        out: Tensor = self.last_norm(x)
        return out

    def forward(self, seqs: Tensor, pos: Tensor, neg: Tensor) -> tuple[Tensor, Tensor]:
        """Return the logits of the positive and the negative next item at every position."""
        h = self.encode(seqs)
        pos_logits = (h * self.item_emb(pos)).sum(-1)
        neg_logits = (h * self.item_emb(neg)).sum(-1)
        return pos_logits, neg_logits

    def score(self, seqs: Tensor, candidates: Tensor) -> Tensor:
        """Score `candidates` [B, C] after the histories `seqs` [B, L]: the last position's state."""
        h = self.encode(seqs)[:, -1, :]
        return torch.einsum("bh,bch->bc", h, self.item_emb(candidates))


# --------------------------------------------------------------------------- data


class Vocab:
    """Item id <-> index 1..n (0 is padding), in sorted id order."""

    def __init__(self, item_ids: Sequence[str]) -> None:
        self.item_ids = list(item_ids)
        self.index = {item_id: i for i, item_id in enumerate(self.item_ids, start=1)}
        if len(self.index) != len(self.item_ids):
            raise ValueError("duplicate item ids")

    def __len__(self) -> int:
        return len(self.item_ids)

    def encode(self, item_ids: Sequence[str]) -> list[int]:
        """Map ids to indices (KeyError for an id the model was not trained with)."""
        return [self.index[i] for i in item_ids]


def left_pad(seq: Sequence[int], length: int) -> list[int]:
    """Keep the last `length` entries of `seq`, left-padded with 0."""
    tail = list(seq[-length:]) if length else []
    return [0] * (length - len(tail)) + tail


def right_pad(seq: Sequence[int], length: int) -> list[int]:
    """Pad `seq` on the right with 0 to `length`."""
    return [*seq, *[0] * (length - len(seq))]


@dataclass(frozen=True)
class TrainingData:
    """Padded next-item training examples, one row per user with at least two training items."""

    inputs: Tensor
    """[U, L]: `items[:-3]`, the last L, left-padded."""
    targets: Tensor
    """[U, L]: `items[1:-2]`, aligned with `inputs`."""
    seen_keys: Tensor
    """Sorted `row * (n_items + 1) + item` over each row's training items (negatives avoid them)."""
    lengths: Tensor
    """[U]: the number of non-padding positions of each row."""


def training_data(dataset: Dataset, vocab: Vocab, max_len: int) -> TrainingData:
    """Build the training examples from each user's `items[:-2]` (the training split)."""
    inputs: list[list[int]] = []
    targets: list[list[int]] = []
    keys: set[int] = set()
    stride = len(vocab) + 1
    for user_id in sorted(dataset.sequences):
        train = vocab.encode(dataset.sequences[user_id][:-2])
        if len(train) < 2:
            continue
        row = len(inputs)
        inputs.append(left_pad(train[:-1], max_len))
        targets.append(left_pad(train[1:], max_len))
        keys.update(row * stride + item for item in train)
    if not inputs:
        raise ValueError(f"dataset {dataset.name!r} has no user with 4 or more interactions")
    return TrainingData(
        inputs=torch.tensor(inputs, dtype=torch.long),
        targets=torch.tensor(targets, dtype=torch.long),
        seen_keys=torch.tensor(sorted(keys), dtype=torch.long),
        lengths=torch.tensor([sum(1 for i in row if i) for row in inputs], dtype=torch.long),
    )


def trim(seqs: Tensor) -> Tensor:
    """Drop the leading columns that are padding in every row of left-padded `seqs`.

    Exact: padded keys are masked and positions count from the right, so the
    outputs at the kept positions do not change. It saves most of the compute,
    since the typical history is far shorter than `max_len`.
    """
    longest = int((seqs != 0).sum(1).max()) if len(seqs) else 0
    return seqs[:, seqs.shape[1] - max(longest, 1) :]


def length_batches(lengths: Tensor, batch_size: int, generator: torch.Generator) -> list[Tensor]:
    """Split the rows into batches of similar length (so `trim` cuts more), in random order.

    Every row appears once per epoch; rows of equal length are shuffled among
    themselves and the batch order is random.
    """
    order = torch.randperm(len(lengths), generator=generator)
    order = order[torch.sort(lengths[order], stable=True).indices]
    batches = list(torch.split(order, batch_size))
    shuffle = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffle]


def sample_negatives(
    rows: Tensor, shape: torch.Size, n_items: int, seen_keys: Tensor, generator: torch.Generator
) -> Tensor:
    """Draw items 1..n_items uniformly for each row of `rows`, redrawing a row's training items."""
    stride = n_items + 1
    neg = torch.randint(1, n_items + 1, shape, generator=generator)
    base = rows.unsqueeze(-1) * stride
    for _ in range(100):
        keys = base + neg
        found = seen_keys[torch.searchsorted(seen_keys, keys).clamp(max=len(seen_keys) - 1)]
        clash = found == keys
        n_clash = int(clash.sum())
        if not n_clash:
            break
        neg[clash] = torch.randint(1, n_items + 1, (n_clash,), generator=generator)
    return neg


@dataclass(frozen=True)
class ValidationData:
    """Validation cases as tensors; the target is column 0 of `candidates`."""

    histories: Tensor
    candidates: Tensor


def validation_data(dataset: Dataset, vocab: Vocab, config: SASRecConfig) -> ValidationData:
    """Target = second-last item, history = `items[:-2]`, plus uniform never-interacted negatives.

    Users with an empty training history are skipped. The negatives of each user
    come from `random.Random(f"sasrec-valid:{seed}:{user_id}")`.
    """
    users = sorted(u for u, seq in dataset.sequences.items() if len(seq) >= 3)
    if config.valid_users is not None and config.valid_users < len(users):
        users = sorted(
            random.Random(f"sasrec-valid-users:{config.seed}").sample(users, config.valid_users)
        )
    n = len(vocab)
    histories, candidates = [], []
    for user_id in users:
        seq = vocab.encode(dataset.sequences[user_id])
        seen = set(seq)
        if n - len(seen) < config.valid_negatives:
            raise ValueError(f"too few unseen items for user {user_id!r}")
        rng = random.Random(f"sasrec-valid:{config.seed}:{user_id}")
        negatives: dict[int, None] = {}
        while len(negatives) < config.valid_negatives:
            item = rng.randint(1, n)
            if item not in seen:
                negatives.setdefault(item)
        histories.append(left_pad(seq[:-2], config.max_len))
        candidates.append([seq[-2], *negatives])
    return ValidationData(
        histories=torch.tensor(histories, dtype=torch.long),
        candidates=torch.tensor(candidates, dtype=torch.long),
    )


# --------------------------------------------------------------------------- training


@torch.no_grad()
def target_ranks(
    model: SASRec, histories: Tensor, candidates: Tensor, batch_size: int = 1024
) -> list[int]:
    """Rank of candidate column 0 among each row's candidates (1 = best; ties go to the target)."""
    model.eval()
    order = torch.sort((histories != 0).sum(1), stable=True).indices
    ranks = torch.zeros(len(histories), dtype=torch.long)
    for rows in torch.split(order, batch_size):
        scores = model.score(trim(histories[rows]), candidates[rows])
        ranks[rows] = 1 + (scores[:, 1:] > scores[:, :1]).sum(1)
    result: list[int] = ranks.tolist()
    return result


def quick_metrics(ranks: Sequence[int]) -> dict[str, float]:
    """HR@10, NDCG@10 and MRR means (no intervals), for model selection."""
    n = len(ranks)
    return {
        "HR@10": sum(r <= 10 for r in ranks) / n,
        "NDCG@10": sum(1 / math.log2(r + 1) for r in ranks if r <= 10) / n,
        "MRR": sum(1 / r for r in ranks) / n,
    }


def train_sasrec(
    dataset: Dataset,
    config: SASRecConfig,
    *,
    log: Callable[[str], None] | None = None,
) -> tuple[SASRec, Vocab, TrainLog]:
    """Train on the training split with validation early stopping; return the best epoch's model."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    vocab = Vocab(dataset.sorted_item_ids)
    data = training_data(dataset, vocab, config.max_len)
    valid = validation_data(dataset, vocab, config)
    model = SASRec(len(vocab), config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(0.9, 0.98))
    bce = nn.BCEWithLogitsLoss(reduction="sum")
    mean_positions = float(data.lengths.float().mean())
    result = TrainLog(threads=torch.get_num_threads())
    best_score, best_state, stale = -1.0, copy.deepcopy(model.state_dict()), 0
    started, cpu_started = time.perf_counter(), time.process_time()
    for epoch in range(1, config.epochs + 1):
        epoch_start, epoch_cpu = time.perf_counter(), time.process_time()
        model.train()
        total, batches = 0.0, 0
        for rows in length_batches(data.lengths, config.batch_size, generator):
            seqs, pos = trim(data.inputs[rows]), trim(data.targets[rows])
            neg = sample_negatives(rows, pos.shape, len(vocab), data.seen_keys, generator)
            pos_logits, neg_logits = model(seqs, pos, neg)
            live = pos != 0
            # Summed over positions and divided by the *expected* number of positions
            # in a batch: every position weighs the same, as in the original's random
            # batches, although these batches group sequences by length.
            loss = (
                bce(pos_logits[live], torch.ones_like(pos_logits[live]))
                + bce(neg_logits[live], torch.zeros_like(neg_logits[live]))
            ) / (len(rows) * mean_positions)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
            batches += 1
        metrics = quick_metrics(target_ranks(model, valid.histories, valid.candidates))
        row = {
            "epoch": float(epoch),
            "loss": total / batches,
            **metrics,
            "seconds": time.perf_counter() - epoch_start,
            "cpu_seconds": time.process_time() - epoch_cpu,
        }
        result.epochs.append(row)
        improved = metrics["NDCG@10"] > best_score
        if improved:
            best_score, stale = metrics["NDCG@10"], 0
            best_state = copy.deepcopy(model.state_dict())
            result.best_epoch, result.best_valid = epoch, metrics
        else:
            stale += 1
        if log is not None:
            log(
                f"epoch {epoch:3d} loss {row['loss']:.4f} valid HR@10 {metrics['HR@10']:.4f}"
                f" NDCG@10 {metrics['NDCG@10']:.4f} ({row['seconds']:.1f}s, cpu {row['cpu_seconds']:.1f}s)"
                f"{' *' if improved else ''}"
            )
        if stale >= config.patience:
            break
    result.seconds = time.perf_counter() - started
    result.cpu_seconds = time.process_time() - cpu_started
    model.load_state_dict(best_state)
    model.eval()
    return model, vocab, result


# --------------------------------------------------------------------------- scoring


class SASRecRanker:
    """Rank an `EvalCase`'s candidates by a trained SASRec (reads history and candidates only)."""

    def __init__(self, model: SASRec, vocab: Vocab) -> None:
        self.model, self.vocab = model, vocab

    @torch.no_grad()
    def scores(self, cases: Sequence[EvalCase], batch_size: int = 1024) -> list[list[float]]:
        """Return each case's candidate scores, in the order the candidates are shown."""
        self.model.eval()
        out: list[list[float]] = [[] for _ in cases]
        # Batches of similar history length, so `trim` saves the padding.
        order = sorted(
            range(len(cases)), key=lambda j: min(len(cases[j].history), self.model.max_len)
        )
        for start in range(0, len(cases), batch_size):
            index = order[start : start + batch_size]
            batch = [cases[j] for j in index]
            width = max(len(c.candidates) for c in batch)
            histories = [
                left_pad(self.vocab.encode([i.item_id for i in c.history]), self.model.max_len)
                for c in batch
            ]
            candidates = [
                right_pad(self.vocab.encode([i.item_id for i in c.candidates]), width)
                for c in batch
            ]
            scores = self.model.score(
                trim(torch.tensor(histories, dtype=torch.long)),
                torch.tensor(candidates, dtype=torch.long),
            ).tolist()
            for j, s, c in zip(index, scores, batch, strict=True):
                out[j] = s[: len(c.candidates)]
        return out

    def rank_many(self, cases: Sequence[EvalCase]) -> list[list[str]]:
        """Return each case's candidate ids, best first (ties keep the shown order)."""
        rankings = []
        for case, scores in zip(cases, self.scores(cases), strict=True):
            order = sorted(range(len(scores)), key=lambda j: -scores[j])
            rankings.append([case.candidates[j].item_id for j in order])
        return rankings

    def rank(self, case: EvalCase) -> list[str]:
        """Return `case`'s candidate ids, best first (the `baselines.Ranker` protocol)."""
        return self.rank_many([case])[0]


# --------------------------------------------------------------------------- checkpoints


def dataset_sha256(path: Path) -> str:
    """Hash the dataset's two files, so a checkpoint is not reused on changed data."""
    return dataset_fingerprint(path)


def save_checkpoint(
    path: Path, model: SASRec, vocab: Vocab, config: SASRecConfig, log: TrainLog, data_sha: str
) -> None:
    """Write weights, config, item ids and the training log to `path` (atomically)."""
    blob = {
        "format": CHECKPOINT_FORMAT,
        "config": asdict(config),
        "item_ids": vocab.item_ids,
        "dataset_sha256": data_sha,
        "train_log": asdict(log),
        "torch": str(torch.__version__),
        "state_dict": model.state_dict(),
    }
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)


def load_checkpoint(path: Path) -> tuple[SASRec, Vocab, SASRecConfig, TrainLog, str]:
    """Read a checkpoint written by `save_checkpoint`."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a SASRec checkpoint of format {CHECKPOINT_FORMAT}")
    config = SASRecConfig(**blob["config"])
    vocab = Vocab(blob["item_ids"])
    model = SASRec(len(vocab), config)
    model.load_state_dict(blob["state_dict"])
    model.eval()
    return model, vocab, config, TrainLog(**blob["train_log"]), str(blob["dataset_sha256"])


def evaluate(
    ranker: SASRecRanker, cases: Sequence[EvalCase], *, n_boot: int, seed: int
) -> tuple[dict[str, dict[str, float]], dict[str, int]]:
    """Return metrics (mean and 95% bootstrap CI) and each user's target rank."""
    rankings = ranker.rank_many(cases)
    ranks = {c.user_id: rank_of(c.target_id, r) for c, r in zip(cases, rankings, strict=True)}
    summary = summarise(list(ranks.values()), n_boot=n_boot, seed=seed)
    metrics = {name: {"mean": s.mean, "low": s.low, "high": s.high} for name, s in summary.items()}
    return metrics, ranks
