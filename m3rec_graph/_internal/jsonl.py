"""Reading JSON-lines files with errors that name the file and line."""

import json
from collections.abc import Iterable, Iterator
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
