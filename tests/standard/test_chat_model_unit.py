"""langchain-tests' standard unit tests for the herd's chat model (``HerdRouter``)."""

from __future__ import annotations

from typing import Any

from langchain_tests.unit_tests import ChatModelUnitTests

from langchain_herd import HerdRouter


class TestHerdRouterUnit(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[HerdRouter]:
        return HerdRouter

    @property
    def chat_model_params(self) -> dict[str, Any]:
        # The embedded default herd; no expert is called by the unit tests.
        return {"config": "bundled:local"}

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def init_from_env_params(self) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
        env = {"HERD_CONFIG": "bundled:local", "HERD_API_KEY": "key-from-env"}
        return env, {}, {"api_key": "key-from-env"}
