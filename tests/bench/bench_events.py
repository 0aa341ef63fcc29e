"""Event-to-alert latency over HTTP (`make bench ARGS="-k events"`).

uvicorn serves the event and alert routes on 127.0.0.1; one SSE subscriber listens
while events are POSTed open-loop (each at its scheduled time, whether or not the
earlier ones were answered) at ``BENCH_EVENTS_RATE`` per second (200) for
``BENCH_EVENTS_SECONDS`` (10). Every event is a new situation that fires a rule:
account ``i`` has an open deal for product ``i`` and the event says that product
dropped to 2 units, so ``low-stock-in-play`` raises one alert per event.

Measured: event-to-alert latency (POST start -> that event's alert read from the
stream) p50 / p99 / max and the rate achieved. Baseline, same process, same load:
the POST acknowledgement latency alone, with the worker stopped, so the figure
says what processing and fan-out add to the HTTP round trip.
The server runs in a child process, as it would beside its clients, so the client's
own work does not take the server's interpreter lock; the machine's two cores are
shared by both.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path

import httpx

from copilot.context import Account, Opportunity, Product
from copilot.settings import load_settings
from copilot.store import Store
from serve.accounts import AccountsService
from serve.events import EventPipeline
from tests.serve.live_server import events_app, live_server

RATE = float(os.environ.get("BENCH_EVENTS_RATE", 200))
SECONDS = float(os.environ.get("BENCH_EVENTS_SECONDS", 10))
SEEDED = datetime(2024, 3, 1, tzinfo=UTC)
DRAIN_S = 60.0  # how long to wait for the last alerts after the last POST


def pipeline_for(root: Path) -> EventPipeline:
    settings = load_settings(data_dir=root)
    return EventPipeline(settings, AccountsService(settings, Store(settings.db_path)))


def seeded_pipeline(root: Path, accounts: int) -> EventPipeline:
    """A data dir with ``accounts`` accounts, each with an open deal for its own product
    (in the price list: events naming an unknown product are refused)."""
    pipeline = pipeline_for(root)
    records = []
    for i in range(accounts):
        records.append(Account(time=SEEDED, account_id=f"acct-{i}", name=f"Account {i}"))
        records.append(
            Product(time=SEEDED, product_id=f"prod-{i}", name=f"Product {i}", list_price=100)
        )
        records.append(
            Opportunity(
                time=SEEDED,
                opportunity_id=f"op-{i}",
                account_id=f"acct-{i}",
                product_id=f"prod-{i}",
                stage="engaging",
                engage_date=SEEDED,
            )
        )
    pipeline.accounts.apply_records(records)
    return pipeline


def _serve(root: str, worker: bool, conn: Connection) -> None:
    """The child process: serve the data dir until told to stop, then report its counts."""
    pipeline = pipeline_for(Path(root))
    with live_server(events_app(pipeline)) as base:
        if not worker:
            pipeline.close()  # the baseline: events are acknowledged and stored, no more
        conn.send(base)
        conn.recv()
    conn.send(pipeline.store.counts())


@contextmanager
def server_process(root: Path, worker: bool = True) -> Iterator[tuple[str, dict[str, int]]]:
    """The server in a child process; yields its URL and, after the block, its counts."""
    ours, theirs = multiprocessing.get_context("spawn").Pipe()
    child = multiprocessing.get_context("spawn").Process(
        target=_serve, args=(str(root), worker, theirs)
    )
    child.start()
    counts: dict[str, int] = {}
    try:
        if not ours.poll(60):
            raise RuntimeError("the bench server did not start within 60 s")
        yield ours.recv(), counts
        ours.send("stop")
        if ours.poll(60):
            counts.update(ours.recv())
    finally:
        child.join(30)
        if child.is_alive():
            child.kill()


def stock_event(i: int) -> dict:
    return {
        "idempotency_key": f"bench-{i}",
        "type": "stock",
        "account_id": f"acct-{i}",
        "time": (SEEDED + timedelta(days=1, seconds=i)).isoformat(),
        "data": {"product_id": f"prod-{i}", "on_hand": 2},
    }


async def post_open_loop(base: str, count: int) -> tuple[list[float], list[float], float]:
    """POST ``count`` events at RATE per second; (start times, ack latencies s, seconds taken)."""
    starts = [0.0] * count
    acks = [0.0] * count
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:

        async def one(i: int) -> None:
            starts[i] = time.perf_counter()
            reply = await client.post("/v1/events", json=stock_event(i))
            acks[i] = time.perf_counter() - starts[i]
            assert reply.status_code == 202, reply.text

        began = time.perf_counter()
        tasks = []
        for i in range(count):
            delay = began + i / RATE - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
        return starts, acks, time.perf_counter() - began


async def subscribe(base: str, arrivals: dict[str, float], ready: asyncio.Event) -> None:
    """Read the alert stream, noting when each event's alert arrived (by idempotency key)."""
    timeout = httpx.Timeout(30, read=None)
    async with (
        httpx.AsyncClient(timeout=timeout) as client,
        client.stream("GET", f"{base}/v1/alerts/stream") as stream,
    ):
        kind = None
        async for line in stream.aiter_lines():
            if line.startswith("event:"):
                kind = line.partition(":")[2].strip()
                if kind == "ready":
                    ready.set()
            elif line.startswith("data:") and kind == "alert":
                payload = json.loads(line.partition(":")[2])
                arrivals.setdefault(payload["idempotency_key"], time.perf_counter())


