"""Bad input: each case is handled correctly or refused with a typed, one-line error.

Covers the API (`parse_request`, `graph.ainvoke` with scripted models) and the
CLI (exit code 2, one line on stderr), plus property-based tests of request
parsing and of MAR's id-coverage check.
"""

import json
import re
import string
from collections import Counter
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from m3rec_graph import (
    InMemoryTraitCache,
    InvalidRequestError,
    RecommendationRequest,
    build_graph,
    context_for,
)
from m3rec_graph.cli.app import main
from m3rec_graph.contracts.request import MAX_CANDIDATES, parse_request
from m3rec_graph.contracts.schemas import (
    AnswerContract,
    Dimension,
    Item,
    listwise_contract,
    per_id_listwise_model,
    per_id_profile_model,
    profile_contract,
)
from m3rec_graph.llm.tokens import count_text
from m3rec_graph.stages.mar import answered_ids, check_covers_exactly
from m3rec_graph.state import RecInput
from m3rec_graph.text.item_text import (
    FIELD_LIMITS,
    FIELD_TOKEN_LIMITS,
    clean_text,
    item_text,
    truncations,
)
from tests.fakes import ScriptedModels, candidate_ids_in, default_responder, item_id_in

HISTORY = [{"item_id": "h1", "title": "Red nail polish"}, {"item_id": "h2", "title": "Glitter top coat"}]
CTX = context_for("hybrid", mar_chunk_size=10)


def request(candidates: list[dict[str, Any]], history: list[dict[str, Any]] | None = None, **kw: Any) -> dict[str, Any]:
    return {"user_id": "u1", "history": HISTORY if history is None else history, "candidates": candidates, **kw}


def items(n: int, prefix: str = "c") -> list[dict[str, Any]]:
    return [{"item_id": f"{prefix}{i}", "title": f"Product {i}"} for i in range(n)]


async def run(req: dict[str, Any], models: ScriptedModels | None = None) -> tuple[dict[str, Any], ScriptedModels]:
    models = models or ScriptedModels(default_responder())
    graph = build_graph(chat_models=models, trait_cache=InMemoryTraitCache())
    out: dict[str, Any] = await graph.ainvoke(cast(RecInput, req), context=CTX)
    return out, models


def assert_permutation(out: dict[str, Any], req: dict[str, Any]) -> None:
    ids = [r.item_id for r in out["ranking"]]
    assert sorted(ids) == sorted(c["item_id"] for c in req["candidates"])
    assert [r.rank for r in out["ranking"]] == list(range(1, len(ids) + 1))


def assert_one_line_error(exc: BaseException) -> None:
    message = str(exc)
    assert message and "\n" not in message and "\r" not in message
    assert message.isprintable()


# --- sizes -------------------------------------------------------------------------------------


async def test_empty_history_ranks_without_mope() -> None:
    req = request(items(4), history=[])
    out, models = await run(req)
    assert_permutation(out, req)
    assert models.stage_calls("mope") == []
    assert {"stage": "mope", "item_id": None, "reason": "empty history"} in out["degraded"]


async def test_empty_candidate_list_is_refused() -> None:
    with pytest.raises(InvalidRequestError, match="candidates") as info:
        await run(request([]))
    assert_one_line_error(info.value)


async def test_single_candidate_gets_a_one_item_ranking() -> None:
    req = request(items(1))
    out, models = await run(req)
    assert [r.item_id for r in out["ranking"]] == ["c0"] and out["ranking"][0].rank == 1
    (mar,) = models.stage_calls("mar")
    assert candidate_ids_in(mar[2]) == ["c0"]
    assert out["degraded"] == []


async def test_500_candidates_are_scored_in_chunks() -> None:
    req = request(items(500))
    out, models = await run(req)
    assert_permutation(out, req)
    mar = models.stage_calls("mar")
    assert len(mar) == 50
    shown = [i for _, _, prompt in mar for i in candidate_ids_in(prompt)]
    assert sorted(shown) == sorted(f"c{i}" for i in range(500))  # each candidate in exactly one chunk
    assert len(models.stage_calls("mote")) == 500
    assert out["degraded"] == []


