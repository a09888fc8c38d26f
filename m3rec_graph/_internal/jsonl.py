"""Reading JSON-lines files with errors that name the file and line; resuming append-only ones."""

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


def json_lines(
    lines: Iterable[str], source: object, error: type[Exception], hint: str = ""
) -> Iterator[tuple[str, Any]]:
    """Yield `(where, value)` for each non-blank line; raise `error("file:line: ...")` on bad JSON.

    Args:
        lines: The file's lines (an open text handle works).
        source: What `where` names, usually the path.
        error: The typed error to raise, so each caller keeps its own exception type.
        hint: Appended to the message, e.g. "; fix or delete the line".
    """
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{source}:{line_no}"
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise error(f"{where}: invalid JSON ({exc.msg}){hint}") from None
        yield where, value


def complete_lines(path: Path) -> list[str]:
    """Return the complete lines of an append-only JSONL file, cutting off a torn last line.

    A last line without its newline is what a process killed mid-write leaves: it is
    truncated off the file (so the record is recomputed and appended whole). A missing
    file has no lines.
    """
    if not path.exists():
        return []
    data = path.read_bytes()
    complete = data.rfind(b"\n") + 1
    if complete < len(data):
        with path.open("r+b") as handle:
            handle.truncate(complete)
    return data[:complete].decode("utf-8").splitlines()
