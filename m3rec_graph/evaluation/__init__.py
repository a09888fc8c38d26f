"""The offline evaluation harness: fixed candidate sets, resumable per-user results, reports.

    m3rec eval --dataset ../shared/data/amazon/beauty --users 200 --negatives 99 \
        --methods random,popularity,text,sasrec,m3rec:local --cold-start 2 --out runs/NAME

Modules: `settings` (what a run is: candidate settings, methods, slices), `store`
(the run directory), `run_models` (the models each LLM method was
scored with), `run_store` (the store its m3rec methods cache traits and profiles
in), `methods` (scoring one method on one slice), `progress`,
`report` (summaries, `report.md`, `results.json`, plots), `run` (the whole run) and
`sharded` (`--engine ray`: the m3rec methods' users on Ray workers).
"""

from m3rec_graph.evaluation.methods import SASREC_FILE, MethodEnv, Serving
from m3rec_graph.evaluation.progress import ProgressBar
from m3rec_graph.evaluation.report import (
    COLD_PLOT,
    METRICS_PLOT,
    REPORT_FILE,
    RESULTS_JSON,
    MethodReport,
    chance_metrics,
    format_report,
    summarise_method,
)
from m3rec_graph.evaluation.run import EvalRun, run_evaluation
from m3rec_graph.evaluation.run_models import (
    MODELS_FILE,
    MethodModelsChangedError,
    read_method_models,
    resolved_models,
)
from m3rec_graph.evaluation.run_store import STORE_FILE, STORE_RECORD, read_stores
from m3rec_graph.evaluation.settings import (
    FULL,
    METHOD_KINDS,
    EvalSettings,
    EvalSlice,
    EvaluationError,
    MethodSpec,
    parse_method,
    parse_methods,
    slices_for,
)
from m3rec_graph.evaluation.sharded import EvalEngine
from m3rec_graph.evaluation.store import (
    CANDIDATES_FILE,
    LOCK_FILE,
    RESULTS_FILE,
    SETTINGS_FILE,
    prepare_cases,
    read_cases,
    read_results,
    run_lock,
)

__all__ = [
    "CANDIDATES_FILE",
    "COLD_PLOT",
    "FULL",
    "LOCK_FILE",
    "METHOD_KINDS",
    "METRICS_PLOT",
    "MODELS_FILE",
    "REPORT_FILE",
    "RESULTS_FILE",
    "RESULTS_JSON",
    "SASREC_FILE",
    "SETTINGS_FILE",
    "STORE_FILE",
    "STORE_RECORD",
    "EvalEngine",
    "EvalRun",
    "EvalSettings",
    "EvalSlice",
    "EvaluationError",
    "MethodEnv",
    "MethodModelsChangedError",
    "MethodReport",
    "MethodSpec",
    "ProgressBar",
    "Serving",
    "chance_metrics",
    "format_report",
    "parse_method",
    "parse_methods",
    "prepare_cases",
    "read_cases",
    "read_method_models",
    "read_results",
    "read_stores",
    "run_evaluation",
    "resolved_models",
    "run_lock",
    "slices_for",
    "summarise_method",
]