def test_more_than_the_candidate_limit_is_refused() -> None:
    with pytest.raises(InvalidRequestError, match=f"at most {MAX_CANDIDATES}"):
        parse_request(request(items(MAX_CANDIDATES + 1)))


# --- text ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bare",
    [
        {"item_id": "bare"},
        {"item_id": "bare", "title": "   ", "description": "\n\t", "categories": ["  "]},
        {"item_id": "bare", "title": None, "brand": None, "review": None, "categories": []},
    ],
)
async def test_items_without_text_get_neutral_traits_and_are_flagged(bare: dict[str, Any]) -> None:
    req = request([bare, *items(2)], history=[{"item_id": "h0"}, *HISTORY])
    out, models = await run(req)
    assert_permutation(out, req)
    assert "bare" not in [item_id_in(p) for _, _, p in models.stage_calls("mote")]
    assert {"stage": "mote", "item_id": "bare", "reason": "item has no text"} in out["degraded"]
    # a history item without text is still shown to MOPE (by id) and MOPE answers
    assert "[h0]" in models.stage_calls("mope")[0][2]


HUGE = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 3600  # ~200,000 characters


async def test_a_200000_character_description_is_cut_before_the_model() -> None:
    assert len(HUGE) >= 200_000
    huge = {"item_id": "huge", "title": "Big", "description": HUGE, "review": HUGE}
    req = request([huge, *items(2)], history=[{"item_id": "h-huge", "description": HUGE}, *HISTORY])
    out, models = await run(req)
    assert_permutation(out, req)

    (mote,) = [p for _, _, p in models.stage_calls("mote") if item_id_in(p) == "huge"]
    item_block = mote.rsplit("<item>", 1)[1].split("</item>", 1)[0]
    assert len(item_block) < FIELD_LIMITS["description"] + FIELD_LIMITS["review"] + 100
    assert len(mote) < 5_000 and count_text(mote, "gpt-4o") < 1_500
    (mope,) = models.stage_calls("mope")
    assert len(mope[2]) < 5_000
    (mar,) = models.stage_calls("mar")
    assert len(mar[2]) < 5_000
    # the cut is recorded, field by field
    notes = truncations(Item.model_validate(huge))
    assert [note.split(":")[0] for note in notes] == ["description", "review"]
    for note, field in zip(notes, ("description", "review"), strict=True):
        kept = int(re.fullmatch(rf"{field}: {len(HUGE)} -> (\d+) characters", note).group(1))  # type: ignore[union-attr]
        assert FIELD_LIMITS[field] - 5 <= kept <= FIELD_LIMITS[field]
    assert truncations(Item(item_id="small", title="Lip balm", description="Soft.")) == []


@pytest.mark.parametrize(
    "dense",
    ["😀" * 5000, "漢字" * 5000, "\U0001f3f3\ufe0f\u200d\U0001f308" * 2000, "aZ3kQ9x/P+" * 20000],
)
def test_dense_text_is_cut_to_the_token_budget(dense: str) -> None:
    item = Item(item_id="d", description=dense)
    text = clean_text(dense, FIELD_LIMITS["description"], FIELD_TOKEN_LIMITS["description"])
    assert count_text(text, "gpt-4o") <= FIELD_TOKEN_LIMITS["description"] + 1
    assert len(text) <= FIELD_LIMITS["description"] and text.endswith("…")
    assert "\ufffd" not in text  # no character split in half at the token boundary
    assert truncations(item) and text in item_text(item)


def test_ordinary_prose_is_not_cut_by_the_token_budget() -> None:
    prose = ("A gentle, fragrance-free moisturiser for dry and sensitive skin, with ceramides. " * 8)[:599]
    assert clean_text(prose, FIELD_LIMITS["description"], FIELD_TOKEN_LIMITS["description"]) == prose.strip()


