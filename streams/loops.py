"""One lifecycle for every background loop: a ``mode.Service`` (Faust's own service library).

A ``Loop`` runs ``run()`` in a ``@Service.task`` from ``start()`` until ``stop()``. ``run()`` is one
attempt at the loop's work: it returns once ``should_stop`` is set (or when the work is done), and
raises when it fails. A failure is handled the same way for every loop, so that no loop dies
quietly and none stops the pipeline for good: it is counted (``failures``, ``last_error``, shown by
the owners on ``/health``), logged once with its traceback (``Ended`` without one: an expected
end, such as a child process that exited), passed to ``on_failure`` and, after a back-off that
doubles from ``backoff_initial`` to ``backoff_max``, ``run()`` is called again. ``progressed()``
resets the count and the back-off.

``stop()`` lets ``run()`` finish what it holds for up to ``stop_within`` seconds (the sink writes
what it read, ingest sends what it validated), then cancels it. A loop that owns others adds them
with ``add_dependency``: mode starts them after it and stops them with it.
"""

from __future__ import annotations

import asyncio
import logging

from mode import Service


class Ended(Exception):
    """An attempt ended in a way the loop expects (logged without a traceback)."""


class Loop(Service):  # type: ignore[misc]
    """A background loop with one start, stop, back-off and failure handling."""

    what = "loop"  # what the log lines call it
    backoff_initial = 0.2  # seconds before the first restart
    backoff_max = 15.0
    stop_within = 0.0  # seconds stop() waits for run() to return before cancelling it

    def __init__(
        self, *, backoff_initial: float | None = None, backoff_max: float | None = None
    ) -> None:
        super().__init__()
        if backoff_initial is not None:
            self.backoff_initial = backoff_initial
        if backoff_max is not None:
            self.backoff_max = backoff_max
        # Failures since the loop last made progress, and the last one's text: a loop that fails
        # every attempt shows it here, not only in the logs.
        self.failures = 0
        self.last_error = ""
        self._delay = self.backoff_initial
        self._task: asyncio.Future[None] | None = None
        self._log = logging.getLogger(type(self).__module__)

    async def run(self) -> None:
        """One attempt: returns once ``should_stop`` is set (or the work is done); raises."""
        raise NotImplementedError

    async def on_failure(self, exc: Exception) -> None:
        """After a failure is counted and logged, before the back-off."""

    def progressed(self) -> None:
        """The loop works: forget its failures, and restart quickly after the next one."""
        self.failures = 0
        self.last_error = ""
        self._delay = self.backoff_initial

    @property
    def stalled(self) -> str:
        """Why the loop is not making progress, or "" while it is."""
        if not self.failures:
            return ""
        return f"failed {self.failures} time(s) without progress; last: {self.last_error}"

    @Service.task
    async def _run_until_stopped(self) -> None:
        self._task = asyncio.current_task()
        while not self.should_stop:
            try:
                await self.run()
                return
            except Exception as exc:
                if self.should_stop:
                    self._log.warning("%s failed while stopping: %r", self.what, exc)
                    return
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                self._log.error(
                    "%s failed (%d time(s) without progress)%s; restarting it in %.1fs",
                    self.what,
                    self.failures,
                    f": {exc}" if isinstance(exc, Ended) else "",
                    self._delay,
                    exc_info=not isinstance(exc, Ended),
                )
                await self.on_failure(exc)
                await self.sleep(self._delay)
                self._delay = min(self._delay * 2, self.backoff_max)

    async def on_stop(self) -> None:
        task = self._task
        if task is None or task.done():
            return
        if self.stop_within > 0:
            try:
                await asyncio.wait_for(asyncio.shield(task), self.stop_within)
                return
            except TimeoutError:
                self._log.warning(
                    "%s did not stop within %.0fs; cancelling it", self.what, self.stop_within
                )
                await self.on_stop_timeout()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def on_stop_timeout(self) -> None:
        """``run()`` did not return within ``stop_within``: it is cancelled after this."""
