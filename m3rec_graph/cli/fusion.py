"""`m3rec fit-fusion`: fit fusion weights on a dataset's validation split and write the config file.

    m3rec fit-fusion --dataset ../shared/data/amazon/beauty --prior sasrec \
        --signals text,prior --out beauty-fusion.json

The users and test candidates are drawn exactly as `m3rec eval` draws them with the
same `--users --negatives --seed --sampling`, and the fit uses only their validation
cases (second-last item, own negatives, disjoint from the test candidates), so a
config fit here and one fit by `m3rec eval` on the same settings are the same file.

The graph's own signals (`mar`, `overlap`) need an LLM run on the validation cases,
which `m3rec eval --methods m3rec[:PRESET]:fused --fit-users N` does (resumably) and
records in its run directory. `--from-runs` pools those recorded signals of several
runs, e.g. one per dataset, into one fit, without another LLM call:

    m3rec fit-fusion --from-runs runs/local-fused-beauty runs/local-fused-sports \
        --method m3rec:local:fused --out local.json
"""

import argparse
import sys
from pathlib import Path

from m3rec_graph.cli.eval import resolve_dataset
from m3rec_graph.cli.parsing import SubParsers, add_command
from m3rec_graph.evaluation import EvalSettings, EvaluationError
from m3rec_graph.evaluation.datasets import NEGATIVE_SAMPLING, build_requests, load_dataset
from m3rec_graph.evaluation.fusion_method import describe_weights, fit_on_validation, print_fit
from m3rec_graph.evaluation.graph_fit import describe_fit
from m3rec_graph.evaluation.pooled_fit import fit_pooled_runs
from m3rec_graph.evaluation.priors import prior_scorer
from m3rec_graph.evaluation.settings import PRIORS, Prior
from m3rec_graph.fusion.config import SIGNALS, Signal
from m3rec_graph.fusion.fit import DEFAULT_FIT, FIT_METHODS
from m3rec_graph.text.similarity import TfidfSimilarity

GRAPH_SIGNALS = ("mar", "overlap")
"""Signals only the graph computes (they need an LLM run on the validation cases)."""


class FusionSignalsError(EvaluationError):
    """`--signals` names an unknown signal, or one that does not fit `--prior` (exit code 2)."""


def parse_signals(text: str, prior: Prior) -> list[Signal]:
    """Parse `--signals` (comma-separated) against `--prior`.

    Raises:
        FusionSignalsError: An empty list, an unknown signal, a graph-only one (`mar`,
            `overlap`: `m3rec eval` fits those), `prior` without `--prior`, or `--prior`
            without `prior`.
    """
    names = list(dict.fromkeys(p.strip().lower() for p in text.split(",") if p.strip()))
    if not names:
        raise FusionSignalsError("--signals is empty; e.g. --signals text,prior")
    unknown = [n for n in names if n not in SIGNALS]
    if unknown:
        raise FusionSignalsError(f"unknown signal {unknown[0]!r}; choose from {', '.join(SIGNALS)}")
    graph_only = [n for n in names if n in GRAPH_SIGNALS]
    if graph_only:
        raise FusionSignalsError(
            f"fit-fusion fits text and prior only; the {', '.join(graph_only)} signal needs an LLM"
            " run of the graph on the validation cases: `m3rec eval --methods m3rec[:PRESET]:fused"
            "[+PRIOR]` without --fusion fits all four there (resumable) and writes the config"
        )
    if "prior" in names and prior == "none":
        raise FusionSignalsError(
            "--signals has prior but --prior is none; pass --prior sasrec or popularity"
        )
    if "prior" not in names and prior != "none":
        raise FusionSignalsError(f"--prior {prior} is given but --signals has no prior")
    return [n for n in SIGNALS if n in names]


