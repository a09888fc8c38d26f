"""MOTE through the OpenAI Batch API: the requests file, and ingesting a results file made here."""

import json
from pathlib import Path
from typing import Any

import pytest
from langgraph.store.memory import InMemoryStore

from m3rec_graph import open_store
from m3rec_graph.cli.app import main
from m3rec_graph.contracts.schemas import Dimension, Item, TraitsAnswer
from m3rec_graph.cost.batch_api import (
    BATCH_URL,
    BatchFileError,
    BatchManifest,
    ingest_mote_results,
    manifest_path,
    plan_mote_batch,
    write_batch,
)
from m3rec_graph.errors import ConfigurationError
from m3rec_graph.evaluation.datasets import build_requests, load_dataset
from m3rec_graph.llm.routing import local_model, openai_model
from m3rec_graph.prompts.loader import load_prompt
from m3rec_graph.stages.mote import MoteStage
from m3rec_graph.state import MoteState
from m3rec_graph.storage.memory import read_traits_sync, write_traits_sync
from m3rec_graph.storage.traits import trait_cache_key

BEAUTY = Path(__file__).parents[1] / "fixtures" / "beauty_small"
ITEMS = [
    Item(item_id="a1", title="Red nail polish", brand="OPI", categories=["Makeup > Nails"]),
    Item(item_id="a2", title="Glass nail file"),
    Item(item_id="a3", description="Gentle lavender bath salts for a calm evening"),
    Item(item_id="a1", title="Red nail polish", brand="OPI", categories=["Makeup > Nails"]),  # repeat
    Item(item_id="blank"),  # no text: neutral traits, never sent
]
GOOD: dict[str, Any] = {"strengths": {d.value: 6 for d in Dimension}, "traits": ["bright colour", "long lasting"]}


def completion(content: str | None = None, *, tool_args: str | None = None, finish: str = "stop") -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if tool_args is not None:
        message["tool_calls"] = [
            {"id": "call_1", "type": "function", "function": {"name": "ItemTraits", "arguments": tool_args}}
        ]
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 300, "completion_tokens": 40, "total_tokens": 340},
    }


def result_line(custom_id: str, body: dict[str, Any] | None, status: int = 200, error: Any = None) -> str:
    """One line of a Batch API output file, in OpenAI's documented shape."""
    response = None if body is None else {"status_code": status, "request_id": "req_1", "body": body}
    return json.dumps({"id": f"batch_req_{custom_id[:6]}", "custom_id": custom_id, "response": response, "error": error})


def test_requests_file_has_one_graph_identical_request_per_uncached_item(tmp_path: Path) -> None:
    spec = openai_model("gpt-4o", "mote")
    version = load_prompt("mote").version
    store = InMemoryStore()
    traits = TraitsAnswer.model_validate(GOOD).to_traits()
    write_traits_sync(store, ITEMS[1], traits, model="gpt-4o", prompt_version=version)
    plan = plan_mote_batch(ITEMS, spec, store)
    assert (plan.items, plan.cached, plan.without_text) == (4, 1, 1)
    out = tmp_path / "mote.jsonl"
    written_manifest = write_batch(plan, out)
    assert written_manifest == manifest_path(out) == tmp_path / "mote.manifest.json"
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["custom_id"] for line in lines] == [
        trait_cache_key(ITEMS[0], "gpt-4o", version),
        trait_cache_key(ITEMS[2], "gpt-4o", version),
    ]
    first = lines[0]
    assert first["method"] == "POST" and first["url"] == BATCH_URL == "/v1/chat/completions"
    body = first["body"]
    assert body["model"] == "gpt-4o" and body["temperature"] == 0 and body["max_completion_tokens"] == 300
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    # the prompt is the stage's own rendering
    stage = MoteStage()
    expected = load_prompt("mote").format(**stage.variables(MoteState(item=ITEMS[0])))
    assert [m["content"] for m in body["messages"]] == [m.text for m in expected]
    assert "[a1] Red nail polish | brand: OPI" in body["messages"][1]["content"]
    response_format = body["response_format"]
    assert response_format["type"] == "json_schema"
    schema = TraitsAnswer.model_json_schema()
    assert response_format["json_schema"]["name"] == schema.pop("title") == "ItemTraits"
    assert response_format["json_schema"]["description"] == schema.pop("description")
    assert response_format["json_schema"]["schema"] == schema
    manifest = BatchManifest.read(written_manifest)
    assert manifest.model == "gpt-4o" and manifest.prompt == "m3rec-mote" and manifest.prompt_version == version
    assert manifest.transport == "json_schema"
    assert manifest.items == {line["custom_id"]: item for line, item in zip(lines, ["a1", "a3"], strict=True)}


