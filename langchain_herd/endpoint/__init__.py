"""The herd as one OpenAI-compatible HTTP endpoint (``herd serve-router``).

A thin surface over ``HerdRouter``: OpenAI's wire format in, ``HerdRouter.ainvoke`` /
``astream`` in the middle, OpenAI's wire format out, plus ``/v1/models``, ``/health`` and
Prometheus ``/metrics``. Needs the ``router-server`` extra
(``pip install 'langchain-herd[router-server]'``).

Example:
    .. code-block:: python

        from langchain_herd import HerdRouter
        from langchain_herd.endpoint import create_router_app

        app = create_router_app(HerdRouter.from_config("bundled:local"), api_keys=["secret"])
"""

from langchain_herd.endpoint.app import create_router_app
from langchain_herd.endpoint.auth import API_KEYS_ENV
from langchain_herd.endpoint.to_langchain import THREAD_HEADER
from langchain_herd.endpoint.to_openai import EXPERT_HEADER, POLICY_HEADER, SCORES_HEADER

__all__ = [
    "API_KEYS_ENV",
    "EXPERT_HEADER",
    "POLICY_HEADER",
    "SCORES_HEADER",
    "THREAD_HEADER",
    "create_router_app",
]
