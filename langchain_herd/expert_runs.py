"""The herd's expert calls as child runs of its own run, for every tracer and handler.

Each expert call is one chain run named ``expert:<name>`` (tagged the same, metadata
``herd_expert`` and ``herd_model``) under the herd's chat-model run; the expert's own chat
model is called without callbacks, so handlers see one model run per herd call and usage
is counted once. LangChain hands ``_generate`` a run manager but not ``_stream``: a stream's
config is kept by run id (``STREAMS``) so its expert runs can still nest under it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForChainRun,
    AsyncCallbackManagerForLLMRun,
    CallbackManager,
    CallbackManagerForChainRun,
    CallbackManagerForLLMRun,
)
from langchain_core.messages import BaseMessage
from langchain_core.runnables import RunnableConfig

from langchain_herd.experts import Expert

STREAMS: dict[str, RunnableConfig] = {}
"""Config of each herd stream in progress, by run id (its experts' runs nest under it)."""


def _nested(
    manager_class: type[Any],
    run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None,
    tag: str,
) -> Any:
    """A callback manager for a run nested under the herd's own run (LLM runs lack get_child)."""
    if run_manager is None:
        return None
    manager = manager_class(handlers=[], parent_run_id=run_manager.run_id)
    manager.set_handlers(run_manager.inheritable_handlers)
    manager.add_tags(run_manager.inheritable_tags)
    manager.add_metadata(run_manager.inheritable_metadata)
    manager.add_tags([tag], inherit=False)
    return manager


def child_manager(run_manager: CallbackManagerForLLMRun | None, tag: str) -> CallbackManager | None:
    """A callback manager for a run nested under the herd's own run."""
    return _nested(CallbackManager, run_manager, tag)


UNTRACED: RunnableConfig = {"callbacks": []}
"""Config for the expert's own chat-model call: its run is the ``expert:<name>`` chain run
around it. A second chat-model run would count every token twice in usage callbacks and
show handlers two model starts for one herd call. (An empty list, not None: None would
inherit the callbacks of the surrounding graph node.)"""


def expert_run(
    manager: CallbackManager | None, expert: Expert, messages: list[BaseMessage]
) -> CallbackManagerForChainRun | None:
    """Open the ``expert:<name>`` child run of one expert call."""
    if manager is None:
        return None
    manager.add_metadata(_expert_metadata(expert), inherit=False)
    return manager.on_chain_start(
        {"name": f"expert:{expert.name}"}, {"messages": messages}, name=f"expert:{expert.name}"
    )


async def aexpert_run(
    manager: AsyncCallbackManager | None, expert: Expert, messages: list[BaseMessage]
) -> AsyncCallbackManagerForChainRun | None:
    if manager is None:
        return None
    manager.add_metadata(_expert_metadata(expert), inherit=False)
    return await manager.on_chain_start(
        {"name": f"expert:{expert.name}"}, {"messages": messages}, name=f"expert:{expert.name}"
    )


def _expert_metadata(expert: Expert) -> dict[str, Any]:
    return {"herd_expert": expert.name, "herd_model": expert.model_id}


def traced_stream(
    run: CallbackManagerForChainRun | None, chunks: Iterator[BaseMessage]
) -> Iterator[BaseMessage]:
    merged: Any = None
    try:
        for chunk in chunks:
            merged = chunk if merged is None else merged + chunk
            yield chunk
    except BaseException as exc:
        if run is not None:
            run.on_chain_error(exc)
        raise
    if run is not None:
        run.on_chain_end({"output": merged})


async def atraced_stream(
    manager: AsyncCallbackManager | None,
    expert: Expert,
    messages: list[BaseMessage],
    chunks: AsyncIterator[BaseMessage],
) -> AsyncIterator[BaseMessage]:
    run = await aexpert_run(manager, expert, messages)
    merged: Any = None
    try:
        async for chunk in chunks:
            merged = chunk if merged is None else merged + chunk
            yield chunk
    except BaseException as exc:
        if run is not None:
            await run.on_chain_error(exc)
        raise
    if run is not None:
        await run.on_chain_end({"output": merged})


def stream_child_manager(run: str | None, tag: str, manager_class: type[Any]) -> Any:
    """A callback manager nested under a herd stream's run (see ``HerdRouter._stream_config``)."""
    config = STREAMS.get(run) if run else None
    if config is None:
        return None
    manager = manager_class.configure(
        config.get("callbacks"), None, False, config.get("tags"), None, config.get("metadata")
    )
    manager.parent_run_id = uuid.UUID(run)
    manager.add_tags([tag], inherit=False)
    return manager


def achild_manager(
    run_manager: AsyncCallbackManagerForLLMRun | None, tag: str
) -> AsyncCallbackManager | None:
    """``child_manager`` for async runs."""
    return _nested(AsyncCallbackManager, run_manager, tag)
