"""The model registry: lifecycle against an injectable clock, per-stage efforts, request parameters.

Every date here is pinned (`today=` or `M3REC_TODAY`): no test reads the wall clock.
"""

import datetime as dt
import json
import warnings
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage

from m3rec_graph.context import ModelSpec
from m3rec_graph.contracts.schemas import TraitsAnswer
from m3rec_graph.errors import ConfigurationError
from m3rec_graph.llm import registry as reg
from m3rec_graph.llm.catalogue import format_models, list_models
from m3rec_graph.llm.registry import (
    ModelDeprecationWarning,
    ModelInfo,
    ModelRetiredError,
    UnknownModelWarning,
    check_lifecycle,
    model_info,
    registry,
    today,
)
from m3rec_graph.llm.request_body import chat_request_body
from m3rec_graph.llm.routing import (
    DEFAULT_EFFORTS,
    PRESETS,
    RemoteContext,
    context_for,
    openai_model,
)
from m3rec_graph.llm.tokens import count_text
from m3rec_graph.llm.usage import call_usage, usage_report
from m3rec_graph.text.item_text import TOKENIZER_MODEL

BEFORE_GPT4O_SHUTDOWN = "2026-12-03"
AFTER_GPT4O_SHUTDOWN = "2027-01-20"


def test_every_registry_row_cites_its_sources_and_dates_its_price() -> None:
    data = registry()
    assert data.taken and data.batch_discount == 0.5
    for name, info in data.models.items():
        assert info.sources, name
        assert info.price is not None and info.price.source and info.price.taken, name
        assert info.shutdown is None or info.replacement, f"{name}: a shutdown names its replacement"
        if info.reasoning is not None:
            assert info.reasoning.default in info.reasoning.efforts, name
    # the lineup as OpenAI's pages state it on 2026-12-03
    luna = data.models["gpt-6-luna"].price
    assert luna is not None and (luna.input, luna.output) == (0.10, 0.50)
    sol56 = data.models["gpt-5.6-sol"].price
    assert sol56 is not None and (sol56.input, sol56.output) == (5.0, 30.0)  # the $4/$20 promotion ended
    assert data.models["gpt-3.5-turbo"].shutdown == dt.date(2026, 10, 23)
    assert data.models["gpt-3.5-turbo"].replacement == "gpt-5.6-terra"
    assert data.models["gpt-4o"].replacement == "gpt-6-luna"
    sol61 = data.models["gpt-6.1-sol"].reasoning
    assert sol61 is not None and "none" not in sol61.efforts and "minimal" not in sol61.efforts


def test_the_clock_is_injectable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("M3REC_TODAY", "2027-02-01")
    assert today() == dt.date(2027, 2, 1)
    assert today("2026-12-11") == dt.date(2026, 12, 11)
    assert today(dt.date(2030, 1, 1)) == dt.date(2030, 1, 1)
    monkeypatch.setenv("M3REC_TODAY", "tomorrow")
    with pytest.raises(ConfigurationError, match="YYYY-MM-DD"):
        today()


def test_hybrid_routes_the_cheap_tier_to_the_encoders_and_a_reasoning_model_to_mar() -> None:
    ctx = context_for("hybrid", today=BEFORE_GPT4O_SHUTDOWN)
    mope, mote, mar = ctx.mope_model, ctx.mote_model, ctx.mar_model
    assert (mope.name, mote.name, mar.name) == ("gpt-6-luna", "gpt-6-luna", "gpt-6.1-sol")
    assert (mope.reasoning_effort, mote.reasoning_effort, mar.reasoning_effort) == ("none", "none", "low")
    # temperature only where the model allows it at that effort
    assert mope.temperature == 0.0 and mar.temperature is None
    # reasoning shares max_completion_tokens with the answer: MAR's budget has room for both
    assert mar.max_tokens == 1500 + registry().allowance("low")
    assert mote.max_tokens == 300  # effort none: no allowance


