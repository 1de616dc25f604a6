"""langchain-herd: route each query to the expert LLM most likely to answer it well.

Example:
    .. code-block:: python

        from langchain_herd import HerdRouter

        router = HerdRouter.from_config("tgi_configs/local.yaml")
        print(router.invoke("What is 2 + 2?").content)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from langchain_herd._version import __version__

if TYPE_CHECKING:
    from langchain_herd.breaker import CircuitBreaker
    from langchain_herd.capabilities import Capabilities, Requirements
    from langchain_herd.chat_models import HerdRouter, route_on
    from langchain_herd.classifiers.base import Classifier, SavedClassifier, load_classifier
    from langchain_herd.config import HerdConfig, load_config
    from langchain_herd.decision import Attempt, RouteDecision
    from langchain_herd.decision_models import HerdChoiceAnswer, HerdDecisionModel
    from langchain_herd.engine import HerdEngine, RouteRequest
    from langchain_herd.errors import (
        AllExpertsFailedError,
        ArtifactError,
        CapabilityError,
        ConfigError,
        EmptyAnswerError,
        ExpertError,
        ExpertsOverloadedError,
        HerdError,
        InputError,
        StreamInterruptedError,
    )
    from langchain_herd.experts import Expert, TGIGenerateChat, build_chat_model, build_expert
    from langchain_herd.middleware import HerdMiddleware
    from langchain_herd.policies import ArgmaxPolicy, MarginPolicy, Policy
    from langchain_herd.sessions import InMemorySessions

# Public names -> the module that defines them. Imported on first use, so that
# `import langchain_herd.evaluation` (or `herd eval`) does not load LangChain.
_EXPORTS: dict[str, str] = {
    "CircuitBreaker": "langchain_herd.breaker",
    "Classifier": "langchain_herd.classifiers.base",
    "SavedClassifier": "langchain_herd.classifiers.base",
    "load_classifier": "langchain_herd.classifiers.base",
    "HerdConfig": "langchain_herd.config",
    "load_config": "langchain_herd.config",
    "Attempt": "langchain_herd.decision",
    "RouteDecision": "langchain_herd.decision",
    "HerdChoiceAnswer": "langchain_herd.decision_models",
    "HerdDecisionModel": "langchain_herd.decision_models",
    "HerdMiddleware": "langchain_herd.middleware",
    "AllExpertsFailedError": "langchain_herd.errors",
    "ArtifactError": "langchain_herd.errors",
    "ConfigError": "langchain_herd.errors",
    "EmptyAnswerError": "langchain_herd.errors",
    "ExpertError": "langchain_herd.errors",
    "ExpertsOverloadedError": "langchain_herd.errors",
    "HerdError": "langchain_herd.errors",
    "InputError": "langchain_herd.errors",
    "StreamInterruptedError": "langchain_herd.errors",
    "Expert": "langchain_herd.experts",
    "TGIGenerateChat": "langchain_herd.experts",
    "build_chat_model": "langchain_herd.experts",
    "build_expert": "langchain_herd.experts",
    "ArgmaxPolicy": "langchain_herd.policies",
    "MarginPolicy": "langchain_herd.policies",
    "Policy": "langchain_herd.policies",
    "HerdRouter": "langchain_herd.chat_models",
    "HerdEngine": "langchain_herd.engine",
    "RouteRequest": "langchain_herd.engine",
    "route_on": "langchain_herd.chat_models",
    "Capabilities": "langchain_herd.capabilities",
    "Requirements": "langchain_herd.capabilities",
    "CapabilityError": "langchain_herd.errors",
    "InMemorySessions": "langchain_herd.sessions",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'langchain_herd' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "AllExpertsFailedError",
    "ArgmaxPolicy",
    "ArtifactError",
    "Attempt",
    "Capabilities",
    "CapabilityError",
    "CircuitBreaker",
    "Classifier",
    "ConfigError",
    "EmptyAnswerError",
    "Expert",
    "ExpertError",
    "ExpertsOverloadedError",
    "HerdChoiceAnswer",
    "HerdConfig",
    "HerdDecisionModel",
    "HerdEngine",
    "HerdError",
    "HerdMiddleware",
    "HerdRouter",
    "InMemorySessions",
    "InputError",
    "MarginPolicy",
    "Policy",
    "Requirements",
    "RouteDecision",
    "RouteRequest",
    "SavedClassifier",
    "StreamInterruptedError",
    "TGIGenerateChat",
    "__version__",
    "build_chat_model",
    "build_expert",
    "load_classifier",
    "load_config",
    "route_on",
]
