"""`m3rec eval`: score baselines, SASRec and m3rec variants on fixed candidate sets, resumably."""

import argparse
import os
import sys
from pathlib import Path

from m3rec_graph.cli.parsing import SubParsers, add_command
from m3rec_graph.cli.store_options import add_store_options, store_url
from m3rec_graph.context import ABLATIONS
from m3rec_graph.evaluation import (
    METHOD_KINDS,
    REPORT_FILE,
    RESULTS_JSON,
    STORE_FILE,
    EvalSettings,
    EvaluationError,
    parse_methods,
    run_evaluation,
)
from m3rec_graph.evaluation.datasets import NEGATIVE_SAMPLING
from m3rec_graph.evaluation.settings import PRIORS
from m3rec_graph.evaluation.sharded import ENGINES, EvalEngine
from m3rec_graph.llm.routing import PRESETS
from m3rec_graph.storage.store import STORE_URL_ENV, sqlite_path, store_kind

SHARED_DATA = Path("../shared/data/amazon")
"""Where `--dataset NAME` is looked up when NAME is not a directory."""


def resolve_dataset(text: str) -> Path:
    """Return the dataset directory `text`, or `../shared/data/amazon/TEXT` when only that exists.

    Raises:
        EvaluationError: Neither is a directory.
    """
    path = Path(text)
    if path.is_dir():
        return path
    shared = SHARED_DATA / text
    if path.name == text and shared.is_dir():
        return shared
    raise EvaluationError(f"dataset directory not found: {text} (nor {shared})")


def parse_prompt_files(pairs: list[str]) -> dict[str, str]:
    """Parse `--prompt-file STAGE=PATH` pairs into prompt name -> path (`mar` is the listwise MAR prompt).

    Raises:
        EvaluationError: A pair without `=` or a path (the names and files are
            checked by `run_evaluation`).
    """
    overrides: dict[str, str] = {}
    for pair in pairs:
        stage, sep, path = pair.partition("=")
        name = stage.strip().lower()
        if not sep or not name or not path.strip():
            raise EvaluationError(
                f"bad --prompt-file {pair!r}: expected STAGE=PATH, e.g. mar=my_mar.toml"
            )
        overrides["mar_listwise" if name == "mar" else name] = path.strip()
    return overrides


