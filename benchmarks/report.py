"""Render benchmark results as plain-text/Markdown tables, and write the docs and JSON files."""

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from benchmarks.suite import ProfileEntry, Results

ROOT = Path(__file__).resolve().parent.parent
DOC_PATH = ROOT / "docs" / "benchmarks.md"
JSON_PATH = ROOT / "benchmarks" / "results.json"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Return a Markdown pipe table, padded so it also reads well in a terminal."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def _ms(value: float) -> str:
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def machine_section(results: Results) -> str:
    m = results.machine
    rows = [
        ("CPUs (os.cpu_count)", m.cpu_count),
        ("platform", m.platform),
        ("Python", m.python),
        *((name, version) for name, version in m.packages.items()),
        *(
            [("load average at start (1/5/15 min)", " / ".join(f"{x:.2f}" for x in m.load_avg))]
            if m.load_avg is not None
            else []
        ),
    ]
    return table(("machine", ""), rows)


def orchestration_section(results: Results) -> str:
    o = results.orchestration
    rows = [
        (
            "all MOTE misses" if c.name == "miss" else "all MOTE hits (warm cache)",
            c.llm_calls,
            f"{c.calls_by_stage['mope']}/{c.calls_by_stage['mote']}/{c.calls_by_stage['mar']}",
            _ms(c.wall_ms.median),
            _ms(c.wall_ms.p95),
            _ms(c.cpu_ms.median),
            _ms(c.cpu_ms.p95),
            f"{c.wall_ms_per_call:.2f}",
            f"{c.peak_mem_kib:,.0f}",
        )
        for c in o.cases
    ]
    head = (
        f"{o.candidates} candidates, listwise MAR (chunks of 10), instant fake model, "
        f"{o.cases[0].runs} timed runs per case after 2 warm-ups; graph compile: {o.compile_ms:.1f} ms (once)."
    )
    text = head + "\n\n" + table(
        (
            "case",
            "LLM calls",
            "MOPE/MOTE/MAR",
            "wall median ms",
            "wall p95 ms",
            "CPU median ms",
            "CPU p95 ms",
            "wall ms per call",
            "peak mem KiB",
        ),
        rows,
    )
    f = o.floor
    if f is None:
        return text
    floor_rows = [
        ("`BaseChatModel.ainvoke`, instant fake model (langchain-core per call)", _ms(f.chat_call_ms)),
        ("one `Send` task of a trivial graph (LangGraph per task)", _ms(f.send_task_ms)),
        ("one run of a trivial one-node graph", _ms(f.graph_run_ms)),
    ]
    floor_rows += [
        (
            f"floor for {c.llm_calls} calls ({'misses' if c.name == 'miss' else 'warm'}): run + calls x (call + task)"
            f"; m3rec's CPU median is {c.cpu_ms.median / f.for_calls(c.llm_calls):.1f}x",
            _ms(f.for_calls(c.llm_calls)),
        )
        for c in o.cases
    ]
    return (
        text
        + "\n\nThe floor: CPU of the library primitives alone, measured in the same run (medians). "
        "Every LLM call of the method is one chat model call in its own task (MOTE encodes each "
        "item separately), so no LangGraph graph built on langchain-core chat models gets below it.\n\n"
        + table(("primitive", "CPU ms"), floor_rows)
    )


def profile_section(results: Results) -> str:
    p = results.profile
    share_rows = [
        (s.package, _ms(s.tottime_ms), f"{s.share:.1%}") for s in p.by_package if s.share >= 0.005
    ]

    def entries(title: str, items: list[ProfileEntry]) -> str:
        return f"{title}\n\n" + table(
            ("function", "calls", "self ms", "cumulative ms"),
            [(e.function, e.ncalls, _ms(e.tottime_ms), _ms(e.cumtime_ms)) for e in items],
        )

    return "\n\n".join(
        [
            f"One all-miss run with {p.candidates} candidates under cProfile "
            f"(total self time {p.total_ms:.1f} ms; cProfile inflates it several-fold).",
            "Self time by package (>= 0.5%):\n\n"
            + table(("package", "self ms", "share"), share_rows),
            entries("Top functions by cumulative time, site-packages:", p.site_packages),
            entries("Top functions by cumulative time, m3rec_graph:", p.m3rec_graph),
            entries("Top functions by self time, anywhere:", p.self_time),
        ]
    )


