"""CLI input handling: bad requests exit with code 2 and one line, never a traceback."""

import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from m3rec_graph.cli.app import build_parser, main, parse, upgrade_old_spelling

GOOD_ITEM = {"item_id": "a", "title": "Lip balm"}


def run_cli(tmp_path: Path, payload: Any, *extra: str) -> tuple[int, str]:
    path = tmp_path / "request.json"
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload))
    with pytest.raises(SystemExit) as exit_info:
        main(["recommend", "--request", str(path), "--routing", "local", *extra])
    return int(exit_info.value.code or 0), str(path)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"user_id": "u", "history": [], "candidates": []}, "candidates"),
        ({"user_id": "u", "history": [], "candidates": [GOOD_ITEM, GOOD_ITEM]}, "duplicate candidate"),
        ({"user_id": "u", "history": [{"title": "x"}], "candidates": [GOOD_ITEM]}, "history.0.item_id"),
        ({"user_id": "u", "history": "nope", "candidates": [GOOD_ITEM]}, "history"),
        ({"user_id": 7, "history": [], "candidates": [GOOD_ITEM]}, "user_id"),
        ({"history": [], "candidates": [GOOD_ITEM]}, "user_id"),
        ({"user_id": "u", "history": [], "candidates": [GOOD_ITEM], "extra": 1}, "unknown request field"),
        ([1, 2], "JSON object"),
        ("{not json", "not valid UTF-8 JSON"),
    ],
)
def test_bad_request_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], payload: Any, message: str
) -> None:
    code, _ = run_cli(tmp_path, payload)
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_missing_file_and_bad_override_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as missing:
        main(["recommend", "--request", str(tmp_path / "nope.json")])
    assert missing.value.code == 2
    ok = {"user_id": "u", "history": [], "candidates": [GOOD_ITEM]}
    code, _ = run_cli(tmp_path, ok, "--model", "ranker=gpt-4o")
    assert code == 2
    assert "STAGE=MODEL" in capsys.readouterr().err


def test_installed_entry_point_reports_bad_input_without_traceback(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"user_id": "u", "history": [], "candidates": []}))
    done = subprocess.run(
        [sys.executable, "-m", "m3rec_graph.cli", "recommend", "--request", str(path)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("m3rec: error: invalid request: candidates")
    assert "Traceback" not in done.stderr


def test_graph_command_prints_the_mermaid_diagram(capsys: pytest.CaptureFixture[str]) -> None:
    main(["graph"])
    out = capsys.readouterr().out
    for edge in (
        "prepare -.-> mope", "prepare -.-> mote", "collect_traits -.-> mar", "mar -.-> rank",
        "mote -.-> mote", "mote -.-> mote_fallback", "mote_fallback --> collect_traits",  # re-ask, fallback
    ):  # fmt: skip
        assert edge in out


def test_the_command_tree(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as shown:
        main(["--help"])
    assert shown.value.code == 0
    top = capsys.readouterr().out
    for command in ("recommend", "graph", "demo", "serve", "fetch-model", "eval", "models", "cost",
                    "encode-items", "prompts"):  # fmt: skip
        assert f"\n    {command} " in top
    for group, modes in (("cost", ("estimate", "measure")), ("encode-items", ("write", "ingest")),
                         ("prompts", ("push", "pull"))):  # fmt: skip
        with pytest.raises(SystemExit):
            main([group, "--help"])
        listed = capsys.readouterr().out
        assert listed.startswith(f"usage: m3rec {group} [-h] MODE ...")
        assert all(f"\n    {mode} " in listed for mode in modes)


@pytest.mark.parametrize("group", ["cost", "encode-items", "prompts"])
def test_a_group_without_its_mode_exits_2(group: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([group])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.endswith(f"m3rec {group}: error: the following arguments are required: MODE\n")


def test_a_flag_the_command_does_not_take_is_refused_by_that_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["prompts", "push", "--dir", "x"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("usage: m3rec prompts push ")
    assert err.endswith("m3rec prompts push: error: unrecognized arguments: --dir (--dir is a flag of `m3rec prompts pull`)\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["recommend", "--request", "r.json", "--bogus"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.endswith("m3rec recommend: error: unrecognized arguments: --bogus\n")


def documented_commands() -> list[str]:
    """Every `m3rec ...` line of the README's and docs' code blocks (continuations joined)."""
    root = Path(__file__).parents[2]
    commands = []
    for path in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        in_block, pending = False, ""
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("```"):
                in_block = not in_block
                continue
            line = pending + line.split(" #")[0].strip()
            pending = line.removesuffix("\\") + " " if in_block and line.endswith("\\") else ""
            if in_block and not pending and line.startswith("m3rec "):
                commands.append(line)
    return commands


def test_every_documented_command_parses_in_the_current_spelling(capsys: pytest.CaptureFixture[str]) -> None:
    commands = documented_commands()
    assert any(c.startswith("m3rec cost estimate ") for c in commands)
    assert any(c.startswith("m3rec encode-items ingest ") for c in commands)
    for command in commands:
        if "[" in command:  # a synopsis: m3rec recommend --request request.json [--routing PRESET] ...
            continue
        argv = shlex.split(command)[1:]
        args = parse(build_parser(), upgrade_old_spelling(argv))
        assert callable(args.func), command
        assert capsys.readouterr().err == "", command  # no deprecation note
