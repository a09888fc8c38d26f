"""Train SASRec on a whole dataset and score it on the leave-one-out protocol (all users by default).

    python evals/sasrec.py --dataset ../shared/data/amazon/beauty --negatives 99 19 --seed 0 \
        --model-out runs/sasrec_beauty.pt

The model, training and scoring live in `m3rec_graph.evaluation.sasrec` (see its docstring);
`m3rec eval --methods sasrec` uses the same code on a run's candidate sets. This
script reproduces the all-users figures of docs/sasrec.md and compares them with
the published ones. The trained model is saved to `--model-out` (default
`runs/sasrec_<dataset>.pt`) with its config and a hash of the dataset files; a
re-run with the same training settings loads it instead of training again
(`--retrain` forces training).
"""

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch

from m3rec_graph.evaluation.datasets import build_requests, load_dataset
from m3rec_graph.evaluation.metrics import metric_names
from m3rec_graph.evaluation.sasrec import (
    PUBLISHED_99,
    SASRecConfig,
    SASRecRanker,
    dataset_sha256,
    evaluate,
    load_checkpoint,
    save_checkpoint,
    train_sasrec,
)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    defaults = SASRecConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=Path("../shared/data/amazon/beauty"))
    parser.add_argument(
        "--negatives",
        type=int,
        nargs="+",
        default=[99],
        help="test negatives per user; several values score the same model on each",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of build_requests (user sample and test candidates)",
    )
    parser.add_argument(
        "--users",
        type=int,
        default=None,
        help="evaluate a seeded sample of this many users (default: all)",
    )
    parser.add_argument("--train-seed", type=int, default=defaults.seed)
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--patience", type=int, default=defaults.patience)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--dropout", type=float, default=defaults.dropout)
    parser.add_argument("--hidden", type=int, default=defaults.hidden)
    parser.add_argument("--blocks", type=int, default=defaults.blocks)
    parser.add_argument("--heads", type=int, default=defaults.heads)
    parser.add_argument("--max-len", type=int, default=defaults.max_len)
    parser.add_argument(
        "--valid-users",
        type=int,
        default=None,
        help="validate on a seeded sample of users (default: all)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument(
        "--model-out",
        type=Path,
        default=None,
        help="checkpoint path (default runs/sasrec_<dataset>.pt); reused if it fits",
    )
    parser.add_argument("--retrain", action="store_true", help="train even if the checkpoint fits")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results JSON (default runs/sasrec_<dataset>_seed<seed>.json)",
    )
    parser.add_argument("--n-boot", type=int, default=2000)
    return parser.parse_args(argv)


def _err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    torch.set_num_threads(args.threads)
    config = SASRecConfig(
        max_len=args.max_len,
        hidden=args.hidden,
        blocks=args.blocks,
        heads=args.heads,
        dropout=args.dropout,
        lr=args.lr,
        batch_size=args.batch_size,
        epochs=args.epochs,
        patience=args.patience,
        valid_users=args.valid_users,
        seed=args.train_seed,
    )
    dataset = load_dataset(args.dataset)
    data_sha = dataset_sha256(args.dataset)
    model_path = args.model_out or Path("runs") / f"sasrec_{dataset.name}.pt"
    loaded = False
    if model_path.exists() and not args.retrain:
        model, vocab, stored, log, stored_sha = load_checkpoint(model_path)
        if stored != config or stored_sha != data_sha:
            what = "dataset" if stored_sha != data_sha else "training settings"
            diff = [
                f"{f.name}={getattr(stored, f.name)!r}"
                for f in fields(config)
                if getattr(stored, f.name) != getattr(config, f.name)
            ]
            _err(
                f"{model_path} was trained with other {what} ({', '.join(diff)});"
                " pass --retrain or another --model-out"
            )
            return 2
        loaded = True
        _err(
            f"loaded {model_path} (trained {len(log.epochs)} epochs in {log.seconds:.0f}s,"
            f" best epoch {log.best_epoch})"
        )
    else:
        _err(
            f"training SASRec on {dataset.name} ({len(dataset.sequences)} users,"
            f" {len(dataset.items)} items), {torch.get_num_threads()} thread(s)"
        )
        model, vocab, log = train_sasrec(dataset, config, log=_err)
        save_checkpoint(model_path, model, vocab, config, log, data_sha)
        _err(
            f"trained {len(log.epochs)} epochs in {log.seconds:.0f}s (cpu {log.cpu_seconds:.0f}s);"
            f" best epoch"
            f" {log.best_epoch} (valid {log.best_valid}); saved {model_path}"
        )

    ranker = SASRecRanker(model, vocab)
    n_users = args.users or len(dataset.sequences)
    published = PUBLISHED_99.get(dataset.name)
    evaluations = []
    for n_neg in args.negatives:
        started = time.perf_counter()
        cases = build_requests(dataset, n_users=n_users, n_negatives=n_neg, seed=args.seed)
        built = time.perf_counter() - started
        metrics, ranks = evaluate(ranker, cases, n_boot=args.n_boot, seed=args.seed)
        scored = time.perf_counter() - started - built
        evaluations.append(
            {
                "negatives": n_neg,
                "users": len(cases),
                "metrics": metrics,
                "build_seconds": built,
                "score_seconds": scored,
                "ranks": ranks,
            }
        )
        print(
            f"\nSASRec on {dataset.name}: {len(cases)} users, {n_neg} negatives, seed {args.seed}"
        )
        with_paper = published is not None and n_neg == 99
        print("| metric | mean | 95% CI |" + (" S3-Rec paper |" if with_paper else ""))
        print("|---|---|---|" + ("---|" if with_paper else ""))
        for name in metric_names():
            m = metrics[name]
            ref = published.get(name) if published is not None and with_paper else None
            extra = (f" {ref:.4f} |" if ref is not None else " - |") if with_paper else ""
            print(f"| {name} | {m['mean']:.4f} | [{m['low']:.4f}, {m['high']:.4f}] |{extra}")
        print(f"(candidates built in {built:.1f}s, scored in {scored:.1f}s)")

    out = args.out or Path("runs") / f"sasrec_{dataset.name}_seed{args.seed}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {
        "method": "sasrec",
        "dataset": dataset.name,
        "dataset_path": str(args.dataset.resolve()),
        "dataset_sha256": data_sha,
        "seed": args.seed,
        "config": asdict(config),
        "checkpoint": str(model_path),
        "loaded_checkpoint": loaded,
        "training": {
            "epochs_run": len(log.epochs),
            "best_epoch": log.best_epoch,
            "best_valid": log.best_valid,
            "seconds": log.seconds,
            "cpu_seconds": log.cpu_seconds,
            "threads": log.threads,
            "epochs": log.epochs,
        },
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch": str(torch.__version__),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "evaluations": evaluations,
    }
    out.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
