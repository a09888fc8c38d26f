"""The fusion config: a small JSON file with a weight per signal, versioned like the prompts."""

import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from m3rec_graph.errors import ConfigurationError

Signal = Literal["mar", "overlap", "text", "prior"]
SIGNALS: tuple[Signal, ...] = ("mar", "overlap", "text", "prior")
"""The signals fusion knows: MAR's alignment score, the profile-trait overlap, TF-IDF text
similarity between history and candidate, and the host's `prior` score."""


class FusionConfigError(ConfigurationError):
    """A fusion config file is missing, not JSON, or breaks the schema."""


class FusionConfig(BaseModel):
    """Weights of the fused score, and where they came from.

    `weights` maps a signal to its weight; a signal that is absent or 0 does not count
    (and the stage that only feeds it is skipped). `fitted` records what the weights
    were fit on (dataset, split, sampling, method, metrics) so results can say it;
    `sampling` is the negative sampling of that fit (`uniform`, `popularity`, or None
    for hand-set weights).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    weights: dict[Signal, float]
    normalisation: Literal["z"] = "z"
    sampling: str | None = None
    fitted: dict[str, object] = Field(default_factory=dict)

    @field_validator("weights")
    @classmethod
    def _finite(cls, weights: dict[Signal, float]) -> dict[Signal, float]:
        if not all(math.isfinite(w) for w in weights.values()):
            raise ValueError("every weight must be a finite number")
        if not any(w != 0 for w in weights.values()):
            raise ValueError("at least one weight must be non-zero")
        return weights

    @property
    def version(self) -> str:
        """The first 12 hex digits of the sha256 of the canonical JSON (as prompt versions)."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]

    def active(self) -> tuple[Signal, ...]:
        """The signals with a non-zero weight, in `SIGNALS` order."""
        return tuple(s for s in SIGNALS if self.weights.get(s, 0.0) != 0.0)

    def without(self, *signals: Signal) -> "FusionConfig":
        """This config with `signals` switched off (an ablation), validated again.

        Raises:
            FusionConfigError: That would switch every weighted signal off.
        """
        kept = {s: w for s, w in self.weights.items() if s not in signals}
        # model_copy(update=...) skips validation, which would let an all-off config through.
        try:
            return FusionConfig.model_validate({**self.model_dump(), "weights": kept})
        except ValidationError as exc:
            raise FusionConfigError(
                f"fusion config {self.version} without {', '.join(signals)}: {exc.errors()[0]['msg']}"
            ) from None

    def dump(self, path: Path) -> None:
        """Write the config as indented JSON."""
        path.write_text(json.dumps(self.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8")


DEFAULT_FUSION = "default"
"""The name that stands for the shipped config (`DEFAULT_FUSION_PATH`) wherever a path is taken."""

DEFAULT_FUSION_PATH = Path(__file__).with_name("default.json")
"""The shipped fusion config: hand-set weights (`fitted.method = "hand-set"`, `sampling = None`)."""

LOCAL_FUSION = "local"
"""The name of the shipped config fit for the offline default (`LOCAL_FUSION_PATH`)."""

LOCAL_FUSION_PATH = Path(__file__).with_name("local.json")
"""Weights fit on the shared datasets' validation cases with every stage on the local model
(`fitted` says which runs; docs/results.md has the command and the figures)."""

FUSION_OFF = "off"
"""The setting that switches fusion off even where a routing preset fuses by default."""

SHIPPED_FUSION: Mapping[str, Path] = {DEFAULT_FUSION: DEFAULT_FUSION_PATH, LOCAL_FUSION: LOCAL_FUSION_PATH}
"""Names that stand for a shipped config wherever a config path is taken."""

PRESET_FUSION: Mapping[str, str] = {"local": LOCAL_FUSION}
"""Routing preset -> the shipped config it fuses with when `M3RecContext.fusion` is unset.

Only the offline `local` preset has one: its MAR signal alone ranks near chance
(docs/results.md), and its weights were fit with its own models. The OpenAI presets
rank by MAR's score, as the paper does, until a config is given.
"""


def load_fusion_config(path: str | Path) -> FusionConfig:
    """Read a fusion config file; `FusionConfigError` names the file and the problem."""
    path = Path(path)
    try:
        return FusionConfig.model_validate_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FusionConfigError(f"fusion config {path} does not exist") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the file"
        raise FusionConfigError(f"fusion config {path}: {where}: {first['msg']}") from None


_loaded: dict[str, FusionConfig] = {}
"""Config files read so far, by the path as given (a `SHIPPED_FUSION` name: the shipped one)."""


def _load_cached(path: str) -> FusionConfig:
    config = _loaded.get(path)
    if config is None:
        config = _loaded[path] = load_fusion_config(SHIPPED_FUSION.get(path, path))
    return config


def resolve_fusion(value: str | Path | Mapping[str, object] | FusionConfig | None) -> FusionConfig | None:
    """Turn a fusion setting into a config: `None` and `"off"` (fusion off) give `None`.

    `"default"` and `"local"` are shipped configs (`SHIPPED_FUSION`), any other string or path a config file (read
    once per process and path: it blocks, so the graph calls this in a worker
    thread until `fusion_loaded`), a mapping the config's JSON fields, a
    `FusionConfig` itself.

    Raises:
        FusionConfigError: The file is missing or the config breaks the schema.
    """
    if value is None or isinstance(value, FusionConfig):
        return value
    if value == FUSION_OFF:
        return None
    if isinstance(value, str | Path):
        return _load_cached(str(value))
    try:
        return FusionConfig.model_validate(dict(value))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the config"
        raise FusionConfigError(f"fusion config: {where}: {first['msg']}") from None


def fusion_loaded(value: object) -> bool:
    """Return whether `resolve_fusion(value)` runs without reading a file."""
    return not isinstance(value, str | Path) or value == FUSION_OFF or str(value) in _loaded
