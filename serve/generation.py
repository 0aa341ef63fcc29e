"""Generation off the event loop: a bounded queue in front of a few worker threads.

    queue = GenerationQueue(workers=1, max_waiting=8)
    job = queue.submit(lambda job: service.answer(prepared, stop=job.cancelled))
    answer = await job.result()

The model runs one generation at a time per base model (``training.generate`` holds
a lock around it), so more workers than models only adds threads that wait. What
the queue adds is a limit: past ``max_waiting`` jobs a new one is refused at once
with ``QueueFull`` and an estimate of when to retry, instead of piling up requests
that time out anyway. A job whose client went away is dropped before it starts,
and a running one sees ``job.cancelled`` set so it can stop generating.

Streaming jobs push items with ``job.emit`` from the worker thread; the route reads
them with ``async for item in job.items()`` on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Before any generation has been timed, a guess for Retry-After (an 80-token answer on 2 cores).
DEFAULT_JOB_S = 3.0
RECENT_JOBS = 20  # generation times averaged for Retry-After
_END = object()  # marks the end of a job's streamed items


class QueueFull(Exception):
    """Every waiting place is taken; retry after ``retry_after_s`` seconds."""

    def __init__(self, waiting: int, retry_after_s: int):
        super().__init__(
            f"{waiting} generations are already waiting for the model; "
            f"retry after {retry_after_s} s"
        )
        self.waiting = waiting
        self.retry_after_s = retry_after_s


class Job(Generic[T]):
    """One generation: its work, its result, and the items it streams on the way."""

    def __init__(self, work: Callable[[Job[T]], T], loop: asyncio.AbstractEventLoop | None):
        self.work = work
        self.future: Future[T] = Future()
        self.cancelled = threading.Event()  # set when the client is gone; work may check it
        self.started = threading.Event()
        self._loop = loop
        self._items: asyncio.Queue[Any] | None = asyncio.Queue() if loop is not None else None

    def emit(self, item: Any) -> None:
        """Send ``item`` to the reader of ``items()`` (called from the worker thread)."""
        if self._loop is not None and self._items is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._items.put_nowait, item)

    def cancel(self) -> None:
        """The client is gone: drop the job if it has not started, else ask it to stop."""
        self.cancelled.set()
        self.future.cancel()  # only succeeds while the job is still waiting

    async def result(self) -> T:
        """The job's result, awaited on the event loop without blocking it."""
        return await asyncio.wrap_future(self.future)

    async def items(self) -> AsyncIterator[Any]:
        """The emitted items in order, until the job ends; then its result is raised or returned
        by ``result()``."""
        if self._items is None:
            raise RuntimeError("this job was submitted without an event loop; it cannot stream")
        while True:
            item = await self._items.get()
            if item is _END:
                return
            yield item

    def _finish(self) -> None:
        if self._loop is not None and self._items is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._items.put_nowait, _END)


class GenerationQueue:
    """A fixed pool of worker threads and at most ``max_waiting`` jobs waiting for one."""

    def __init__(self, workers: int = 1, max_waiting: int = 8, name: str = "generation"):
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        if max_waiting < 0:
            raise ValueError(f"max_waiting must be 0 or more, got {max_waiting}")
        self.workers = workers
        self.max_waiting = max_waiting
        self._waiting: deque[Job[Any]] = deque()
        self._running = 0
        self._durations: deque[float] = deque(maxlen=RECENT_JOBS)
        self._cond = threading.Condition()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._run, name=f"{name}-{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    # --- submitting ------------------------------------------------------------

    def submit(self, work: Callable[[Job[T]], T], *, stream: bool = False) -> Job[T]:
        """Queue ``work(job)``; raises QueueFull when every waiting place is taken.

        ``stream=True`` binds the job to the running event loop so it can ``emit`` items.
        """
        loop = asyncio.get_running_loop() if stream else None
        job: Job[T] = Job(work, loop)
        with self._cond:
            if self._closed:
                raise RuntimeError("the generation queue is closed")
            self._drop_cancelled()
            if len(self._waiting) >= self.max_waiting and self._running >= self.workers:
                raise QueueFull(len(self._waiting), self._retry_after(len(self._waiting) + 1))
            self._waiting.append(job)
            self._cond.notify()
        return job

    def retry_after_s(self) -> int:
        """Seconds until a place is likely free: the recent mean generation time x jobs ahead."""
        with self._cond:
            return self._retry_after(len(self._waiting) + 1)

    def _retry_after(self, ahead: int) -> int:
        mean = sum(self._durations) / len(self._durations) if self._durations else DEFAULT_JOB_S
        return max(1, math.ceil(mean * ahead / self.workers))

    def _drop_cancelled(self) -> None:
        # A client that left while waiting frees its place at once, not when a worker reaches it.
        kept = [job for job in self._waiting if not job.cancelled.is_set()]
        if len(kept) != len(self._waiting):
            self._waiting = deque(kept)

    # --- inspection ------------------------------------------------------------

    @property
    def waiting(self) -> int:
        with self._cond:
            self._drop_cancelled()
            return len(self._waiting)

    @property
    def running(self) -> int:
        with self._cond:
            return self._running

    @property
    def mean_job_s(self) -> float | None:
        with self._cond:
            return sum(self._durations) / len(self._durations) if self._durations else None

    # --- the workers -------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._closed:
                    self._cond.wait()
                if self._closed and not self._waiting:
                    return
                job = self._waiting.popleft()
                if job.cancelled.is_set() or not job.future.set_running_or_notify_cancel():
                    job._finish()
                    continue
                self._running += 1
            job.started.set()
            began = time.perf_counter()
            try:
                job.future.set_result(job.work(job))
            except BaseException as exc:  # the route turns it into an HTTP error or SSE event
                job.future.set_exception(exc)
            finally:
                took = time.perf_counter() - began
                with self._cond:
                    self._running -= 1
                    if not job.cancelled.is_set():
                        self._durations.append(took)
                job._finish()

    def close(self, timeout_s: float = 5.0) -> None:
        """Refuse new jobs, drop the waiting ones and let the running ones end."""
        with self._cond:
            self._closed = True
            for job in self._waiting:
                job.cancel()
                job._finish()
            self._waiting.clear()
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout_s)
