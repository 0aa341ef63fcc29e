"""Streaming chat under load (`make bench ARGS="-k chat_load"`).

uvicorn serves the whole API on 127.0.0.1 from a child process (as it would beside
its clients: the client's work does not take the server's interpreter lock; the
machine's cores are shared by both). Before any request the child loads every
model a server holds: the embedder and whisper (by ingesting a transcript and a
short recording) and the generator (one chat answer).

Baseline, same server: one client alone asks ``BENCH_CHAT_BASELINE`` (5) streamed
questions in a row; its time to first token (TTFT, request start -> first ``token``
event). Load: ``BENCH_CHAT_CLIENTS`` (50) clients stream chat answers for
``BENCH_CHAT_SECONDS`` (60); a client turned away with 429 waits the Retry-After
it was given (or the time left) and asks again. Measured: answers served, the
share of requests turned away, TTFT p50 / p99 of the served ones and its ratio to
the baseline, 5xx and error events (must be 0), and the server's peak RSS.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path

import httpx
import psutil

from copilot.context import Account
from copilot.keys import KeyStore
from copilot.settings import load_settings
from tests.conftest import SAMPLE
from tests.serve.conftest import SAMPLE_TRANSCRIPT

CLIENTS = int(os.environ.get("BENCH_CHAT_CLIENTS", 50))
SECONDS = float(os.environ.get("BENCH_CHAT_SECONDS", 60))
BASELINE = int(os.environ.get("BENCH_CHAT_BASELINE", 5))
ACCOUNT = "acct-bench"
QUESTIONS = [
    "The customer says our premium is too expensive. How do I answer?",
    "客户说价格太贵了，我该怎么回应？",
    "They want to think about it until next month. What should I say?",
]


def _serve(root: str, conn: Connection) -> None:
    """The child process: load every model, serve until told to stop."""
    from serve.api.app import create_app
    from serve.service import CopilotService
    from tests.serve.live_server import live_server

    settings = load_settings(data_dir=Path(root) / "data")
    service = CopilotService(settings)
    service.accounts.apply_records(
        [
            Account(
                time=datetime(2025, 1, 6, tzinfo=UTC),
                account_id=ACCOUNT,
                name="Bench",
                team="Bench",
            )
        ]
    )
    transcript = Path(root) / "bench-renewal.txt"
    transcript.write_text(SAMPLE_TRANSCRIPT, encoding="utf-8")
    # Embedder and whisper: a transcript and a short recording through ingest.
    report = service.ingest(
        [transcript, SAMPLE / "sample-call-01.flac"], outcome="won", account_id=ACCOUNT
    )
    assert not report.failed, report.failed
    # The generator: one answer.
    service.chat([{"role": "user", "content": QUESTIONS[0]}], account_id=ACCOUNT)
    with live_server(create_app(service, with_ui=False)) as base:
        conn.send(base)
        conn.recv()


@contextmanager
def server_process(root: Path) -> Iterator[tuple[str, int]]:
    """The server in a child process; yields its URL and its pid."""
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    child = context.Process(target=_serve, args=(str(root), theirs))
    child.start()
    try:
        if not ours.poll(600):
            raise RuntimeError("the bench server did not start within 600 s")
        yield ours.recv(), child.pid
        ours.send("stop")
    finally:
        child.join(30)
        if child.is_alive():
            child.kill()


@dataclass
class Tally:
    ttft_s: list[float] = field(default_factory=list)
    served: int = 0
    turned_away: int = 0
    server_errors: int = 0
    error_events: int = 0
    other: list[int] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return self.served + self.turned_away + self.server_errors + len(self.other)


async def ask(client: httpx.AsyncClient, question: str, tally: Tally) -> float:
    """One streamed chat request; returns the Retry-After to wait (0 when not refused)."""
    body = {
        "messages": [{"role": "user", "content": question}],
        "account_id": ACCOUNT,
        "stream": True,
    }
    started = time.perf_counter()
    async with client.stream("POST", "/v1/chat", json=body) as response:
        if response.status_code == 429:
            await response.aread()
            tally.turned_away += 1
            return float(response.headers.get("Retry-After", 1))
        if response.status_code >= 500:
            await response.aread()
            tally.server_errors += 1
            return 0.0
        if response.status_code != 200:
            await response.aread()
            tally.other.append(response.status_code)
            return 0.0
        first = None
        kind = None
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                kind = line.partition(":")[2].strip()
                if kind == "token" and first is None:
                    first = time.perf_counter() - started
                if kind == "error":
                    tally.error_events += 1
            elif line.startswith("data:") and kind == "done":
                json.loads(line.partition(":")[2])  # a whole, parseable answer
        if first is not None:
            tally.ttft_s.append(first)
        tally.served += 1
        return 0.0


async def alone(base: str, key: str, count: int) -> Tally:
    tally = Tally()
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=600
    ) as client:
        for i in range(count):
            await ask(client, QUESTIONS[i % len(QUESTIONS)], tally)
    return tally


async def load(base: str, key: str, clients: int, seconds: float) -> tuple[Tally, float]:
    tally = Tally()
    limits = httpx.Limits(max_connections=clients + 10, max_keepalive_connections=clients + 10)
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=600, limits=limits
    ) as client:
        began = time.perf_counter()
        deadline = began + seconds

        async def one(i: int) -> None:
            n = i
            while time.perf_counter() < deadline:
                wait = await ask(client, QUESTIONS[n % len(QUESTIONS)], tally)
                n += 1
                if wait:
                    await asyncio.sleep(min(wait, max(0.0, deadline - time.perf_counter())))

        await asyncio.gather(*(one(i) for i in range(clients)))
        return tally, time.perf_counter() - began


@contextmanager
def rss_sampler(pid: int) -> Iterator[list[int]]:
    """The process's resident memory, sampled every 0.5 s while the block runs."""
    samples: list[int] = []
    done = threading.Event()
    process = psutil.Process(pid)

    def sample() -> None:
        while not done.is_set():
            samples.append(process.memory_info().rss)
            done.wait(0.5)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        done.set()
        thread.join(5)