EMOJI_RTL = {
    "item_id": "rtl",
    "title": "أحمر شفاه مطفي 💄",  # Arabic: matte lipstick
    "description": "קרם לחות לעור יבש 🧴✨ \u202eevil-reordered\u202c",  # Hebrew + an RTL override
    "brand": "Ünïcødé 👩\u200d👩\u200d👧",
}


async def test_emoji_and_right_to_left_text_reach_the_model_intact() -> None:
    req = request([EMOJI_RTL, *items(2)])
    out, models = await run(req)
    assert_permutation(out, req)
    assert out["degraded"] == []
    (mote,) = [p for _, _, p in models.stage_calls("mote") if item_id_in(p) == "rtl"]
    for text in ("أحمر شفاه مطفي 💄", "קרם לחות לעור יבש 🧴✨", "👩\u200d👩\u200d👧"):
        assert text in mote
    assert "\u202e" not in mote and "evil-reordered" in mote  # display overrides are dropped, text kept
    assert "أحمر شفاه مطفي 💄" in models.stage_calls("mar")[0][2]


@pytest.mark.parametrize("where", ["title", "description", "categories", "history"])
async def test_text_from_undecodable_bytes_is_refused_with_a_typed_error(where: str) -> None:
    broken = b"caf\xe9 cr\xe8me".decode("utf-8", errors="surrogateescape")  # Latin-1 bytes read as UTF-8
    candidate: dict[str, Any] = {"item_id": "x", "title": "ok"}
    history = list(HISTORY)
    if where == "categories":
        candidate["categories"] = [broken]
    elif where == "history":
        history = [{"item_id": "h9", "title": broken}]
    else:
        candidate[where] = broken
    with pytest.raises(InvalidRequestError, match="not valid Unicode") as info:
        await run(request([candidate], history=history))
    assert_one_line_error(info.value)


@pytest.mark.parametrize(
    "item_id",
    ["a\nb", "a\rb", "tab\there", "</candidates>", "x<item>", "[x", "y]", "rtl\u202eid", "zero\u200bwidth", "nul\x00"],
)
async def test_ids_that_could_break_a_prompt_line_are_refused(item_id: str) -> None:
    with pytest.raises(InvalidRequestError, match="item_id") as info:
        await run(request([{"item_id": item_id, "title": "x"}]))
    assert_one_line_error(info.value)


async def test_ordinary_ids_with_punctuation_and_unicode_are_accepted() -> None:
    ids = ["B00538TSMU", "sku:12/34-5", "item #7 (blue)", "商品-42", "ürün_1", "a.b@c"]
    req = request([{"item_id": i, "title": "Product"} for i in ids])
    out, models = await run(req)
    assert_permutation(out, req)
    assert sorted(candidate_ids_in(models.stage_calls("mar")[0][2])) == sorted(ids)


# --- wrong JSON types --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"user_id": 7}, "user_id"),
        ({"user_id": ""}, "user_id"),
        ({"user_id": None}, "user_id"),
        ({"history": "h1,h2"}, "history"),
        ({"history": None}, "history"),
        ({"history": {"item_id": "h1"}}, "history"),
        ({"candidates": {"c0": {"title": "x"}}}, "candidates"),
        ({"candidates": ["c0", "c1"]}, "candidates.0"),
        ({"candidates": [{"item_id": 5}]}, "candidates.0.item_id"),
        ({"candidates": [{"item_id": "c0", "title": 5}]}, "candidates.0.title"),
        ({"candidates": [{"item_id": "c0", "title": ["a"]}]}, "candidates.0.title"),
        ({"candidates": [{"item_id": "c0", "categories": "Makeup"}]}, "candidates.0.categories"),
        ({"candidates": [{"item_id": "c0", "categories": [1, 2]}]}, "candidates.0.categories.0"),
        ({"candidates": [{"item_id": "c0", "price": 3}]}, "candidates.0.price"),
        ({"k": "3"}, "k"),
        ({"k": True}, "k"),
        ({"k": 2.5}, "k"),
        ({"k": 0}, "k"),
        ({"k": []}, "k"),
        ({"ranking": []}, "unknown request field"),
    ],
)
def test_wrong_json_types_name_the_field_in_one_line(change: dict[str, Any], where: str) -> None:
    data = {**request(items(2)), **change}
    with pytest.raises(InvalidRequestError) as info:
        parse_request(data)
    assert where in str(info.value)
    assert_one_line_error(info.value)


