"""The benchmark suite's quick mode runs in-process and its results keep their shape."""

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from benchmarks.fake_models import BenchChatModel, FakeModels, answer_for
from benchmarks.report import render_markdown, render_text, write_outputs
from benchmarks.suite import Results, capped_path_calls, expected_calls, run_suite
from m3rec_graph import context_for


async def test_quick_suite_runs_and_reports_linear_calls(tmp_path: Path) -> None:
    results = await run_suite(quick=True, command="python -m benchmarks --quick")
    assert isinstance(results, Results) and results.quick
    assert results.machine.cpu_count and results.machine.packages["langgraph"]

    # 1. orchestration: every number positive, the call counts exactly the graph's fan-out
    miss, hit = results.orchestration.cases
    assert (miss.name, hit.name) == ("miss", "hit")
    assert miss.calls_by_stage == {"mope": 1, "mote": 20, "mar": 2}
    assert hit.calls_by_stage == {"mope": 1, "mote": 0, "mar": 2}
    for case in (miss, hit):
        assert case.runs == 5
        assert 0 < case.wall_ms.min <= case.wall_ms.median <= case.wall_ms.p95 <= case.wall_ms.max
        assert case.cpu_ms.median > 0 and case.peak_mem_kib > 0 and case.wall_ms_per_call > 0
    assert miss.peak_mem_kib > hit.peak_mem_kib
    assert results.orchestration.compile_ms > 0
    floor = results.orchestration.floor
    assert floor is not None and floor.chat_call_ms > 0 and floor.graph_run_ms > 0
    assert floor.for_calls(23) == pytest.approx(floor.graph_run_ms + 23 * (floor.chat_call_ms + floor.send_task_ms))

    # profile: both groups found, shares add up
    profile = results.profile
    assert profile.total_ms > 0 and profile.site_packages and profile.m3rec_graph
    assert len(profile.site_packages) <= 8
    assert abs(sum(s.share for s in profile.by_package) - 1) < 1e-6

    # 2. scaling: calls grow linearly in the candidates, in both MAR modes
    scaling = results.scaling
    assert scaling.linear
    rows = {(r.mode, r.candidates): r for r in scaling.rows}
    assert {n for _, n in rows} == {10, 20, 50, 100}
    for mode in ("listwise", "pointwise"):
        small, large = rows[(mode, 10)], rows[(mode, 100)]
        assert large.calls_by_stage["mote"] == 10 * small.calls_by_stage["mote"] == 100
        assert large.calls_by_stage["mar"] == 10 * small.calls_by_stage["mar"]
        assert large.calls_by_stage["mope"] == small.calls_by_stage["mope"] == 1
        assert all(r.wall_ms > 0 and r.cpu_ms > 0 for r in scaling.rows)
        assert all(0 <= r.gc_ms <= r.wall_ms for r in scaling.rows)  # both wall-clock
    assert rows[("listwise", 100)].llm_calls == 1 + 100 + 10
    assert rows[("pointwise", 100)].llm_calls == 1 + 100 + 100

    # 3. concurrency: every level ran the whole batch; throughput below the latency bound
    conc = results.concurrency
    assert [(r.max_concurrency, r.gc_frozen, r.latency_s) for r in conc.rows] == [
        (1, False, None), (4, False, None), (16, False, None), (64, False, None),
        (64, True, None),  # after gc.freeze()
        (64, False, 0.1),  # the sensitivity row: slower calls
    ]  # fmt: skip
    slower = conc.rows[-1]
    assert slower.ideal_throughput == pytest.approx(conc.users / (2 * 0.1))  # its own latency's bound
    assert all(0 <= r.gc_s <= r.wall_s for r in conc.rows)
    assert conc.calls_per_recommendation == 7
    for row in conc.rows:
        assert row.llm_calls == conc.users * conc.calls_per_recommendation
        assert row.throughput > 0 and row.wall_s > 0
        assert 0 < row.ratio <= 1.05 and 0 < row.capped_ratio <= 1.05
    assert conc.rows[-1].throughput > conc.rows[0].throughput

    # 4. cache effect on the Beauty fixture: fewer MOTE calls, a positive share of the tokens
    tokens = results.tokens
    assert tokens.dataset == "beauty_small" and tokens.encoding == "o200k_base"
    cache = tokens.cache
    assert 10 <= cache.users <= 20 and cache.candidates_per_user == 20
    assert cache.candidate_slots == 20 * cache.users
    assert 0 < cache.mote_calls_with_cache <= cache.mote_calls_without_cache
    assert cache.mote_calls_without_cache == cache.slots_with_text <= cache.candidate_slots
    assert [s.mar_mode for s in cache.shares] == ["listwise", "pointwise"]
    for share in cache.shares:
        assert share.total_tokens_without_cache > share.total_tokens_with_cache > 0
        assert share.mote_tokens_saved == share.total_tokens_without_cache - share.total_tokens_with_cache
        assert 0 < share.cached_fraction < 1 and 0 < share.cached_fraction_with_schema < 1

    # 5. tokens per recommendation: every stage present and positive in both MAR modes
    modes = {m.mar_mode: m for m in tokens.modes}
    assert set(modes) == {"listwise", "pointwise"}
    for mode, m in modes.items():
        assert [s.stage.split(",")[0].split()[0] for s in m.stages] == ["MOPE", "MOTE", "MOTE", "MAR"]
        for stage in [*m.stages, m.total_without_cache, m.total_with_cache]:
            assert stage.calls > 0 and stage.input_tokens > 0 and stage.output_tokens > 0
            assert stage.schema_tokens > 0 and stage.input_tokens_per_call > 0
        mope, mote, mote_cached, mar = m.stages
        assert mope.calls == 1 and mote.calls == 20 and mote_cached.calls <= mote.calls
        assert mar.calls == (2 if mode == "listwise" else 20)
        total = m.total_without_cache
        assert abs(total.input_tokens - mope.input_tokens - mote.input_tokens - mar.input_tokens) < 1e-6
    assert modes["pointwise"].stages[3].input_tokens > modes["listwise"].stages[3].input_tokens

    # reports render, the JSON is serialisable, quick mode wrote nothing by itself
    assert results.notes
    text, markdown = render_text(results), render_markdown(results)
    assert "| max_concurrency" in text and "## 3. Concurrency" in markdown
    assert "== 4. Cache effect ==" in text and "## 5. Tokens per recommendation" in markdown
    assert "| MAR pointwise" in markdown and "| MOTE, no cache" in markdown
    written = write_outputs(results, doc=tmp_path / "b.md", data=tmp_path / "r.json")
    assert json.loads(written[1].read_text())["scaling"]["linear"] is True
    json.dumps(asdict(results))


