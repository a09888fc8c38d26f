"""The strict fault server's own table of OpenAI Chat Completions rules.

Plain data, one row per model and one per error, each citing the page it comes from.
It never imports `m3rec_graph`: the package keeps its own model registry, and a row
copied from there could be wrong on both sides at once. Checked on 2026-12-03 against
OpenAI's pages on developers.openai.com and, where those pages do not spell out the
wire behaviour (error codes, `param`, what Chat Completions accepts as opposed to the
Responses API), against captured API answers quoted in public issue threads; those rows
say so in their `source`/`notes`.

`tests/fault_server.py` applies the table in strict mode (`FaultConfig(strict=True)`).
"""

from dataclasses import dataclass
from typing import Literal

# --- where the facts come from --------------------------------------------------------------

DEPRECATIONS = "https://developers.openai.com/api/docs/deprecations"
"""Shutdown dates and replacements; also: GET /v1/models carries an optional `shutdown_date`
(YYYY-MM-DD or null)."""
DEPLOYMENT_CHECKLIST = "https://developers.openai.com/api/docs/guides/deployment-checklist"
"""GPT-6: Astra and 6.1 Sol need Responses for tool calling; 6 Sol and 6 Luna have Chat
Completions function calling only at reasoning_effort "none"; when effort is not none,
remove temperature, top_p, top_logprobs and logprobs."""
GPT_6_LUNA = "https://developers.openai.com/ja-JP/api/docs/models/gpt-6-luna"
"""reasoning.effort: none, low, medium (default), high, xhigh, max; Chat Completions function
calling only at none (the stored copy is the ja-JP page)."""
GPT_6_SOL = "https://developers.openai.com/api/docs/models/gpt-6-sol"
GPT_6_1_SOL = "https://developers.openai.com/api/docs/models/gpt-6.1-sol"
GPT_6_ASTRA = "https://developers.openai.com/api/docs/models/gpt-6-astra"
GPT_5_6_LUNA = "https://developers.openai.com/api/docs/models/gpt-5.6-luna"
"""reasoning.effort: none, low, medium (default), high, xhigh, max."""
REASONING_GUIDE = "https://developers.openai.com/api/docs/guides/reasoning"
STRUCTURED_OUTPUTS = "https://developers.openai.com/api/docs/guides/structured-outputs"
"""json_schema needs gpt-4o-mini, gpt-4o-2024-08-06 and later; strict schemas list every
property in `required` and set `additionalProperties: false` on every object."""

# Captured answers of the real API (the wording, status, type, param and code of errors):
CAPTURE_MODEL_NOT_FOUND = "https://github.com/router-for-me/CLIProxyAPI/issues/6061"
CAPTURE_MAX_TOKENS = "https://github.com/griptape-ai/ComfyUI-Griptape/issues/312"
CAPTURE_TEMPERATURE = "https://github.com/gabrii/Cursor-Azure-GPT-5/issues/33"
CAPTURE_TEMPERATURE_GPT5 = "https://github.com/QwenLM/qwen-code/issues/921"
CAPTURE_UNSUPPORTED_PARAMETER = "https://github.com/BeehiveInnovations/pal-mcp-server/issues/78"
CAPTURE_EFFORT_VALUE = "https://github.com/openai/openai-agents-python/issues/2089"
CAPTURE_EFFORT_ASTRA_CHAT = "https://github.com/BerriAI/litellm-docs/pull/1173"
CAPTURE_EFFORT_ASTRA_FOUNDRY = "https://github.com/maximhq/bifrost/issues/7275"
CAPTURE_EFFORT_6_1_SOL_CHAT = "https://docs.laozhang.ai/en/announcements/gpt-6-chat-tools-2026-11"
CAPTURE_EFFORT_5_6_LUNA = "https://github.com/experientiallabs/experiential/issues/764"
CAPTURE_EFFORT_UNRECOGNIZED = "https://github.com/AAswordman/Operit/issues/1048"
CAPTURE_EFFORT_UNRECOGNIZED_4O_MINI = "https://github.com/davidmigloz/langchain_dart/issues/712"
CAPTURE_TOOLS_5_6 = "https://github.com/itzcrazykns/vane/issues/1173"
CAPTURE_TOOLS_ASTRA = "https://github.com/microsoft/foundry-dev-tools/issues/779"
CAPTURE_TOOLS_DEFAULT_EFFORT = "https://github.com/crewAIInc/crewAI/pull/6660"
CAPTURE_TOOLS_RESPONSES_ONLY = "https://github.com/dotnet/extensions/issues/7407"
CAPTURE_JSON_SCHEMA_UNSUPPORTED = "https://github.com/microsoft/semantic-kernel/issues/12917"
CAPTURE_JSON_SCHEMA_GPT_3_5 = "https://github.com/keephq/keep/issues/6712"
CAPTURE_INVALID_SCHEMA_REQUIRED = "https://github.com/vercel/ai/issues/6484"
CAPTURE_INVALID_SCHEMA_CODE = "https://github.com/mavam/pi-web-providers/issues/14"
CAPTURE_INVALID_FUNCTION_PARAMETERS = (
    "https://github.com/xemantic/xemantic-ai-tool-schema/issues/37"
)
CAPTURE_INVALID_URL = "https://github.com/harry0703/MoneyPrinterTurbo/issues/57"

