"""Token counting: tiktoken for text, langchain-openai's own count for chat prompts.

Text is encoded with the tiktoken encoding `_internal.bpe.encoding_for` picks
(`o200k_base` for names tiktoken does not know) and loads offline. Special-token
text in content (an item description with `<|endoftext|>` in it) counts as
text, as OpenAI tokenizes message content; tiktoken's plain `encode` raises on it.

A chat prompt is counted by `ChatOpenAI.get_num_tokens_from_messages`: the
library's rules for what Chat Completions bills (3 tokens a message, its role
and content, a name and tool calls, 3 more to prime the reply), run over the
encoder above. The answer schema and tool schemas are not part of it (the
library ignores `tools=` with a warning): callers count their JSON with
`count_text` (`rate_limits.request_tokens`, the dry run's schema tokens).
"""

import functools
from collections.abc import Callable, Sequence
from typing import Protocol, cast

import tiktoken
from langchain_core.messages import BaseMessage
from langchain_openai import ChatOpenAI
from pydantic import PrivateAttr

from m3rec_graph._internal.bpe import encoding_for


class TextEncoder(Protocol):
    """What the library's message count asks of an encoding: `len(encoder.encode(text))`."""

    def encode(self, text: str) -> Sequence[int]:
        """Return the tokens of `text`."""


class PlainTextEncoder:
    """A tiktoken encoding whose `encode` reads special-token text as ordinary text."""

    def __init__(self, encoding: tiktoken.Encoding) -> None:
        self.encoding = encoding

    @property
    def name(self) -> str:
        """The encoding's name (`o200k_base`, `cl100k_base`)."""
        return self.encoding.name

    def encode(self, text: str) -> list[int]:
        """Return the tokens of `text`."""
        return self.encoding.encode(text, disallowed_special=())


@functools.cache
def text_encoder(model: str) -> PlainTextEncoder:
    """Return the encoder of `model`'s encoding (loaded through the offline BPE seeding)."""
    return PlainTextEncoder(encoding_for(model))


def count_text(text: str, model: str) -> int:
    """Count the tokens of `text` under `model`'s encoding."""
    return len(text_encoder(model).encode(text))


_FORMAT_MODEL = "gpt-4o"
"""The model name the library sees: it only selects the message format.

`get_num_tokens_from_messages` (langchain-openai 1.8.1) takes the model's name for
two things. Its encoding: `tiktoken.encoding_for_model`, else `o200k_base` for
gpt-4o/gpt-4.1/gpt-5/gpt-6 prefixes and `cl100k_base` for anything else; for the
registry's OpenAI models that is the encoding `encoding_for` picks (gpt-6* names,
which tiktoken 0.14 does not know, are `o200k_base` both ways), but for other names
(`smollm2-135m-instruct`, `ft:gpt-4o-mini:...`, `chatgpt-4o-latest`) it would be
`cl100k_base` where `encoding_for` says `o200k_base`. And its message format: 3
tokens a message and 1 a name for gpt-3.5-turbo/gpt-4*/gpt-5*/gpt-6*/o1/o3/o4,
`NotImplementedError` for any other name. So the counter always presents itself as
gpt-4o, whose format is the one every model m3rec calls uses, and brings the
encoder of the model actually counted (`_OpenAIMessageCount._get_encoding_model`).
"""

_NO_CLIENT = object()
"""Stands in for the OpenAI clients: a counter sends nothing, so it builds no HTTP client (no I/O)."""


class _OpenAIMessageCount(ChatOpenAI):
    """`ChatOpenAI.get_num_tokens_from_messages` over m3rec's encoder instead of tiktoken's lookup."""

    _encoder: TextEncoder = PrivateAttr()

    def _get_encoding_model(self) -> tuple[str, tiktoken.Encoding]:
        # Where the library finds (model name, encoding); it only calls `len(encoding.encode(text))`.
        return self.model_name, cast("tiktoken.Encoding", self._encoder)


def message_counter(encoder: TextEncoder) -> Callable[[Sequence[BaseMessage]], int]:
    """Return langchain-openai's chat prompt count (`get_num_tokens_from_messages`) over `encoder`."""
    counter = _OpenAIMessageCount(
        model=_FORMAT_MODEL,
        api_key="not-used-no-request-is-sent",
        client=_NO_CLIENT,
        async_client=_NO_CLIENT,
        use_responses_api=False,
    )
    counter._encoder = encoder

    def count(messages: Sequence[BaseMessage]) -> int:
        # Offline: an image given by URL is not fetched (it counts nothing).
        return counter.get_num_tokens_from_messages(messages, allow_fetching_images=False)

    return count


@functools.cache
def _model_counter(model: str) -> Callable[[Sequence[BaseMessage]], int]:
    return message_counter(text_encoder(model))


def count_messages(messages: Sequence[BaseMessage], model: str) -> int:
    """Count a chat prompt as OpenAI bills it (`ChatOpenAI.get_num_tokens_from_messages`) under `model`'s encoding."""
    return _model_counter(model)(messages)
