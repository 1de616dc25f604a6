"""langchain-herd: route each query to the expert LLM most likely to answer it well.

Example:
    .. code-block:: python

        from langchain_herd import HerdRouter

        router = HerdRouter.from_config("tgi_configs/local.yaml")
        print(router.invoke("What is 2 + 2?").content)
"""

from langchain_herd._version import __version__
from langchain_herd.breaker import CircuitBreaker
from langchain_herd.classifiers.base import Classifier, SavedClassifier, load_classifier
from langchain_herd.config import HerdConfig, load_config
from langchain_herd.decision import Attempt, RouteDecision
from langchain_herd.errors import (
    AllExpertsFailedError,
    ArtifactError,
    ConfigError,
    EmptyAnswerError,
    ExpertError,
    HerdError,
    InputError,
    StreamInterruptedError,
)
from langchain_herd.experts import Expert, TGIGenerateChat, build_chat_model, build_expert
from langchain_herd.policies import ArgmaxPolicy, MarginPolicy, Policy
from langchain_herd.router import HerdRouter

__all__ = [
    "AllExpertsFailedError",
    "ArgmaxPolicy",
    "ArtifactError",
    "Attempt",
    "CircuitBreaker",
    "Classifier",
    "ConfigError",
    "EmptyAnswerError",
    "Expert",
    "ExpertError",
    "HerdConfig",
    "HerdError",
    "HerdRouter",
    "InputError",
    "MarginPolicy",
    "Policy",
    "RouteDecision",
    "SavedClassifier",
    "StreamInterruptedError",
    "TGIGenerateChat",
    "__version__",
    "build_chat_model",
    "build_expert",
    "load_classifier",
    "load_config",
]
