"""Score fusion: a weighted sum of per-request z-normalised signals, weights from a versioned config.

`config` holds the weights file (`FusionConfig`: which signals, their weights, what they
were fitted on); `combine` turns per-candidate signal values into `fused_score` and
`score_parts`. Both the graph's fusion step and the evaluation harness's
`fusion:PRIOR+text` method call `fuse`, so a fitted config means the same everywhere.
"""

from m3rec_graph.fusion.combine import FusedScore, fuse, zscores
from m3rec_graph.fusion.config import (
    DEFAULT_FUSION,
    DEFAULT_FUSION_PATH,
    FUSION_OFF,
    LOCAL_FUSION,
    LOCAL_FUSION_PATH,
    PRESET_FUSION,
    SHIPPED_FUSION,
    SIGNALS,
    FusionConfig,
    FusionConfigError,
    Signal,
    fusion_loaded,
    load_fusion_config,
    resolve_fusion,
)

__all__ = [
    "DEFAULT_FUSION",
    "DEFAULT_FUSION_PATH",
    "FUSION_OFF",
    "LOCAL_FUSION",
    "LOCAL_FUSION_PATH",
    "PRESET_FUSION",
    "SHIPPED_FUSION",
    "SIGNALS",
    "FusedScore",
    "FusionConfig",
    "FusionConfigError",
    "Signal",
    "fuse",
    "fusion_loaded",
    "load_fusion_config",
    "resolve_fusion",
    "zscores",
]
