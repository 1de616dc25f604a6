"""What every streaming reply shares: token events with the drop fault applied, and one place
that turns a failure mid-stream into TGI's in-stream error event and counts how it ended."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing

from langchain_herd.server.generation import GenerationPlan, TokenEvent
from langchain_herd.server.sse import StreamDropped, sse_event
from langchain_herd.server.state import ServerState
from langchain_herd.server.tgi_errors import TGIError

logger = logging.getLogger(__name__)


class StreamOutcome:
    """Whether the metrics were told how a stream ended; still unset means the client left."""

    def __init__(self) -> None:
        self.recorded = False


async def token_events(
    state: ServerState, plan: GenerationPlan, drop_after: int | None, outcome: StreamOutcome
) -> AsyncGenerator[TokenEvent, None]:
    """The plan's token events; raises ``StreamDropped`` after ``drop_after`` tokens."""
    sent = 0
    delay = state.faults.token_delay_s
    async with aclosing(state.backend.agenerate(plan)) as events:
        async for event in events:
            if not isinstance(event, TokenEvent):
                continue
            if drop_after is not None and sent >= drop_after:
                state.metrics.record_failure("dropped")
                outcome.recorded = True
                raise StreamDropped(f"stream dropped after {sent} tokens (injected fault)")
            sent += 1
            if delay:
                await asyncio.sleep(delay)
            yield event


async def guarded(
    state: ServerState, body: AsyncGenerator[bytes, None], outcome: StreamOutcome, what: str
) -> AsyncIterator[bytes]:
    """Relay ``body``; a failure inside it becomes one ``data: {"error", ...}`` event."""
    try:
        async with aclosing(body) as events:
            async for data in events:
                yield data
    except StreamDropped:
        raise  # a deliberate cut, already counted: it must reach uvicorn to close the socket
    except TGIError as error:
        state.metrics.record_failure(error.error_type)
        outcome.recorded = True
        yield sse_event(error.to_json())
    except Exception as exc:
        logger.exception("%s failed mid-stream", what)
        failure = TGIError.generation(str(exc))
        state.metrics.record_failure(failure.error_type)
        outcome.recorded = True
        yield sse_event(failure.to_json())
    finally:
        if not outcome.recorded:
            state.metrics.record_failure("cancelled")
