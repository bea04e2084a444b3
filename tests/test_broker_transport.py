"""tidegate's Redis transport (``tidegate.broker.RedisTransport``): kombu's, with one
``redis.Redis`` object per channel and connection pool instead of one per command. On the
real Redis: an app made by ``make_celery_app`` uses it, messages still go through with their
unacked bookkeeping and acks, and a new pool gets a new client. ``CeleryPublisher`` binds a
step's queue and the task-sent event's exchange once, still declares them once per broker
connection, and sends the task-sent event Celery itself would send."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery.worker import state as worker_state
from kombu.entity import Exchange, Queue

from tidegate.broker import CeleryPublisher, MemoryTransport, RedisTransport, make_celery_app, step_task_name
from tidegate.names import EXECUTE_STEP_TASK, step_task_id
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


def _counted_binds(monkeypatch: pytest.MonkeyPatch, entity: type[Queue] | type[Exchange]) -> list[str]:
    """The names of the queues or exchanges (``entity``) bound to a channel from now on
    (kombu binds a copy each time)."""
    binds: list[str] = []
    bind = entity.bind

    def counted(self: Any, channel: Any) -> Any:
        binds.append(self.name)
        return bind(self, channel)

    monkeypatch.setattr(entity, "bind", counted)
    return binds


def test_a_publisher_binds_a_steps_queue_once_and_still_declares_it_on_a_new_connection(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``CeleryPublisher`` declares each step's queue with a copy bound once (kombu bound a
    new copy per message), batched or not; on a connection that has declared nothing (as a
    new one) the messages still reach the queue."""
    binds = _counted_binds(monkeypatch, Queue)
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


EVENT_TEST_QUEUE = "tidegate-sent-event-test"


def _sent_events(events: Any, refs: list[StepRef]) -> dict[str, tuple[bytes, dict[str, Any]]]:
    """The task-sent events of ``refs`` read off Redis's fanout so far (the database may be
    shared with another test run's workers), by task id: the pub/sub channel
    (exchange and routing key) and kombu's message, its body decoded, without what differs
    between any two messages (the delivery tag, the event's clock and timestamp)."""
    wanted = {step_task_id(ref.run_id, ref.step_key, ref.attempt) for ref in refs}
    sent = {}
    while (message := events.get_message(timeout=1.0)) is not None:
        if message["type"] != "pmessage":
            continue
        envelope = json.loads(message["data"])
        body = envelope.pop("body")
        if envelope["properties"].pop("body_encoding") == "base64":
            body = base64.b64decode(body)
        envelope["properties"].pop("delivery_tag")
        event = json.loads(body)
        if not isinstance(event, dict) or event.get("type") != "task-sent" or event["uuid"] not in wanted:
            continue
        del event["clock"], event["timestamp"]
        envelope["event"] = event
        sent[event["uuid"]] = (message["channel"], envelope)
    return sent


@pytest.fixture
def fanout(redis_url: str) -> Iterator[Any]:
    """A subscription to this database's event fanout, as Flower's receiver has on Redis."""
    client = redis.Redis.from_url(redis_url)
    events = client.pubsub()
    # Pub/sub channels are server-wide: kombu prefixes this database's fanout topics with /<db>.
    events.psubscribe(f"/{client.connection_pool.connection_kwargs.get('db', 0)}.celeryev*")
    events.get_message(timeout=1.0)  # the subscription's confirmation
    yield events
    events.close()
    client.delete(
        EVENT_TEST_QUEUE, f"_kombu.binding.{EVENT_TEST_QUEUE}", f"_kombu.binding_permanent.{EVENT_TEST_QUEUE}"
    )
    client.close()


def test_a_steps_sent_event_is_celerys_own_on_the_wire_with_its_exchange_bound_once(
    redis_url: str, tmp_path: Path, fanout: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``CeleryPublisher`` sends each step's task-sent event (what Flower shows a step as sent
    from) through a dispatcher whose event exchange is bound once, instead of kombu binding a
    copy of it per event: batched or not, every event is the one Celery's own dispatcher
    sends for the same step, field for field, on the same exchange and routing key."""
    binds = _counted_binds(monkeypatch, Exchange)
    app = make_celery_app(redis_url)
    storage = Storage.open(f"sqlite:///{tmp_path / 'tidegate.db'}", upgrade=True)
    refs = [StepRef("run-events", f"s{i}", 1, EVENT_TEST_QUEUE, f"asset_{i}", None) for i in range(4)]
    try:
        for ref in refs:  # Celery's own task-sent event for the same message
            app.send_task(
                EXECUTE_STEP_TASK,
                args=[ref.run_id, ref.step_key, ref.attempt],
                task_id=step_task_id(ref.run_id, ref.step_key, ref.attempt),
                queue=ref.queue,
                shadow=step_task_name(ref),
                ignore_result=True,
                retry=False,
            )
        celerys = _sent_events(fanout, refs)
        del binds[:]
        publisher = CeleryPublisher(app, storage)
        publisher(refs[:1])  # alone
        publisher(refs[1:])  # in a batch
        ours = _sent_events(fanout, refs)
        assert len(ours) == len(refs)
        assert ours == celerys
        channel, envelope = ours[step_task_id(refs[0].run_id, refs[0].step_key, refs[0].attempt)]
        assert channel.endswith(b".celeryev/task.sent")
        assert envelope["event"]["type"] == "task-sent"
        assert envelope["event"]["name"] == step_task_name(refs[0])
        assert binds.count("celeryev") == 1
    finally:
        storage.dispose()
        app.close()


def test_the_sent_events_exchange_is_declared_again_on_a_new_broker_connection(
    redis_url: str, tmp_path: Path, fanout: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The event exchange is bound once but declared once per broker connection, on the
    producer's: on Redis a connection that has not declared it would send the event to a
    direct exchange of that name, which nobody reads, and Flower would not see the step."""
    binds = _counted_binds(monkeypatch, Exchange)
    app = make_celery_app(redis_url)
    storage = Storage.open(f"sqlite:///{tmp_path / 'tidegate.db'}", upgrade=True)
    publisher = CeleryPublisher(app, storage)
    refs = [StepRef("run-events", f"s{i}", 1, EVENT_TEST_QUEUE, f"asset_{i}", None) for i in range(2)]
    try:
        publisher(refs[:1])
        assert len(_sent_events(fanout, refs)) == 1
        with app.producer_or_acquire() as producer:
            replaced = producer.connection
            replaced.close()  # its next use opens a new one, which has declared nothing
            assert not replaced.declared_entities
        publisher(refs[1:])
        sent = _sent_events(fanout, refs)
        assert list(sent) == [step_task_id(refs[1].run_id, refs[1].step_key, refs[1].attempt)]
        with app.producer_or_acquire() as producer:
            assert producer.connection is replaced  # the publish above went through it
            assert hash(Exchange("celeryev")) in replaced.declared_entities
        assert binds.count("celeryev") == 1
    finally:
        storage.dispose()
        app.close()
