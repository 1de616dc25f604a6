"""Tokens go only where configured and never show up anywhere else.

Endpoints are real HTTP servers on loopback that record the headers of every request
(:mod:`tests.integration.recording_server`); the herd talks to them with its real clients
(huggingface_hub's on TGI's generate route and chat route, openai's on the OpenAI route).

- Each configured token reaches its own endpoint and no other: not another expert's, not
  a server an endpoint redirects to, and an endpoint without a token gets no
  ``Authorization`` header at all, although ``HF_TOKEN``, a saved hub token,
  ``HUGGINGFACEHUB_API_TOKEN`` and ``OPENAI_API_KEY`` are all set.
- No token (configured, from the environment, or a ``serve-router`` key) appears in logs at
  DEBUG (every library's logger), reprs, exceptions of failing experts (401, refused,
  timed out) and their tracebacks, LangChain callbacks and traced runs, decisions,
  ``serve-router`` responses and metrics, or the files ``herd label``/``train`` write and
  ``herd check`` prints.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from huggingface_hub import constants as hub_constants
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.load import dumpd
from langchain_core.messages import BaseMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tracers.context import collect_runs
from langchain_core.tracers.stdout import ConsoleCallbackHandler

from langchain_herd import HerdRouter
from langchain_herd.check import check_config
from langchain_herd.config import HerdConfig, parse_config
from langchain_herd.endpoint import create_router_app
from langchain_herd.errors import AllExpertsFailedError
from langchain_herd.experts import Expert
from langchain_herd.labeling import label_dataset
from langchain_herd.server import ServerThread
from langchain_herd.training.cli import train_main
from tests.integration.recording_server import RecordingServer
from tests.integration.word_choices import write_word_choices
from tests.unit.fakes import KeywordClassifier

#: Tokens in the environment that no endpoint of these tests was given.
ENV_TOKENS = {
    "HF_TOKEN": "hf_environmentTokenMustNotLeak42",
    "HUGGINGFACEHUB_API_TOKEN": "hf_langchainHubTokenMustNotLeak43",
    "OPENAI_API_KEY": "sk-openaiEnvironmentKeyMustNotLeak44",
}
SAVED_HUB_TOKEN = "hf_savedHubTokenMustNotLeak45"
ROUTER_KEY = "herd-router-key-must-not-leak-46"
SLOW_TIMEOUT_S = 0.2


#: Experts labeled in the artifact check: answers and instant failures on both routes.
_LABELED = ("gen_private", "chat_private", "gen_denied", "chat_down")


def token_of(expert: str) -> str:
    return f"herd-secret-{expert}-0123456789"


def env_of(expert: str) -> str:
    return f"HERD_TEST_TOKEN_{expert.upper()}"


def all_secrets(experts: list[str]) -> dict[str, str]:
    secrets = {f"token of {name}": token_of(name) for name in experts}
    secrets.update(ENV_TOKENS)
    secrets.update({"saved hub token": SAVED_HUB_TOKEN, "serve-router key": ROUTER_KEY})
    return secrets


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there once the socket is closed


@pytest.fixture
def servers() -> Iterator[Callable[..., RecordingServer]]:
    started: list[RecordingServer] = []

    def start(mode: Any = "ok", redirect_to: str | None = None) -> RecordingServer:
        server = RecordingServer(mode, redirect_to).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def hub_tokens(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> str:
    """Every token the clients could pick up by themselves; the param says where the hub
    token is (``HF_TOKEN`` wins over the saved one, so the saved one is tested alone)."""
    source = getattr(request, "param", "env")
    for name, value in ENV_TOKENS.items():
        monkeypatch.setenv(name, value)
    saved = tmp_path / "hf_home" / "token"
    saved.parent.mkdir()
    saved.write_text(SAVED_HUB_TOKEN)
    monkeypatch.setattr(hub_constants, "HF_TOKEN_PATH", str(saved))
    if source == "saved":
        monkeypatch.delenv("HF_TOKEN")
    from huggingface_hub import get_token

    assert get_token() == (SAVED_HUB_TOKEN if source == "saved" else ENV_TOKENS["HF_TOKEN"])
    return str(source)


def herd_config(
    experts: dict[str, tuple[str, str, bool]], monkeypatch: pytest.MonkeyPatch, **extra: Any
) -> HerdConfig:
    """A herd of ``name: (protocol, url, has_token)``; each token in its own variable."""
    auth = []
    for name, (_, _, has_token) in experts.items():
        if has_token:
            monkeypatch.setenv(env_of(name), token_of(name))
            auth.append({"token_env": env_of(name), "experts": [name]})
    return parse_config(
        {
            "experts": [
                {
                    "name": name,
                    "url": url,
                    "protocol": protocol,
                    "routes": [name],
                    "timeout_s": SLOW_TIMEOUT_S if "slow" in name else 30,
                    "generation": {"max_new_tokens": 4},
                    # Asking a slow endpoint for its limits would wait out the probe's timeout.
                    **({"max_input_tokens": 900} if "slow" in name else {}),
                }
                for name, (protocol, url, _) in experts.items()
            ],
            "auth": auth,
            **extra,
        }
    )


def router_for(config: HerdConfig) -> HerdRouter:
    names = [e.name for e in config.experts]
    return HerdRouter.from_config(config, classifier=KeywordClassifier({n: n for n in names}))


def ask(name: str) -> str:
    return f"a question for {name}"


# -- where tokens are sent ---------------------------------------------------------------

HI: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def hub_chat(expert: Expert) -> Any:
    """The endpoint of a TGI expert: its huggingface_hub clients also speak the chat route."""
    return expert.model.llm  # type: ignore[attr-defined]


def test_each_token_reaches_its_endpoint_only(
    hub_tokens: str,
    servers: Callable[..., RecordingServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    landing = {"gen_moved": servers(), "chat_moved": servers()}
    endpoints = {
        "gen_private": servers(),
        "gen_open": servers(),
        "chat_private": servers(),
        "chat_open": servers(),
        # These answer 307 to another host: the token must not follow the redirect.
        "gen_moved": servers("redirect", landing["gen_moved"].url),
        "chat_moved": servers("redirect", landing["chat_moved"].url),
    }
    protocol = {name: "tgi" if name.startswith("gen") else "openai" for name in endpoints}
    config = herd_config(
        {
            name: (protocol[name], server.url, not name.endswith("open"))
            for name, server in endpoints.items()
        },
        monkeypatch,
        fallback={"max_attempts": 1},  # each request reaches only the expert it is for
    )
    router = router_for(config)

    hub_tgi = ("gen_private", "gen_open", "gen_moved")

    async def async_calls() -> None:
        for name in endpoints:
            await router.ainvoke(ask(name))
            assert "".join([str(c.content) async for c in router.astream(ask(name))])
        for name in hub_tgi:
            await hub_chat(router.experts[name]).async_client.chat_completion(**HI)

    for name in endpoints:
        answer = router.invoke(ask(name))
        assert answer.response_metadata["herd"]["answered_by"] == name
        assert "".join(str(c.content) for c in router.stream(ask(name)))
    for name in hub_tgi:
        hub_chat(router.experts[name]).client.chat_completion(**HI)
    asyncio.run(async_calls())  # one loop: each new loop gets clients of its own
    # `herd check` probes /health, /info and /v1/models with each expert's token.
    check_config(config, timeout_s=5)

    for name, server in endpoints.items():
        routes = {(seen["method"], seen["path"]) for seen in server.seen}
        assert ("POST", "/v1/chat/completions") in routes and ("GET", "/health") in routes
        expected = f"Bearer {token_of(name)}" if not name.endswith("open") else None
        assert server.authorizations() == [expected] * len(server.seen), (name, server.seen)
    for name, server in landing.items():
        assert len(server.seen) >= 4, f"the redirect of {name} was not followed"
        assert set(server.authorizations()) == {None}, f"{name}'s token followed the redirect"
    everything = json.dumps([s.seen for s in [*endpoints.values(), *landing.values()]])
    for secret in [*ENV_TOKENS.values(), SAVED_HUB_TOKEN]:
        assert secret not in everything


@pytest.mark.parametrize("hub_tokens", ["saved"], indirect=True)
def test_saved_hub_token_is_not_sent(
    hub_tokens: str, servers: Callable[..., RecordingServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The token ``hf auth login`` saved is what huggingface_hub sends without HF_TOKEN."""
    generate, chat = servers(), servers()
    config = herd_config(
        {"gen_open": ("tgi", generate.url, False), "chat_open": ("openai", chat.url, False)},
        monkeypatch,
    )
    router = router_for(config)
    router.invoke(ask("gen_open"))
    router.invoke(ask("chat_open"))
    hub_chat(router.experts["gen_open"]).client.chat_completion(**HI)
    for server in (generate, chat):
        assert len(server.seen) >= 2 and set(server.authorizations()) == {None}


