"""Dry-run cost estimates: the prompts counted are the graph's, counts are exact, prices applied."""

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatResult
from langgraph.store.memory import InMemoryStore

from m3rec_graph import build_graph, context_for
from m3rec_graph.context import ModelSpec
from m3rec_graph.contracts.request import RecommendationRequest, parse_request
from m3rec_graph.contracts.schemas import (
    PointwiseScore,
    TraitsAnswer,
    listwise_contract,
    profile_contract,
)
from m3rec_graph.cost.estimate import (
    CostSettings,
    OutputAssumptions,
    TokenCounter,
    _Estimator,
    compact_json,
    estimate_costs,
    estimate_requests,
    format_report,
    parse_output_overrides,
    typical_judgement,
    typical_listwise_answer,
    typical_profile_answer,
    typical_traits_answer,
)
from m3rec_graph.errors import ConfigurationError
from m3rec_graph.evaluation.datasets import build_requests, load_dataset
from m3rec_graph.llm.registry import registry
from m3rec_graph.llm.request_body import params_text, schema_transport, structured_params
from m3rec_graph.llm.routing import openai_model
from m3rec_graph.llm.tokens import count_messages, count_text
from m3rec_graph.prompts.loader import load_prompt
from m3rec_graph.state import RecInput
from m3rec_graph.storage.memory import write_traits_sync
from tests.fakes import (
    Responder,
    ScriptedChatModel,
    candidate_ids_in,
    history_ids_in,
    stage_of,
)

BEAUTY = Path(__file__).parents[1] / "fixtures" / "beauty_small"
A = OutputAssumptions()


@pytest.fixture(scope="module")
def requests() -> list[RecommendationRequest]:
    cases = build_requests(load_dataset(BEAUTY), n_users=4, n_negatives=19, seed=3)
    return [parse_request(case.to_request()) for case in cases]


# --------------------------------------------------------------------------- token counting

EDGE_TEXTS = [
    "",
    "\n",
    "end\n",
    "a\n\nb",
    "x.\n/usr\n",
    "  \n  \nfoo",
    "line\n indented\n\tTab",
    "it's\n're\n'll",
    "{\"a\":1}\n}\n]\n",
    "B004756YJA\nB0020YLEYK\n\n\n- functional: x",
    "naïve café\n日本語\n🙂 emoji",
    "12345678\n90\n",
]


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-3.5-turbo"])
def test_piecewise_counting_equals_tiktoken_on_edge_cases(model: str) -> None:
    counter = TokenCounter(model)
    for text in EDGE_TEXTS:
        assert counter.text(text) == count_text(text, model), repr(text)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab Z9.'/\n\t\r-_\"{}é")), max_size=60))
def test_piecewise_counting_equals_tiktoken_on_random_text(text: str) -> None:
    for model in ("gpt-4o", "gpt-3.5-turbo"):
        assert TokenCounter(model).text(text) == count_text(text, model)


def test_message_count_matches_the_usage_estimate(requests: list[RecommendationRequest]) -> None:
    from m3rec_graph.stages.mope import MopeStage
    from m3rec_graph.state import MopeState

    state = MopeState(user_id=requests[0].user_id, history=requests[0].history)
    messages = load_prompt("mope").format(**MopeStage().variables(state))
    for model in ("gpt-4o", "gpt-3.5-turbo"):
        assert TokenCounter(model).messages(messages) == count_messages(messages, model)


# --------------------------------------------------------------------------- typical answers


def test_typical_answers_validate_against_the_answer_schemas() -> None:
    ids = ["B01", "B02", "B03"]
    profile_contract(ids).validate_answer(typical_profile_answer(ids, A))
    profile_contract(["only"]).validate_answer(typical_profile_answer(["only"], A))
    TraitsAnswer.model_validate(typical_traits_answer(A))
    PointwiseScore.model_validate(typical_judgement(A))
    listwise_contract(ids).validate_answer(typical_listwise_answer(ids, A))
    long = OutputAssumptions(summary_words=500, rationale_words=200, trait_phrases=9, evidence_per_dimension=9)
    profile_contract(ids).validate_answer(typical_profile_answer(ids, long))
    TraitsAnswer.model_validate(typical_traits_answer(long))
    PointwiseScore.model_validate(typical_judgement(long))


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-3.5-turbo"])
def test_listwise_schema_shortcut_equals_building_the_schema(model: str) -> None:
    spec = openai_model(model, "mar")
    estimator = _Estimator(CostSettings(dataset=BEAUTY, users=1), InMemoryStore())
    for ids in (["B004756YJA", "7806397051"], ['we"ird\\id', "ünï", "x", "B1", "B10", "B100"]):
        fast = estimator._listwise_schema_text(spec, ids)
        assert fast == params_text(structured_params(spec, listwise_contract(ids)))