@pytest.mark.parametrize("value", [None, [], "request", 3, 2.5, True, [{"user_id": "u"}]])
def test_a_request_that_is_not_an_object_is_refused(value: Any) -> None:
    with pytest.raises(InvalidRequestError, match="JSON object"):
        parse_request(value)


def test_field_names_are_escaped_in_messages_and_may_be_any_hashable() -> None:
    with pytest.raises(InvalidRequestError) as info:
        parse_request({**request(items(1)), "bad\nfield": 1, 3: "x", None: 0})
    assert_one_line_error(info.value)
    assert "bad\\nfield" in str(info.value)


# --- the CLI -----------------------------------------------------------------------------------


def run_cli(tmp_path: Path, raw: bytes, *extra: str) -> int:
    path = tmp_path / "request.json"
    path.write_bytes(raw)
    with pytest.raises(SystemExit) as exit_info:
        main(["recommend", "--request", str(path), "--routing", "local", *extra])
    return int(exit_info.value.code or 0)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"user_id": "u", "history": [], "candidates": [{"item_id": "a", "title": "caf\xe9"}]}', "not valid UTF-8"),
        (b"\xff\xfe{\x00}\x00", "not valid UTF-8"),
        (b'{"user_id": "u", "history": [], "candidates": [{"item_id": "a", "title": "\\udcff"}]}', "not valid Unicode"),
        (b'{"user_id": "u", "history": [], "candidates": [{"item_id": "a\\nb"}]}', "item_id"),
        (b'{"user_id": "u", "history": [], "candidates": [{"item_id": "a"}], "k": true}', "k: "),
        (b'{"user_id": "u", "history": [], "candidates": [{"item_id": "a"}], "k": "2"}', "k: "),
        (b"", "not valid UTF-8 JSON"),
    ],
)
def test_cli_refuses_bad_bytes_and_types_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], raw: bytes, message: str
) -> None:
    assert run_cli(tmp_path, raw) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err


# --- properties --------------------------------------------------------------------------------

JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=12)  # surrogates included
ITEMISH = st.fixed_dictionaries(
    {"item_id": st.one_of(ANY_TEXT, JSON_SCALARS)},
    optional={
        "title": st.one_of(ANY_TEXT, JSON_SCALARS),
        "description": ANY_TEXT,
        "categories": st.one_of(st.lists(ANY_TEXT, max_size=3), JSON_VALUES),
        "extra": JSON_SCALARS,
    },
)
REQUESTISH = st.fixed_dictionaries(
    {},
    optional={
        "user_id": st.one_of(ANY_TEXT, JSON_SCALARS),
        "history": st.one_of(st.lists(ITEMISH, max_size=3), JSON_VALUES),
        "candidates": st.one_of(st.lists(ITEMISH, max_size=4), JSON_VALUES),
        "k": st.one_of(st.integers(-2, 5), JSON_SCALARS),
        "other": JSON_VALUES,
    },
)


