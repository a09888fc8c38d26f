"""`_internal.langsmith_errors`: the one translation of LangSmith SDK errors the hub and the experiments share."""

from langsmith.utils import (
    LangSmithAuthError,
    LangSmithConnectionError,
    LangSmithNotFoundError,
)

from m3rec_graph._internal.langsmith_errors import describe, first_sentence, is_unreachable
from m3rec_graph.evaluation.langsmith_experiment import service_error
from m3rec_graph.prompts.hub import hub_error

URL = "http://127.0.0.1:9"


def test_first_sentence_is_one_line_and_bounded() -> None:
    assert first_sentence(ValueError("Bad key.\n  Traceback: x. More.")) == "Bad key"
    long = first_sentence(ValueError("x" * 500))
    assert len(long) == 163 and long.endswith("...")


def test_both_callers_say_the_same_why() -> None:
    down = LangSmithConnectionError("Connection refused. Retry later.")
    assert is_unreachable(down) and not is_unreachable(LangSmithAuthError("401"))
    expected = f"push m3rec-mope: LangSmith is unreachable at {URL} (Connection refused)"
    assert describe(down, "push m3rec-mope", URL) == expected
    hub = hub_error(down, "push m3rec-mope", URL)
    assert str(hub) == f"{expected}; the local prompt files stay in use" and hub.unreachable
    service = service_error(down, "push m3rec-mope", URL)
    assert str(service) == expected and service.unreachable
    auth = LangSmithAuthError("401 Unauthorized")
    assert "rejected the API key (set LANGSMITH_API_KEY)" in str(hub_error(auth, "a", URL))
    assert "rejected the API key (set LANGSMITH_API_KEY)" in str(service_error(auth, "a", URL))


def test_not_found_has_its_own_reason_only_where_the_caller_gives_one() -> None:
    missing = LangSmithNotFoundError("404 prompt not found")
    assert str(hub_error(missing, "pull m3rec-mar:nope", URL)).startswith(
        "pull m3rec-mar:nope: not found on the LangSmith prompt hub (404 prompt not found)"
    )
    assert "LangSmith error LangSmithNotFoundError" in str(service_error(missing, "upload", URL))