@pytest.mark.parametrize("preset", [p for p in PRESETS if p not in ("local", "paper")])
def test_every_current_preset_sends_only_what_its_models_accept(preset: str) -> None:
    ctx = context_for(preset, today=BEFORE_GPT4O_SHUTDOWN)
    for stage in ("mope", "mote", "mar"):
        spec = ctx.model_for(stage)
        info = model_info(spec.name)
        body = chat_request_body(spec, TraitsAnswer, [HumanMessage("hi")])
        assert "max_tokens" not in body and body["max_completion_tokens"] == spec.max_tokens
        assert "reasoning" not in body  # `reasoning={...}` would switch langchain-openai to Responses
        if info.reasoning is None:
            assert "reasoning_effort" not in body
        else:
            assert body["reasoning_effort"] in info.reasoning.efforts
        assert ("temperature" in body) == info.temperature_allowed(body.get("reasoning_effort"))
        assert body["response_format"]["type"] == "json_schema"
        assert "tools" not in body


def test_the_paper_preset_fails_fast_unless_retired_models_are_allowed() -> None:
    with pytest.raises(ModelRetiredError, match=r"gpt-3.5-turbo was shut down on 2026-10-23.*gpt-5.6-terra"):
        context_for("paper", today=BEFORE_GPT4O_SHUTDOWN)
    ctx = context_for("paper", allow_retired=True, today=BEFORE_GPT4O_SHUTDOWN)
    assert ctx.mope_model.structured_method == "function_calling"  # no Structured Outputs on gpt-3.5-turbo
    assert ctx.mope_model.reasoning_effort is None and ctx.mar_model.temperature == 0.0
    assert RemoteContext(routing="paper", allow_retired=True).resolve().mar_model.name == "gpt-4o"


def test_a_model_near_its_shutdown_warns_and_after_it_is_refused() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        context_for("gpt-4o", today=BEFORE_GPT4O_SHUTDOWN)  # 42 days left: no warning
    with pytest.warns(ModelDeprecationWarning, match="gpt-4o shuts down on 2027-01-14"):
        context_for("gpt-4o", today="2026-12-20")
    with pytest.raises(ModelRetiredError, match="gpt-6-luna"):
        context_for("gpt-4o", today=AFTER_GPT4O_SHUTDOWN)
    with pytest.raises(ModelRetiredError):
        context_for("local", {"mar": "gpt-4o-mini"}, today=AFTER_GPT4O_SHUTDOWN)
    # the current models and the offline default stay routable after every announced shutdown
    assert context_for("hybrid", today=AFTER_GPT4O_SHUTDOWN).mar_model.name == "gpt-6.1-sol"
    assert context_for("local", today="2030-01-01").mar_model.base_url is not None


def test_a_tokenizer_alias_is_not_a_routed_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("M3REC_TODAY", AFTER_GPT4O_SHUTDOWN)
    assert TOKENIZER_MODEL == "gpt-4o"  # only names tiktoken's o200k_base encoding
    assert count_text("hello world", TOKENIZER_MODEL) == 2
    local = context_for("local")  # its tokenizer_model is gpt-4o too: no lifecycle check
    assert local.mar_model.tokenizer_model == "gpt-4o"


def test_efforts_default_per_stage_move_to_what_a_model_accepts_and_explicit_ones_are_checked() -> None:
    sol = context_for("gpt-6.1-sol", today=BEFORE_GPT4O_SHUTDOWN)
    assert DEFAULT_EFFORTS["mope"] == "none" and sol.mope_model.reasoning_effort == "low"
    assert context_for("hybrid", efforts={"mar": "medium"}).mar_model.reasoning_effort == "medium"
    luna = context_for("hybrid", efforts={"mope": "high"}).mope_model
    assert luna.reasoning_effort == "high" and luna.temperature is None
    with pytest.raises(ConfigurationError, match=r"does not accept reasoning effort 'none'.*low, medium"):
        context_for("hybrid", efforts={"mar": "none"})
    with pytest.raises(ConfigurationError, match="does not accept reasoning effort 'minimal'"):
        context_for("hybrid", efforts={"mope": "minimal"})  # gpt-6-luna lists no `minimal`
    with pytest.raises(ConfigurationError, match="not a reasoning model"):
        context_for("gpt-4o", efforts={"mar": "low"}, today=BEFORE_GPT4O_SHUTDOWN)
    with pytest.raises(ConfigurationError, match="not a reasoning model"):
        context_for("local", efforts={"mar": "low"})
    with pytest.raises(ConfigurationError, match="bad reasoning effort"):
        RemoteContext(efforts={"mar": "turbo"}).resolve()  # type: ignore[dict-item]


