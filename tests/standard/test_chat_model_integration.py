"""langchain-tests' standard integration tests for the herd, against the embedded local herd.

The herd is ``bundled:local`` (four subject experts, two on the OpenAI route and two on
TGI's generate route, on one local TGI-protocol server running SmolLM2-135M-Instruct) with
its experts pointed at a server this module starts on a free port. Each skip and xfail is
listed, with its reason, in the README ("Standard tests").
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_tests.integration_tests import ChatModelIntegrationTests

from langchain_herd import HerdRouter
from langchain_herd.config import HerdConfig, load_config, parse_config
from langchain_herd.local_servers import LocalHerd

pytestmark = pytest.mark.slow

_HERD: dict[str, HerdConfig] = {}

SMOLLM2_RAMBLES = (
    "SmolLM2-135M does not close a free-text JSON string: it writes on (often the tool "
    "prompt's own words) until max_tokens cuts the reply, and the cut call is TGI's 422 "
    "tool error or a length-limited parse. The grammar keeps every token schema-valid; "
    "the model does not finish. Passes with a model that can write a short joke."
)
EXPECTED_TO_FAIL = {
    "test_structured_output": SMOLLM2_RAMBLES,
    "test_structured_output_async": SMOLLM2_RAMBLES,
    "test_structured_output_pydantic_2_v1": SMOLLM2_RAMBLES,
    "test_json_mode": SMOLLM2_RAMBLES,
    "test_unicode_tool_call_integration": SMOLLM2_RAMBLES,
}
"""Standard tests SmolLM2-135M cannot pass, with why (also listed in the README)."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module", autouse=True)
def local_herd() -> Iterator[HerdConfig]:
    """``bundled:local`` with its server on a free port, up for the whole module."""
    data = load_config("bundled:local").model_dump(mode="json")
    port = _free_port()
    for server in data["local_servers"]:
        server["port"] = port
    for expert in data["experts"]:
        expert["url"] = f"http://127.0.0.1:{port}"
        expert["generation"]["max_new_tokens"] = 64
    config = parse_config(data)
    with LocalHerd(config):
        _HERD["config"] = config
        yield config
    _HERD.clear()


class TestHerdRouterIntegration(ChatModelIntegrationTests):
    @property
    def chat_model_class(self) -> type[HerdRouter]:
        return HerdRouter

    @property
    def chat_model_params(self) -> dict[str, Any]:
        # Short answers: SmolLM2 on a 2-core CPU writes ~20 tokens/s.
        return {"config": _HERD["config"], "max_tokens": 48}

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def model_override_value(self) -> str:
        # A model id pins the call to the experts serving it (all four, here).
        return "HuggingFaceTB/SmolLM2-135M-Instruct"