def scaling_section(results: Results) -> str:
    s = results.scaling
    rows = [
        (
            r.mode,
            r.candidates,
            f"{r.calls_by_stage['mope']}/{r.calls_by_stage['mote']}/{r.calls_by_stage['mar']}",
            r.llm_calls,
            r.expected_calls,
            _ms(r.wall_ms),
            _ms(r.cpu_ms),
            f"{r.wall_ms_per_call:.2f}",
            _ms(r.gc_ms),
            f"{r.cpu_ms_per_call_without_gc:.2f}",
        )
        for r in s.rows
    ]
    verdict = (
        "LLM calls grow linearly: every row matches 1 + n + ceil(n/chunk) (listwise) or 1 + 2n (pointwise)."
        if s.linear
        else "WARNING: some rows do not match the linear call formula."
    )
    return (
        f"All MOTE misses; median of {s.repeats} run(s); listwise chunk = {s.mar_chunk_size}.\n\n"
        + table(
            (
                "MAR mode",
                "candidates",
                "MOPE/MOTE/MAR",
                "LLM calls",
                "expected",
                "wall ms",
                "CPU ms",
                "wall ms per call",
                "GC ms",
                "CPU ms per call without GC",
            ),
            rows,
        )
        + f"\n\n{verdict} GC ms: time in Python's garbage collector during the run (part of the CPU ms); "
        "it grows faster than the calls because a larger fan-out keeps more objects alive at once."
    )


def concurrency_section(results: Results) -> str:
    c = results.concurrency
    rows = [
        (
            f"{r.max_concurrency} (gc.freeze)"
            if r.gc_frozen
            else f"{r.max_concurrency} ({r.latency_s * 1000:.0f} ms per call)"
            if r.latency_s is not None
            else r.max_concurrency,
            f"{r.wall_s:.2f}",
            f"{r.throughput:.2f}",
            f"{r.ideal_throughput:.2f}",
            f"{r.ratio:.2f}",
            r.capped_path_calls,
            f"{r.capped_ideal_throughput:.2f}",
            f"{r.capped_ratio:.2f}",
            f"{r.cpu_s:.2f}",
            f"{r.cpu_bound_throughput:.1f}",
            f"{r.gc_s:.2f}",
            r.llm_calls,
        )
        for r in c.rows
    ]
    return (
        f"`graph.abatch(inputs, {{'max_concurrency': c}}, context=ctx)` over {c.users} users x "
        f"{c.candidates} candidates ({c.calls_per_recommendation} LLM calls each), every call "
        f"sleeping {c.latency_s * 1000:.0f} ms. Ideal = users / (ceil(users / c) x "
        f"{c.critical_path_calls} x {c.latency_s * 1000:.0f} ms): only model latency counts and a "
        "recommendation's critical path is MOPE || MOTE, then MAR. LangGraph also passes "
        "`max_concurrency` down to each run, where it gates that run's own MOPE/MOTE fan-out: "
        "the *capped* columns use the resulting critical path (calls in sequence per run). "
        "CPU-bound recs/s = users / CPU seconds of the batch: the ceiling of one event loop. "
        "GC s: time in Python's garbage collector (part of the CPU s). A *gc.freeze* row repeats the "
        "highest level after `gc.collect(); gc.freeze()` (a host's choice, not the default); rows "
        "marked *ms per call* repeat it with slower calls (their ideal uses that latency).\n\n"
        + table(
            (
                "max_concurrency",
                "wall s",
                "recs/s",
                "ideal recs/s",
                "ratio",
                "capped path calls",
                "capped ideal recs/s",
                "ratio vs capped",
                "CPU s",
                "CPU-bound recs/s",
                "GC s",
                "LLM calls",
            ),
            rows,
        )
    )


def _tokens_head(results: Results) -> str:
    t = results.tokens
    return (
        f"{t.users:,} users of `{t.dataset}` (`{t.dataset_path}`), target + {t.negatives} negatives each "
        f"(`datasets.build_requests`, seed {t.seed}; mean history {t.mean_history:.1f} items), "
        f"preset `{t.preset}` ({t.model} for every stage, tiktoken `{t.encoding}`). Every call's real "
        "prompt is rendered by the stages' own code and counted by `m3rec_graph.cost.estimate` (as "
        "`m3rec cost estimate`); nothing is sent. Input tokens are exact prompt counts (MAR's prompt "
        "holds a typical profile and typical traits in place of MOPE's and MOTE's answers); output "
        "tokens are estimated from typical answers of each stage's schema; the schema parameter "
        "(an upper-bound estimate) is shown apart and left out of input and total. "
        f"Dry run took {t.duration_s:.1f} s."
    )


