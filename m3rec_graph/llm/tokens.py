"""Token counting with tiktoken (the encodings load offline: see `_internal.bpe`)."""

from collections.abc import Sequence

from langchain_core.messages import BaseMessage

from m3rec_graph._internal.bpe import encoding_for

_OPENAI_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool"}


def count_text(text: str, model: str) -> int:
    """Count the tokens of `text` under `model`'s encoding."""
    return len(encoding_for(model).encode(text, disallowed_special=()))


def count_messages(messages: Sequence[BaseMessage], model: str) -> int:
    """Count chat prompt tokens as OpenAI bills them: 3 per message + role + content, + 3 for the reply."""
    total = 3
    for message in messages:
        role = _OPENAI_ROLES.get(message.type, message.type)
        total += 3 + count_text(role, model) + count_text(message.text, model)
    return total