# -- where tokens must never appear --------------------------------------------------------


class RecordEverything(BaseCallbackHandler):
    """Keeps every argument of every callback LangChain makes, as text."""

    raise_error = True

    def __init__(self) -> None:
        self.events: list[str] = []

    def _keep(self, event: str, *args: Any, **kwargs: Any) -> None:
        self.events.append(json.dumps([event, args, kwargs], default=_everything))

    def on_chat_model_start(
        self, serialized: dict[str, Any], messages: list[list[BaseMessage]], **kw: Any
    ) -> None:
        self._keep("chat_model_start", serialized, messages, **kw)

    def on_llm_start(self, serialized: dict[str, Any], prompts: list[str], **kw: Any) -> None:
        self._keep("llm_start", serialized, prompts, **kw)

    def on_llm_new_token(self, token: Any, **kw: Any) -> None:
        self._keep("llm_new_token", token, **kw)

    def on_llm_end(self, response: Any, **kw: Any) -> None:
        self._keep("llm_end", response, **kw)

    def on_llm_error(self, error: BaseException, **kw: Any) -> None:
        self._keep("llm_error", error, **kw)

    def on_chain_start(self, serialized: Any, inputs: Any, **kw: Any) -> None:
        self._keep("chain_start", serialized, inputs, **kw)

    def on_chain_end(self, outputs: Any, **kw: Any) -> None:
        self._keep("chain_end", outputs, **kw)

    def on_chain_error(self, error: BaseException, **kw: Any) -> None:
        self._keep("chain_error", error, **kw)

    def on_custom_event(self, name: str, data: Any, **kw: Any) -> None:
        self._keep("custom_event", name, data, **kw)