def test_schema_transport_follows_langchain_openai() -> None:
    assert schema_transport(structured_params(openai_model("gpt-4o", "mote"), TraitsAnswer)) == "json_schema"
    gpt35 = structured_params(openai_model("gpt-3.5-turbo", "mote"), TraitsAnswer)
    assert schema_transport(gpt35) == "function_calling"  # no Structured Outputs on gpt-3.5-turbo


# --------------------------------------------------------------------------- the graph's own prompts


class RecordingChatModel(ScriptedChatModel):
    """A scripted model that also keeps the exact messages and answer of every call."""

    seen: Any  # `Any`, not `list`: pydantic would copy a list, and the test reads the original

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        result = super()._generate(messages, stop, run_manager, **kwargs)
        prompt = "\n".join(m.text for m in messages)
        self.seen.append((stage_of(prompt), list(messages), result.generations[0].message.text))
        return result


def typical_responder(a: OutputAssumptions) -> Responder:
    """Answer every call with the dry run's typical answer, so MAR sees the same profile and traits."""

    def respond(stage: str, prompt: str) -> str:
        if stage == "mope":
            return compact_json(typical_profile_answer(history_ids_in(prompt), a))
        if stage == "mote":
            return compact_json(typical_traits_answer(a))
        if "<candidates>" in prompt.rsplit("</profile>", 1)[1]:
            return compact_json(typical_listwise_answer(candidate_ids_in(prompt), a))
        return compact_json(typical_judgement(a))

    return respond


@pytest.mark.parametrize("mode", ["listwise", "pointwise"])
async def test_dry_run_counts_exactly_the_prompts_the_graph_sends(
    requests: list[RecommendationRequest], mode: str
) -> None:
    seen: list[Any] = []
    responder = typical_responder(A)

    def factory(spec: ModelSpec) -> RecordingChatModel:
        return RecordingChatModel(model_name=spec.name, responder=responder, calls=[], seen=seen)

    graph = build_graph(chat_models=factory, store=InMemoryStore())
    ctx = context_for("gpt-4o", mar_mode=mode, seed=3, mar_chunk_size=10)
    for request in requests:
        out = await graph.ainvoke(cast(RecInput, request.model_dump(exclude_none=True)), context=ctx)
        assert out["degraded"] == []

    settings_ = CostSettings(dataset=BEAUTY, users=len(requests), presets=("gpt-4o",), mar_modes=(mode,), seed=3)  # type: ignore[arg-type]
    (estimate,) = estimate_requests(requests, settings_)
    for stage in ("mope", "mote", "mar"):
        calls = [(messages, answer) for s, messages, answer in seen if s == stage]
        got = estimate.stages[stage]
        assert got.calls == len(calls), stage
        assert got.prompt_tokens == sum(count_messages(m, "gpt-4o") for m, _ in calls), stage
        assert got.output_tokens == sum(count_text(a, "gpt-4o") for _, a in calls), stage
    distinct = {c.item_id for r in requests for c in r.candidates}
    assert estimate.cache.encoded == len(distinct)
    assert estimate.cache.slots == sum(len(r.candidates) for r in requests)


# --------------------------------------------------------------------------- estimates and report


