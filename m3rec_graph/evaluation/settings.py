"""What an evaluation run is: its candidate-set settings, the methods it scores, and its slices."""

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, cast

from m3rec_graph.context import ABLATIONS, Ablation
from m3rec_graph.errors import M3RecError
from m3rec_graph.evaluation.datasets import NEGATIVE_SAMPLING, EvalCase, NegativeSampling
from m3rec_graph.llm.routing import PRESETS, default_preset

MethodKind = Literal["random", "popularity", "text", "sasrec", "fusion", "m3rec"]
METHOD_KINDS: tuple[MethodKind, ...] = ("random", "popularity", "text", "sasrec", "fusion", "m3rec")
"""The methods the harness knows, in report order."""

Prior = Literal["sasrec", "popularity", "none"]
PRIORS: tuple[Prior, ...] = ("sasrec", "popularity", "none")
"""The host-ranker scores the harness can pass as a candidate's `prior`: SASRec's score, the
log of the training-split popularity, or none."""
FUSED = "fused"


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
    fused: bool = False
    """m3rec: rank by the fused score (`:fused`); always True for `fusion`."""
    prior: Prior = "none"
    """`fusion` and fused m3rec: the prior passed with each candidate."""

    @property
    def key(self) -> str:
        """The method's name in results and reports, e.g. `m3rec:local`, `m3rec:hybrid:no_mope:fused+sasrec`."""
        if self.kind == "fusion":
            return f"fusion:{self.prior}+text"
        if self.kind != "m3rec":
            return self.kind
        fused = [FUSED + (f"+{self.prior}" if self.prior != "none" else "")] if self.fused else []
        return ":".join(
            [
                "m3rec",
                str(self.routing),
                *([self.ablation] if self.ablation != "none" else []),
                *fused,
            ]
        )


def _parse_fusion(text: str, parts: list[str]) -> MethodSpec:
    """`fusion:PRIOR+text`: the fused ranking of text similarity and the prior, without any LLM."""
    prior, plus, signal = (parts[0] if len(parts) == 1 else "").partition("+")
    if len(parts) != 1 or not plus or signal != "text" or prior not in PRIORS:
        raise EvaluationError(
            f"cannot read {text!r}: expected fusion:PRIOR+text with a prior from {', '.join(PRIORS)}"
        )
    return MethodSpec("fusion", fused=True, prior=prior)


def _parse_fused(text: str, part: str) -> Prior:
    """`fused` or `fused+PRIOR` (a prior other than none) -> the prior."""
    _, plus, prior = part.partition("+")
    if not plus:
        return "none"
    if prior not in PRIORS or prior == "none":
        raise EvaluationError(
            f"cannot read {part!r} in {text!r}: expected fused or fused+PRIOR with a prior from"
            f" {', '.join(p for p in PRIORS if p != 'none')}"
        )
    return cast(Prior, prior)


def parse_method(text: str) -> MethodSpec:
    """Parse one method: `random`, `popularity`, `text`, `sasrec`, `fusion:PRIOR+text` or `m3rec[:PRESET][:ABLATION][:fused[+PRIOR]]`.

    A bare `m3rec` means the default preset of this machine (`hybrid` with an
    OpenAI key, else `local`), resolved now so the result key names it. `fusion:PRIOR+text`
    ranks by the fused text similarity and prior (PRIOR: sasrec, popularity or none);
    `:fused` ranks the graph's output by its fused score, `:fused+PRIOR` with the prior
    passed on every candidate.

    Raises:
        EvaluationError: An unknown method, preset, ablation or prior.
    """
    name, *parts = [p.strip().lower() for p in text.split(":")]
    if name not in METHOD_KINDS:
        raise EvaluationError(f"unknown method {name!r}; choose from {', '.join(METHOD_KINDS)}")
    if name == "fusion":
        return _parse_fusion(text, parts)
    if name != "m3rec":
        if parts:
            raise EvaluationError(f"method {name!r} takes no options, got {text!r}")
        return MethodSpec(name)
    routing: str | None = None
    ablation: Ablation = "none"
    fused: Prior | None = None
    for part in parts:
        if part in PRESETS and routing is None:
            routing = part
        elif part in ABLATIONS and ablation == "none":
            ablation = part
        elif part.partition("+")[0] == FUSED and fused is None:
            fused = _parse_fused(text, part)
        else:
            raise EvaluationError(
                f"cannot read {part!r} in {text!r}: expected m3rec[:PRESET][:ABLATION][:fused[+PRIOR]]"
                f" with a preset from {', '.join(PRESETS)}, an ablation from {', '.join(ABLATIONS)}"
                f" and a prior from {', '.join(p for p in PRIORS if p != 'none')}"
            )
    return MethodSpec(
        "m3rec",
        routing or default_preset(),
        ablation,
        fused=fused is not None,
        prior=fused if fused is not None else "none",
    )


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
