"""Prompt hub push/pull against a fake LangSmith hub on 127.0.0.1, and the unreachable path."""

import shutil
import socket
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomli_w
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.prompts import ChatPromptTemplate
from langsmith import Client
from urllib3.util import Retry

from m3rec_graph.cli import app as cli
from m3rec_graph.cli import prompts as prompts_cli
from m3rec_graph.cli.options import build_context
from m3rec_graph.prompts.hub import (
    PROMPT_NAMES,
    PromptHubError,
    hub_prompt_file,
    prompt_file_text,
    pull_prompts,
    push_prompts,
    resolve_names,
)
from m3rec_graph.prompts.loader import load_prompt, prompt_dir
from m3rec_graph.state import RecInput
from tests.langsmith_hub_stub import PromptHubStub

HUB_NAMES = {
    "mope": "m3rec-mope",
    "mope_incremental": "m3rec-mope-incremental",
    "mote": "m3rec-mote",
    "mar_listwise": "m3rec-mar",
    "mar_pointwise": "m3rec-mar-pointwise",
    "mar_scores": "m3rec-mar-scores",
    "mar_rationales": "m3rec-mar-rationales",
}


@pytest.fixture
def hub() -> Iterator[PromptHubStub]:
    with PromptHubStub() as stub:
        yield stub


@pytest.fixture
def client(hub: PromptHubStub) -> Client:
    return Client(api_url=hub.url, api_key="fake", retry_config=Retry(total=0))


@pytest.fixture
def prompts_copy(tmp_path: Path) -> Path:
    """A copy of the shipped prompt files (tests never write the real ones)."""
    folder = tmp_path / "prompts"
    folder.mkdir()
    for path in prompt_dir().glob("*.toml"):
        shutil.copy(path, folder)
    return folder


def edited(name: str, new_system: str) -> ChatPromptTemplate:
    """The shipped prompt with another system message (an edit made in the LangSmith UI)."""
    spec = tomllib.loads((prompt_dir() / f"{name}.toml").read_text())
    messages = [(m["role"], m["template"]) for m in spec["messages"]]
    messages[0] = ("system", new_system)
    return ChatPromptTemplate.from_messages(messages, template_format="mustache")


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Each prompt file's bytes and modification time: "untouched" means not even rewritten."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.glob("*.toml"))}


def test_hub_names_come_from_the_prompt_files() -> None:
    assert {name: load_prompt(name).name for name in PROMPT_NAMES} == HUB_NAMES
    assert resolve_names(["m3rec-mar", "mope", "m3rec-mar"]) == ["mar_listwise", "mope"]
    with pytest.raises(PromptHubError, match="unknown prompt"):
        resolve_names(["ranker"])


def test_push_creates_one_hub_prompt_per_file_and_is_idempotent(hub: PromptHubStub, client: Client) -> None:
    pushed = push_prompts(client, tag="staging")
    assert [p.hub_name for p in pushed] == list(HUB_NAMES.values())
    assert all(p.url and p.hub_name in p.url for p in pushed)
    assert set(hub.repos) == set(HUB_NAMES.values())
    mar = hub.repos["m3rec-mar"]
    assert len(mar.commits) == 1 and "staging" in mar.commit_tags
    assert mar.tags == ["m3rec", "mar_listwise"] and "listwise" in mar.description
    # the hub stores a mustache chat template with the file's exact wording
    kwargs = mar.commits[0].manifest["kwargs"]
    system = kwargs["messages"][0]["kwargs"]["prompt"]["kwargs"]
    assert system["template_format"] == "mustache"
    assert system["template"] == load_prompt("mar_listwise").template.messages[0].prompt.template  # type: ignore[union-attr]
    again = push_prompts(client, ["mar_listwise"])
    assert again[0].url is None and len(mar.commits) == 1  # nothing changed: no new commit