def test_report_prices_presets_and_explains_hybrid_vs_the_all_strong_routing() -> None:
    report = estimate_costs(
        CostSettings(
            dataset=BEAUTY, users=6, negatives=19, presets=("hybrid", "gpt-6.1-sol", "paper", "gpt-4o", "local"),
            mar_modes=("listwise", "pointwise"),
        )
    )
    assert report.users == 6 and report.candidates_per_user == 20
    hybrid, strong = report.estimate("hybrid", "listwise"), report.estimate("gpt-6.1-sol", "listwise")
    paper, gpt4o = report.estimate("paper", "listwise"), report.estimate("gpt-4o", "listwise")
    local = report.estimate("local", "pointwise")
    assert hybrid is not None and strong is not None and paper is not None and gpt4o is not None
    assert local is not None
    assert hybrid.stages["mope"].model == "gpt-6-luna" and hybrid.stages["mar"].model == "gpt-6.1-sol"
    assert paper.stages["mope"].model == "gpt-3.5-turbo" and paper.stages["mar"].model == "gpt-4o"
    assert hybrid.stages["mar"].cost_usd == strong.stages["mar"].cost_usd  # same model and effort, same calls
    assert paper.stages["mar"].cost_usd == gpt4o.stages["mar"].cost_usd
    for cheap, dear in ((hybrid, strong), (paper, gpt4o)):
        assert cheap.cost_usd is not None and dear.cost_usd is not None
        assert 0 < cheap.cost_usd < dear.cost_usd
    assert local.cost_usd == 0
    mote = strong.stages["mote"]
    total = strong.cost_usd
    assert total is not None and mote.cost_usd is not None and strong.cost_usd_batch_mote == pytest.approx(total - mote.cost_usd / 2)
    assert strong.mote_without_cache.calls == strong.cache.slots >= strong.cache.encoded
    pointwise = report.estimate("gpt-4o", "pointwise")
    assert pointwise is not None and pointwise.stages["mar"].calls == 6 * 20
    assert gpt4o.stages["mar"].calls == 6 * 2  # chunks of 10
    comparisons = {(c.hybrid, c.strong, c.mar_mode): c for c in report.comparisons()}
    assert set(comparisons) == {
        (a, b, m) for a, b in (("hybrid", "gpt-6.1-sol"), ("paper", "gpt-4o")) for m in ("listwise", "pointwise")
    }
    for comparison in comparisons.values():
        assert 0 < comparison.reduction < 1
        assert sum(comparison.token_share.values()) == pytest.approx(1)
    text = format_report(report)
    assert "hybrid vs gpt-6.1-sol, MAR listwise" in text and "paper vs gpt-4o, MAR listwise" in text
    assert "cheaper" in text and "dominates" in text and "to gpt-6-luna" in text
    assert "USD per 1,000 users" in text and "hit rate" in text and "Batch API" in text
    data = report.to_dict()
    assert json.loads(json.dumps(data))["estimates"][0]["preset"] == "hybrid"


def test_reasoning_tokens_are_billed_as_output_in_the_dry_run(requests: list[RecommendationRequest]) -> None:
    reg = registry()
    settings_ = CostSettings(dataset=BEAUTY, users=4, presets=("hybrid", "paper"))
    hybrid, paper = estimate_requests(requests, settings_)
    mar = hybrid.stages["mar"]
    assert mar.reasoning_effort == "low" and hybrid.stages["mote"].reasoning_effort == "none"
    assert mar.reasoning_tokens == mar.calls * reg.assumed_reasoning("low") > 0
    assert hybrid.stages["mote"].reasoning_tokens == 0 and paper.stages["mar"].reasoning_tokens == 0
    price = reg.models["gpt-6.1-sol"].price
    assert price is not None
    assert mar.cost_usd == pytest.approx((mar.input_tokens * price.input + mar.output_tokens * price.output) / 1e6)
    # the same calls with no reasoning assumed: the difference is exactly the reasoning tokens
    (plain, _) = estimate_requests(requests, replace(settings_, reasoning_overrides={"low": 0}))
    assert mar.output_tokens - plain.stages["mar"].output_tokens == mar.reasoning_tokens
    with pytest.raises(ConfigurationError, match="reasoning-token"):
        estimate_requests(requests, replace(settings_, reasoning_overrides={"huge": 5}))


def test_schema_tokens_can_be_left_out_and_outputs_overridden(requests: list[RecommendationRequest]) -> None:
    base = CostSettings(dataset=BEAUTY, users=4, presets=("gpt-4o",))
    (with_schema,) = estimate_requests(requests, base)
    (without,) = estimate_requests(
        requests,
        CostSettings(dataset=BEAUTY, users=4, presets=("gpt-4o",), include_schema=False,
                     output_overrides={"mope": 100, "mote": 50, "mar": 30}),
    )
    for stage in ("mope", "mote", "mar"):
        assert with_schema.stages[stage].schema_tokens > 0
        assert without.stages[stage].input_tokens == without.stages[stage].prompt_tokens
    assert without.stages["mope"].output_tokens == 100 * without.stages["mope"].calls
    assert without.stages["mote"].output_tokens == 50 * without.stages["mote"].calls
    assert without.stages["mar"].output_tokens == 30 * sum(len(r.candidates) for r in requests)


def test_a_filled_trait_cache_counts_as_encoded(requests: list[RecommendationRequest]) -> None:
    store = InMemoryStore()
    version = load_prompt("mote").version
    first = requests[0].candidates[:5]
    traits = TraitsAnswer.model_validate(typical_traits_answer(A)).to_traits()
    for item in first:
        write_traits_sync(store, item, traits, model="gpt-4o", prompt_version=version)
    settings_ = CostSettings(dataset=BEAUTY, users=4, presets=("gpt-4o", "hybrid"))
    cold_4o, cold_hybrid = estimate_requests(requests, settings_)
    warm_4o, warm_hybrid = estimate_requests(requests, settings_, store=store)
    assert warm_4o.cache.prefilled == 5 and warm_4o.cache.encoded == cold_4o.cache.encoded - 5
    assert warm_hybrid.cache.prefilled == 0  # namespaces name the model: gpt-6-luna traits are not stored