def test_an_unknown_model_gets_one_warning_conservative_defaults_and_no_price() -> None:
    reg._unknown.cache_clear()
    with pytest.warns(UnknownModelWarning, match="my-vllm-model"):
        spec = openai_model("my-vllm-model", "mar")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        openai_model("my-vllm-model", "mote")  # the second use is quiet
        check_lifecycle("my-vllm-model", dt.date(2099, 1, 1))  # no lifecycle known: never refused
    assert spec.structured_method == "json_schema" and spec.temperature == 0.0
    assert spec.reasoning_effort is None and spec.max_tokens == 1500
    usage = call_usage("mar", "my-vllm-model", None, [HumanMessage("x")], None, accepted=True)
    assert usage_report([usage]).total.cost_usd is None  # not 0: the price is unknown


def test_a_responses_only_model_is_refused_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = dict(registry().models)
    rows["gpt-responses-only"] = ModelInfo(name="gpt-responses-only", api="responses", sources=("test",))
    monkeypatch.setattr(reg, "registry", lambda path=reg.REGISTRY_PATH: registry().model_copy(update={"models": rows}))
    with pytest.raises(ConfigurationError, match="Responses API only.*Chat Completions"):
        openai_model("gpt-responses-only", "mar")


def test_reasoning_tokens_count_as_output_in_usage_and_cost() -> None:
    from langchain_core.messages import AIMessage

    raw = AIMessage(
        "{}",
        usage_metadata={
            "input_tokens": 1000,
            "output_tokens": 1200,
            "total_tokens": 2200,
            "output_token_details": {"reasoning": 900},
        },
    )
    usage = call_usage("mar", "gpt-6.1-sol", None, [HumanMessage("x")], raw, accepted=True)
    assert usage["output_tokens"] == 1200 and usage["reasoning_tokens"] == 900
    report = usage_report([usage])
    assert report.stages["mar"].reasoning_tokens == 900
    assert report.total.cost_usd == pytest.approx((1000 * 2.0 + 1200 * 10.0) / 1e6)


def test_the_api_key_stays_out_of_the_repr() -> None:
    spec = ModelSpec(name="gpt-6-luna", api_key="sk-secret-value-1234567890")
    assert "sk-secret" not in repr(spec) and "api_key" not in repr(spec)


def test_models_listing_reads_the_registry_and_the_assumed_date() -> None:
    listing = list_models(check_provider=False, on=dt.date(2026, 12, 3))
    text = format_models(listing)
    by_name = {row.info.name: row for row in listing.rows}
    assert by_name["gpt-3.5-turbo"].status == "retired" and by_name["gpt-4o"].status == "deprecated"
    assert by_name["gpt-6-luna"].status == "active" and "hybrid:mope" in by_name["gpt-6-luna"].routed_by
    assert "models as of 2026-12-03" in text and "replacement gpt-5.6-terra" in text
    assert "$0.1 in / $0.5 out per 1M" in text


def test_models_json_is_the_only_price_file() -> None:
    package = Path(reg.__file__).parents[1]
    assert not (package / "data" / "prices.json").exists()
    raw = json.loads(reg.REGISTRY_PATH.read_text())
    assert set(raw["reasoning_allowance"]) - {"about"} == set(reg.EFFORTS)
    assert set(raw["assumed_reasoning_tokens"]) - {"about"} == set(reg.EFFORTS)
