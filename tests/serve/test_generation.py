"""The generation queue: order, errors, the waiting limit with its Retry-After, dropped jobs."""

from __future__ import annotations

import asyncio
import math
import threading

import pytest

from serve.generation import DEFAULT_JOB_S, GenerationQueue, QueueFull


def _blocker(release: threading.Event, started: threading.Event | None = None):
    def work(job):
        if started is not None:
            started.set()
        release.wait(30)
        return "blocked"

    return work


def test_jobs_run_in_order_and_return_their_results() -> None:
    queue = GenerationQueue(workers=1, max_waiting=10)
    seen: list[int] = []

    def work_for(i: int):
        def work(job):
            seen.append(i)
            return i * 10

        return work

    jobs = [queue.submit(work_for(i)) for i in range(5)]
    assert [job.future.result(10) for job in jobs] == [0, 10, 20, 30, 40]
    assert seen == [0, 1, 2, 3, 4]
    queue.close()


def test_an_error_reaches_the_caller_and_the_worker_goes_on() -> None:
    queue = GenerationQueue(workers=1, max_waiting=4)

    def fail(job):
        raise ValueError("bad prompt")

    failed = queue.submit(fail)
    with pytest.raises(ValueError, match="bad prompt"):
        failed.future.result(10)
    assert queue.submit(lambda job: "still serving").future.result(10) == "still serving"
    queue.close()


def test_full_queue_refuses_with_a_retry_estimate() -> None:
    queue = GenerationQueue(workers=1, max_waiting=2)
    release, started = threading.Event(), threading.Event()
    running = queue.submit(_blocker(release, started))
    assert started.wait(10)
    waiting = [queue.submit(lambda job: "later") for _ in range(2)]
    assert queue.waiting == 2 and queue.running == 1

    with pytest.raises(QueueFull) as info:
        queue.submit(lambda job: "refused")
    # No generation timed yet: the default guess x the 3 jobs ahead (2 waiting + this one).
    assert info.value.waiting == 2
    assert info.value.retry_after_s == math.ceil(DEFAULT_JOB_S * 3)
    assert "retry after 9 s" in str(info.value)

    release.set()
    assert running.future.result(10) == "blocked"
    assert [job.future.result(10) for job in waiting] == ["later", "later"]
    # Now the estimate is the measured mean x jobs ahead, never under a second.
    mean = queue.mean_job_s
    assert mean is not None
    assert queue.retry_after_s() == max(1, math.ceil(mean * 1))
    queue.close()


def test_a_cancelled_waiting_job_is_dropped_and_frees_its_place() -> None:
    queue = GenerationQueue(workers=1, max_waiting=1)
    release, started = threading.Event(), threading.Event()
    ran: list[str] = []
    running = queue.submit(_blocker(release, started))
    assert started.wait(10)
    gone = queue.submit(lambda job: ran.append("gone"))
    with pytest.raises(QueueFull):
        queue.submit(lambda job: ran.append("refused"))

    gone.cancel()  # its client disconnected while it waited
    assert queue.waiting == 0
    kept = queue.submit(lambda job: ran.append("kept") or "kept")  # the place is free again

    release.set()
    assert running.future.result(10) == "blocked"
    assert kept.future.result(10) == "kept"
    assert ran == ["kept"]  # the cancelled job never ran
    assert gone.future.cancelled()
    queue.close()


def test_a_running_job_sees_its_cancellation() -> None:
    queue = GenerationQueue(workers=1, max_waiting=1)
    started = threading.Event()

    def work(job):
        started.set()
        assert job.cancelled.wait(10)  # a generation polls this between tokens
        return "stopped early"

    job = queue.submit(work)
    assert started.wait(10)
    job.cancel()
    assert job.future.result(10) == "stopped early"
    queue.close()


def test_streamed_items_arrive_on_the_event_loop_in_order() -> None:
    queue = GenerationQueue(workers=1, max_waiting=1)

    def work(job):
        for piece in ["价格", " is", " fair"]:
            job.emit(piece)
        return "done"

    async def read() -> tuple[list[str], str]:
        job = queue.submit(work, stream=True)
        items = [item async for item in job.items()]
        return items, await job.result()

    assert asyncio.run(read()) == (["价格", " is", " fair"], "done")
    queue.close()


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="workers"):
        GenerationQueue(workers=0)
    with pytest.raises(ValueError, match="max_waiting"):
        GenerationQueue(max_waiting=-1)