EFFORTS: tuple[str, ...] = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
"""Every reasoning effort OpenAI names, lowest first."""

SAMPLING_PARAMETERS: tuple[str, ...] = ("temperature", "top_p", "logprobs", "top_logprobs")
"""What a reasoning model refuses at an effort that forbids sampling controls."""

ToolsWording = Literal["set_none", "responses_only"]


@dataclass(frozen=True)
class ModelRule:
    """What one model accepts on /v1/chat/completions, and when it is served."""

    model: str
    source: str
    """The OpenAI page the row comes from (further pages in `notes`)."""
    released: str
    """Approximate release date (YYYY-MM-DD): `created` in GET /v1/models is derived from it,
    it is not OpenAI's exact value."""
    shutdown_date: str | None = None
    """The last day it is served is the day before (DEPRECATIONS); `None`: none announced."""
    replacement: str | None = None
    reasoning: bool = False
    efforts: tuple[str, ...] = ()
    """The `reasoning_effort` values Chat Completions accepts (empty: not a reasoning model,
    the argument itself is refused)."""
    default_effort: str | None = None
    """The effort a request without `reasoning_effort` runs at."""
    sampling_efforts: tuple[str, ...] | None = None
    """Efforts at which temperature/top_p/logprobs/top_logprobs are accepted (`None`: always)."""
    tools_efforts: tuple[str, ...] | None = None
    """Efforts at which function `tools` are accepted on Chat Completions (`None`: always)."""
    tools_wording: ToolsWording = "set_none"
    """Which refusal text a tools request gets (see ERRORS)."""
    structured_outputs: bool = True
    """`response_format` of type `json_schema` is accepted."""
    notes: str = ""


_GPT6_EFFORTS = ("none", "low", "medium", "high", "xhigh", "max")
_CHAT_UP_TO_XHIGH = ("low", "medium", "high", "xhigh")
_GPT5_EFFORTS = ("minimal", "low", "medium", "high")
_O_EFFORTS = ("low", "medium", "high")

