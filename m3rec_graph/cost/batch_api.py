"""OpenAI Batch API mode for MOTE: write the item-encoding requests as JSONL, ingest the results.

MOTE's calls depend only on the item (not on the user), so a catalogue can be
encoded ahead of time through the Batch API, at half the synchronous price, and
the graph then finds every item in the store.

Files:

* `FILE.jsonl` (upload this): one line per item that has text and is not yet
  cached, `{"custom_id": <trait cache key>, "method": "POST", "url":
  "/v1/chat/completions", "body": <request>}`. The body is exactly what the
  graph sends for that item (`openai_requests.chat_request_body`): the rendered
  MOTE prompt, the model's temperature and token limit, and the answer schema
  as `response_format` json_schema, or as a forced function call for models
  without Structured Outputs (gpt-3.5-turbo), which OpenAI would otherwise reject.
* `FILE.manifest.json` (keep it): the MOTE model, prompt name and version, and
  custom_id -> item_id and item text hash, because a results file carries only
  the custom_id.
* the results file OpenAI returns: one line per request, `{"custom_id": ...,
  "response": {"status_code": 200, "body": <chat.completion>}, "error": null}`.

`ingest_mote_results` validates every answer with MOTE's own answer schema and
domain check and stores the valid ones in the store, under the same namespace
and key and in the same form as a live MOTE call. Invalid or failed
answers are reported and skipped (the graph encodes those items itself later).
"""

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langgraph.store.base import BaseStore
from pydantic import BaseModel, ConfigDict, ValidationError

from m3rec_graph._internal.atomic import atomic_write_text
from m3rec_graph.context import ModelSpec
from m3rec_graph.contracts.schemas import Item, TraitsAnswer
from m3rec_graph.errors import ConfigurationError, M3RecError
from m3rec_graph.llm.factory import describe_validation_error
from m3rec_graph.llm.request_body import (
    SchemaTransport,
    answer_text,
    chat_request_body,
    schema_transport,
    structured_params,
)
from m3rec_graph.prompts.loader import load_prompt
from m3rec_graph.stages.mote import MoteStage
from m3rec_graph.state import MoteState
from m3rec_graph.storage.memory import read_traits_sync, write_trait_entry_sync
from m3rec_graph.storage.traits import trait_cache_key
from m3rec_graph.text.item_text import text_hash

BATCH_URL = "/v1/chat/completions"
MAX_REQUESTS_PER_BATCH = 50_000
"""OpenAI's limit of requests in one batch input file."""


class BatchFileError(M3RecError, ValueError):
    """A batch requests, manifest or results file is missing or malformed."""


