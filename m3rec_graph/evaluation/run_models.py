"""Which models each LLM method of a run directory was scored with, so a method never mixes models.

A method's key names a routing preset (`m3rec:hybrid`), and what a preset routes
to changes over time (`hybrid` was gpt-3.5-turbo + gpt-4o, it is gpt-6-luna +
gpt-6.1-sol now). So the run directory records, per LLM method, the model (and
reasoning effort) each of its stages resolved to when it first ran, in
`models.json`. A later run that resolves the method to other models is refused
(`MethodModelsChangedError`) instead of appending their lines next to the old
ones under the same name.

A directory written before this record existed has none: its lines' own usage
(`stages.<stage>.models`, the model names each stage called) is compared
instead, and the record is written only if those agree with what resolves now.
A record of a method that has no line yet is simply replaced (nothing to mix).
"""

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from m3rec_graph._internal.atomic import atomic_write_text
from m3rec_graph.context import STAGES, M3RecContext
from m3rec_graph.errors import ConfigurationError
from m3rec_graph.evaluation.settings import EvaluationError, MethodSpec
from m3rec_graph.evaluation.store import ResultKey
from m3rec_graph.llm.routing import LOCAL_MODEL_NAME, PRESETS

MODELS_FILE = "models.json"
MODELS_FORMAT = 1

StageModels = dict[str, dict[str, str]]
"""Stage -> `{"name": ..., "reasoning_effort": ...}` (the effort only when the spec has one)."""

_SKIPPED_STAGE = {"no_mope": "mope", "no_mote": "mote", "no_mar": "mar"}
"""The stage an ablation never calls (so its model does not belong to the method)."""


class MethodModelsChangedError(EvaluationError, ConfigurationError):
    """A run directory's method now resolves to other models than its results were made with (exit code 2)."""


def resolved_models(ctx: M3RecContext) -> StageModels:
    """Return the model of every stage `ctx` calls: its name, and its reasoning effort if it has one.

    Read from `ctx.model_for(stage)`; a stage the context's ablation switches off is left out.
    """
    skipped = _SKIPPED_STAGE.get(str(getattr(ctx, "ablation", "none")))
    models: StageModels = {}
    for stage in STAGES:
        if stage == skipped:
            continue
        spec = ctx.model_for(stage)
        entry = {"name": str(spec.name)}
        effort = getattr(spec, "reasoning_effort", None)
        if effort is not None:
            entry["reasoning_effort"] = str(effort)
        models[stage] = entry
    return models


def describe(models: Mapping[str, Mapping[str, Any]]) -> str:
    """`mope=gpt-6-luna (effort none), mar=gpt-6.1-sol (effort low)`: one stage after the other."""
    parts = []
    for stage, entry in models.items():
        effort = entry.get("reasoning_effort")
        parts.append(f"{stage}={entry.get('name')}" + (f" (effort {effort})" if effort else ""))
    return ", ".join(parts) or "unknown models"


def read_method_models(out_dir: Path) -> dict[str, StageModels]:
    """Return the run's recorded method key -> stage models (empty when there is no record yet).

    Raises:
        EvaluationError: The record is unreadable or not of this format.
    """
    path = out_dir / MODELS_FILE
    if not path.exists():
        return {}
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EvaluationError(f"cannot read {path}: {exc}") from None
    methods = stored.get("methods") if isinstance(stored, dict) else None
    if not isinstance(methods, dict) or stored.get("format") != MODELS_FORMAT:
        raise EvaluationError(
            f"{path}: expected {{'format': {MODELS_FORMAT}, 'methods': {{...}}}}; fix or delete it"
        )
    return methods


def _write_method_models(out_dir: Path, methods: Mapping[str, StageModels]) -> None:
    document = {"format": MODELS_FORMAT, "methods": dict(sorted(methods.items()))}
    atomic_write_text(out_dir / MODELS_FILE, json.dumps(document, indent=2) + "\n")


def _models_in_lines(records: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    """Stage -> the model names the lines' usage says the stage called (stages that called none left out)."""
    names: dict[str, set[str]] = {}
    for record in records:
        stages = record.get("stages")
        if not isinstance(stages, dict):
            continue
        for stage, usage in stages.items():
            called = usage.get("models") if isinstance(usage, dict) else None
            if isinstance(called, list) and called:
                names.setdefault(str(stage), set()).update(str(name) for name in called)
    order = [*(s for s in STAGES if s in names), *sorted(set(names) - set(STAGES))]
    return {stage: sorted(names[stage]) for stage in order}


def _lines_agree(in_lines: Mapping[str, list[str]], now: StageModels) -> bool:
    return bool(in_lines) and all(
        stage in now and names == [now[stage]["name"]] for stage, names in in_lines.items()
    )


def _same_models_elsewhere(
    spec: MethodSpec, recorded: Mapping[str, Mapping[str, Any]]
) -> list[str]:
    """Method keys whose preset routes every recorded stage to the recorded model name."""
    wanted = {stage: entry.get("name") for stage, entry in recorded.items()}
    found = []
    for preset, routes in PRESETS.items():
        names = {str(s): LOCAL_MODEL_NAME if m == "local" else m for s, m in routes.items()}
        if preset != spec.routing and all(names.get(s) == m for s, m in wanted.items()):
            found.append(MethodSpec("m3rec", preset, spec.ablation).key)
    return found


def _refusal(
    spec: MethodSpec,
    out_dir: Path,
    recorded: Mapping[str, Mapping[str, Any]],
    where: str,
    now: StageModels,
) -> MethodModelsChangedError:
    others = _same_models_elsewhere(spec, recorded)
    instead = f", or a method routed to the recorded models ({', '.join(others)})" if others else ""
    return MethodModelsChangedError(
        f"{spec.key} in {out_dir} was scored with {describe(recorded)} ({where}), but it now resolves to"
        f" {describe(now)}; its results would mix models under one name: use a new --out directory"
        f" for {spec.key} (the same settings draw the same candidates){instead}"
    )


def check_and_record_models(
    out_dir: Path,
    methods: Mapping[MethodSpec, StageModels],
    done: Mapping[ResultKey, Mapping[str, Any]],
) -> None:
    """Refuse methods whose models changed since their lines were written; record the models of the rest.

    Args:
        out_dir: The run directory.
        methods: Each LLM method about to run -> `resolved_models` of its context now.
        done: The run's result lines (`read_results`).

    Raises:
        MethodModelsChangedError: A method resolves to other models than recorded (or, in a
            directory without a record, than its lines called, or its lines name no model).
        EvaluationError: The record is unreadable.
    """
    recorded = read_method_models(out_dir)
    updated = dict(recorded)
    for spec, now in methods.items():
        lines = [record for (method, _, _), record in done.items() if method == spec.key]
        if not lines:
            updated[spec.key] = now
            continue
        if spec.key in recorded:
            if recorded[spec.key] != now:
                raise _refusal(spec, out_dir, recorded[spec.key], f"recorded in {MODELS_FILE}", now)
            continue
        in_lines = _models_in_lines(lines)
        if not _lines_agree(in_lines, now):
            as_recorded = {stage: {"name": "+".join(names)} for stage, names in in_lines.items()}
            where = f"per its {len(lines)} result lines, from before {MODELS_FILE}"
            raise _refusal(spec, out_dir, as_recorded, where, now)
        updated[spec.key] = now
    if updated != recorded:
        _write_method_models(out_dir, updated)