MODELS: tuple[ModelRule, ...] = (
    # --- current reasoning models -----------------------------------------------------------
    ModelRule(
        model="gpt-6-luna",
        source=GPT_6_LUNA,
        released="2026-09-22",
        reasoning=True,
        efforts=_GPT6_EFFORTS,
        default_effort="medium",
        sampling_efforts=("none",),
        tools_efforts=("none",),
        notes=f"No 'minimal' on the model page. Sampling and tools rules: {DEPLOYMENT_CHECKLIST}.",
    ),
    ModelRule(
        model="gpt-6-sol",
        source=GPT_6_SOL,
        released="2026-09-22",
        reasoning=True,
        efforts=_GPT6_EFFORTS,
        default_effort="medium",
        sampling_efforts=("none",),
        tools_efforts=("none",),
        notes=f"Same effort ladder as GPT-6 Luna; superseded by gpt-6.1-sol, no shutdown announced. {DEPLOYMENT_CHECKLIST}",
    ),
    ModelRule(
        model="gpt-6.1-sol",
        source=GPT_6_1_SOL,
        released="2026-09-29",
        reasoning=True,
        efforts=_CHAT_UP_TO_XHIGH,
        default_effort="medium",
        sampling_efforts=(),
        tools_efforts=(),
        tools_wording="responses_only",
        notes=(
            "none and minimal are not supported (model page). Chat Completions goes up to xhigh, "
            f"max is Responses-only ({CAPTURE_EFFORT_6_1_SOL_CHAT}). Tools need Responses "
            f"({DEPLOYMENT_CHECKLIST}); no captured refusal text for this model, so it gets the "
            f"Responses-only wording ({CAPTURE_TOOLS_RESPONSES_ONLY})."
        ),
    ),
    ModelRule(
        model="gpt-6-astra",
        source=GPT_6_ASTRA,
        released="2026-09-03",
        reasoning=True,
        efforts=_CHAT_UP_TO_XHIGH,
        default_effort="medium",
        sampling_efforts=(),
        tools_efforts=(),
        notes=(
            f"Chat Completions accepts low..xhigh, max only on Responses ({CAPTURE_EFFORT_ASTRA_CHAT}, "
            f"{CAPTURE_EFFORT_ASTRA_FOUNDRY}); tools refused at every effort with the 'set "
            f"reasoning_effort to none' text although none is refused ({CAPTURE_TOOLS_ASTRA})."
        ),
    ),
    *(
        ModelRule(
            model=name,
            source=GPT_5_6_LUNA,
            released="2026-07-09",
            reasoning=True,
            efforts=_GPT6_EFFORTS,
            default_effort="medium",
            sampling_efforts=("none",),
            tools_efforts=("none",),
            notes=(
                f"'minimal' refused ({CAPTURE_EFFORT_5_6_LUNA}); tools only at none, and the "
                f"server-side default effort refuses them too ({CAPTURE_TOOLS_5_6}, "
                f"{CAPTURE_TOOLS_DEFAULT_EFFORT}). One third-party probe saw Chat Completions "
                "list only none..xhigh for this family: max is kept as the model page says."
            ),
        )
        for name in ("gpt-5.6-luna", "gpt-5.6-terra", "gpt-5.6-sol")
    ),
    # --- reasoning models shutting down 2026-12-11 -----------------------------------------
    *(
        ModelRule(
            model=name,
            source=DEPRECATIONS,
            released="2025-08-07",
            shutdown_date="2026-12-11",
            replacement=replacement,
            reasoning=True,
            efforts=_GPT5_EFFORTS,
            default_effort="medium",
            sampling_efforts=(),
            notes=f"Efforts and default: {REASONING_GUIDE}; temperature default only: {CAPTURE_TEMPERATURE_GPT5}.",
        )
        for name, replacement in (
            ("gpt-5", "gpt-6.1-sol"),
            ("gpt-5-mini", "gpt-6.1-terra"),
            ("gpt-5-nano", None),
        )
    ),
    ModelRule(
        model="o3",
        source=DEPRECATIONS,
        released="2025-04-16",
        shutdown_date="2026-12-11",
        reasoning=True,
        efforts=_O_EFFORTS,
        default_effort="medium",
        sampling_efforts=(),
        notes=f"Temperature refused: {CAPTURE_UNSUPPORTED_PARAMETER}.",
    ),
    # --- non-reasoning models served until 2027-01-14 --------------------------------------
    *(
        ModelRule(
            model=name,
            source=DEPRECATIONS,
            released=released,
            shutdown_date="2027-01-14",
            replacement="gpt-6-luna",
            notes=f"Structured Outputs: {STRUCTURED_OUTPUTS}; reasoning_effort refused: {CAPTURE_EFFORT_UNRECOGNIZED}.",
        )
        for name, released in (
            ("gpt-4o", "2024-05-13"),
            ("gpt-4o-mini", "2024-07-18"),
            ("gpt-4.1", "2025-04-14"),
            ("gpt-4.1-mini", "2025-04-14"),
        )
    ),
    # --- shut down 2026-10-23 (rows kept so a pinned earlier `today` still serves them) ----
    ModelRule(
        model="gpt-3.5-turbo",
        source=DEPRECATIONS,
        released="2023-03-01",
        shutdown_date="2026-10-23",
        replacement="gpt-5.6-terra",
        structured_outputs=False,
        notes=f"No json_schema: {STRUCTURED_OUTPUTS}, {CAPTURE_JSON_SCHEMA_GPT_3_5}.",
    ),
    ModelRule(
        model="gpt-3.5-turbo-0125",
        source=DEPRECATIONS,
        released="2024-01-25",
        shutdown_date="2026-10-23",
        replacement="gpt-5.6-terra",
        structured_outputs=False,
    ),
    ModelRule(
        model="gpt-4",
        source=DEPRECATIONS,
        released="2023-06-13",
        shutdown_date="2026-10-23",
        replacement="gpt-5.6-sol",
        structured_outputs=False,
    ),
    ModelRule(
        model="gpt-4-turbo",
        source=DEPRECATIONS,
        released="2024-04-09",
        shutdown_date="2026-10-23",
        replacement="gpt-5.6-sol",
        structured_outputs=False,
    ),
    ModelRule(
        model="gpt-4.1-nano",
        source=DEPRECATIONS,
        released="2025-04-14",
        shutdown_date="2026-10-23",
    ),
    *(
        ModelRule(
            model=name,
            source=DEPRECATIONS,
            released=released,
            shutdown_date="2026-10-23",
            replacement=replacement,
            reasoning=True,
            efforts=_O_EFFORTS,
            default_effort="medium",
            sampling_efforts=(),
        )
        for name, released, replacement in (
            ("o1", "2024-12-17", "gpt-5.6-sol"),
            ("o3-mini", "2025-01-31", "gpt-5.6-sol"),
            ("o4-mini", "2025-04-16", "gpt-5.6-terra"),
        )
    ),
)
"""Every model the strict server knows; anything else is `model_not_found`."""