def add_fit_fusion_parser(sub: SubParsers) -> None:
    """Register `m3rec fit-fusion` on the `m3rec` sub-command parser."""
    fit = add_command(
        sub,
        "fit-fusion",
        cmd_fit_fusion,
        help="fit fusion weights on a dataset's validation split; write a fusion config",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = fit.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--dataset", help="dataset directory, or a name under ../shared/data/amazon"
    )
    source.add_argument(
        "--from-runs",
        nargs="+",
        type=Path,
        metavar="RUN_DIR",
        help="pool the validation signals `m3rec eval` recorded for --method in these run directories",
    )
    fit.add_argument("--method", help="with --from-runs: the fused method, e.g. m3rec:local:fused")
    fit.add_argument(
        "--prior", choices=PRIORS, help="with --dataset (required): the candidate prior to fuse"
    )
    fit.add_argument(
        "--signals", help="with --dataset (required): comma-separated, from text and prior"
    )
    fit.add_argument("--out", required=True, type=Path, help="the fusion config file to write")
    fit.add_argument(
        "--users", type=int, default=1000, help="users to sample with --seed (all if fewer)"
    )
    fit.add_argument("--negatives", type=int, default=99, help="negatives per validation case")
    fit.add_argument(
        "--sampling", choices=NEGATIVE_SAMPLING, default="uniform", help="negative sampling"
    )
    fit.add_argument("--seed", type=int, default=0, help="users and negatives, as in m3rec eval")
    fit.add_argument(
        "--fit",
        choices=FIT_METHODS,
        default=DEFAULT_FIT,
        help=f"logistic regression on z-scores, or coordinate ascent on NDCG@10 (default {DEFAULT_FIT})",
    )
    fit.add_argument(
        "--sasrec-model",
        type=Path,
        help="SASRec checkpoint, trained there if missing (default runs/sasrec_<dataset>.pt)",
    )
    fit.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples of the 95%% CIs")


def cmd_fit_fusion(args: argparse.Namespace) -> None:
    """Fit the weights, write the config and print its validation metrics."""
    if args.out.is_dir():
        raise EvaluationError(f"--out {args.out} is a directory; give a file name")
    if args.from_runs is not None:
        _fit_from_runs(args)
        return
    if args.method is not None:
        raise EvaluationError("--method goes with --from-runs; with --dataset give --signals")
    if args.prior is None or args.signals is None:
        raise EvaluationError("--dataset needs --prior and --signals")
    prior: Prior = args.prior
    signals = parse_signals(args.signals, prior)
    settings = EvalSettings(
        dataset=resolve_dataset(args.dataset),
        users=args.users,
        negatives=args.negatives,
        seed=args.seed,
        sampling=args.sampling,
    )
    settings.validate()
    if args.n_boot < 0:
        raise EvaluationError(f"--n-boot must be >= 0, got {args.n_boot}")
    dataset = load_dataset(settings.dataset)
    tests = build_requests(
        dataset,
        n_users=settings.users,
        n_negatives=settings.negatives,
        seed=settings.seed,
        sampling=settings.sampling,
    )
    scorer = prior_scorer(
        prior,
        dataset,
        dataset_path=settings.dataset,
        sasrec_path=args.sasrec_model or Path("runs") / f"sasrec_{dataset.name}.pt",
        sasrec_config=None,
        stream=sys.stderr,
    )
    fit = fit_on_validation(
        dataset,
        tests,
        seed=settings.seed,
        sampling=settings.sampling,
        text=TfidfSimilarity(dataset.items.values()),
        prior=scorer,
        prior_name=prior,
        method=args.fit,
        n_boot=args.n_boot,
        signals=signals,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fit.config.dump(args.out)
    print(
        f"fusion config {fit.config.version}: {describe_weights(fit.config)};"
        f" {args.fit} fit on {len(fit.cases)} validation users of {dataset.name},"
        f" {settings.negatives} {settings.sampling} negatives, seed {settings.seed}"
    )
    print_fit(sys.stdout, "fit-fusion", fit)
    print(
        "(the fused row is in-sample: the weights were fit on these cases."
        + (
            " SASRec early-stopped on every user's validation item, which favours the prior.)"
            if prior == "sasrec"
            else ")"
        )
    )
    print(f"wrote {args.out}", file=sys.stderr)


def _fit_from_runs(args: argparse.Namespace) -> None:
    """`--from-runs`: pool the runs' recorded validation signals of `--method` into one fit."""
    if args.method is None:
        raise EvaluationError("--from-runs needs --method, e.g. --method m3rec:local:fused")
    if args.prior is not None or args.signals is not None:
        raise EvaluationError(
            "--from-runs fits the method's own signals (mar, overlap, text): drop --prior/--signals"
        )
    config, parts = fit_pooled_runs(args.from_runs, args.method)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    config.dump(args.out)
    for part in parts:
        print(
            f"{part.run_dir}: {part.users} validation users of {part.dataset}"
            f" ({part.left_out} left out: MAR did not score every candidate)"
        )
    print(f"fusion config {config.version}: {describe_fit(config)}")
    print(f"wrote {args.out}", file=sys.stderr)