def test_bad_settings_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="unknown preset"):
        estimate_costs(CostSettings(dataset=BEAUTY, users=2, presets=("gpt-5",)))
    with pytest.raises(ConfigurationError, match="--users"):
        estimate_costs(CostSettings(dataset=BEAUTY, users=0))
    with pytest.raises(ConfigurationError, match="STAGE=TOKENS"):
        parse_output_overrides("mar=lots")
    assert parse_output_overrides("mope=400, mar=45") == {"mope": 400.0, "mar": 45.0}


# --------------------------------------------------------------------------- CLI


def test_cli_dry_run_prints_tables_and_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from m3rec_graph.cli.app import main

    out = tmp_path / "cost.json"
    main([
        "cost", "estimate", "--dataset", str(BEAUTY), "--users", "3", "--negatives", "19",
        "--presets", "hybrid,gpt-6.1-sol", "--mar-mode", "both", "--json", str(out),
    ])
    captured = capsys.readouterr()
    assert "### `hybrid`, MAR pointwise" in captured.out and "hybrid vs gpt-6.1-sol, MAR pointwise" in captured.out
    assert "no cost-vs-accuracy plot in a dry run" in captured.err
    assert len(json.loads(out.read_text())["estimates"]) == 4


def test_cli_old_dry_run_spelling_is_the_estimate_with_a_deprecation_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from m3rec_graph.cli.app import main

    flags = ["--dataset", str(BEAUTY), "--users", "3", "--negatives", "19", "--presets", "hybrid"]
    main(["cost", "estimate", *flags, "--json", str(tmp_path / "new.json")])
    new = capsys.readouterr()
    main(["cost", *flags, "--dry-run", "--json", str(tmp_path / "old.json")])
    old = capsys.readouterr()
    assert old.out == new.out and "### `hybrid`, MAR listwise" in old.out
    assert (tmp_path / "old.json").read_text() == (tmp_path / "new.json").read_text()
    note, rest = old.err.split("\n", 1)
    assert note == (
        "m3rec: note: `m3rec cost --dry-run` is deprecated and will be removed in the next release;"
        " use `m3rec cost estimate` (the same flags, without --dry-run)"
    )
    assert rest == new.err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["estimate", "--presets", "hybrid,gpt-5"], "unknown preset 'gpt-5'"),
        (["estimate", "--output-tokens", "ranker=3"], "STAGE=TOKENS"),
    ],
)
def test_cli_bad_cost_input_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    from m3rec_graph.cli.app import main

    with pytest.raises(SystemExit) as exit_info:
        main(["cost", argv[0], "--dataset", str(BEAUTY), "--users", "2", *argv[1:]])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert message in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["measure"], "the following arguments are required: --out"),
        (
            ["measure", "--out", "x", "--mar-mode", "pointwise", "--chunk-size", "5"],
            "unrecognized arguments: --mar-mode pointwise --chunk-size 5"
            " (--mar-mode, --chunk-size are flags of `m3rec cost estimate`)",
        ),
        (
            ["estimate", "--baselines", "random", "--concurrency", "1"],
            "unrecognized arguments: --baselines random --concurrency 1"
            " (--baselines, --concurrency are flags of `m3rec cost measure`)",
        ),
        (["estimate", "--dry-run"], "unrecognized arguments: --dry-run"),
    ],
)
def test_cli_flags_of_the_other_cost_mode_exit_2_with_the_mode_usage(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    from m3rec_graph.cli.app import main

    with pytest.raises(SystemExit) as exit_info:
        main(["cost", argv[0], "--dataset", str(BEAUTY), "--users", "2", *argv[1:]])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.startswith(f"usage: m3rec cost {argv[0]} ")
    assert err.endswith(f"m3rec cost {argv[0]}: error: {message}\n") and "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "m3rec cost measure: error: the following arguments are required: --out"),
        (["--out", "x", "--mar-mode", "pointwise"], "--mar-mode is a flag of `m3rec cost estimate`"),
        (["--dry-run", "--presets", "hybrid,gpt-5"], "m3rec: error: unknown preset 'gpt-5'"),
    ],
)
def test_cli_old_cost_spellings_fail_as_their_mode_does_after_the_note(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    from m3rec_graph.cli.app import main

    with pytest.raises(SystemExit) as exit_info:
        main(["cost", "--dataset", str(BEAUTY), "--users", "2", *argv])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    mode = "estimate" if "--dry-run" in argv else "measure"
    assert err.startswith("m3rec: note: `m3rec cost") and f"use `m3rec cost {mode}`" in err.splitlines()[0]
    assert message in err and "Traceback" not in err
