"""Feeding a consumer its events: a lighter loop than Channels' ``await_many_dispatch``.

Channels waits for "the client or the channel layer" with ``asyncio.wait`` and
makes a new task for every message it takes, so each pushed frame pays for a
task, a waiter and their callbacks: under fan-out that was about a third of the
server's CPU. Here each source has one long-lived task that takes its messages
in a plain loop, and a lock keeps Channels' guarantee that a consumer handles
one event at a time (an uncontended lock costs no scheduling).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

Source = Callable[[], Awaitable[dict[str, Any]]]
Dispatch = Callable[[dict[str, Any]], Awaitable[None]]


async def dispatch_in_turn(sources: Sequence[Source], dispatch: Dispatch) -> None:
    """Pass every message of every source to ``dispatch``, one at a time.

    Messages of one source keep their order. Returns or raises when a dispatch
    raises (``StopConsumer`` ends a consumer); the sources' tasks are then
    cancelled, which lets the channel layer drop the consumer's channel.
    """
    turn = asyncio.Lock()

    async def pump(source: Source) -> None:
        while True:
            message = await source()
            async with turn:
                await dispatch(message)

    tasks = [asyncio.ensure_future(pump(source)) for source in sources]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()  # re-raises what ended the loop
    finally:
        for task in tasks:
            task.cancel()
        # Wait for the cancellations; what ended the loop was raised above.
        await asyncio.gather(*tasks, return_exceptions=True)
