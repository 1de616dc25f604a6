"""The soak benchmark (``bench/soak.py``) in small, and the random faults it injects.

The short soak is the real one with small numbers: four expert servers on loopback (the
tiny model) with random faults, one taken down and restarted every few seconds, a couple
of hundred concurrent requests through ``HerdRouter`` (async and sync, invoke and stream,
tools on some) and through the ``serve-router`` app. It asserts the soak's invariants: every
request ended exactly once, in an answer or a clear error that lists its attempts, within
its deadline, and file descriptors, threads and asyncio tasks came back to where they were.
Margins are wide enough for a busy two-core machine: the deadline's slack is generous and
what is compared is counts, not speed.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from langchain_herd.server import FaultConfig, ServerThread, create_app, load_backend
from langchain_herd.server.faults import RandomFaults

BENCH = Path(__file__).resolve().parents[2] / "bench"
CLEAR_ERRORS = {
    "all_experts_failed",
    "no_expert_available",
    "experts_overloaded",
    "stream_interrupted",
}


def load_soak() -> ModuleType:
    """``bench/soak.py`` as a module (it imports its neighbour ``common.py`` by name)."""
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("herd_bench_soak", BENCH / "soak.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up by name
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


def test_short_soak_ends_every_request_once_within_its_deadline() -> None:
    soak = load_soak()
    options = soak.SoakOptions(
        requests=120,
        concurrency=16,
        seed=11,
        restarts=3,
        down_s=0.5,
        process_expert=False,  # a second interpreter costs seconds of a 2-core CI box
        margin_s=5.0,
        hang_after_s=20.0,
    )
    result: dict[str, Any] = soak.run_soak(options)
    problems = result["problems"]

    assert result["requests_in"] == options.requests
    assert result["unclear"] == 0 and result["hung"] == 0, problems
    assert result["answers"] + result["errors"] == options.requests
    assert result["balanced"]
    errors = {k.split(":", 1)[1] for k in result["outcomes"] if k.startswith("error:")}
    assert errors <= CLEAR_ERRORS, result["outcomes"]
    # The faults were real: experts failed, the herd fell back, a server went down and up.
    assert result["failovers"] > 0 and result["restarts"], result
    # How many are answered depends on the machine (timeouts under load open breakers); that
    # each request ends once, clearly and in time does not.
    assert result["answers"] > 0, result["outcomes"]

    deadline = result["deadline"]
    assert deadline["past_deadline"] == 0, (deadline, result["by_surface"])

    before, after = result["before"], result["after"]
    # Connection pools may end a little larger than the warm-up left them (a peak of
    # concurrent calls); a leak grows with the requests instead.
    assert after["fds"] <= before["fds"] + 2 * options.concurrency, (before, after)
    assert after["threads"] <= before["threads"] + 4, (before, after)
    assert after["tasks"] <= before["tasks"] + 4, (before, after)


# -- the random fault mode of the local server ----------------------------------------------


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    app = create_app(load_backend("tiny"), max_input_tokens=512, max_total_tokens=1024)
    with ServerThread(app) as server:
        yield server.url


@pytest.fixture
def http(server_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server_url, timeout=30, trust_env=False) as client:
        yield client
        client.delete("/_herd/faults").raise_for_status()


def generate(http: httpx.Client) -> int:
    body = {"inputs": "Hello", "parameters": {"max_new_tokens": 1}}
    return http.post("/generate", json=body).status_code


def test_random_errors_follow_their_seed_and_probabilities(http: httpx.Client) -> None:
    faults = {"random": {"seed": 5, "server_error": 0.5, "overloaded": 0.5}}
    http.post("/_herd/faults", json=faults).raise_for_status()
    first = [generate(http) for _ in range(30)]
    http.post("/_herd/faults", json=faults).raise_for_status()  # setting again re-seeds
    again = [generate(http) for _ in range(30)]

    assert set(first) == {503, 429}  # every request fails, with both kinds
    assert first == again
    assert http.get("/_herd/faults").json()["random"]["seed"] == 5


def test_random_empty_answers_and_stream_cuts(http: httpx.Client) -> None:
    http.post("/_herd/faults", json={"random": {"empty": 1.0}}).raise_for_status()
    reply = http.post("/generate", json={"inputs": "Hello", "parameters": {"max_new_tokens": 4}})
    assert reply.status_code == 200 and reply.json()["generated_text"] == ""

    cut = {"random": {"cut_stream": 1.0, "cut_max_tokens": 0}}
    http.post("/_herd/faults", json=cut).raise_for_status()
    body = {"inputs": "Hello", "parameters": {"max_new_tokens": 4}}
    # Cut before the first token: the connection closes without a complete chunked body.
    with (
        pytest.raises(httpx.RemoteProtocolError),
        http.stream("POST", "/generate_stream", json=body) as stream,
    ):
        for _ in stream.iter_lines():
            pass


def test_random_faults_that_cannot_add_up_are_refused(http: httpx.Client) -> None:
    bad = {"random": {"server_error": 0.7, "overloaded": 0.5}}
    reply = http.post("/_herd/faults", json=bad)
    assert reply.status_code == 422
    assert "server_error + overloaded" in reply.json()["error"]


def test_random_faults_set_at_start() -> None:
    faults = FaultConfig(random=RandomFaults(seed=3, empty=1.0))
    app = create_app(load_backend("tiny"), max_input_tokens=512, faults=faults)
    with ServerThread(app) as server, httpx.Client(trust_env=False, timeout=30) as client:
        body = {"inputs": "Hello", "parameters": {"max_new_tokens": 4}}
        reply = client.post(f"{server.url}/generate", json=body)
        assert reply.status_code == 200 and reply.json()["generated_text"] == ""
        assert client.get(f"{server.url}/_herd/faults").json()["random"]["empty"] == 1.0
    assert app.state.herd.faults.fired == {"empty": 1}
