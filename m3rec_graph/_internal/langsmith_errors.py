"""One-line messages for LangSmith SDK errors (the prompt hub and the experiments share them).

The SDK's messages run over several lines and end in a traceback of the HTTP call; the CLI
prints one line that says what failed, why in words a user can act on, and the SDK's
first sentence. Each caller raises its own subclass of `LangSmithFailure`.
"""

from langsmith.utils import (
    LangSmithAuthError,
    LangSmithConnectionError,
    LangSmithError,
    LangSmithNotFoundError,
)

from m3rec_graph.errors import M3RecError

_MAX_SENTENCE = 160


class LangSmithFailure(M3RecError, RuntimeError):
    """Base of the errors raised when LangSmith could not be reached or refused."""

    def __init__(self, message: str, *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable
        """True when LangSmith could not be reached at all (no HTTP answer)."""


def first_sentence(exc: BaseException) -> str:
    """Return the first sentence of `exc`'s message on one line, cut at 160 characters."""
    text = " ".join(str(exc).split())
    head = text.split(". ", 1)[0].rstrip(".")
    return head[:_MAX_SENTENCE] + ("..." if len(head) > _MAX_SENTENCE else "")


def is_unreachable(exc: LangSmithError) -> bool:
    """True when LangSmith could not be reached at all (no HTTP answer)."""
    return isinstance(exc, LangSmithConnectionError)


def describe(
    exc: LangSmithError, action: str, api_url: str, *, not_found: str | None = None
) -> str:
    """Return `"<action>: <why> (<the SDK's first sentence>)"` for a LangSmith error.

    Args:
        exc: The SDK's error.
        action: What was being done, e.g. `pull m3rec-mar:staging`.
        api_url: The LangSmith endpoint, named when it cannot be reached.
        not_found: The reason given for a 404 (`LangSmithNotFoundError`); without it a
            404 reads like any other refusal.
    """
    if is_unreachable(exc):
        why = f"LangSmith is unreachable at {api_url}"
    elif isinstance(exc, LangSmithAuthError):
        why = "LangSmith rejected the API key (set LANGSMITH_API_KEY)"
    elif not_found is not None and isinstance(exc, LangSmithNotFoundError):
        why = not_found
    else:
        why = f"LangSmith error {type(exc).__name__}"
    return f"{action}: {why} ({first_sentence(exc)})"