class BatchManifest(BaseModel):
    """What a results file needs to be ingested: the model, the prompt, and custom_id -> item_id."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stage: str = "mote"
    model: str
    prompt: str
    """Hub name of the MOTE prompt (`m3rec-mote`)."""
    prompt_version: str
    transport: SchemaTransport
    items: dict[str, str]
    """custom_id (a hash of item id, text, model and prompt version) -> item_id."""
    text_hashes: dict[str, str]
    """custom_id -> the item text's hash when the request was written (the store key's second half)."""

    def write(self, path: Path) -> None:
        """Write the manifest as JSON."""
        atomic_write_text(path, self.model_dump_json(indent=1) + "\n")

    @classmethod
    def read(cls, path: Path) -> "BatchManifest":
        """Read a manifest written by `write`."""
        try:
            return cls.model_validate_json(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise BatchFileError(
                f"batch manifest not found: {path} (written next to the requests file by --batch-api)"
            ) from None
        except ValidationError as exc:
            raise BatchFileError(
                f"{path}: not a batch manifest: {describe_validation_error(exc)}"
            ) from None


def manifest_path(requests_path: Path) -> Path:
    """Return where the manifest of a requests file lives: `FILE.jsonl` -> `FILE.manifest.json`."""
    return requests_path.with_name(requests_path.stem + ".manifest.json")


@dataclass(frozen=True)
class BatchPlan:
    """The MOTE batch for a set of items: the request lines and the manifest."""

    lines: list[dict[str, Any]]
    manifest: BatchManifest
    items: int
    """Distinct items considered."""
    cached: int
    """Items already in the trait cache (no request)."""
    without_text: int
    """Items with no text (the graph gives them neutral traits without a call)."""


def plan_mote_batch(
    items: Iterable[Item], spec: ModelSpec, store: BaseStore, *, prompt_override: str | None = None
) -> BatchPlan:
    """Build one Batch API request per distinct item with text whose traits `store` does not hold.

    Raises:
        ConfigurationError: `spec` is not an OpenAI model (the Batch API is OpenAI's),
            or there are more requests than one batch file may hold.
    """
    if spec.base_url is not None:
        raise ConfigurationError(
            f"the Batch API is OpenAI's: route MOTE to an OpenAI model, not {spec.name} at {spec.base_url}"
        )
    prompt = load_prompt("mote", prompt_override)
    stage = MoteStage()
    distinct = {item.item_id: item for item in items}
    with_text = {i: item for i, item in distinct.items() if item.has_text()}
    keys = {i: trait_cache_key(item, spec.name, prompt.version) for i, item in with_text.items()}
    cached = read_traits_sync(
        store, list(with_text.values()), model=spec.name, prompt_version=prompt.version
    )
    lines: list[dict[str, Any]] = []
    manifest_items: dict[str, str] = {}
    hashes: dict[str, str] = {}
    for item_id, item in with_text.items():
        key = keys[item_id]
        if item_id in cached or key in manifest_items:
            continue
        state = MoteState(item=item)
        messages = prompt.format(**stage.variables(state))
        body = chat_request_body(spec, stage.answer_contract(state), messages)
        lines.append({"custom_id": key, "method": "POST", "url": BATCH_URL, "body": body})
        manifest_items[key] = item_id
        hashes[key] = text_hash(item)
    if len(lines) > MAX_REQUESTS_PER_BATCH:
        raise ConfigurationError(
            f"{len(lines):,} requests exceed the Batch API's {MAX_REQUESTS_PER_BATCH:,} per file: use --users to split"
        )
    manifest = BatchManifest(
        model=spec.name,
        prompt=prompt.name,
        prompt_version=prompt.version,
        transport=schema_transport(structured_params(spec, TraitsAnswer)),
        items=manifest_items,
        text_hashes=hashes,
    )
    return BatchPlan(
        lines=lines,
        manifest=manifest,
        items=len(distinct),
        cached=len(cached),
        without_text=len(distinct) - len(with_text),
    )


def write_batch(plan: BatchPlan, out: Path) -> Path:
    """Write the requests to `out` (JSONL) and the manifest next to it; return the manifest path."""
    text = "".join(
        json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n" for line in plan.lines
    )
    atomic_write_text(out, text)
    path = manifest_path(out)
    plan.manifest.write(path)
    return path


# --------------------------------------------------------------------------- ingest


@dataclass
class IngestReport:
    """What happened to each line of a results file."""

    stored: list[str] = field(default_factory=list)
    """custom_ids whose traits were stored."""
    invalid: list[tuple[str, str]] = field(default_factory=list)
    """(custom_id or line, reason): an answer that failed the MOTE schema or check."""
    failed: list[tuple[str, str]] = field(default_factory=list)
    """(custom_id, reason): the request itself failed (API error, non-200 status)."""
    unknown: list[str] = field(default_factory=list)
    """custom_ids not in the manifest (another batch's results?)."""
    missing: list[str] = field(default_factory=list)
    """custom_ids of the manifest with no result line."""

    @property
    def skipped(self) -> int:
        """Result lines not stored."""
        return len(self.invalid) + len(self.failed) + len(self.unknown)


def _reason(value: Any) -> str:
    if isinstance(value, dict):
        code, message = value.get("code"), value.get("message")
        return ": ".join(str(v) for v in (code, message) if v) or json.dumps(value)[:200]
    return str(value)[:200]


def _check_answer(
    stage: MoteStage, state: MoteState, body: Any
) -> tuple[TraitsAnswer | None, str | None]:
    """Validate a chat.completion body as a MOTE answer; return the answer or why it is invalid."""
    choices = body.get("choices") if isinstance(body, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None, "the response has no choices"
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, dict):
        return None, "the response has no message"
    if choice.get("finish_reason") == "length":
        return None, "the answer was cut off at the token limit"
    if message.get("refusal"):
        return None, f"the model refused: {str(message['refusal'])[:200]}"
    text = answer_text(message)
    if not text:
        return None, "the answer is empty"
    contract = stage.answer_contract(state)
    try:
        answer = contract.validate_answer_json(text)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            return None, "the answer is not valid JSON"
        return None, describe_validation_error(exc)
    if not isinstance(answer, TraitsAnswer):  # pragma: no cover - MOTE's schema is TraitsAnswer
        return None, "unexpected answer type"
    problem = stage.check(state, answer, text)
    if problem:
        return None, problem
    return answer, None


def ingest_mote_results(results: Path, manifest: BatchManifest, store: BaseStore) -> IngestReport:
    """Validate every result of a MOTE batch and store the valid traits in `store`.

    Args:
        results: The Batch API output file (JSONL).
        manifest: The manifest written with the requests.
        store: Where the traits go (the store the graph reads).

    Raises:
        BatchFileError: `results` is missing or not UTF-8.
    """
    if manifest.stage != "mote":
        raise BatchFileError(f"the manifest is for stage {manifest.stage!r}, not mote")
    try:
        raw_lines = results.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise BatchFileError(f"results file not found: {results}") from None
    except UnicodeDecodeError:
        raise BatchFileError(f"results file is not UTF-8: {results}") from None
    stage = MoteStage()
    report = IngestReport()
    seen: set[str] = set()
    for line_no, line in enumerate(raw_lines, start=1):
        if not line.strip():
            continue
        where = f"{results.name}:{line_no}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            report.invalid.append((where, "not a JSON line"))
            continue
        custom_id = record.get("custom_id") if isinstance(record, dict) else None
        if not isinstance(custom_id, str):
            report.invalid.append((where, "no custom_id"))
            continue
        if custom_id not in manifest.items:
            report.unknown.append(custom_id)
            continue
        if custom_id in seen:
            report.invalid.append((custom_id, "duplicate result line"))
            continue
        seen.add(custom_id)
        if record.get("error"):
            report.failed.append((custom_id, _reason(record["error"])))
            continue
        response = record.get("response")
        if not isinstance(response, dict):
            report.failed.append((custom_id, "no response"))
            continue
        body = response.get("body")
        status = response.get("status_code")
        if status != 200:
            error = body.get("error") if isinstance(body, dict) else None
            report.failed.append((custom_id, f"HTTP {status}: {_reason(error or body)}"))
            continue
        item = Item(item_id=manifest.items[custom_id])
        answer, problem = _check_answer(stage, MoteState(item=item), body)
        if answer is None:
            report.invalid.append((custom_id, problem or "invalid answer"))
            continue
        # The namespace and key a live MOTE call of this model and prompt version uses.
        write_trait_entry_sync(
            store,
            item_id=item.item_id,
            text_hash_=manifest.text_hashes[custom_id],
            traits=answer.to_traits(),
            model=manifest.model,
            prompt_version=manifest.prompt_version,
        )
        report.stored.append(custom_id)
    report.missing = [key for key in manifest.items if key not in seen]
    return report


def format_ingest_report(report: IngestReport, limit: int = 20) -> str:
    """Summarise an ingest: counts on the first line, then the skipped results (up to `limit`)."""
    lines = [
        f"stored {len(report.stored)} item traits; skipped {len(report.invalid)} invalid,"
        f" {len(report.failed)} failed, {len(report.unknown)} unknown; {len(report.missing)} requests without a result"
    ]
    problems = (
        [f"invalid {who}: {why}" for who, why in report.invalid]
        + [f"failed {who}: {why}" for who, why in report.failed]
        + [f"unknown custom_id {who} (not in the manifest)" for who in report.unknown]
    )
    lines += [f"  {p}" for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more")
    return "\n".join(lines)