def _parses_or_refuses(data: Any) -> None:
    try:
        parsed = parse_request(data)
    except InvalidRequestError as exc:
        assert_one_line_error(exc)
        return
    assert isinstance(parsed, RecommendationRequest)
    ids = [c.item_id for c in parsed.candidates]
    assert ids and len(set(ids)) == len(ids)
    for item in [*parsed.history, *parsed.candidates]:
        assert item.item_id.isprintable() and not set(item.item_id) & set("<>[]")
        item_text(item).encode("utf-8")  # renderable and sendable


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(JSON_VALUES)
def test_any_json_value_parses_or_raises_invalid_request(data: Any) -> None:
    _parses_or_refuses(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(REQUESTISH)
def test_any_request_shaped_value_parses_or_raises_invalid_request(data: dict[str, Any]) -> None:
    _parses_or_refuses(data)


@settings(max_examples=200, deadline=None)
@given(st.text(st.characters(codec=None, exclude_categories=()), max_size=300))
def test_rendered_text_is_one_clean_line(text: str) -> None:
    cleaned = clean_text(text, 200, 100)
    assert "\n" not in cleaned and "\r" not in cleaned
    assert not re.search(r"[<＜﹤]\s*[/／]?\s*(history|item|candidates?|profile)\b", cleaned, re.IGNORECASE)
    cleaned.encode("utf-8")
    assert len(cleaned) <= 200


SAFE_ID = st.text(string.ascii_letters + string.digits + "-_:./ #é漢", min_size=1, max_size=8).filter(
    lambda s: s.strip() == s
)
IDS = st.lists(SAFE_ID, min_size=1, max_size=8, unique=True)


@settings(max_examples=300, deadline=None)
@given(IDS, st.data())
def test_ranking_check_accepts_exactly_the_permutations(ids: list[str], data: st.DataObject) -> None:
    answered = data.draw(
        st.one_of(
            st.permutations(ids),
            st.lists(st.sampled_from([*ids, "zz-unknown"]), max_size=len(ids) + 2),
        )
    )
    verdict = check_covers_exactly(ids, list(answered))
    is_permutation = Counter(answered) == Counter(ids)
    assert (verdict is None) == is_permutation
    if verdict is not None:
        named = re.search(r"item_id '([^']*)'", verdict)
        assert named is not None
        offender = named.group(1)
        kind = verdict.replace(named.group(0), "")  # the wording, not the id (an id may be "unknown")
        if "unknown" in kind:
            assert offender not in ids
        elif "more than once" in kind:
            assert Counter(answered)[offender] > 1
        else:
            assert "missing" in kind and offender in ids and offender not in answered


def _errors(model: Any, answer: Any) -> list[tuple[Any, str]] | None:
    try:
        AnswerContract.of(model).validate_answer(answer)
    except ValidationError as exc:
        return sorted((e["loc"], e["msg"]) for e in exc.errors())
    return None


EVIDENCE = st.one_of(
    st.lists(st.one_of(SAFE_ID, st.sampled_from(['q"uo\'te', "ü\\x", "zz-unknown"]), st.integers()), max_size=7),
    st.just("not a list"),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(SAFE_ID, st.sampled_from(['q"uo\'te', "ü\\x"])), min_size=1, max_size=6, unique=True), st.data())
def test_profile_model_is_the_per_id_model_in_validation_and_json_schema(ids: list[str], data: st.DataObject) -> None:
    """The cheap per-user MOPE model (an evidence check on a shared model) equals a Literal of the ids."""
    answer: dict[str, Any] = {
        dim.value: {
            "strength": data.draw(st.sampled_from([5, 11])),
            "evidence": data.draw(st.one_of(st.lists(st.sampled_from(ids), max_size=3), EVIDENCE)),
        }
        for dim in Dimension
    }
    answer["summary"] = data.draw(st.sampled_from(["Likes colour.", ""]))
    fast, per_id = profile_contract(ids), per_id_profile_model(tuple(ids))
    assert _errors(fast, answer) == _errors(per_id, answer)
    assert fast.json_schema() == per_id.model_json_schema()
    assert json.dumps(fast.json_schema()) == json.dumps(per_id.model_json_schema())  # same key order
    if _errors(fast, answer) is None:
        assert fast.validate_answer(answer).model_dump() == per_id.model_validate(answer).model_dump()


@settings(max_examples=200, deadline=None)
@given(IDS, st.data())
def test_listwise_model_is_the_per_id_model_in_validation_and_json_schema(ids: list[str], data: st.DataObject) -> None:
    """The cheap per-chunk model (a dict of judgements plus an id check) equals one field per id."""
    keys = data.draw(st.lists(st.sampled_from([*ids, "zz-unknown"]), max_size=len(ids) + 2))
    bad_score = data.draw(st.booleans())
    judgement: dict[str, Any] = {"score": 11 if bad_score else 5, "matched": [], "rationale": "ok"}
    answer = {"scores": {k: dict(judgement) for k in keys}}
    fast, per_id = listwise_contract(ids), per_id_listwise_model(ids)
    assert _errors(fast, answer) == _errors(per_id, answer)
    assert fast.json_schema() == per_id.model_json_schema()
    if _errors(fast, answer) is None:
        dumped = fast.validate_answer(answer).model_dump(by_alias=True)["scores"]
        assert dumped == per_id.model_validate(answer).model_dump(by_alias=True)["scores"]


