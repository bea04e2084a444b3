"""The baseline of bench/steps.py: plain Celery tasks with no-op bodies, no tidegate.

    celery -A bench.raw_celery worker -c 1 -P prefork -E   (from the repository root)

The app uses the same broker and the same Celery settings as tidegate's app (JSON, late
acks, prefetch 1, task events on), on its own queue, plus a Redis result backend for the
round-trip measurement. The chain and the fan-out mirror tidegate's jobs: each task sends
the tasks that follow it, and a Redis counter plays the part of the sink's pending-upstream
counter. The last task of a chain or fan-out sets ``<token>:done``, which the bench polls.
"""

from __future__ import annotations

import os
import threading

import redis
from celery import Celery

BROKER_URL = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/13")
RESULT_URL = os.environ.get("BENCH_RESULT_URL", "redis://127.0.0.1:6379/14")
QUEUE = "bench_raw"

app = Celery("bench_raw", broker=BROKER_URL, backend=RESULT_URL, set_as_current=False)
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_default_queue=QUEUE,
    task_create_missing_queues=True,
    worker_send_task_events=True,
    task_send_sent_event=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    broker_pool_limit=10,
)

_client: tuple[int, redis.Redis] | None = None
_client_lock = threading.Lock()


def client() -> redis.Redis:
    """A Redis client of this process (a prefork child never reuses its parent's)."""
    global _client
    with _client_lock:
        if _client is None or _client[0] != os.getpid():
            _client = (os.getpid(), redis.Redis.from_url(BROKER_URL))
        return _client[1]


def _done(token: str) -> None:
    client().set(f"{token}:done", "1", ex=600)


@app.task(name="bench_raw.noop")
def noop() -> None:
    """The round trip: apply_async + result.get."""
    return None


@app.task(name="bench_raw.hop", ignore_result=True)
def hop(token: str, remaining: int) -> None:
    """One link of a chain: send the next link, or mark the chain done."""
    if remaining > 1:
        hop.apply_async((token, remaining - 1))
    else:
        _done(token)


@app.task(name="bench_raw.fan_root", ignore_result=True)
def fan_root(token: str, width: int) -> None:
    for _ in range(width):
        fan_middle.apply_async((token, width))


@app.task(name="bench_raw.fan_middle", ignore_result=True)
def fan_middle(token: str, width: int) -> None:
    if client().incr(f"{token}:count") == width:  # the last middle task releases the sink
        fan_sink.apply_async((token,))


@app.task(name="bench_raw.fan_sink", ignore_result=True)
def fan_sink(token: str) -> None:
    _done(token)
