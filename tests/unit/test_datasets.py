"""Dataset loading, leave-one-out splits, candidate sampling and the bundled demo sample."""

import csv
import json
import random
import shutil
from collections import Counter
from pathlib import Path
from statistics import mean

import pytest

import m3rec_graph
from m3rec_graph.contracts.request import parse_request
from m3rec_graph.contracts.schemas import Item
from m3rec_graph.errors import DatasetError, M3RecError
from m3rec_graph.evaluation.datasets import (
    Dataset,
    build_requests,
    item_popularity,
    load_dataset,
    sample_candidates,
    split_leave_one_out,
)
from m3rec_graph.text.item_text import item_text

FIXTURES = Path(__file__).parents[1] / "fixtures"
BEAUTY = FIXTURES / "beauty_small"
SPORTS = FIXTURES / "sports_small"
DEMO = Path(m3rec_graph.__file__).parent / "data" / "demo_beauty.json"


@pytest.fixture(scope="module")
def beauty() -> Dataset:
    return load_dataset(BEAUTY)


@pytest.fixture(scope="module")
def sports() -> Dataset:
    return load_dataset(SPORTS)


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _expected_sequences(path: Path) -> dict[str, list[str]]:
    by_user: dict[str, list[tuple[int, str]]] = {}
    for row in _csv_rows(path):
        by_user.setdefault(row["user_id"], []).append((int(row["position"]), row["item_id"]))
    return {user: [item for _, item in sorted(rows)] for user, rows in by_user.items()}


