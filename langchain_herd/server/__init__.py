"""A local, CPU, transformers-backed server speaking Hugging Face TGI's HTTP protocol.

It answers the routes the Hugging Face clients call (``/``, ``/generate``, ``/generate_stream``,
``/v1/chat/completions``, ``/health``, ``/info``, ``/v1/models``, ``/metrics``) with TGI's
shapes, status codes and error bodies, and adds fault injection (``/_herd/faults``) for tests.
Like TGI, it enforces ``parameters.grammar`` (JSON schema, regex) and the chat route's ``tools``
/ ``tool_choice`` and ``response_format`` by constrained decoding (:mod:`.grammar`,
:mod:`.tools`). It stands in for real TGI in tests and in the library's embedded demo.

``create_replay_app`` serves recorded answers of real models instead of a model (``herd serve
--replay``; see :mod:`.replay_app`).

Importing this package is cheap: torch and transformers load only with a model.

Example:
    >>> from langchain_herd.server import ServerThread, create_app, load_backend
    >>> from huggingface_hub import InferenceClient
    >>> with ServerThread(create_app(load_backend("tiny"))) as server:
    ...     reply = InferenceClient(base_url=server.url).text_generation(
    ...         "hello", max_new_tokens=5, return_full_text=False
    ...     )
    >>> isinstance(reply, str)
    True
"""

from langchain_herd.server.app import create_app
from langchain_herd.server.backend import GenerationBackend
from langchain_herd.server.cli import serve_main
from langchain_herd.server.faults import FaultConfig
from langchain_herd.server.loading import default_cache_dir, load_backend
from langchain_herd.server.replay_app import create_replay_app
from langchain_herd.server.server_thread import ServerStartError, ServerThread
from langchain_herd.server.validation import ServerLimits

__all__ = [
    "FaultConfig",
    "GenerationBackend",
    "ServerLimits",
    "ServerStartError",
    "ServerThread",
    "create_app",
    "create_replay_app",
    "default_cache_dir",
    "load_backend",
    "serve_main",
]