def _everything(value: Any) -> Any:
    """JSON of anything a callback gets: models dumped, exceptions with their tracebacks."""
    if isinstance(value, BaseException):
        return exception_text(value)
    if isinstance(value, UUID):
        return str(value)
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        try:
            return dump()
        except Exception:  # not every object with the method can dump itself
            pass
    return repr(value)


def exception_text(exc: BaseException) -> str:
    """All an exception shows: message, repr, arguments, notes and the whole traceback
    (causes and contexts included)."""
    parts = [str(exc), repr(exc), repr(exc.args), *getattr(exc, "__notes__", [])]
    parts.append("".join(traceback.format_exception(exc)))
    decision = getattr(exc, "decision", None)
    if decision is not None:
        parts.append(json.dumps(decision.model_dump(mode="json"), default=repr))
    return "\n".join(parts)


@pytest.fixture
def debug_logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every log record at DEBUG of every logger, formatted with its traceback; also
    huggingface_hub's request dumps (``HF_DEBUG``)."""
    lines: list[str] = []
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(formatter.format(record) + repr(record.args))

    handler = Keep(logging.DEBUG)
    names = [
        "",
        "httpx",
        "httpcore",
        "httpx2",  # openai's own fork of httpx
        "httpcore2",
        "openai",
        "huggingface_hub",
        "langchain",
        "langchain_core",
        "langchain_openai",
        "langchain_huggingface",
        "langchain_herd",
        "langsmith",
        "uvicorn",
        "uvicorn.error",
        "uvicorn.access",
        "asyncio",
    ]
    saved = []
    for name in names:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level))
        logger.setLevel(logging.DEBUG)
        logger.addHandler(handler)
    monkeypatch.setattr(hub_constants, "HF_DEBUG", True)
    yield lines
    for logger, level in saved:
        logger.setLevel(level)
        logger.removeHandler(handler)