def test_pull_writes_a_tagged_hub_version_back(client: Client, prompts_copy: Path) -> None:
    push_prompts(client)
    client.push_prompt("m3rec-mar", object=edited("mar_listwise", 'You are MAR.\nBe "strict" \\ terse.'),
                       commit_tags=["staging"])
    before = snapshot(prompts_copy)
    old_version = load_prompt("mar_listwise", str(prompts_copy / "mar_listwise.toml")).version

    (mar,) = pull_prompts(client, ["mar_listwise"], tag="staging", directory=prompts_copy)
    assert mar.ref == "m3rec-mar:staging" and mar.changed and mar.commit
    assert mar.version != old_version
    pulled = load_prompt("mar_listwise", str(mar.path))
    assert pulled.version == mar.version and pulled.name == "m3rec-mar"
    messages = pulled.format(profile="P", candidates="C", count=1)
    assert messages[0].text == 'You are MAR.\nBe "strict" \\ terse.'
    assert "<candidates>\nC\n</candidates>" in messages[1].text
    spec = tomllib.loads(mar.path.read_text())
    assert spec["hub_commit"] == mar.commit and spec["description"].startswith("MAR (listwise)")
    after = snapshot(prompts_copy)
    assert {k for k in before if before[k] != after[k]} == {"mar_listwise.toml"}


def test_pull_of_a_missing_tag_fails_before_writing_anything(client: Client, prompts_copy: Path) -> None:
    push_prompts(client)
    client.push_prompt("m3rec-mar", object=edited("mar_listwise", "changed"), commit_tags=["staging"])
    before = snapshot(prompts_copy)
    with pytest.raises(PromptHubError, match="pull m3rec-mope:staging: not found on the LangSmith prompt hub"):
        pull_prompts(client, ["mar_listwise", "mope"], tag="staging", directory=prompts_copy)
    assert snapshot(prompts_copy) == before  # mar was fetched first, but nothing was written


def test_pull_of_the_same_wording_leaves_the_file_alone(client: Client, prompts_copy: Path) -> None:
    push_prompts(client)
    before = snapshot(prompts_copy)
    results = pull_prompts(client, directory=prompts_copy)
    assert [r.changed for r in results] == [False] * len(HUB_NAMES)
    assert snapshot(prompts_copy) == before  # byte-identical, and not rewritten


def test_a_written_file_is_left_alone_by_the_next_pull_of_the_same_wording(
    client: Client, prompts_copy: Path, tmp_path: Path
) -> None:
    client.push_prompt("m3rec-mar", object=edited("mar_listwise", "Rank these.\nBe brief."))
    (first,) = pull_prompts(client, ["mar_listwise"], directory=prompts_copy)
    assert first.changed
    written = snapshot(prompts_copy)
    (again,) = pull_prompts(client, ["mar_listwise"], directory=prompts_copy)
    assert not again.changed and again.version == first.version
    assert snapshot(prompts_copy) == written
    # one run's hub prompt: the cache file is written once, then reused as it is
    cached = hub_prompt_file(client, "mar_listwise", "m3rec-mar", directory=tmp_path / "hub")
    state = (cached.read_bytes(), cached.stat().st_mtime_ns)
    assert hub_prompt_file(client, "mar_listwise", "m3rec-mar", directory=tmp_path / "hub") == cached
    assert (cached.read_bytes(), cached.stat().st_mtime_ns) == state


@pytest.mark.parametrize(
    ("template", "message"),
    [
        (ChatPromptTemplate.from_messages([("system", "Hi {name}")]), "template format is 'f-string'"),
        (
            ChatPromptTemplate.from_messages([("human", "{{{history}}} {{{secret}}}")], template_format="mustache"),
            "uses variable(s) secret that the mope stage does not provide",
        ),
    ],
)
def test_pull_rejects_templates_the_stage_cannot_render(
    client: Client, prompts_copy: Path, template: ChatPromptTemplate, message: str
) -> None:
    client.push_prompt("m3rec-mope", object=template)
    before = snapshot(prompts_copy)
    with pytest.raises(PromptHubError, match=message.replace("(", r"\(").replace(")", r"\)")):
        pull_prompts(client, ["mope"], directory=prompts_copy)
    assert snapshot(prompts_copy) == before


def test_pull_reports_dropped_variables(client: Client, prompts_copy: Path) -> None:
    client.push_prompt(
        "m3rec-mope",
        object=ChatPromptTemplate.from_messages(
            [("system", "You are MOPE."), ("human", "<history>\n{{{history}}}\n</history>")],
            template_format="mustache",
        ),
    )
    (result,) = pull_prompts(client, ["mope"], directory=prompts_copy)
    assert result.changed and result.dropped_variables == ("dimensions",)