def test_formulas() -> None:
    assert expected_calls(20, "listwise", 10) == 23
    assert expected_calls(20, "pointwise", 10) == 41
    assert capped_path_calls(5, 1, 1) == 7
    assert capped_path_calls(5, 1, 4) == 3
    assert capped_path_calls(5, 1, 64) == 2


def test_fake_model_answers_each_stage_with_valid_json() -> None:
    models = FakeModels()
    model = models(context_for("hybrid").mope_model)
    assert model is models(context_for("hybrid").mote_model)  # one model per name
    assert isinstance(model, BenchChatModel)
    mar = answer_for("mar", "You are MAR\n<candidates>\n[a] x\n[b] y\n</candidates>")
    assert set(mar["scores"]) == {"a", "b"}
    point = answer_for("mar", "You are MAR <profile>p</profile>\n<candidate>\n[z] t\n</candidate>")
    assert 0 <= point["score"] <= 10
    out = model.with_structured_output({}, method="json_schema").invoke("You are MOTE <item>[i] x</item>")
    assert len(out["traits"]) == 2
    assert models.stage_calls() == {"mope": 0, "mote": 1, "mar": 0}


def test_the_soak_keeps_the_sections_other_commands_wrote(tmp_path: Path) -> None:
    from benchmarks.soak import KEEP_MARKER, write_doc

    doc = tmp_path / "reliability.md"
    write_doc("# Reliability\n\nold soak body\n", doc)
    doc.write_text(doc.read_text() + f"\n{KEEP_MARKER} -->\n\n## Rate limiting: tokens\n\nkept\n")
    write_doc("# Reliability\n\nnew soak body\n", doc)
    text = doc.read_text()
    assert "new soak body" in text and "old soak body" not in text
    assert text.endswith("## Rate limiting: tokens\n\nkept\n")