def test_gpt35_requests_use_a_forced_function_call() -> None:
    plan = plan_mote_batch(ITEMS[:1], openai_model("gpt-3.5-turbo", "mote"), InMemoryStore())
    body = plan.lines[0]["body"]
    assert "response_format" not in body  # OpenAI rejects json_schema for gpt-3.5-turbo
    assert body["tools"][0]["function"]["name"] == "ItemTraits"
    assert body["tool_choice"]["function"]["name"] == "ItemTraits"
    assert plan.manifest.transport == "function_calling"


def test_the_local_model_cannot_be_batched() -> None:
    with pytest.raises(ConfigurationError, match="Batch API is OpenAI's"):
        plan_mote_batch(ITEMS, local_model("mote"), InMemoryStore())


def test_ingest_stores_valid_results_and_reports_the_rest(tmp_path: Path) -> None:
    items = [Item(item_id=f"i{n}", title=f"Product {n}") for n in range(8)]
    plan = plan_mote_batch(items, openai_model("gpt-4o", "mote"), InMemoryStore())
    out = tmp_path / "mote.jsonl"
    write_batch(plan, out)
    keys = [line["custom_id"] for line in plan.lines]
    bad_level = {**GOOD, "strengths": {**GOOD["strengths"], "quality": 14}}
    results = tmp_path / "results.jsonl"
    results.write_text(
        "\n".join(
            [
                result_line(keys[0], completion(json.dumps(GOOD))),
                result_line(keys[1], completion(json.dumps(bad_level))),  # level out of 0-10
                result_line(keys[2], completion('{"strengths": {')),  # not JSON
                result_line(keys[3], completion(json.dumps(GOOD), finish="length")),  # cut off
                result_line(keys[4], {"error": {"message": "Rate limit", "type": "requests"}}, status=429),
                result_line(keys[5], None, error={"code": "batch_expired", "message": "not run in time"}),
                result_line("f" * 64, completion(json.dumps(GOOD))),  # not in this batch
                "this line is not JSON",
                # keys[6] has a valid answer through a function call (gpt-3.5-turbo style)
                result_line(keys[6], completion(None, tool_args=json.dumps(GOOD))),
                result_line(keys[6], completion(json.dumps(GOOD))),  # duplicate
                "",
            ]
        ),
        encoding="utf-8",
    )
    with open_store(f"sqlite:///{tmp_path / 'store.sqlite'}") as store:
        report = ingest_mote_results(results, BatchManifest.read(manifest_path(out)), store)
        # stored exactly like a live MOTE call: the graph finds them under the same namespace and keys
        stored = read_traits_sync(store, items, model="gpt-4o", prompt_version=plan.manifest.prompt_version)
    assert report.stored == [keys[0], keys[6]]
    invalid = dict(report.invalid)
    assert "strengths.quality" in invalid[keys[1]] and "less than or equal to 10" in invalid[keys[1]]
    assert invalid[keys[2]] == "the answer is not valid JSON"
    assert invalid[keys[3]] == "the answer was cut off at the token limit"
    assert invalid["results.jsonl:8"] == "not a JSON line"
    assert "duplicate" in [why for who, why in report.invalid if who == keys[6]][0]
    failed = dict(report.failed)
    assert failed[keys[4]] == "HTTP 429: Rate limit" and failed[keys[5]] == "batch_expired: not run in time"
    assert report.unknown == ["f" * 64]
    assert report.missing == [keys[7]]
    assert set(stored) == {"i0", "i6"}
    assert stored["i0"] == TraitsAnswer.model_validate(GOOD).to_traits()


