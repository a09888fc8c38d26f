"""The text-only TF-IDF baseline (`TextSimilarityBaseline`) and its `text` harness method."""

from pathlib import Path

from m3rec_graph.contracts.schemas import Item
from m3rec_graph.evaluation import EvalSettings, parse_methods, run_evaluation
from m3rec_graph.evaluation.baselines import TextSimilarityBaseline
from m3rec_graph.evaluation.datasets import EvalCase
from m3rec_graph.text.similarity import text_tokens

BEAUTY = Path(__file__).parents[2] / "tests" / "fixtures" / "beauty_small"

CATALOGUE = [
    Item(item_id="h1", title="Lavender Sleep Balm", brand="Acme", categories=["Beauty", "Skin"]),
    Item(item_id="h2", title="Lavender Pillow Mist", brand="Acme", categories=["Beauty", "Bath"]),
    Item(item_id="lav", title="Lavender Body Lotion", brand="Zeta", categories=["Beauty", "Skin"]),
    Item(item_id="c1", title="Red Nail Polish", brand="Zeta", categories=["Beauty", "Nails"]),
    Item(item_id="c2", title="Blue Nail Polish", brand="Zeta", categories=["Beauty", "Nails"]),
    Item(item_id="c3", title="Hair Dryer", brand="Volt", categories=["Beauty", "Hair"]),
]
ITEMS = {item.item_id: item for item in CATALOGUE}


def case(candidates: list[str], target: str, history: tuple[str, ...] = ("h1", "h2")) -> EvalCase:
    return EvalCase(
        user_id="u1",
        history=[ITEMS[i] for i in history],
        candidates=[ITEMS[i] for i in candidates],
        target_id=target,
    )


def test_tokens_are_lowercase_words_of_the_rendered_text() -> None:
    expected = "red nail polish brand zeta category beauty nails".split()
    assert text_tokens(ITEMS["c1"]) == expected


def test_idf_mutes_terms_every_item_has() -> None:
    ranker = TextSimilarityBaseline(CATALOGUE)
    assert ranker.similarity.idf["beauty"] == 0.0 and ranker.similarity.idf["brand"] == 0.0
    assert ranker.similarity.idf["acme"] > ranker.similarity.idf["zeta"] > 0.0  # in 2 items vs 4


def test_the_candidate_sharing_rare_history_words_ranks_first() -> None:
    ranker = TextSimilarityBaseline(CATALOGUE)
    ranking = ranker.rank(case(["c1", "c3", "lav", "c2"], target="c1"))
    assert ranking[0] == "lav"
    assert sorted(ranking) == ["c1", "c2", "c3", "lav"]


def test_the_target_is_never_read_and_ranking_is_deterministic() -> None:
    shown = ["c1", "c3", "lav", "c2"]
    rankings = [TextSimilarityBaseline(CATALOGUE).rank(case(shown, target=t)) for t in shown]
    assert all(r == rankings[0] for r in rankings)


def test_ties_keep_the_shown_order() -> None:
    ranker = TextSimilarityBaseline(CATALOGUE)
    # c1, c2 and c3 share no weighted term with the history: all score 0
    assert ranker.rank(case(["c3", "c2", "c1"], target="c1")) == ["c3", "c2", "c1"]
    assert ranker.rank(case(["c2", "c1", "c3"], target="c1", history=())) == ["c2", "c1", "c3"]


def test_items_without_titles_rank_by_brand_and_categories() -> None:
    # Sports-like items: no title, no description, only a brand and category terms
    catalogue = [
        Item(item_id="h", brand="Ghost", categories=["Hunting", "Gun Maintenance"]),
        Item(item_id="gun", brand="Tipton", categories=["Hunting", "Gun Maintenance"]),
        Item(item_id="ghost", brand="Ghost", categories=["Fishing", "Lures"]),
        Item(item_id="tent", brand="Coleman", categories=["Camping", "Tents"]),
        Item(item_id="bare", brand=None),
    ]
    by_id = {item.item_id: item for item in catalogue}
    ranker = TextSimilarityBaseline(catalogue)
    shown = ["tent", "bare", "ghost", "gun"]
    sports = EvalCase(
        user_id="u", history=[by_id["h"]], candidates=[by_id[i] for i in shown], target_id="tent"
    )
    ranking = ranker.rank(sports)
    assert set(ranking[:2]) == {"gun", "ghost"}
    assert ranking[2:] == ["tent", "bare"]  # no shared term: shown order


def test_text_is_a_harness_method(tmp_path: Path) -> None:
    assert [m.key for m in parse_methods("text,random")] == ["text", "random"]
    settings = EvalSettings(dataset=BEAUTY, users=5, negatives=9)
    run = run_evaluation(settings, parse_methods("text"), tmp_path / "run", n_boot=50, plots=False)
    assert run.computed == {("text", "full"): 5}
    assert "| text | 5 |" in run.report
