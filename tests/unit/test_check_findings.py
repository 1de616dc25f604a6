"""``herd check``'s findings on replies shaped as vLLM and SGLang send them (no such server
runs here; the live checks against local servers are in tests/integration/test_check_cli.py).
"""

from __future__ import annotations

from typing import Any

from langchain_herd.check import check_expert
from langchain_herd.config import ExpertConfig
from langchain_herd.probes import HEALTH, INFO, MODELS, EndpointProbe, RouteReply

BASE = "meta-llama/Meta-Llama-3-8B-Instruct"


def openai_server(models: list[dict[str, Any]]) -> EndpointProbe:
    """What vLLM or SGLang answer: /health, a 404 for /info, and a model list."""
    return EndpointProbe(
        url="http://sglang:30000",
        replies={
            HEALTH: RouteReply(status=200),
            INFO: RouteReply(status=404, body={"detail": "Not Found"}),
            MODELS: RouteReply(status=200, body={"object": "list", "data": models}),
        },
    )


def served_name(expert: ExpertConfig, probe: EndpointProbe) -> tuple[str, str]:
    found = [f for f in check_expert(expert, probe) if f.check == "served_name"]
    assert len(found) == 1, found
    return found[0].status, found[0].detail


def test_sglang_adapter_in_the_model_name_is_accepted() -> None:
    probe = openai_server([{"id": BASE, "root": BASE, "max_model_len": 8192}])
    expert = ExpertConfig(
        name="stem",
        url="http://sglang:30000",
        model_id=BASE,
        adapter_id="stem",
        openai_model=f"{BASE}:stem",
    )
    status, detail = served_name(expert, probe)
    assert status == "ok" and "adapter 'stem'" in detail


def test_a_model_name_the_server_does_not_list_is_a_problem() -> None:
    probe = openai_server([{"id": BASE, "root": BASE, "max_model_len": 8192}])
    for sent in ("Qwen/Qwen2.5-7B-Instruct", "Qwen/Qwen2.5-7B-Instruct:stem"):
        expert = ExpertConfig(name="x", url="http://sglang:30000", model_id=BASE, openai_model=sent)
        status, detail = served_name(expert, probe)
        assert status == "problem" and "does not list" in detail, (sent, detail)
