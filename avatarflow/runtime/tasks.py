"""Background tasks: one helper creates them, keeps references, logs failures and cancels
the rest when the owner leaves."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


class TaskGroup:
    """Tasks owned by one block: ``async with TaskGroup(name) as g: g.spawn(coro)``.

    On exit every task still running is cancelled; a task that fails is logged and its
    exception re-raised in the owner at the next ``check()`` or on exit.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._tasks: set[asyncio.Task[Any]] = set()
        self._failure: BaseException | None = None

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.name}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task %s failed", task.get_name(), exc_info=task.exception())
            self._failure = self._failure or task.exception()

    def check(self) -> None:
        if self._failure is not None:
            raise self._failure

    async def __aenter__(self) -> TaskGroup:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.check()