RULES: dict[str, ModelRule] = {rule.model: rule for rule in MODELS}


def rule_for(model: str) -> ModelRule | None:
    """Return the row of `model`, or `None` if the table does not know it."""
    return RULES.get(model)


def served(rule: ModelRule, today: str) -> bool:
    """Return whether `rule`'s model still answers on `today` (YYYY-MM-DD): the shutdown day is gone."""
    return rule.shutdown_date is None or today < rule.shutdown_date


def served_models(today: str) -> list[ModelRule]:
    """Return the rows still served on `today`, in table order."""
    return [rule for rule in MODELS if served(rule, today)]


# --- the errors --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorRule:
    """One refusal: its status and OpenAI error body (`message` is a `str.format` template)."""

    status: int
    message: str
    param: str | None
    code: str | None
    source: str
    type: str = "invalid_request_error"
    notes: str = ""
    fields: tuple[str, ...] = ()
    """The names `message` (and a `{...}` param) take."""


ERRORS: dict[str, ErrorRule] = {
    "model_not_found": ErrorRule(
        status=404,
        message="The model `{model}` does not exist or you do not have access to it.",
        param=None,
        code="model_not_found",
        source=CAPTURE_MODEL_NOT_FOUND,
        notes=f"Unknown models and models past their shutdown date ({DEPRECATIONS}).",
        fields=("model",),
    ),
    "max_tokens": ErrorRule(
        status=400,
        message="Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.",
        param="max_tokens",
        code="unsupported_parameter",
        source=CAPTURE_MAX_TOKENS,
        notes="Every reasoning model.",
    ),
    "reasoning_effort_unrecognized": ErrorRule(
        status=400,
        message="Unrecognized request argument supplied: reasoning_effort",
        param=None,
        code=None,
        source=CAPTURE_EFFORT_UNRECOGNIZED,
        notes=(
            'A non-reasoning model, any value ("none" included). Both captures (gpt-4o 2026-08, '
            f"gpt-4o-mini {CAPTURE_EFFORT_UNRECOGNIZED_4O_MINI}) carry param and code null."
        ),
    ),
    "reasoning_effort_value": ErrorRule(
        status=400,
        message="Unsupported value: '{value}' is not supported with the '{model}' model. Supported values are: {supported}.",
        param="reasoning_effort",
        code="unsupported_value",
        source=CAPTURE_EFFORT_VALUE,
        notes="Captured on Responses (param 'reasoning.effort'); Chat Completions names its own argument.",
        fields=("value", "model", "supported"),
    ),
    "sampling_value": ErrorRule(
        status=400,
        message="Unsupported value: '{param}' does not support {value} with this model. Only the default (1) value is supported.",
        param="{param}",
        code="unsupported_value",
        source=CAPTURE_TEMPERATURE,
        notes=f"temperature or top_p other than 1 at an effort that forbids them ({DEPLOYMENT_CHECKLIST}).",
        fields=("param", "value"),
    ),
    "sampling_parameter": ErrorRule(
        status=400,
        message="Unsupported parameter: '{param}' is not supported with this model.",
        param="{param}",
        code="unsupported_parameter",
        source=CAPTURE_UNSUPPORTED_PARAMETER,
        notes="logprobs / top_logprobs where sampling controls are refused (the wording is the captured one for temperature).",
        fields=("param",),
    ),
    "json_schema_unsupported": ErrorRule(
        status=400,
        message=(
            "Invalid parameter: 'response_format' of type 'json_schema' is not supported with this model. "
            "Learn more about supported models at the Structured Outputs guide: "
            "https://platform.openai.com/docs/guides/structured-outputs"
        ),
        param=None,
        code=None,
        source=CAPTURE_JSON_SCHEMA_UNSUPPORTED,
        notes="The Chat Completions capture has param null (an Assistants one names response_format).",
    ),
    "invalid_json_schema": ErrorRule(
        status=400,
        message="Invalid schema for response_format '{name}': In context={context}, {problem}",
        param="response_format",
        code="invalid_json_schema",
        source=CAPTURE_INVALID_SCHEMA_REQUIRED,
        notes=(
            f"Wording from {CAPTURE_INVALID_SCHEMA_REQUIRED}; code from {CAPTURE_INVALID_SCHEMA_CODE} "
            "(a Responses capture; a Chat Completions one through Azure had code null). "
            f"Strict rules: {STRUCTURED_OUTPUTS}."
        ),
        fields=("name", "context", "problem"),
    ),
    "invalid_function_parameters": ErrorRule(
        status=400,
        message="Invalid schema for function '{name}': In context={context}, {problem}",
        param="tools[{index}].function.parameters",
        code="invalid_function_parameters",
        source=CAPTURE_INVALID_FUNCTION_PARAMETERS,
        fields=("name", "context", "problem", "index"),
    ),
    "function_tools_effort": ErrorRule(
        status=400,
        message=(
            "Function tools with reasoning_effort are not supported for {model} in /v1/chat/completions. "
            "To use function tools, use /v1/responses or set reasoning_effort to 'none'."
        ),
        param="reasoning_effort",
        code=None,
        source=CAPTURE_TOOLS_5_6,
        notes=f"Also without reasoning_effort, at the default effort ({CAPTURE_TOOLS_DEFAULT_EFFORT}).",
        fields=("model",),
    ),
    "function_tools_responses_only": ErrorRule(
        status=400,
        message="Function tools with reasoning_effort are not supported for {model} in /v1/chat/completions. Please use /v1/responses instead.",
        param="reasoning_effort",
        code=None,
        source=CAPTURE_TOOLS_RESPONSES_ONLY,
        notes="Captured for gpt-5.4-mini; used for rows with tools_wording='responses_only'.",
        fields=("model",),
    ),
    "invalid_url": ErrorRule(
        status=404,
        message="Invalid URL ({method} {path})",
        param=None,
        code=None,
        source=CAPTURE_INVALID_URL,
        notes="OpenAI's answer to an unknown route. The package never calls /v1/responses (it refuses Responses-only models): strict mode answers it like an unknown URL.",
        fields=("method", "path"),
    ),
}
"""Every refusal the strict server can give, by rule name (counted as `strict:<name>`)."""

STRICT_SCHEMA_PROBLEMS = {
    "additionalProperties": "'additionalProperties' is required to be supplied and to be false.",
    "required": "'required' is required to be supplied and to be an array including every key in properties. Missing '{key}'.",
}
"""The two strict-schema complaints, worded as the captures (CAPTURE_INVALID_SCHEMA_*) word them."""


def supported_values(values: tuple[str, ...]) -> str:
    """Return OpenAI's list wording: `'low', 'medium', 'high', and 'xhigh'`."""
    quoted = [f"'{value}'" for value in values]
    if len(quoted) <= 2:
        return " and ".join(quoted)
    return ", ".join(quoted[:-1]) + f", and {quoted[-1]}"