async def measure(base: str, count: int) -> tuple[list[float], list[float], float, int]:
    arrivals: dict[str, float] = {}
    ready = asyncio.Event()
    reader = asyncio.create_task(subscribe(base, arrivals, ready))
    await asyncio.wait_for(ready.wait(), 10)
    starts, acks, took = await post_open_loop(base, count)
    deadline = time.perf_counter() + DRAIN_S
    while len(arrivals) < count and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    reader.cancel()
    latencies = [
        arrivals[f"bench-{i}"] - starts[i] for i in range(count) if f"bench-{i}" in arrivals
    ]
    return latencies, acks, took, len(arrivals)


def pct(values: list[float], q: float) -> float:
    return (
        statistics.quantiles(values, n=100, method="inclusive")[q - 1] if q < 100 else max(values)
    )


def test_bench_event_to_alert_latency(tmp_path: Path, bench_report) -> None:
    count = int(RATE * SECONDS)

    # Baseline: acknowledgements alone, the worker stopped (events only stored).
    seeded_pipeline(tmp_path / "baseline", count).store.engine.dispose()
    with server_process(tmp_path / "baseline", worker=False) as (base, idle_counts):
        _, baseline_acks, _ = asyncio.run(post_open_loop(base, count))
    assert idle_counts["pending"] == count

    seeded_pipeline(tmp_path / "live", count).store.engine.dispose()
    with server_process(tmp_path / "live") as (base, live_counts):
        latencies, acks, took, received = asyncio.run(measure(base, count))
    assert received == count, f"{received} of {count} alerts arrived within {DRAIN_S} s"
    assert live_counts["alerts"] == count

    ms = [v * 1e3 for v in latencies]
    ack_ms = [v * 1e3 for v in acks]
    base_ms = [v * 1e3 for v in baseline_acks]
    note = f"{count} events at {RATE:g}/s open loop, achieved {count / took:.1f}/s; 1 SSE reader"
    bench_report("event-to-alert p50 (baseline: POST ack p50, worker stopped)", pct(ms, 50), "ms",
                 pct(base_ms, 50), note)  # fmt: skip
    bench_report("event-to-alert p99 (baseline: POST ack p99, worker stopped)", pct(ms, 99), "ms",
                 pct(base_ms, 99), note)  # fmt: skip
    bench_report("event-to-alert max", max(ms), "ms", note=note)
    bench_report("POST ack p99 while processing", pct(ack_ms, 99), "ms", pct(base_ms, 99), note)
    bench_report("events POSTed per second", count / took, "events/s", note=f"target {RATE:g}/s")
    assert pct(ms, 99) < 1000, f"event-to-alert p99 {pct(ms, 99):.0f} ms is over 1 s"