def add_eval_parser(sub: SubParsers) -> None:
    """Register `m3rec eval` on the `m3rec` sub-command parser."""
    methods_help = (
        f"comma-separated, from {', '.join(METHOD_KINDS)}; fusion:PRIOR+text (PRIOR: {', '.join(PRIORS)});"
        f" m3rec[:PRESET][:ABLATION][:fused[+PRIOR]] with a preset from {', '.join(PRESETS)} and an"
        f" ablation from {', '.join(a for a in ABLATIONS if a != 'none')}"
        " (default preset: hybrid with OPENAI_API_KEY, else local)"
    )
    ev = add_command(
        sub,
        "eval",
        cmd_eval,
        help="evaluate methods on leave-one-out candidate sets (resumable; report, results.json, plots)",
        description=__doc__,
    )
    ev.add_argument(
        "--dataset", required=True, help="dataset directory, or a name under ../shared/data/amazon"
    )
    ev.add_argument("--methods", required=True, help=methods_help)
    ev.add_argument(
        "--users", type=int, required=True, help="users to sample with --seed (all if fewer)"
    )
    ev.add_argument(
        "--negatives",
        type=int,
        default=99,
        help="unseen negatives per user (99: S3-Rec, 19: LLMRank)",
    )
    ev.add_argument(
        "--sampling", choices=NEGATIVE_SAMPLING, default="uniform", help="negative sampling"
    )
    ev.add_argument(
        "--seed", type=int, default=0, help="users, negatives, random baseline and shown order"
    )
    ev.add_argument(
        "--cold-start", type=int, metavar="N", help="also score with only the last N history items"
    )
    ev.add_argument(
        "--concurrency",
        type=int,
        default=2,
        metavar="C",
        help="m3rec users in flight at once; with --engine ray, PER WORKER"
        " (N workers keep N x C in flight; default: 2)",
    )
    ev.add_argument(
        "--engine",
        choices=ENGINES,
        default="local",
        help="where the m3rec methods' users run: local, this process; ray, sharded across"
        " --workers Ray actors (baselines, the run lock, results and progress stay here;"
        " default: local)",
    )
    ev.add_argument(
        "--address",
        metavar="ADDR",
        help="with --engine ray, join this Ray cluster (e.g. auto); without it a local Ray"
        " runtime runs for the eval. Every worker opens --store: workers on other machines"
        " need --store postgresql://... (a SQLite file is not safe over a network file system)",
    )
    ev.add_argument(
        "--workers", type=int, default=1, metavar="N", help="Ray actors with --engine ray (default: 1)"
    )
    ev.add_argument(
        "--out", required=True, type=Path, help="run directory; rerunning the command resumes it"
    )
    add_store_options(
        ev,
        aliases=False,
        store_help="where the m3rec methods cache item traits and shopper profiles, in this"
        " process and in every Ray worker: sqlite:///PATH, postgresql://... (for workers on"
        " other machines), or memory: (--engine local only); default: $"
        f"{STORE_URL_ENV}, else the run directory's {STORE_FILE}. A store is a cache shared"
        " across runs: trait namespaces name the MOTE model and prompt version, profile keys"
        " the MOPE settings, so results do not depend on it (the run's store.json records it,"
        " without passwords)",
    )
    ev.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples of the 95%% CIs")
    ev.add_argument("--no-plots", action="store_true", help="do not draw the PNG plots")
    ev.add_argument(
        "--prompt-file",
        action="append",
        metavar="STAGE=PATH",
        help="use this prompt file for a stage of every m3rec method (mope, mote or mar;"
        " repeatable); results record its version, so give each variant its own --out",
    )
    ev.add_argument(
        "--fusion",
        type=Path,
        metavar="FILE",
        help="fusion config (from m3rec fit-fusion, or a shipped one: local, default) for every"
        " fused method; default: fit the weights on this run's validation split",
    )
    ev.add_argument(
        "--fit-users",
        type=int,
        metavar="N",
        help="fused graph methods (m3rec...:fused) fit on the validation cases of the run's"
        " first N users only (each is a full graph run); default: all --users",
    )
    ev.add_argument(
        "--report-only",
        action="store_true",
        help="compute nothing: report the users every listed method has finished"
        " (an interrupted run's interim figures, paired on the same users)",
    )
    ev.add_argument(
        "--allow-retired",
        action="store_true",
        help="let a method's model past its shutdown date run (e.g. the paper preset's"
        " gpt-3.5-turbo), against an endpoint that still serves it",
    )
    ev.add_argument(
        "--allow-sampling-mismatch",
        action="store_true",
        help="use a --fusion config fit under another negative sampling than --sampling",
    )
    ev.add_argument(
        "--langsmith",
        action="store_true",
        help="also upload the set as a LangSmith dataset and run each method as an experiment"
        " (needs LANGSMITH_API_KEY; without it the run is local only)",
    )


def cmd_eval(args: argparse.Namespace) -> None:
    """Run (or resume) an evaluation and print its report."""
    settings = EvalSettings(
        dataset=resolve_dataset(args.dataset),
        users=args.users,
        negatives=args.negatives,
        seed=args.seed,
        sampling=args.sampling,
    )
    engine = EvalEngine(kind=args.engine, workers=args.workers, address=args.address)
    engine.validate()  # before the dataset loads
    store = store_url(args, default=f"sqlite:///{args.out / STORE_FILE}")  # a bad URL: exit 2
    if args.address and store_kind(store) == "sqlite":
        print(
            f"m3rec: note: the Ray workers open the SQLite store {sqlite_path(store)}: keep them"
            " on this machine, or use --store postgresql://...",
            file=sys.stderr,
        )
    methods = parse_methods(args.methods)
    prompt_overrides = parse_prompt_files(args.prompt_file or [])
    langsmith = bool(args.langsmith)
    if langsmith and not os.environ.get("LANGSMITH_API_KEY"):
        print("m3rec: note: LANGSMITH_API_KEY is not set; evaluating locally only", file=sys.stderr)
        langsmith = False
    run = run_evaluation(
        settings,
        methods,
        args.out,
        cold_start=args.cold_start,
        concurrency=args.concurrency,
        n_boot=args.n_boot,
        plots=not args.no_plots,
        langsmith=langsmith,
        prompt_overrides=prompt_overrides,
        fusion=args.fusion,
        allow_sampling_mismatch=args.allow_sampling_mismatch,
        fit_users=args.fit_users,
        engine=engine,
        report_only=args.report_only,
        store=store,
        allow_retired=args.allow_retired,
    )
    print(run.report)
    written = [REPORT_FILE, RESULTS_JSON, *run.plots]
    print(f"wrote {', '.join(str(args.out / name) for name in written)}", file=sys.stderr)
    for label, experiment in run.experiments.items():
        where = experiment.get("url") or experiment["experiment_name"]
        print(f"LangSmith experiment {label}: {where}", file=sys.stderr)


__all__ = [
    "EvaluationError",
    "add_eval_parser",
    "cmd_eval",
    "parse_prompt_files",
    "resolve_dataset",
]