def _json_rows(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# --------------------------------------------------------------------------- loading


def test_beauty_fixture_loads_with_the_right_counts(beauty: Dataset) -> None:
    rows = _csv_rows(BEAUTY / "interactions.csv")
    assert beauty.name == "beauty_small"
    assert len(beauty.sequences) == 300
    assert len(beauty.items) == len(_json_rows(BEAUTY / "items.jsonl"))
    assert sum(len(seq) for seq in beauty.sequences.values()) == len(rows)
    assert all(len(seq) >= 5 for seq in beauty.sequences.values())
    assert {item for seq in beauty.sequences.values() for item in seq} == set(beauty.items)


def test_beauty_item_text_mapping(beauty: Dataset) -> None:
    for raw in _json_rows(BEAUTY / "items.jsonl"):
        item = beauty.items[str(raw["item_id"])]
        assert item.title == raw["title"]
        assert item.brand == (raw["brand"] or None)
        paths = raw["categories"]
        assert isinstance(paths, list)
        assert item.categories == list(dict.fromkeys(" > ".join(p[1:]) for p in paths))
        assert item.description is None and item.review is None
    sample = beauty.items[str(_json_rows(BEAUTY / "items.jsonl")[0]["item_id"])]
    # The root ("Beauty") is dropped from every path.
    assert sample.categories and not sample.categories[0].startswith("Beauty")


def test_order_follows_position_not_row_order(tmp_path: Path, beauty: Dataset) -> None:
    lines = (BEAUTY / "interactions.csv").read_text(encoding="utf-8").splitlines()
    header, body = lines[0], lines[1:]
    random.Random(1).shuffle(body)
    assert body != lines[1:]
    (tmp_path / "interactions.csv").write_text("\n".join([header, *body]) + "\n")
    shutil.copy(BEAUTY / "items.jsonl", tmp_path / "items.jsonl")

    shuffled = load_dataset(tmp_path)

    expected = _expected_sequences(BEAUTY / "interactions.csv")
    assert shuffled.sequences == expected == beauty.sequences
    # Positions are compared as integers: some users have 10+ items ("10" < "2" as text).
    assert any(len(seq) > 10 for seq in expected.values())


def test_positions_sort_numerically(tmp_path: Path) -> None:
    items = [f"i{n}" for n in range(12)]
    rows = [f"u,{item},{pos}" for pos, item in reversed(list(enumerate(items)))]
    (tmp_path / "interactions.csv").write_text("user_id,item_id,position\n" + "\n".join(rows))
    (tmp_path / "items.jsonl").write_text(
        "".join(json.dumps({"item_id": i, "title": i.upper()}) + "\n" for i in items)
    )
    assert load_dataset(tmp_path).sequences == {"u": items}


def test_sports_items_have_no_title_but_text_from_brand_and_categories(sports: Dataset) -> None:
    raws = {str(r["item_id"]): r for r in _json_rows(SPORTS / "items.jsonl")}
    assert len(sports.sequences) == 100
    assert all(item.title is None for item in sports.items.values())
    with_text = [i for i in sports.items.values() if raws[i.item_id]["brand"] or i.categories]
    assert len(with_text) >= 0.9 * len(sports.items)
    for item in with_text:
        text = item_text(item)
        assert text and item.has_text()
        raw = raws[item.item_id]
        if raw["brand"]:
            assert f"brand: {raw['brand']}" in text
        # Sports has no category paths, so the flat category_terms are used.
        assert item.categories == (raw["category_terms"] or [])
        # The model-generated keywords are not used by default.
        assert str(raw["keywords"]) not in text


def test_use_keywords_fills_missing_titles_only(beauty: Dataset) -> None:
    sports_kw = load_dataset(SPORTS, use_keywords=True)
    raws = {str(r["item_id"]): r for r in _json_rows(SPORTS / "items.jsonl")}
    assert all(item.title == raws[item.item_id]["keywords"] for item in sports_kw.items.values())
    beauty_kw = load_dataset(BEAUTY, use_keywords=True)
    untitled = {i for i, item in beauty.items.items() if item.title is None}
    assert untitled  # the fixture has a few Beauty items without a title
    for item_id, item in beauty_kw.items.items():
        if item_id in untitled:
            assert item.title and item.title == raws_beauty(item_id)["keywords"]
        else:
            assert item == beauty.items[item_id]


def raws_beauty(item_id: str) -> dict[str, object]:
    return next(r for r in _json_rows(BEAUTY / "items.jsonl") if r["item_id"] == item_id)


# --------------------------------------------------------------------------- errors


def _write_valid(tmp_path: Path) -> None:
    (tmp_path / "interactions.csv").write_text(
        "user_id,item_id,position\nu1,a,0\nu1,b,1\nu1,c,2\n", encoding="utf-8"
    )
    (tmp_path / "items.jsonl").write_text(
        "".join(json.dumps({"item_id": i, "title": i}) + "\n" for i in "abc"), encoding="utf-8"
    )


def test_valid_tiny_dataset_loads(tmp_path: Path) -> None:
    _write_valid(tmp_path)
    assert load_dataset(tmp_path).sequences == {"u1": ["a", "b", "c"]}


def test_missing_directory_or_file_is_a_dataset_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found"):
        load_dataset(tmp_path / "nope")
    _write_valid(tmp_path)
    (tmp_path / "interactions.csv").unlink()
    with pytest.raises(DatasetError, match=r"interactions\.csv") as info:
        load_dataset(tmp_path)
    assert isinstance(info.value, M3RecError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("file", "content", "where"),
    [
        (
            "items.jsonl",
            '{"item_id": "a"}\n{"item_id": "b"}\n{oops\n',
            r"items\.jsonl:3: invalid JSON",
        ),
        ("items.jsonl", '{"item_id": "a"}\n["b"]\n', r"items\.jsonl:2: expected a JSON object"),
        ("items.jsonl", '{"item_id": "a", "title": 5}\n', r"items\.jsonl:1: field 'title'"),
        ("items.jsonl", '{"title": "x"}\n', r"items\.jsonl:1: missing or invalid 'item_id'"),
        ("items.jsonl", '{"item_id": "a"}\n{"item_id": "a"}\n', r"items\.jsonl:2: duplicate"),
        (
            "interactions.csv",
            "user_id,item_id,position\nu1,a,0\nu1,b,x\n",
            r"interactions\.csv:3: position",
        ),
        (
            "interactions.csv",
            "user_id,item_id,position\nu1,a\n",
            r"interactions\.csv:2: expected 3 fields",
        ),
        (
            "interactions.csv",
            "user_id,item_id,position\nu1,zzz,0\n",
            r"interactions\.csv:2: item_id 'zzz'",
        ),
        (
            "interactions.csv",
            "user_id,item_id,position\nu1,a,0\nu1,b,0\n",
            r"interactions\.csv:3: user 'u1' repeats",
        ),
        (
            "interactions.csv",
            "user,item_id,position\nu1,a,0\n",
            r"interactions\.csv:1: header lacks column\(s\) user_id",
        ),
    ],
)
def test_malformed_rows_name_file_and_line(
    tmp_path: Path, file: str, content: str, where: str
) -> None:
    _write_valid(tmp_path)
    (tmp_path / file).write_text(content, encoding="utf-8")
    with pytest.raises(DatasetError, match=where) as info:
        load_dataset(tmp_path)
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- splits and sampling


def test_split_leave_one_out() -> None:
    split = split_leave_one_out(["a", "b", "c", "d"])
    train, valid, test = split
    assert (train, valid, test) == (["a", "b"], "c", "d")
    assert split.test_history == ["a", "b", "c"]
    assert split_leave_one_out(["a", "b"]) == ([], "a", "b")
    with pytest.raises(ValueError):
        split_leave_one_out(["a"])


def test_candidates_contain_target_once_and_only_unseen_negatives(beauty: Dataset) -> None:
    for user in sorted(beauty.sequences)[:25]:
        seq = beauty.sequences[user]
        target = seq[-1]
        cands = sample_candidates(beauty, user, target, 19, random.Random(5))
        assert len(cands) == 20 == len(set(cands))
        assert cands.count(target) == 1
        assert not (set(cands) - {target}) & set(seq)
        assert set(cands) <= set(beauty.items)


def test_candidates_are_deterministic_per_seed_and_shuffled(beauty: Dataset) -> None:
    user = sorted(beauty.sequences)[0]
    target = beauty.sequences[user][-1]

    def draw(seed: int) -> list[str]:
        return sample_candidates(beauty, user, target, 19, random.Random(seed))

    assert draw(42) == draw(42)
    assert draw(42) != draw(43)
    assert set(draw(42)) != set(draw(43))
    positions = {draw(seed).index(target) for seed in range(30)}
    assert len(positions) > 5  # the target is not always in the same slot


def test_candidates_reject_bad_requests(beauty: Dataset) -> None:
    user = sorted(beauty.sequences)[0]
    target = beauty.sequences[user][-1]
    with pytest.raises(DatasetError, match="unknown user_id"):
        sample_candidates(beauty, "nobody", target, 5, random.Random(0))
    with pytest.raises(DatasetError, match="unknown target"):
        sample_candidates(beauty, user, "nothing", 5, random.Random(0))
    with pytest.raises(DatasetError, match="unseen items"):
        sample_candidates(beauty, user, target, len(beauty.items), random.Random(0))


def test_popularity_weighted_sampling_prefers_popular_items(beauty: Dataset) -> None:
    popularity = item_popularity(beauty)
    assert sum(popularity.values()) == sum(len(s) for s in beauty.sequences.values())
    user = sorted(beauty.sequences)[3]
    target = beauty.sequences[user][-1]
    rng_uniform, rng_weighted = random.Random(11), random.Random(11)
    uniform: list[int] = []
    weighted: list[int] = []
    for _ in range(200):
        u = sample_candidates(beauty, user, target, 19, rng_uniform)
        w = sample_candidates(beauty, user, target, 19, rng_weighted, popularity)
        uniform += [popularity[i] for i in u if i != target]
        weighted += [popularity[i] for i in w if i != target]
    assert mean(weighted) > 1.5 * mean(uniform)


def test_popularity_weighting_is_proportional_on_a_toy_catalogue() -> None:
    items = {i: Item(item_id=i, title=i) for i in ["seen", "hot", *[f"c{n}" for n in range(9)]]}
    toy = Dataset(name="toy", items=items, sequences={"u": ["seen"]})
    popularity = Counter({"hot": 90, **{f"c{n}": 1 for n in range(9)}})
    rng = random.Random(3)
    picks = Counter(
        next(c for c in sample_candidates(toy, "u", "seen", 1, rng, popularity) if c != "seen")
        for _ in range(2000)
    )
    assert "seen" not in picks
    assert 0.85 < picks["hot"] / 2000 < 0.95  # expected 90 / 99
    # Without replacement: ten negatives out of ten unseen items is all of them.
    assert sorted(sample_candidates(toy, "u", "seen", 10, rng, popularity)) == sorted(items)


# --------------------------------------------------------------------------- evaluation cases


def test_build_requests_leave_one_out_cases(beauty: Dataset) -> None:
    cases = build_requests(beauty, n_users=30, n_negatives=19, seed=4)
    assert len(cases) == len({c.user_id for c in cases}) == 30
    assert [c.user_id for c in cases] == [
        c.user_id for c in build_requests(beauty, n_users=30, seed=4)
    ]
    assert [c.user_id for c in cases] != [
        c.user_id for c in build_requests(beauty, n_users=30, seed=5)
    ]
    for case in cases:
        seq = beauty.sequences[case.user_id]
        assert case.target_id == seq[-1]
        assert [i.item_id for i in case.history] == seq[:-1]
        ids = [i.item_id for i in case.candidates]
        assert len(ids) == 20 and ids.count(case.target_id) == 1
        request = case.to_request()
        assert set(request) == {"user_id", "history", "candidates"}
        assert "target_id" not in json.dumps(request)
        assert all("categories" not in d or d["categories"] for d in request["candidates"])
        assert all(None not in d.values() for d in request["history"] + request["candidates"])
        parsed = parse_request(request)
        assert [i.item_id for i in parsed.candidates] == ids


def test_cold_start_truncates_history_but_keeps_candidates(beauty: Dataset) -> None:
    warm = build_requests(beauty, n_users=40, seed=9)
    cold = build_requests(beauty, n_users=40, seed=9, cold_start=2)
    short = build_requests(beauty, n_users=40, seed=9, history_len=3)
    assert [c.user_id for c in warm] == [c.user_id for c in cold] == [c.user_id for c in short]
    for w, c, s in zip(warm, cold, short, strict=True):
        assert len(c.history) <= 2 and c.history == w.history[-2:]
        assert len(s.history) <= 3 and s.history == w.history[-3:]
        assert c.candidates == w.candidates == s.candidates
        assert c.target_id == w.target_id
    both = build_requests(beauty, n_users=5, seed=9, history_len=3, cold_start=1)
    assert all(len(c.history) == 1 for c in both)
    with pytest.raises(ValueError):
        build_requests(beauty, n_users=5, cold_start=0)


def test_sports_requests_are_valid_without_titles(sports: Dataset) -> None:
    for case in build_requests(sports, n_users=10, seed=1):
        request = case.to_request()
        assert all("title" not in d for d in request["history"])
        parse_request(request)


# --------------------------------------------------------------------------- demo sample


def test_demo_sample_is_valid() -> None:
    demo = json.loads(DEMO.read_text(encoding="utf-8"))
    assert demo["dataset"] == "beauty" and isinstance(demo["seed"], int)
    assert isinstance(demo["protocol"], str) and "\n" not in demo["protocol"]
    assert len(demo["cases"]) == 3
    for case in demo["cases"]:
        assert set(case) == {"user_id", "history", "candidates", "target_id"}
        request = parse_request({k: case[k] for k in ("user_id", "history", "candidates")})
        ids = [item.item_id for item in request.candidates]
        assert ids.count(case["target_id"]) == 1
        assert case["target_id"] not in {item.item_id for item in request.history}
        assert 3 <= len(request.history) <= 6
        assert len(ids) == 20
        assert all(item.has_text() for item in request.history + request.candidates)
