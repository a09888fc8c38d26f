"""`llm.tokens`: chat prompts counted by langchain-openai's own rules over m3rec's offline encoder."""

from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_openai import ChatOpenAI

from m3rec_graph._internal.bpe import encoding_for, load_encodings
from m3rec_graph.cost.estimate import TokenCounter
from m3rec_graph.evaluation.datasets import load_dataset
from m3rec_graph.llm.registry import registry
from m3rec_graph.llm.tokens import count_messages, count_text, message_counter
from m3rec_graph.prompts.loader import load_prompt
from m3rec_graph.stages.render import dimensions_block
from m3rec_graph.text.item_text import item_text

BEAUTY = Path(__file__).resolve().parents[1] / "fixtures" / "beauty_small"
OPENAI_MODELS = sorted(name for name in registry().models if name.startswith("gpt-"))


def library_count(messages: list[BaseMessage], model: str) -> int:
    """langchain-openai's own count, with tiktoken's encoding lookup (no m3rec code in the way)."""
    chat = ChatOpenAI(model=model, api_key="sk-test", use_responses_api=False)
    return chat.get_num_tokens_from_messages(messages)


@pytest.fixture(scope="module")
def mote_prompt() -> list[BaseMessage]:
    """A real MOTE prompt: the shipped prompt file, a fixture item (as `MoteStage.variables` renders it)."""
    load_encodings()  # the BPE files come from the offline seeding before tiktoken looks them up
    item = next(i for i in load_dataset(BEAUTY).items.values() if item_text(i))
    return load_prompt("mote").format(dimensions=dimensions_block(), item=f"[{item.item_id}] {item_text(item)}")


@pytest.mark.parametrize("model", OPENAI_MODELS)
def test_a_mote_prompt_counts_what_chat_openai_counts(mote_prompt: list[BaseMessage], model: str) -> None:
    expected = library_count(mote_prompt, model)
    assert count_messages(mote_prompt, model) == expected
    assert TokenCounter(model).messages(mote_prompt) == expected  # the dry run's memoised counter
    # Same encoding as the library picks for the name (gpt-6*: its o200k_base fallback).
    assert encoding_for(model).name == registry().models[model].encoding


def test_a_model_the_library_cannot_name_counts_under_its_tokenizer(mote_prompt: list[BaseMessage]) -> None:
    # The library raises for names outside its list; m3rec counts them under o200k_base
    # (the local model's tokenizer is gpt-4o), as before.
    with pytest.raises(NotImplementedError):
        library_count(mote_prompt, "smollm2-135m-instruct")
    assert count_messages(mote_prompt, "smollm2-135m-instruct") == library_count(mote_prompt, "gpt-4o")


def test_the_library_rules_apply_to_names_tool_calls_and_tool_results() -> None:
    messages: list[BaseMessage] = [
        SystemMessage("You are MOTE."),
        HumanMessage("Encode this item.", name="shopper"),
        AIMessage("", tool_calls=[{"name": "lookup", "args": {"item_id": "B00"}, "id": "call_1"}]),
        ToolMessage('{"title": "Nail polish"}', tool_call_id="call_1"),
    ]
    for model in ("gpt-4o", "gpt-3.5-turbo"):
        assert count_messages(messages, model) == library_count(messages, model)
        assert TokenCounter(model).messages(messages) == library_count(messages, model)


def test_special_token_text_in_content_counts_as_text() -> None:
    # tiktoken's plain `encode` (what the library calls) raises on `<|endoftext|>`; OpenAI
    # tokenizes message content as text, and so does m3rec.
    text = "Top coat <|endoftext|> and <|im_start|>system"
    messages: list[BaseMessage] = [HumanMessage(text)]
    with pytest.raises(ValueError, match="special token"):
        library_count(messages, "gpt-4o")
    for model in ("gpt-4o", "gpt-3.5-turbo"):
        encoded = len(encoding_for(model).encode(text, disallowed_special=()))
        assert count_text(text, model) == encoded
        expected = 3 + 3 + count_text("user", model) + encoded
        assert count_messages(messages, model) == TokenCounter(model).messages(messages) == expected


class OneTokenPerCharacter:
    def encode(self, text: str) -> list[int]:
        return [0] * len(text)


def test_the_library_counts_with_the_encoder_it_is_given() -> None:
    """Pins the hook: langchain-openai 1.8.1 finds its encoding in `_get_encoding_model`.

    An upgrade that stops asking it would count with tiktoken's own lookup again
    (and raise on special-token text), so this fails first.
    """
    count = message_counter(OneTokenPerCharacter())
    messages: list[BaseMessage] = [SystemMessage("abc"), HumanMessage("hello")]
    assert count(messages) == 3 + (3 + len("system") + 3) + (3 + len("user") + 5)
