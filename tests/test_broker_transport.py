"""tidegate's Redis transport (``tidegate.broker.RedisTransport``): kombu's, with one
``redis.Redis`` object per channel and connection pool instead of one per command. On the
real Redis: an app made by ``make_celery_app`` uses it, messages still go through with their
unacked bookkeeping and acks, and a new pool gets a new client."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from celery.worker import state as worker_state
from kombu.entity import Queue

from tidegate.broker import CeleryPublisher, MemoryTransport, RedisTransport, make_celery_app
from tidegate.storage.api import Storage
from tidegate.storage.records import StepRef


def test_a_redis_app_uses_the_transport_and_reuses_one_client_per_pool(redis_url: str) -> None:
    app = make_celery_app(redis_url)
    with app.connection_for_write() as conn:
        assert isinstance(conn.transport, RedisTransport)
        channel = conn.default_channel
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
            assert first is second
            assert first.connection_pool is channel.pool
        given = redis.Redis.from_url(redis_url)
        with channel.conn_or_acquire(given) as passed:
            assert passed is given  # a caller's own client is used as it is
        given.close()
        old_pool = channel.pool
        channel._pool = None  # as kombu does when it drops a pool (a reconnect, a fork)
        with channel.conn_or_acquire() as third:
            assert third is not first
            assert third.connection_pool is channel.pool is not old_pool
            assert third.ping()
        old_pool.disconnect()


def test_messages_are_delivered_and_acked_through_the_reused_client(redis_url: str) -> None:
    app = make_celery_app(redis_url)
    client = redis.Redis.from_url(redis_url)
    try:
        with app.connection_for_write() as conn:
            queue = conn.SimpleQueue("tidegate-transport-test", no_ack=False)
            try:
                for i in range(3):
                    queue.put({"n": i})
                got = []
                unacked = client.hlen("unacked")  # other tests' leftovers, if any
                for _ in range(3):
                    message = queue.get(timeout=5)
                    assert client.hlen("unacked") == unacked + 1  # the delivery's unacked entry, then its ack
                    message.ack()
                    assert client.hlen("unacked") == unacked
                    got.append(message.payload["n"])
                assert got == [0, 1, 2]
            finally:
                queue.clear()
                queue.close()
    finally:
        client.close()


def test_the_memory_transport_waits_its_timeout_unless_a_worker_shutdown_is_asked() -> None:
    """Celery's loop for a transport without an event loop calls ``drain_events(timeout=2.0)``
    and sees a shutdown only between calls; tidegate's in-memory transport waits in slices and
    returns at once when Celery's worker state asks for a shutdown (the embedded worker's
    ``job launch --wait`` used to exit 4 s after printing SUCCESS). Otherwise a wait lasts
    the caller's timeout, as kombu's does, and a message put meanwhile is delivered."""
    app = make_celery_app("memory://localhost/")
    with app.connection_for_write() as conn:
        assert isinstance(conn.transport, MemoryTransport)
        queue = conn.SimpleQueue("tidegate-memory-slice-test")
        start = time.monotonic()
        with pytest.raises(queue.Empty):
            queue.get(timeout=0.5)  # ten slices: the wait is the caller's, not one slice
        assert time.monotonic() - start >= 0.5
        sender = threading.Timer(0.3, lambda: queue.put({"n": 1}))
        sender.start()
        message = queue.get(timeout=30.0)
        sender.join()
        assert message.payload == {"n": 1}
        message.ack()
        worker_state.should_terminate = 0  # what celery's start_worker sets to stop its thread
        try:
            start = time.monotonic()
            with pytest.raises(TimeoutError):
                conn.drain_events(timeout=60.0)
            assert time.monotonic() - start < 30.0  # not the 60 s asked for
        finally:
            worker_state.should_terminate = None
        queue.close()


def test_a_publisher_binds_a_steps_queue_once_and_still_declares_it_on_a_new_connection(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``CeleryPublisher`` declares each step's queue with a copy bound once (kombu bound a
    new copy per message), batched or not; on a connection that has declared nothing (as a
    new one) the messages still reach the queue."""
    binds: list[str] = []
    bind = Queue.bind

    def counted(queue: Queue, channel: Any) -> Queue:
        binds.append(queue.name)
        return bind(queue, channel)

    monkeypatch.setattr(Queue, "bind", counted)
    app = make_celery_app(redis_url)
    client = redis.Redis.from_url(redis_url)
    storage = Storage.open(f"sqlite:///{tmp_path / 'tidegate.db'}", upgrade=True)
    publisher = CeleryPublisher(app, storage)
    refs = [StepRef("run", f"s{i}", 1, "tidegate-fresh-queue", f"s{i}", None) for i in range(5)]
    try:
        publisher(refs[:3])  # in a batch
        publisher(refs[3:4])  # alone
        assert client.llen("tidegate-fresh-queue") == 4
        with app.producer_or_acquire() as producer:  # as on a new connection, which declared nothing
            producer.channel.connection.client.declared_entities.clear()
        client.delete("tidegate-fresh-queue", "_kombu.binding.tidegate-fresh-queue")
        publisher(refs[4:])
        assert client.llen("tidegate-fresh-queue") == 1
        assert binds.count("tidegate-fresh-queue") == 1
    finally:
        client.delete("tidegate-fresh-queue", "_kombu.binding.tidegate-fresh-queue")
        storage.dispose()
        app.close()