def pct(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def test_bench_chat_load(tmp_path: Path, bench_report) -> None:
    key = KeyStore(load_settings(data_dir=tmp_path / "data").db_path).create(
        "rep", team="Bench", name="bench-rep"
    )
    with server_process(tmp_path) as (base, pid):
        warm_rss = psutil.Process(pid).memory_info().rss
        solo = asyncio.run(alone(base, key, BASELINE))
        with rss_sampler(pid) as samples:
            tally, took = asyncio.run(load(base, key, CLIENTS, SECONDS))

    assert solo.served == BASELINE and solo.ttft_s, solo
    assert tally.server_errors == 0, f"{tally.server_errors} answers were 5xx"
    assert tally.error_events == 0, f"{tally.error_events} streams ended with an error event"
    assert not tally.other, f"unexpected statuses {tally.other}"
    assert tally.served > 0 and tally.ttft_s

    base_ms = statistics.median(solo.ttft_s) * 1e3
    ms = [v * 1e3 for v in tally.ttft_s]
    note = (
        f"{CLIENTS} streaming clients sending for {SECONDS:.0f} s (the last answer ended at "
        f"{took:.0f} s); 429s wait their Retry-After"
    )
    rows = [
        ("chat TTFT p50 under load (baseline: 1 client alone, p50)", pct(ms, 50), "ms", base_ms),
        ("chat TTFT p99 under load (baseline: 1 client alone, p50)", pct(ms, 99), "ms", base_ms),
    ]
    for name, value, unit, baseline in rows:
        bench_report(name, value, unit, baseline, note)
    bench_report("chat answers served under load", tally.served, "answers", note=note)
    bench_report(
        "chat requests turned away (429)",
        100 * tally.turned_away / tally.requests,
        "%",
        note=f"{tally.turned_away} of {tally.requests} requests",
    )
    bench_report("chat 5xx under load", tally.server_errors, "responses", note="must be 0")
    bench_report(
        "server RSS, all models loaded, peak under load",
        max(samples or [warm_rss]) / 2**20,
        "MiB",
        warm_rss / 2**20,
        "baseline: RSS after warm-up (generator, embedder, whisper)",
    )