def cache_section(results: Results) -> str:
    c = results.tokens.cache
    calls = table(
        ("candidate slots", "with text", "MOTE calls without cache", "MOTE calls with cache", "fewer calls"),
        [
            (
                f"{c.candidate_slots:,}",
                f"{c.slots_with_text:,}",
                f"{c.mote_calls_without_cache:,}",
                f"{c.mote_calls_with_cache:,}",
                f"{c.call_reduction:.1%}",
            )
        ],
    )
    shares = table(
        (
            "MAR mode",
            "total tokens without cache",
            "total tokens with cache",
            "MOTE tokens saved",
            "cached fraction",
            "cached fraction incl. schema",
        ),
        [
            (
                s.mar_mode,
                f"{s.total_tokens_without_cache:,}",
                f"{s.total_tokens_with_cache:,}",
                f"{s.mote_tokens_saved:,}",
                f"{s.cached_fraction:.1%}",
                f"{s.cached_fraction_with_schema:.1%}",
            )
            for s in c.shares
        ],
    )
    return (
        _tokens_head(results)
        + "\n\nWithout the trait cache MOTE runs once per candidate slot with text; with it, once per "
        f"distinct item with text across all {c.users:,} users, from an empty cache (items without "
        "text get neutral traits and no call either way). Cached fraction = MOTE tokens saved / "
        "total tokens (MOPE + MOTE + MAR, input + output) without the cache.\n\n"
        + calls
        + "\n\n"
        + shares
    )


def tokens_section(results: Results) -> str:
    rows = []
    for m in results.tokens.modes:
        for s in [*m.stages, m.total_without_cache, m.total_with_cache]:
            rows.append(
                (
                    m.mar_mode,
                    s.stage,
                    f"{s.calls:,.2f}",
                    f"{s.input_tokens:,.0f}",
                    f"{s.output_tokens:,.0f}",
                    f"{s.input_tokens + s.output_tokens:,.0f}",
                    f"{s.schema_tokens:,.0f}",
                    f"{s.input_tokens_per_call:,.0f}",
                )
            )
    return (
        "Per recommendation (totals over the users divided by the users; the shared-cache MOTE "
        "row amortises each distinct item's one call over all users). Same users and prompts as "
        "section 4.\n\n"
        + table(
            (
                "MAR mode",
                "stage",
                "calls",
                "input tokens (exact)",
                "output tokens (est.)",
                "total",
                "schema tokens (est., not in input)",
                "input tokens per call",
            ),
            rows,
        )
    )


def render_text(results: Results) -> str:
    """Everything, for the terminal."""
    parts = [
        f"== m3rec-graph benchmarks{' (quick)' if results.quick else ''}: {results.command} ==",
        machine_section(results),
        "== 1. Orchestration overhead ==",
        orchestration_section(results),
        "== Profile ==",
        profile_section(results),
        "== 2. Scaling with candidates ==",
        scaling_section(results),
        "== 3. Concurrency ==",
        concurrency_section(results),
        "== 4. Cache effect ==",
        cache_section(results),
        "== 5. Tokens per recommendation ==",
        tokens_section(results),
        *(["== Notes =="] + [f"- {n}" for n in results.notes] if results.notes else []),
        f"(suite took {results.duration_s:.1f} s)",
    ]
    return "\n\n".join(parts)


def render_markdown(results: Results) -> str:
    """The generated `docs/benchmarks.md`."""
    parts = [
        "# Benchmarks",
        "<!-- Generated by `python -m benchmarks`; edit benchmarks/report.py, not this file. -->",
        "What the graph itself costs, with every LLM call answered by an instant fake model "
        "(`benchmarks/fake_models.py`): request validation, prompt rendering, LangGraph's "
        "Pregel loop and `Send` fan-out, the stage nodes (one task per `Send`, re-asks sent "
        "again), pydantic validation and the "
        "usage report. Real model latency comes on top of these numbers. LangSmith tracing is "
        "off during the run. Sections 4 and 5 call no model at all: they count the real prompts "
        "of real Beauty users with tiktoken.",
        f"Command (from the repository root):\n\n```\n{results.command}\n```",
        f"Run {results.started} in {results.duration_s:.0f} s. "
        "Raw numbers: [`benchmarks/results.json`](../benchmarks/results.json).",
        "## Machine",
        machine_section(results),
        "## 1. Orchestration overhead",
        orchestration_section(results),
        "### Where the time goes",
        profile_section(results),
        "## 2. Scaling with candidates",
        scaling_section(results),
        "## 3. Concurrency",
        concurrency_section(results),
        "## 4. Cache effect",
        cache_section(results),
        "## 5. Tokens per recommendation",
        tokens_section(results),
    ]
    if results.notes:
        parts += ["## Notes", "\n".join(f"- {n}" for n in results.notes)]
    return "\n\n".join(parts) + "\n"


def write_outputs(results: Results, doc: Path = DOC_PATH, data: Path = JSON_PATH) -> list[Path]:
    """Write the Markdown report and the JSON results; return the paths written."""
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(render_markdown(results), encoding="utf-8")
    data.write_text(json.dumps(asdict(results), indent=2) + "\n", encoding="utf-8")
    return [doc, data]