def test_tokens_never_appear_anywhere(
    hub_tokens: str,
    servers: Callable[..., RecordingServer],
    debug_logs: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    ok, deny, slow = servers(), servers("deny"), servers("slow")
    down = closed_port_url()
    failing = {
        "gen_denied": ("tgi", deny.url, True),
        "chat_denied": ("openai", deny.url, True),
        "gen_down": ("tgi", down, True),
        "chat_down": ("openai", down, True),
        "gen_slow": ("tgi", slow.url, True),
        "chat_slow": ("openai", slow.url, True),
    }
    healthy = {
        "gen_private": ("tgi", ok.url, True),
        "chat_private": ("openai", ok.url, True),
        "gen_open": ("tgi", ok.url, False),
    }
    # Every failure falls back, and no breaker opens: every expert is tried every time.
    fallback = {
        "max_attempts": 9,
        "on_failures": ["connection", "timeout", "server_error", "client_error"],
        "breaker": {"failure_threshold": 1000},
    }
    config = herd_config({**healthy, **failing}, monkeypatch, fallback=fallback)
    broken_config = herd_config(failing, monkeypatch, fallback=fallback)
    router, broken = router_for(config), router_for(broken_config)
    secrets = all_secrets([e.name for e in config.experts])
    places: dict[str, list[str]] = {}

    def keep(place: str, text: Any) -> None:
        places.setdefault(place, []).append(text if isinstance(text, str) else repr(text))

    # Answers (with failed attempts before them), traced by every kind of tracer.
    recorder = RecordEverything()
    callbacks: RunnableConfig = {"callbacks": [recorder, ConsoleCallbackHandler()]}
    decisions: list[Any] = []

    async def async_calls() -> None:
        for name in ("gen_private", "chat_private", "gen_denied", "chat_slow"):
            reply = await router.ainvoke(ask(name), config=callbacks)
            decisions.append(reply.response_metadata)
            async for chunk in router.astream(ask(name), config=callbacks):
                decisions.append(chunk.response_metadata)

    async def broken_stream() -> None:
        async for _ in broken.astream(ask("chat_denied"), config=callbacks):
            pass

    with collect_runs() as collector:
        # Each call falls back from the expert it names to the first healthy one.
        for name in [*healthy, "gen_denied", "chat_down", "gen_slow"]:
            decisions.append(router.invoke(ask(name), config=callbacks).response_metadata)
        for name in ("gen_private", "chat_private", "chat_denied", "gen_down"):
            decisions.extend(
                c.response_metadata for c in router.stream(ask(name), config=callbacks)
            )
        asyncio.run(async_calls())  # one loop: each new loop gets clients of its own
        # Every expert failing: the router's error lists every attempt.
        errors: list[BaseException] = []
        with pytest.raises(AllExpertsFailedError) as failed:
            broken.invoke(ask("gen_denied"), config=callbacks)
        errors.append(failed.value)
        with pytest.raises(AllExpertsFailedError) as failed:
            asyncio.run(broken_stream())
        errors.append(failed.value)
    failures = [a for d in decisions if "herd" in d for a in d["herd"]["attempts"] if not a["ok"]]
    assert {a["failure"] for a in failures} >= {"client_error", "connection", "timeout"}
    keep("decisions", json.dumps(decisions, default=repr))
    keep("callbacks", "\n".join(recorder.events))
    keep("traced runs", json.dumps([r.model_dump(mode="json") for r in collector.traced_runs]))
    keep("console tracer", capsys.readouterr().out)

    # Each failing expert's own exceptions, from each kind of call.
    async def expert_errors() -> list[BaseException]:
        calls = [router.experts[name].model.ainvoke("hi") for name in failing]
        raised = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(e, Exception) for e in raised)
        return [e for e in raised if isinstance(e, BaseException)]

    errors.extend(asyncio.run(expert_errors()))
    for name in failing:
        failing_model = router.experts[name].model
        with pytest.raises(Exception) as raised:
            failing_model.invoke("hi")
        errors.append(raised.value)
        with pytest.raises(Exception) as raised:
            list(failing_model.stream("hi"))
        errors.append(raised.value)
    keep("exceptions", "\n".join(exception_text(e) for e in errors))

    # Reprs of everything that holds a token.
    for herd in (router, broken):
        keep("router repr", repr(herd) + str(herd) + repr(herd.engine))
        keep("serialized router", json.dumps(dumpd(herd), default=repr))
        keep("router dump", json.dumps(herd.model_dump(), default=repr))
        for expert in herd.experts.values():
            model: Any = expert.model
            keep("expert repr", repr(expert) + str(expert) + repr(expert.context))
            keep("model repr", repr(model) + str(model))
            keep("serialized model", json.dumps(dumpd(model), default=repr))
            keep("model dump", json.dumps(model.model_dump(), default=repr))
            llm = getattr(model, "llm", None)
            clients = [getattr(model, a, None) for a in ("client", "async_client", "root_client")]
            clients += [llm, getattr(llm, "client", None), getattr(llm, "async_client", None)]
            keep("client reprs", " ".join(repr(c) + str(c) for c in clients))
            if llm is not None:
                keep("endpoint dump", json.dumps(llm.model_dump(), default=repr))
    for herd_config_ in (config, broken_config):
        keep("config", repr(herd_config_) + str(herd_config_) + herd_config_.model_dump_json())
        keep(
            "config", repr(herd_config_.auth) + json.dumps(herd_config_.model_dump(), default=repr)
        )

    # serve-router: answers, errors, streams, metrics, with a client key of its own.
    server = ServerThread(create_router_app(router, api_keys=[ROUTER_KEY])).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30, trust_env=False) as client:
            auth = {"authorization": f"Bearer {ROUTER_KEY}"}
            bodies = [
                {"model": "herd", "messages": [{"role": "user", "content": ask("gen_private")}]},
                {"model": "herd", "messages": [{"role": "user", "content": ask("gen_denied")}]},
                {
                    "model": "herd",
                    "stream": True,
                    "messages": [{"role": "user", "content": ask("chat_down")}],
                },
                # Pinned to a failing expert: an error answer naming the failure.
                {"model": "herd/gen_denied", "messages": [{"role": "user", "content": "x"}]},
                {"model": "herd/chat_slow", "messages": [{"role": "user", "content": "x"}]},
                {"model": "herd", "messages": "not a list"},
            ]
            replies = [client.post("/v1/chat/completions", json=b, headers=auth) for b in bodies]
            statuses = [r.status_code for r in replies]
            assert statuses[:3] == [200, 200, 200] and all(s >= 400 for s in statuses[3:])
            replies.append(client.post("/v1/chat/completions", json=bodies[0]))  # no key
            wrong = {"authorization": f"Bearer {ROUTER_KEY[:-3]}xyz"}
            replies.append(client.post("/v1/chat/completions", json=bodies[0], headers=wrong))
            assert [r.status_code for r in replies[-2:]] == [401, 401]
            for path in ("/v1/models", "/v1/models/herd/gen_private", "/health", "/nowhere"):
                replies.append(client.get(path, headers=auth))
            metrics = client.get("/metrics", headers=auth)
            assert metrics.status_code == 200 and "herd_router_expert_failures" in metrics.text
    finally:
        server.stop()
    for reply in replies:
        keep("serve-router responses", f"{reply.status_code} {reply.headers} {reply.text}")
    keep("metrics", metrics.text)

    # What `herd label` and `herd train` write, and what `herd check` reports.
    # (Enough questions to train on; the slow experts would only add waiting.)
    fast = {k: v for k, v in {**healthy, **failing}.items() if k in _LABELED}
    data = write_word_choices(tmp_path / "words.parquet", 20)
    label_config = herd_config(fast, monkeypatch)
    result = asyncio.run(label_dataset(label_config, data, tmp_path / "run", progress=False))
    assert result.failed == 20 * (len(fast) - 2)
    trained = train_main(
        [
            str(result.table_path),
            *["--kind", "cascade", "--answers", str(result.answers_path)],
            *["--weak", "gen_private", "--strong", "chat_private", "--max-helpers", "0"],
            *["--out", str(tmp_path / "cascade.json"), "--quiet"],
        ]
    )
    assert trained == 0
    written = [p for p in tmp_path.rglob("*") if p.is_file() and "hf_home" not in p.parts]
    assert {p.name for p in written} >= {"raw.jsonl", "run.json", "correctness.parquet"}
    for file in written:
        keep(f"saved artifact {file.name}", file.read_bytes().decode("latin-1"))
    report = check_config(config, timeout_s=SLOW_TIMEOUT_S)
    keep("herd check", report.table() + json.dumps(report.to_json()))

    keep("logs", "\n".join(debug_logs))
    assert any("authenticated: True" in line for line in debug_logs), "no hub request logged"
    for place, texts in places.items():
        text = "\n".join(texts)
        for what, secret in secrets.items():
            assert secret not in text, f"{what} leaked into {place}"
