"""What an evaluation run is: its candidate-set settings, the methods it scores, and its slices."""

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from m3rec_graph.context import ABLATIONS, Ablation
from m3rec_graph.errors import M3RecError
from m3rec_graph.evaluation.datasets import NEGATIVE_SAMPLING, EvalCase, NegativeSampling
from m3rec_graph.llm.routing import PRESETS, default_preset

MethodKind = Literal["random", "popularity", "text", "sasrec", "m3rec"]
METHOD_KINDS: tuple[MethodKind, ...] = ("random", "popularity", "text", "sasrec", "m3rec")
"""The methods the harness knows, in report order."""


class EvaluationError(M3RecError, ValueError):
    """Bad harness input or a run directory that does not fit the request (CLI exit code 2)."""


@dataclass(frozen=True, kw_only=True)
class EvalSettings:
    """Everything that determines a run's users and candidate sets (not the methods scored on them)."""

    dataset: Path
    """The dataset directory (`interactions.csv` + `items.jsonl`)."""
    users: int
    """Users to sample (all eligible users when there are fewer)."""
    negatives: int
    """Unseen negatives per user: 99 is the S3-Rec/SASRec protocol, 19 the LLMRank one."""
    seed: int = 0
    """Seeds the user sample, the negatives, the random baseline and the graph's display order."""
    sampling: NegativeSampling = "uniform"
    """How negatives are drawn (`uniform` or `popularity`-weighted)."""

    def validate(self) -> None:
        """Raise `EvaluationError` for a setting no run could use."""
        if self.users < 1:
            raise EvaluationError(f"--users must be >= 1, got {self.users}")
        if self.negatives < 1:
            raise EvaluationError(f"--negatives must be >= 1, got {self.negatives}")
        if self.sampling not in NEGATIVE_SAMPLING:
            raise EvaluationError(
                f"--sampling must be one of {', '.join(NEGATIVE_SAMPLING)}, got {self.sampling!r}"
            )
        if not self.dataset.is_dir():
            raise EvaluationError(f"dataset directory not found: {self.dataset}")


@dataclass(frozen=True)
class MethodSpec:
    """One method to score: a baseline, or m3rec under a routing preset and ablation."""

    kind: MethodKind
    routing: str | None = None
    """m3rec only: the routing preset."""
    ablation: Ablation = "none"
    """m3rec only: the graph configuration (`M3RecContext.ablation`)."""

    @property
    def key(self) -> str:
        """The method's name in results and reports, e.g. `m3rec:local` or `m3rec:hybrid:no_mope`."""
        if self.kind != "m3rec":
            return self.kind
        return ":".join(
            ["m3rec", str(self.routing), *([self.ablation] if self.ablation != "none" else [])]
        )


def parse_method(text: str) -> MethodSpec:
    """Parse one method: `random`, `popularity`, `text`, `sasrec` or `m3rec[:PRESET][:ABLATION]`.

    A bare `m3rec` means the default preset of this machine (`hybrid` with an
    OpenAI key, else `local`), resolved now so the result key names it.

    Raises:
        EvaluationError: An unknown method, preset or ablation.
    """
    name, *parts = [p.strip().lower() for p in text.split(":")]
    if name not in METHOD_KINDS:
        raise EvaluationError(f"unknown method {name!r}; choose from {', '.join(METHOD_KINDS)}")
    if name != "m3rec":
        if parts:
            raise EvaluationError(f"method {name!r} takes no options, got {text!r}")
        return MethodSpec(name)
    routing: str | None = None
    ablation: Ablation = "none"
    for part in parts:
        if part in PRESETS and routing is None:
            routing = part
        elif part in ABLATIONS and ablation == "none":
            ablation = part
        else:
            raise EvaluationError(
                f"cannot read {part!r} in {text!r}: expected m3rec[:PRESET][:ABLATION] with a preset"
                f" from {', '.join(PRESETS)} and an ablation from {', '.join(ABLATIONS)}"
            )
    return MethodSpec("m3rec", routing or default_preset(), ablation)


def parse_methods(text: str) -> list[MethodSpec]:
    """Parse a comma-separated method list such as `popularity,sasrec,m3rec:local` (order kept, no repeats).

    Raises:
        EvaluationError: The list is empty or names an unknown method.
    """
    specs = [parse_method(part) for part in text.split(",") if part.strip()]
    if not specs:
        raise EvaluationError("no methods given; choose from " + ", ".join(METHOD_KINDS))
    return list({spec.key: spec for spec in specs}.values())  # first occurrence's position kept


@dataclass(frozen=True)
class EvalSlice:
    """A view of every case: the whole history, or only its last `history_items` (simulated cold start)."""

    history_items: int | None = None

    @property
    def name(self) -> str:
        """`full`, or `cold-start-N`."""
        return "full" if self.history_items is None else f"cold-start-{self.history_items}"

    def apply(self, case: EvalCase) -> EvalCase:
        """Return `case` with its history cut to this slice (same candidates and target)."""
        if self.history_items is None:
            return case
        return replace(case, history=case.history[-self.history_items :])


FULL = EvalSlice()


def slices_for(cold_start: int | None) -> list[EvalSlice]:
    """Return the full slice, plus the cold-start slice when `cold_start` is set.

    Raises:
        EvaluationError: `cold_start` is below 1.
    """
    if cold_start is None:
        return [FULL]
    if cold_start < 1:
        raise EvaluationError(f"--cold-start must be >= 1, got {cold_start}")
    return [FULL, EvalSlice(cold_start)]