def test_prompt_files_round_trip_awkward_text() -> None:
    nasty = [
        ("system", '"""quoted""" and a trailing quote"'),
        ("human", '\nleading newline, back\\slash, tab\there, "q", unicode é🙂, {{{data}}}\n'),
        ("ai", "\r\x01control"),
    ]
    text = prompt_file_text('m3rec-"x"', "desc \\ with \"quotes\"", nasty, "abc123")
    spec = tomllib.loads(text)
    assert [(m["role"], m["template"]) for m in spec["messages"]] == nasty
    assert spec["name"] == 'm3rec-"x"' and spec["hub_commit"] == "abc123"


SHIPPED = sorted((Path(__file__).parents[2] / "prompts").glob("*.toml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_prompt_file_round_trips_through_tomli_w(path: Path) -> None:
    spec = tomllib.loads(path.read_text(encoding="utf-8"))
    assert tomllib.loads(tomli_w.dumps(spec)) == spec
    assert tomllib.loads(tomli_w.dumps(spec, multiline_strings=True)) == spec
    messages = [(m["role"], m["template"]) for m in spec["messages"]]
    text = prompt_file_text(spec["name"], spec["description"], messages, spec.get("hub_commit"))
    assert tomllib.loads(text) == spec
    assert '"""' in text  # the templates stay readable multi-line strings


def test_shipped_prompt_files_are_all_tested() -> None:
    assert {p.stem for p in SHIPPED} == set(PROMPT_NAMES)


# Any text, with what TOML escapes or delimits drawn often: quotes, triple quotes, backslashes,
# CR, LF, CRLF, tab, control characters.
AWKWARD = st.lists(
    st.one_of(
        st.sampled_from(['"', '"""', "'", "\\", "\r", "\n", "\r\n", "\t", "\x00", "\x1f", "\x7f"]),
        st.characters(),  # every code point but surrogates (hypothesis excludes Cs by default)
    ),
    max_size=40,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(AWKWARD)
def test_tomli_w_round_trips_any_string(value: str) -> None:
    document = {"s": value, "t": [{"template": value}]}
    assert tomllib.loads(tomli_w.dumps(document)) == document


@settings(max_examples=300, deadline=None)
@given(
    AWKWARD,
    AWKWARD,
    st.lists(st.tuples(st.sampled_from(["system", "human", "ai"]), AWKWARD), min_size=1, max_size=3),
    st.one_of(st.none(), st.text(min_size=1)),
)
def test_prompt_files_round_trip_any_text(
    name: str, description: str, messages: list[tuple[str, str]], hub_commit: str | None
) -> None:
    spec = tomllib.loads(prompt_file_text(name, description, messages, hub_commit))
    assert [(m["role"], m["template"]) for m in spec["messages"]] == messages
    assert (spec["name"], spec["description"], spec.get("hub_commit")) == (name, description, hub_commit)


def test_tomli_w_multiline_strings_turn_crlf_into_lf() -> None:
    """Why `prompt_file_text` falls back to one-line strings for a template with `\\r\\n`.

    If a tomli-w release keeps `\\r\\n`, this fails and the fallback can go.
    """
    document = {"template": "one\r\ntwo"}
    assert tomllib.loads(tomli_w.dumps(document, multiline_strings=True)) == {"template": "one\ntwo"}
    assert tomllib.loads(prompt_file_text("n", "d", [("system", "one\r\ntwo")], None))["messages"] == [
        {"role": "system", "template": "one\r\ntwo"}
    ]


def closed_port_url() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"


def test_unreachable_langsmith_is_one_clear_error_and_files_stay(prompts_copy: Path) -> None:
    client = Client(api_url=closed_port_url(), api_key="fake", retry_config=Retry(total=0))
    before = snapshot(prompts_copy)
    with pytest.raises(PromptHubError) as pull_error:
        pull_prompts(client, directory=prompts_copy)
    assert "LangSmith is unreachable at http://127.0.0.1:" in str(pull_error.value)
    assert "the local prompt files stay in use" in str(pull_error.value)
    assert "\n" not in str(pull_error.value)
    with pytest.raises(PromptHubError, match="push m3rec-mope: LangSmith is unreachable"):
        push_prompts(client)
    assert snapshot(prompts_copy) == before


def test_cli_push_then_pull(
    client: Client, prompts_copy: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(prompts_cli, "langsmith_client", lambda: client)
    cli.main(["prompts", "push", "--tag", "staging"])
    out = capsys.readouterr().out
    assert "mar_listwise: pushed as m3rec-mar" in out and "mar_pointwise: pushed as m3rec-mar-pointwise" in out
    client.push_prompt("m3rec-mar", object=edited("mar_listwise", "new wording"), commit_tags=["staging"])
    cli.main(["prompts", "pull", "m3rec-mar", "--tag", "staging", "--dir", str(prompts_copy)])
    out = capsys.readouterr().out
    assert "mar_listwise: pulled m3rec-mar:staging commit" in out and "updated" in out
    assert "new wording" in (prompts_copy / "mar_listwise.toml").read_text()


def test_cli_unreachable_langsmith_exits_1_with_one_line(
    prompts_copy: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    dead = Client(api_url=closed_port_url(), api_key="fake", retry_config=Retry(total=0))
    monkeypatch.setattr(prompts_cli, "langsmith_client", lambda: dead)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["prompts", "pull", "--dir", str(prompts_copy)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1
    assert err.startswith("m3rec: error: pull m3rec-mope: LangSmith is unreachable")
    assert err.count("\n") == 1


# --------------------------------------------------------------------------- one run with a hub prompt


async def test_a_run_can_use_a_hub_prompt_for_one_stage(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from m3rec_graph import InMemoryTraitCache, build_graph
    from tests.fakes import ScriptedModels, default_responder

    monkeypatch.setenv("M3REC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(prompts_cli, "langsmith_client", lambda: client)
    push_prompts(client)
    client.push_prompt("m3rec-mar", object=edited("mar_listwise", "You are MAR (staging wording)."),
                       commit_tags=["staging"])
    args = cli.build_parser().parse_args(
        ["recommend", "--request", "r.json", "--routing", "gpt-4o", "--prompt", "mar=m3rec-mar:staging"]
    )
    shipped = snapshot(prompt_dir())
    ctx = build_context(args)
    path = Path(ctx.prompt_overrides["mar_listwise"])
    assert list(ctx.prompt_overrides) == ["mar_listwise"] and path.parent == tmp_path / "cache" / "hub_prompts"
    assert load_prompt("mar_listwise", str(path)).version != load_prompt("mar_listwise").version
    assert snapshot(prompt_dir()) == shipped  # the run used the hub version without changing files

    models = ScriptedModels(default_responder())
    request: RecInput = {
        "user_id": "u1",
        "history": [{"item_id": "h1", "title": "Red nail polish"}],
        "candidates": [{"item_id": "c1", "title": "Pink nail polish"}, {"item_id": "c2", "title": "Nail file"}],
    }
    out = await build_graph(chat_models=models, trait_cache=InMemoryTraitCache()).ainvoke(request, context=ctx)
    assert out["degraded"] == []
    assert all("(staging wording)" in prompt for _, _, prompt in models.stage_calls("mar"))
    assert not any("staging" in prompt for _, _, prompt in models.stage_calls("mope"))


def test_a_run_falls_back_to_the_local_prompt_when_langsmith_is_unreachable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    dead = Client(api_url=closed_port_url(), api_key="fake", retry_config=Retry(total=0))
    monkeypatch.setattr(prompts_cli, "langsmith_client", lambda: dead)
    args = cli.build_parser().parse_args(
        ["demo", "--routing", "gpt-4o", "--mar-mode", "pointwise", "--prompt", "mar=m3rec-mar-pointwise:staging"]
    )
    ctx = build_context(args)
    assert ctx.prompt_overrides == {}
    err = capsys.readouterr().err
    assert "m3rec: warning: pull m3rec-mar-pointwise:staging: LangSmith is unreachable" in err
    assert err.rstrip().endswith("using prompts/mar_pointwise.toml") and err.count("\n") == 1


def test_a_missing_hub_prompt_for_a_run_is_an_error(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(prompts_cli, "langsmith_client", lambda: client)
    monkeypatch.chdir(tmp_path)
    Path("r.json").write_text('{"user_id": "u", "history": [], "candidates": [{"item_id": "a", "title": "x"}]}')
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["recommend", "--request", "r.json", "--routing", "gpt-4o", "--prompt", "mote=m3rec-mote:nope"])
    assert exit_info.value.code == 1
    assert "pull m3rec-mote:nope: not found on the LangSmith prompt hub" in capsys.readouterr().err
    with pytest.raises(SystemExit) as bad:
        cli.main(["recommend", "--request", "r.json", "--routing", "gpt-4o", "--prompt", "ranker=x"])
    assert bad.value.code == 2 and "bad --prompt" in capsys.readouterr().err
