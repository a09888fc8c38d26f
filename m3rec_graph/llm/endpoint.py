"""Send m3rec's model calls to an endpoint of your own: through the chat model factory, not the run context.

The run context names models and settings only; it travels into run metadata and
checkpoints, so it never carries an address, a key or a rate limit. Those belong to
the factory `build_graph(chat_models=...)` builds each stage's model with:

```python
graph = build_graph(chat_models=endpoint_chat_models(
    "http://127.0.0.1:8000/v1", api_key="sk-...", requests_per_second=5, max_inflight_requests=8,
))
out = await graph.ainvoke(request, context=M3RecContext(models={"mope": "my-model", "mote": "my-model", "mar": "my-model"}))
```

For one OpenAI-compatible endpoint for every stage, `OPENAI_BASE_URL` and
`OPENAI_API_KEY` do the same without code (`ChatOpenAI` reads them).
"""

from dataclasses import replace
from typing import Any

from langchain_core.language_models import BaseChatModel

from m3rec_graph.context import ModelSpec
from m3rec_graph.llm.factory import ChatModelFactory, openai_chat_model


def endpoint_chat_models(
    base_url: str | None = None,
    *,
    api_key: str | None = None,
    timeout_s: float | None = None,
    max_retries: int | None = None,
    requests_per_second: float | None = None,
    tokens_per_minute: int | None = None,
    max_inflight_requests: int | None = None,
    tokenizer_model: str | None = None,
    chat_models: ChatModelFactory = openai_chat_model,
) -> ChatModelFactory:
    """Return a chat model factory that builds every routed `ModelSpec` with these endpoint settings.

    Arguments left `None` keep what routing resolved (the registry's and the
    environment's values). The settings mean what the `ModelSpec` fields of the same
    names mean; rate limits are shared per model name, endpoint and limit, as there.

    Args:
        base_url: The OpenAI-compatible base URL (ending in `/v1`).
        api_key: The key sent to it (kept out of every repr, trace and context).
        timeout_s: The client's request timeout.
        max_retries: The OpenAI client's retries of one call (the only retries).
        requests_per_second: Client-side request limit per model.
        tokens_per_minute: Client-side token budget per model.
        max_inflight_requests: At most this many requests in flight to the endpoint.
        tokenizer_model: The OpenAI model whose tiktoken encoding approximates these models.
        chat_models: The factory that builds the changed spec (default: `openai_chat_model`).

    Raises:
        ConfigurationError: When a stage's model is built, a limit `ModelSpec` refuses.
    """
    given: dict[str, Any] = {
        "base_url": base_url,
        "api_key": api_key,
        "timeout_s": timeout_s,
        "max_retries": max_retries,
        "requests_per_second": requests_per_second,
        "tokens_per_minute": tokens_per_minute,
        "max_inflight_requests": max_inflight_requests,
        "tokenizer_model": tokenizer_model,
    }
    changes = {name: value for name, value in given.items() if value is not None}

    def build(spec: ModelSpec) -> BaseChatModel:
        return chat_models(replace(spec, **changes))

    return build