@settings(max_examples=200, deadline=None)
@given(IDS, st.data())
def test_raw_answer_keys_and_schema_agree_with_the_check(ids: list[str], data: st.DataObject) -> None:
    keys = data.draw(st.lists(st.sampled_from([*ids, "zz-unknown"]), max_size=len(ids) + 2))
    judgement = {"score": 5, "matched": [], "rationale": "ok"}
    raw = '{"scores": {' + ", ".join(f"{json.dumps(k)}: {json.dumps(judgement)}" for k in keys) + "}}"
    assert answered_ids(raw) == keys  # duplicates kept, in order
    model = listwise_contract(ids)
    try:
        model.validate_answer(json.loads(raw))
        schema_ok = True
    except ValueError:
        schema_ok = False
    # the schema sees the last value per key; only the raw keys show repeats
    assert schema_ok == (set(keys) == set(ids))
    assert (schema_ok and check_covers_exactly(ids, keys) is None) == (Counter(keys) == Counter(ids))


# --- candidate priors --------------------------------------------------------------------------


def test_priors_are_read_when_every_candidate_carries_one() -> None:
    parsed = parse_request(request([{"item_id": "a", "prior": 2}, {"item_id": "b", "prior": -0.5}]))
    assert parsed.priors == {"a": 2.0, "b": -0.5}
    assert parse_request(request(items(2))).priors is None


@pytest.mark.parametrize(
    ("candidates", "message"),
    [
        ([{"item_id": "a", "prior": 1.0}, {"item_id": "b"}], "candidates.1 ('b') has no prior"),
        ([{"item_id": "a"}, {"item_id": "b", "prior": 1.0}], "candidates.1 ('b') has a prior"),
        ([{"item_id": "a", "prior": 1.0}, {"item_id": "b", "prior": None}], "has no prior"),
        ([{"item_id": "a", "prior": float("nan")}], "candidates.0.prior: Input should be a finite number"),
        ([{"item_id": "a", "prior": float("-inf")}], "candidates.0.prior: Input should be a finite number"),
        ([{"item_id": "a", "prior": "0.7"}], "candidates.0.prior: Input should be a valid number"),
        ([{"item_id": "a", "prior": True}], "candidates.0.prior: Input should be a valid number"),
    ],
)
def test_bad_priors_are_refused_with_a_typed_error(candidates: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        parse_request(request(candidates))
    assert message in str(info.value)
    assert_one_line_error(info.value)


def test_a_prior_on_a_history_item_is_refused() -> None:
    with pytest.raises(InvalidRequestError, match="history.0.prior"):
        parse_request(request(items(1), history=[{"item_id": "h1", "title": "x", "prior": 1.0}]))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"user_id": "u", "history": [], "candidates": [{"item_id": "a", "prior": NaN}]}', "finite number"),
        (b'{"user_id": "u", "history": [], "candidates": [{"item_id": "a", "prior": Infinity}]}', "finite number"),
        (
            b'{"user_id": "u", "history": [], "candidates": [{"item_id": "a", "prior": 1}, {"item_id": "b"}]}',
            "give every candidate a prior, or none",
        ),
    ],
)
def test_cli_refuses_bad_priors_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], raw: bytes, message: str
) -> None:
    assert run_cli(tmp_path, raw) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err


async def test_priors_never_reach_a_prompt() -> None:
    candidates = [{"item_id": f"c{i}", "title": f"Product {i}", "prior": 1234.5 + i} for i in range(3)]
    out, models = await run(request(candidates))
    assert_permutation(out, request(candidates))
    assert models.calls and not any("1234" in prompt for _, _, prompt in models.calls)