def test_missing_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(BatchFileError, match="manifest not found"):
        BatchManifest.read(tmp_path / "nope.manifest.json")
    manifest = BatchManifest(
        model="gpt-4o", prompt="m3rec-mote", prompt_version="x", transport="json_schema", items={}, text_hashes={}
    )
    with pytest.raises(BatchFileError, match="results file not found"):
        ingest_mote_results(tmp_path / "none.jsonl", manifest, InMemoryStore())


def test_cli_writes_the_batch_then_ingests_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, store = tmp_path / "batch.jsonl", f"sqlite:///{tmp_path / 'store.sqlite'}"
    main([
        "encode-items", "write", "--dataset", str(BEAUTY), "--users", "3", "--negatives", "19",
        "--out", str(out), "--store", store, "--model", "mote=gpt-4o-mini",
    ])
    printed = capsys.readouterr().out
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    cases = build_requests(load_dataset(BEAUTY), n_users=3, n_negatives=19, seed=0)
    assert len(lines) == len({c.item_id for case in cases for c in case.candidates})
    assert f"wrote {len(lines)} MOTE requests" in printed and "gpt-4o-mini" in printed
    assert "at the batch price" in printed and f"m3rec encode-items ingest RESULTS.jsonl --requests {out}" in printed
    results = tmp_path / "results.jsonl"
    results.write_text("\n".join(result_line(line["custom_id"], completion(json.dumps(GOOD))) for line in lines))
    main(["encode-items", "ingest", str(results), "--requests", str(out), "--store", store])
    assert f"stored {len(lines)} item traits; skipped 0 invalid" in capsys.readouterr().out
    # everything is cached now: a second batch for the same users is empty
    main([
        "encode-items", "write", "--dataset", str(BEAUTY), "--users", "3", "--negatives", "19",
        "--out", str(tmp_path / "again.jsonl"), "--store", store, "--model", "mote=gpt-4o-mini",
    ])
    assert f"wrote 0 MOTE requests for the candidates of 3 users (19 negatives, seed 0) to {tmp_path / 'again.jsonl'} ({len(lines)} items already stored" in capsys.readouterr().out


WRITE_NOTE = (
    "m3rec: note: `m3rec encode-items --batch-api` is deprecated and will be removed in the next release;"
    " use `m3rec encode-items write`\n"
)
INGEST_NOTE = (
    "m3rec: note: `m3rec encode-items --ingest RESULTS` is deprecated and will be removed in the next release;"
    " use `m3rec encode-items ingest RESULTS`\n"
)


