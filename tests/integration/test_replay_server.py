"""The replay server over loopback: recorded answers of real models on TGI's and OpenAI's
routes, driven by the real Hugging Face clients, raw httpx and the herd itself."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from huggingface_hub import ChatCompletionInputStreamOptions, InferenceClient

from langchain_herd.chat_models import HerdRouter
from langchain_herd.check import check_config
from langchain_herd.config import HerdConfig
from langchain_herd.local_servers import LocalHerd
from langchain_herd.mmlu import extract_letter
from langchain_herd.prompt_formats import render_prompt
from langchain_herd.replay import NO_LETTER_REPLY, ReplayTable, reply_text
from langchain_herd.server import ServerThread
from langchain_herd.server.replay_app import QUESTION_HEADER, create_replay_app

LLAMA = "Meta-Llama-3_1-8B-Instruct"  # a letter on every question
QWEN = "Qwen1.5-7B-Chat"  # the most questions without a letter (904)
GEMMA = "gemma-7b"
SERVED = [LLAMA, QWEN, GEMMA]


@pytest.fixture(scope="module")
def table() -> ReplayTable:
    return ReplayTable.load()


@pytest.fixture(scope="module")
def url(table: ReplayTable) -> Iterator[str]:
    with ServerThread(create_replay_app(table, models=SERVED)) as server:
        yield server.url


@pytest.fixture(scope="module")
def row(table: ReplayTable) -> int:
    """A question where Qwen has no letter and the others differ from each other."""
    for r in table.unique_rows:
        gemma = table.letter(r, GEMMA)
        if table.letter(r, QWEN) is None and gemma is not None and table.letter(r, LLAMA) != gemma:
            return r
    raise AssertionError("no such question")


def chat(url: str, model: str | None, content: str, **extra: object) -> httpx.Response:
    body: dict[str, object] = {"messages": [{"role": "user", "content": content}], **extra}
    if model is not None:
        body["model"] = model
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=10)


def test_chat_answers_each_models_recorded_letter(url: str, table: ReplayTable, row: int) -> None:
    client = InferenceClient(base_url=url)
    for model in (LLAMA, GEMMA):
        out = client.chat_completion(
            [{"role": "user", "content": table.prompts[row]}], model=model, max_tokens=16
        )
        text = out.choices[0].message.content
        assert text == reply_text(table.letter(row, model))
        assert extract_letter(text, table.n_choices(row)) == table.letter(row, model)
        assert out.model == model
        assert out.usage.completion_tokens == 5  # four words and the end of sequence
        assert out.usage.prompt_tokens >= len(table.prompts[row]) // 3
    reply = chat(url, GEMMA, table.prompts[row])
    assert reply.headers[QUESTION_HEADER] == table.ids[row]


def test_question_is_found_behind_a_system_prompt_and_before_an_instruction(
    url: str, table: ReplayTable, row: int
) -> None:
    wrapped = f"Think step by step.\n\n  {table.prompts[row]}  \n\nAnswer with the letter only."
    body = {
        "model": LLAMA,
        "messages": [
            {"role": "system", "content": "You are an expert."},
            {"role": "user", "content": "an earlier turn"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": wrapped},
        ],
    }
    reply = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=10).json()
    assert reply["choices"][0]["message"]["content"] == reply_text(table.letter(row, LLAMA))


def test_model_without_a_letter_replies_without_one(url: str, table: ReplayTable, row: int) -> None:
    reply = chat(url, QWEN, table.prompts[row]).json()
    text = reply["choices"][0]["message"]["content"]
    assert text == NO_LETTER_REPLY
    assert extract_letter(text, table.n_choices(row)) is None


def test_generate_routes_choose_the_model_by_adapter_id(
    url: str, table: ReplayTable, row: int
) -> None:
    from langchain_core.messages import HumanMessage, SystemMessage

    messages = [SystemMessage("Be brief."), HumanMessage(table.prompts[row])]
    client = InferenceClient(base_url=url)
    for prompt_format in ("chatml", "llama3", "mistral", "plain"):
        prompt = render_prompt(messages, prompt_format)
        out = client.text_generation(
            prompt, adapter_id=GEMMA, details=True, max_new_tokens=16, return_full_text=False
        )
        assert out.generated_text == reply_text(table.letter(row, GEMMA)), prompt_format
        assert out.details is not None and out.details.finish_reason == "eos_token"
    cut = client.text_generation(
        table.prompts[row], adapter_id=GEMMA, max_new_tokens=2, return_full_text=False
    )
    assert cut == "The answer"
    # POST / without return_full_text puts the prompt in front, as TGI does.
    full = client.text_generation(table.prompts[row], adapter_id=GEMMA, max_new_tokens=16)
    assert full == table.prompts[row] + reply_text(table.letter(row, GEMMA))


def test_streams_on_both_routes(url: str, table: ReplayTable, row: int) -> None:
    client = InferenceClient(base_url=url)
    expected = reply_text(table.letter(row, LLAMA))
    pieces = list(
        client.text_generation(
            table.prompts[row],
            adapter_id=LLAMA,
            stream=True,
            details=True,
            max_new_tokens=16,
            return_full_text=False,
        )
    )
    assert "".join(p.token.text for p in pieces) == expected
    assert pieces[-1].generated_text == expected
    assert pieces[-1].details is not None and pieces[-1].details.generated_tokens == 5
    chunks = list(
        client.chat_completion(
            [{"role": "user", "content": table.prompts[row]}],
            model=LLAMA,
            stream=True,
            stream_options=ChatCompletionInputStreamOptions(include_usage=True),
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5


def test_unknown_question_is_a_4xx_that_says_so(url: str) -> None:
    reply = chat(url, LLAMA, "What is the capital of France?")
    assert reply.status_code == 422
    assert "no recorded question matches" in reply.json()["error"]
    assert "capital of France" in reply.json()["error"]
    streamed = httpx.post(
        f"{url}/generate_stream",
        json={"inputs": "What is 2 + 2?", "parameters": {"adapter_id": LLAMA}},
        timeout=10,
    )
    assert streamed.status_code == 422


def test_unknown_or_missing_model_is_404(url: str, table: ReplayTable) -> None:
    reply = chat(url, "gpt-4o", table.prompts[0])
    assert reply.status_code == 404
    assert "not replayed here" in reply.json()["error"] and GEMMA in reply.json()["error"]
    assert chat(url, None, table.prompts[0]).status_code == 404  # several models: name one
    # Names are read leniently: hub prefix, any case, "." for "_".
    assert chat(url, "meta-llama/meta-llama-3.1-8b-instruct", table.prompts[0]).status_code == 200


def test_info_and_models_say_it_is_a_replay(url: str) -> None:
    info = httpx.get(f"{url}/info").json()
    assert info["model_dtype"] == "replay"
    assert "REPLAY" in info["replay"]["note"]
    assert list(info["replay"]["models"]) == SERVED
    assert info["replay"]["models"][GEMMA]["active_params_b"] == 8.5
    listed = httpx.get(f"{url}/v1/models").json()
    assert [m["id"] for m in listed["data"]] == ["mmlu-pro-replay", *SERVED]
    assert all(m["replay"] for m in listed["data"])
    assert {m["parent"] for m in listed["data"][1:]} == {"mmlu-pro-replay"}


def test_faults_apply(url: str, table: ReplayTable) -> None:
    httpx.post(f"{url}/_herd/faults", json={"fail_next": 1, "fail_status": 503})
    try:
        assert chat(url, GEMMA, table.prompts[0]).status_code == 503
        assert chat(url, GEMMA, table.prompts[0]).status_code == 200
    finally:
        httpx.delete(f"{url}/_herd/faults")


def _herd(url: str) -> HerdConfig:
    def expert(model: str, protocol: str, routes: list[str]) -> dict[str, object]:
        return {
            "name": model,
            "url": url,
            "protocol": protocol,
            "model_id": "mmlu-pro-replay",
            "adapter_id": model,
            "routes": routes,
            "generation": {"max_new_tokens": 16},
        }

    return HerdConfig.model_validate(
        {
            "experts": [
                expert(LLAMA, "openai", ["stem", "other"]),
                expert(GEMMA, "tgi", ["humanities", "social_sciences"]),
            ],
            "router": {"classifier": {"path": "bundled:mmlu-group-tfidf"}},
        }
    )


def test_the_herd_gets_recorded_answers_over_both_protocols(
    url: str, table: ReplayTable, row: int
) -> None:
    config = _herd(url)
    report = check_config(config)
    assert report.ok, report.table()
    router = HerdRouter.from_config(config)
    for model in (LLAMA, GEMMA):
        answer, decision = router.invoke_with_decision(table.prompts[row], model=model)
        assert decision.answered_by == model
        assert answer.text == reply_text(table.letter(row, model))
        assert answer.usage_metadata is not None and answer.usage_metadata["output_tokens"] == 5


def test_serve_replay_command_and_local_servers_entry(table: ReplayTable, tmp_path: Path) -> None:
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "langchain_herd.cli", "serve", "--replay", GEMMA, "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        line = ""
        while "serving" not in line:
            line = process.stderr.readline()
            assert line, "the server exited before serving"
        up = time.perf_counter() - started
        found = re.search(r"serving a replay of gemma-7b on (http://\S+)", line)
        assert found, line
        assert "(loopback only; /_herd/faults open; bodies up to 2097152 bytes)" in line
        # One model, so a client that names none gets it.
        assert chat(found.group(1), None, table.prompts[0]).status_code == 200
        assert up < 30
    finally:
        process.terminate()
        process.wait(timeout=15)

    port = _free_port()
    config = HerdConfig.model_validate(
        {
            "local_servers": [{"name": "replay", "model": f"replay:{LLAMA}", "port": port}],
            "experts": [{"name": LLAMA, "url": f"http://127.0.0.1:{port}", "adapter_id": LLAMA}],
        }
    )
    with LocalHerd(config, startup_timeout_s=60, log_dir=tmp_path):
        reply = chat(f"http://127.0.0.1:{port}", LLAMA, table.prompts[0]).json()
        assert reply["choices"][0]["message"]["content"] == reply_text(table.letter(0, LLAMA))


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
