"""One fusion fit from the validation signals several `m3rec eval` runs recorded (e.g. one run per dataset).

A fused graph method's fit is the expensive part of its run: every validation case
is a full graph run (`graph_fit`). Each run directory keeps those signals in
`validation-METHOD.jsonl`, so a config meant for more than one dataset (the
offline default's shipped weights) is fit on all of them at once, without another
LLM call: the groups of every run are pooled and fit under the same selection rule
(`graph_fit.SELECTION_RULE`) as a single run's fit. `text` is computed from each
run's own dataset (its catalogue's idf), as in that run's own fit.

Only methods without a prior pool: a prior is fit per dataset (SASRec is trained on
each), and its scale does not carry across datasets.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from m3rec_graph.evaluation.datasets import load_dataset
from m3rec_graph.evaluation.graph_fit import (
    GRAPH_SIGNALS,
    fit_selected_signals,
    graph_fit_groups,
    validation_file,
)
from m3rec_graph.evaluation.settings import EvalSettings, EvaluationError, parse_method
from m3rec_graph.evaluation.store import (
    CANDIDATES_FILE,
    read_cases,
    read_results,
    read_settings,
    settings_record,
)
from m3rec_graph.evaluation.validation import validation_cases
from m3rec_graph.fusion import FusionConfig
from m3rec_graph.fusion.config import Signal
from m3rec_graph.fusion.fit import FitGroup
from m3rec_graph.text.similarity import TfidfSimilarity

POOLED_SPLIT = "validation (second-last item, own negatives), pooled over runs"


@dataclass(frozen=True)
class RunPart:
    """What one run directory contributed to a pooled fit."""

    run_dir: str
    dataset: str
    users: int
    """Validation users whose signals entered the fit."""
    left_out: int
    """Validation users left out: MAR did not score every candidate."""
    negatives: int
    seed: int


def _run_groups(run_dir: Path, method: str) -> tuple[list[FitGroup], RunPart, str]:
    """One run's fit groups, what it contributed, and its negative sampling."""
    stored = read_settings(run_dir)
    try:
        settings = EvalSettings(
            dataset=Path(stored["dataset_path"]),
            users=int(stored["users"]),
            negatives=int(stored["negatives"]),
            seed=int(stored["seed"]),
            sampling=stored["sampling"],
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise EvaluationError(f"{run_dir}: settings.json lacks a field ({exc})") from None
    dataset = load_dataset(settings.dataset)
    if settings_record(settings, dataset)["dataset_sha256"] != stored.get("dataset_sha256"):
        raise EvaluationError(
            f"{run_dir}: the dataset at {settings.dataset} is not the one the run was made on"
        )
    path = validation_file(run_dir, method)
    lines = {user: line for (_, _, user), line in read_results(path).items()}
    if not lines:
        raise EvaluationError(
            f"{run_dir}: no validation signals of {method} ({path.name}); run `m3rec eval"
            f" --methods {method} --fit-users N` there first"
        )
    tests = read_cases(run_dir / CANDIDATES_FILE, dataset)
    cases = [
        case
        for case in validation_cases(dataset, tests, seed=settings.seed, sampling=settings.sampling)
        if case.user_id in lines
    ]
    groups, left_out = graph_fit_groups(
        cases, lines, text=TfidfSimilarity(dataset.items.values()), prior=None
    )
    part = RunPart(
        run_dir=str(run_dir),
        dataset=dataset.name,
        users=len(groups),
        left_out=left_out,
        negatives=settings.negatives,
        seed=settings.seed,
    )
    return groups, part, settings.sampling


def fit_pooled_runs(run_dirs: Sequence[Path], method: str) -> tuple[FusionConfig, list[RunPart]]:
    """Fit `method`'s fusion weights on the validation signals of every run in `run_dirs`, pooled.

    Args:
        run_dirs: `m3rec eval` run directories that ran `method`'s validation fit.
        method: A fused graph method without a prior, e.g. `m3rec:local:fused`.

    Returns:
        The config (its `fitted` record names each run's dataset and user count) and
        each run's contribution.

    Raises:
        EvaluationError: A method with a prior or not fused, a run directory without
            settings, candidates or validation signals of `method`, runs under
            different negative sampling, or a failed fit.
    """
    spec = parse_method(method)
    if not spec.fused:
        raise EvaluationError(f"{method} is not a fused method (m3rec[:PRESET]:fused)")
    if spec.prior != "none":
        raise EvaluationError(
            f"{method} fuses a prior; a prior's fit is per dataset, so its runs do not pool"
        )
    if not run_dirs:
        raise EvaluationError("give at least one run directory")
    groups: list[FitGroup] = []
    parts: list[RunPart] = []
    samplings: set[str] = set()
    for run_dir in run_dirs:
        run_groups, part, sampling = _run_groups(run_dir, spec.key)
        groups.extend(run_groups)
        parts.append(part)
        samplings.add(sampling)
    if len(samplings) > 1:
        raise EvaluationError(
            f"the runs use different negative sampling ({', '.join(sorted(samplings))}); pool one"
        )
    if not groups:
        raise EvaluationError(f"{method}: no validation case has a MAR score for every candidate")
    names: list[Signal] = [*GRAPH_SIGNALS, "text"]
    negatives = sorted({p.negatives for p in parts})
    metadata: dict[str, object] = {
        "dataset": "+".join(p.dataset for p in parts),
        "split": POOLED_SPLIT,
        "negatives": negatives[0] if len(negatives) == 1 else negatives,
        "seed": parts[0].seed,
        "prior": "none",
        "method_key": spec.key,
        "runs": [{"dataset": p.dataset, "users": p.users, "left_out": p.left_out} for p in parts],
    }
    config = fit_selected_signals(
        groups, names, seed=parts[0].seed, sampling=samplings.pop(), metadata=metadata
    )
    return config, parts