def test_cli_old_spellings_write_and_ingest_the_same_with_a_deprecation_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sample = ["--dataset", str(BEAUTY), "--users", "3", "--negatives", "19", "--model", "mote=gpt-4o-mini"]
    main(["encode-items", "write", *sample, "--out", str(tmp_path / "new.jsonl"), "--no-cache"])
    new = capsys.readouterr()
    main(["encode-items", *sample, "--batch-api", "--out", str(tmp_path / "old.jsonl"), "--no-cache"])
    old = capsys.readouterr()
    assert old.err == WRITE_NOTE and new.err == ""
    assert old.out == new.out.replace("new.jsonl", "old.jsonl").replace("new.manifest", "old.manifest")
    assert (tmp_path / "old.jsonl").read_text() == (tmp_path / "new.jsonl").read_text()
    assert (tmp_path / "old.manifest.json").read_text() == (tmp_path / "new.manifest.json").read_text()
    lines = [json.loads(line) for line in (tmp_path / "new.jsonl").read_text().splitlines()]
    results = tmp_path / "results.jsonl"
    results.write_text("\n".join(result_line(line["custom_id"], completion(json.dumps(GOOD))) for line in lines))
    stored = f"stored {len(lines)} item traits; skipped 0 invalid"
    for n, argv in enumerate([
        ["--ingest", str(results), "--requests", str(tmp_path / "old.jsonl")],
        ["--requests", str(tmp_path / "old.jsonl"), f"--ingest={results}"],
    ]):
        main(["encode-items", *argv, "--store", f"sqlite:///{tmp_path / f'store{n}.sqlite'}"])
        done = capsys.readouterr()
        assert done.err == INGEST_NOTE and stored in done.out
    main(["encode-items", "ingest", str(results), "--requests", str(tmp_path / "new.jsonl"),
          "--store", f"sqlite:///{tmp_path / 'store2.sqlite'}"])  # fmt: skip
    done = capsys.readouterr()
    assert done.err == "" and stored in done.out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--dataset", str(BEAUTY)], "encode-items takes a mode: `m3rec encode-items write`"),
        (["ingest", "r.jsonl", "--requests", "missing.jsonl"], "manifest not found"),
        (["write", "--dataset", str(BEAUTY), "--out", "x.jsonl", "--routing", "local"], "Batch API is OpenAI's"),
        (["--ingest", "r.jsonl", "--requests", "missing.jsonl"], "manifest not found"),
        (["--batch-api", "--dataset", str(BEAUTY), "--out", "x.jsonl", "--routing", "local"], "Batch API is OpenAI's"),
    ],
)
def test_cli_bad_encode_items_input_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["encode-items", *argv])
    err = capsys.readouterr().err
    old = {"--ingest": INGEST_NOTE, "--batch-api": WRITE_NOTE}.get(argv[0], "")
    assert err.startswith(old) and "Traceback" not in err
    err = err.removeprefix(old)
    assert exit_info.value.code == 2 and message in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["write", "--dataset", str(BEAUTY)], "the following arguments are required: --out"),
        (["ingest", "r.jsonl"], "the following arguments are required: --requests"),
        (["ingest", "--requests", "q.jsonl"], "the following arguments are required: RESULTS.jsonl"),
        (
            ["ingest", "r.jsonl", "--requests", "q.jsonl", "--dataset", "d", "--users", "3"],
            "unrecognized arguments: --dataset d --users 3 (--dataset, --users are flags of `m3rec encode-items write`)",
        ),
        (
            ["write", "--dataset", str(BEAUTY), "--out", "x.jsonl", "--requests", "q.jsonl"],
            "unrecognized arguments: --requests q.jsonl (--requests is a flag of `m3rec encode-items ingest`)",
        ),
        (["write", "--dataset", str(BEAUTY), "--out", "x.jsonl", "--batch-api"], "unrecognized arguments: --batch-api"),
    ],
)
def test_cli_flags_of_the_other_encode_items_mode_exit_2_with_the_mode_usage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["encode-items", *argv])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert err.startswith(f"usage: m3rec encode-items {argv[0]} ")
    assert err.endswith(f"m3rec encode-items {argv[0]}: error: {message}\n")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--batch-api", "--dataset", str(BEAUTY)], "m3rec encode-items write: error: the following arguments are required: --out"),
        (["--ingest", "r.jsonl"], "m3rec encode-items ingest: error: the following arguments are required: --requests"),
    ],
)
def test_cli_old_encode_items_spellings_fail_as_their_mode_does_after_the_note(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["encode-items", *argv])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.startswith(INGEST_NOTE if argv[0] == "--ingest" else WRITE_NOTE)
    assert err.rstrip().endswith(message) and "Traceback" not in err
