"""The Celery app's configuration and step publishing, shared by the beat and the workers.

Publishing lives here rather than in ``workers`` so that the beat can send steps without
importing worker code (DESIGN.md's dependency direction).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from celery import Celery
from celery.app.amqp import AMQP
from celery.events.dispatcher import EventDispatcher
from celery.worker import state as worker_state
from kombu.entity import Queue
from kombu.transport import memory as kombu_memory
from kombu.transport import redis as kombu_redis

from tidegate.config import Settings
from tidegate.definitions.asset import DEFAULT_QUEUE
from tidegate.names import EXECUTE_STEP_TASK, step_task_id
from tidegate.storage.api import Storage
from tidegate.storage.records import StepRef

log = logging.getLogger("tidegate.broker")

HARD_LIMIT_GRACE = 10.0  # seconds between a step's soft and hard time limit

# A broker that is frozen or cut off must not hold the beat, a worker or the CLI: every read,
# write and connect on the broker gives up after this long (Celery's own defaults wait forever
# on a server that accepted the connection but does not answer).
BROKER_SOCKET_TIMEOUT = 1.5
# After a failed publish, nobody tries the broker again for this long: the steps stay READY in
# SQL (the outbox) and are sent by the first publish after it, so an outage costs the beat one
# timed-out call per interval, not one per step.
BROKER_RETRY_INTERVAL = 5.0
# A publish of many steps (a fan-out's children) sends this many per broker round trip.
PUBLISH_BATCH = 200

_app: Celery | None = None
_app_lock = threading.Lock()


class _NamedSentEvents(AMQP):  # type: ignore[misc]
    """Celery's ``task-sent`` event names the real task while the worker's events carry the
    ``shadow`` name; a sent event that reaches Flower after the worker's ``task-received``
    would put the real name back. This makes the sent event carry the shadow name too."""

    def as_task_v2(self, *args: Any, **kwargs: Any) -> Any:
        message = super().as_task_v2(*args, **kwargs)
        shadow = message.headers.get("shadow")
        if shadow and message.sent_event is not None:
            message.sent_event["name"] = shadow
        return message


class _ReusedClientChannel(kombu_redis.Channel):  # type: ignore[misc]
    """kombu's Redis channel builds a new ``redis.Redis`` object for every command it sends
    outside the consumer's connection: each task event a worker publishes, each delivery's
    unacked entry and each ack (five per step; the object copies redis-py's table of ~200
    response callbacks, 15-20 % of a worker main process's CPU on trivial steps, measured).
    This channel keeps one per connection pool and reuses it: a ``redis.Redis`` holds no
    connection of its own (each command takes one from the pool, so it is thread-safe), and
    a new pool (after a reconnect or a fork) gets a new one."""

    _reused_client: Any = None

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        pool = self.pool
        reused = self._reused_client
        if reused is None or reused.connection_pool is not pool:
            reused = self._reused_client = self._create_client()  # type: ignore[no-untyped-call]
        yield reused


class RedisTransport(kombu_redis.Transport):  # type: ignore[misc]
    """kombu's Redis transport with ``_ReusedClientChannel``; what tidegate's apps use for a
    ``redis://`` broker URL (``broker_transport``)."""

    Channel = _ReusedClientChannel


class MemoryTransport(kombu_memory.Transport):  # type: ignore[misc]
    """kombu's in-memory transport, waiting in short slices that look for a worker shutdown.

    Celery's loop for a transport without an event loop waits in ``drain_events(timeout=2.0)``
    and sees a shutdown only between two calls, so an embedded worker took 2-4 s to stop after
    its run had finished (``tidegate job launch --wait`` exited 4 s after printing SUCCESS).
    Here a wait ends early only when Celery's worker state asks for a shutdown; otherwise it
    lasts the caller's timeout, as kombu's does."""

    DRAIN_SLICE = 0.05

    def drain_events(self, connection: Any, timeout: Any = None) -> None:  # type: ignore[override]
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if worker_state.should_stop is not None or worker_state.should_terminate is not None:
                raise TimeoutError()  # Celery's loop catches it and then sees the shutdown
            left = self.DRAIN_SLICE if deadline is None else deadline - time.monotonic()
            try:
                super().drain_events(connection, timeout=max(0.0, min(left, self.DRAIN_SLICE)))  # type: ignore[no-untyped-call]
                return
            except TimeoutError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise


def make_celery_app(broker_url: str, *, visibility_timeout: int = 21600) -> Celery:
    """A Celery app with the settings DESIGN.md relies on."""
    app = Celery("tidegate", broker=broker_url, set_as_current=False, amqp=_NamedSentEvents)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],  # never unpickle what comes over the broker
        result_serializer="json",
        task_ignore_result=True,  # status lives in SQL
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=DEFAULT_QUEUE,
        task_create_missing_queues=True,
        worker_send_task_events=True,  # Flower sees every step
        task_send_sent_event=True,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=BROKER_SOCKET_TIMEOUT,
        broker_transport_options={
            "visibility_timeout": visibility_timeout,
            "socket_timeout": BROKER_SOCKET_TIMEOUT,
            "socket_connect_timeout": BROKER_SOCKET_TIMEOUT,
            "socket_keepalive": True,
        },
        worker_hijack_root_logger=False,
        broker_pool_limit=10,
    )
    if urlsplit(broker_url).scheme == "redis":
        app.conf.broker_transport = f"{__name__}:RedisTransport"
    if broker_url.startswith("memory://"):
        app.conf.broker_transport = f"{__name__}:MemoryTransport"
        # The in-memory transport polls; its 1 s default would dominate an embedded run.
        app.conf.broker_transport_options["polling_interval"] = 0.01
    return app


def get_app() -> Celery:
    """The process's Celery app, configured from the environment on first use."""
    global _app
    with _app_lock:
        if _app is None:
            settings = Settings.load()
            _app = make_celery_app(settings.broker_url, visibility_timeout=settings.visibility_timeout)
        return _app


def reset_app() -> None:
    """Forget the process's app (tests and ``tidegate dev`` switch brokers)."""
    global _app
    with _app_lock:
        _app = None


def step_task_name(ref: StepRef) -> str:
    """What Flower shows for a step: the asset (and partition) and the run."""
    return f"{ref.display_name} · run {ref.run_id[:8]}"


class BrokerUnavailable:
    """Whether the broker failed recently; shared by a publisher's sends, revokes and probes.

    ``open()`` is False for ``BROKER_RETRY_INTERVAL`` seconds after a failure: callers skip the
    broker meanwhile instead of each waiting for its timeout."""

    def __init__(self, retry_interval: float = BROKER_RETRY_INTERVAL) -> None:
        self.retry_interval = retry_interval
        self.error: str | None = None  # the last failure, until a call succeeds
        self._until = 0.0

    def open(self) -> bool:
        return time.monotonic() >= self._until

    def failed(self, exc: BaseException) -> None:
        self.error = f"{type(exc).__name__}: {exc}".strip()
        self._until = time.monotonic() + self.retry_interval

    def succeeded(self) -> None:
        self.error = None
        self._until = 0.0


class CeleryPublisher:
    """Sends READY steps to the broker, then marks them ENQUEUED (an outbox).

    If the broker is unreachable the steps stay READY in SQL and are sent later by whoever
    runs ``steps_to_publish`` (the beat, the launching CLI command, ``tidegate dev``). A call
    never waits on the broker longer than ``BROKER_SOCKET_TIMEOUT``; after a failure the
    broker is left alone for ``BROKER_RETRY_INTERVAL`` (``unavailable``), so the beat keeps
    ticking and committing during an outage.
    """

    def __init__(self, app: Celery, storage: Storage) -> None:
        self.app = app
        self.storage = storage
        self.unavailable = BrokerUnavailable()
        self._queues: dict[str, Queue] = {}
        self._sent_events: EventDispatcher | None = None

    def _declared(self, name: str, producer: Any) -> list[Queue]:
        """What a step's message declares (``send_task``'s ``declare``): its queue, as Celery
        declares it, but bound to a channel once. Celery passes its own unbound queue, and
        kombu's ``maybe_declare`` binds a copy of it (and of its exchange) on every message,
        only to find it declared already on that connection: 2-7 % of a pool process's CPU
        on a fan-out's trivial steps (py-spy --gil, two profiles). Bound to an old channel,
        the queue is still declared on the producer's, once per broker connection, as
        before: ``maybe_declare`` declares on the channel it is given."""
        queue = self._queues.get(name)
        if queue is None:
            queue = self._queues.setdefault(name, self.app.amqp.queues[name].bind(producer.channel))
        return [queue]

    def _sent_event_dispatcher(self, producer: Any) -> EventDispatcher:
        """What sends a step's ``task-sent`` event (``send_task``'s ``event_dispatcher``): a
        dispatcher made as Celery makes its own (same hostname, pid, clock, exchange and
        routing key), with its event exchange bound to a channel once. Celery's dispatcher
        passes its unbound exchange as the event's ``declare``, and kombu's ``maybe_declare``
        binds a copy of it on every event, only to find it declared already on that
        connection: 5 % of the publishing process's CPU sending fan-outs of 400 steps (py-spy
        --gil). As with ``_declared``, the exchange is still declared on the producer's
        channel, once per broker connection: on Redis that declaration is what makes the
        event a fanout publish that Flower receives."""
        dispatcher = self._sent_events
        if dispatcher is None:
            dispatcher = self.app.events.Dispatcher(producer.connection, enabled=False)
            dispatcher.exchange = dispatcher.exchange.bind(producer.channel)
            self._sent_events = dispatcher
        return dispatcher

    def __call__(self, refs: Sequence[StepRef]) -> None:
        if not refs:
            return
        # One producer (one broker connection taken from the pool) for all of them: a fan-out's
        # hundreds of children are sent without a pool round per step.
        # (Taking the producer does not connect: the first send does, under its timeouts.)
        sent: list[StepRef] = []
        try:
            with self.app.producer_or_acquire() as producer:
                if len(refs) > 1 and producer.supports_batch_publish:
                    self._send_batched(refs, producer, sent)
                else:
                    self._send(refs, producer, sent)
        except Exception as exc:  # taking or giving back the producer: what was sent stays sent
            self.unavailable.failed(exc)
            log.warning("broker unreachable (%s): %d step(s) stay READY", self.unavailable.error, len(refs) - len(sent))
        self.storage.mark_enqueued(sent)

    def _send_batched(self, refs: Sequence[StepRef], producer: Any, sent: list[StepRef]) -> None:
        """Send ``refs`` through kombu's publish batch (on Redis, a pipeline without
        MULTI): up to ``PUBLISH_BATCH`` steps' messages and task-sent events go to the broker
        in one round trip instead of two each. A step counts as sent only once its batch was
        executed; a batch that fails leaves its steps and the rest READY (its delivery is
        uncertain: some may have reached Redis, and the outbox sends them again later, which
        a claim's compare-and-set makes harmless)."""
        for start in range(0, len(refs), PUBLISH_BATCH):
            chunk = refs[start : start + PUBLISH_BATCH]
            if not self.unavailable.open():
                log.info("broker unreachable: %d step(s) stay READY", len(refs) - len(sent))
                return
            queued: list[StepRef] = []
            try:
                # max_size above what a chunk buffers (a message and a sent event per step,
                # and per-priority expiries at most): the chunk goes out in one execute.
                with producer.batch(max_size=PUBLISH_BATCH * 16):
                    self._send(chunk, producer, queued)
            except Exception as exc:
                self.unavailable.failed(exc)
                log.warning(
                    "broker unreachable (%s): step %s of run %s and %d more stay READY",
                    self.unavailable.error,
                    chunk[0].step_key,
                    chunk[0].run_id,
                    len(refs) - len(sent) - 1,
                )
                return
            sent.extend(queued)
            if len(queued) < len(chunk):
                return  # a send refused inside the batch (already logged): the rest stay READY

    def _send(self, refs: Sequence[StepRef], producer: Any, sent: list[StepRef]) -> None:
        """Send ``refs`` in order, appending each sent one to ``sent``; stop at the first
        failure (the rest stay READY). Inside a publish batch, "sent" means buffered: the
        batch's execute decides (``_send_batched``)."""
        for ref in refs:
            if not self.unavailable.open():
                log.info("broker unreachable: %d step(s) stay READY", len(refs) - len(sent))
                break
            try:
                limits = {}
                if ref.timeout is not None:
                    # Prefork workers raise SoftTimeLimitExceeded in the step at the timeout
                    # (recorded as its failure) and kill it a little later if it ignores that.
                    limits = {"soft_time_limit": ref.timeout, "time_limit": ref.timeout + HARD_LIMIT_GRACE}
                self.app.send_task(
                    EXECUTE_STEP_TASK,
                    args=[ref.run_id, ref.step_key, ref.attempt],
                    task_id=step_task_id(ref.run_id, ref.step_key, ref.attempt),
                    queue=ref.queue,
                    declare=self._declared(ref.queue, producer),
                    event_dispatcher=self._sent_event_dispatcher(producer),
                    shadow=step_task_name(ref),
                    ignore_result=True,
                    # One try: kombu's retry reconnects (a ping) and sends again, tripling the wait
                    # on a frozen broker. A connection broken by a Redis restart fails this once;
                    # the steps stay READY and the next publish, on a new connection, sends them.
                    retry=False,
                    producer=producer,
                    **limits,
                )
            except Exception as exc:
                self.unavailable.failed(exc)
                log.warning(
                    "broker unreachable (%s): step %s of run %s and %d more stay READY",
                    self.unavailable.error,
                    ref.step_key,
                    ref.run_id,
                    len(refs) - len(sent) - 1,
                )
                break
            self.unavailable.succeeded()
            sent.append(ref)

    def revoke(self, refs: Sequence[StepRef]) -> None:
        """Stop running steps: Celery terminates the prefork child executing each task (a
        threads-pool worker cannot be interrupted; its outcome is simply not recorded).

        A step a worker claimed by continuation runs inside the broker task of the step before
        it (recorded with its claim, ``Storage.continued_deliveries``): that task is revoked
        too, which terminates the process running the step. The steps before it in that task
        have recorded their outcomes already; a later one cannot have been claimed, since a
        step taken away (the reason for a revoke) records nothing and so claims no child."""
        if not refs:
            return
        try:
            deliveries = self.storage.continued_deliveries(refs)
        except Exception as exc:  # the database away: the steps' own tasks are still revoked
            log.warning("could not read which tasks run continued steps: %s", exc)
            deliveries = {}
        for ref in refs:
            task_id = step_task_id(ref.run_id, ref.step_key, ref.attempt)
            if not self.unavailable.open():
                log.warning("broker unreachable: %s not revoked", task_id)
                continue
            delivery = deliveries.get((ref.run_id, ref.step_key, ref.attempt))
            try:
                self.app.control.revoke(
                    task_id if delivery is None else [task_id, delivery], terminate=True, signal="SIGTERM"
                )
            except Exception as exc:
                self.unavailable.failed(exc)
                log.warning("could not revoke %s", task_id, exc_info=True)

    def broker_identity(self) -> str | None:
        """The Redis server's run id: it changes when Redis restarts, which may have emptied
        it of the steps we had sent. None for other brokers or when unreachable."""
        if not self.unavailable.open():
            return None
        try:
            with self.app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=BROKER_SOCKET_TIMEOUT)
                client = getattr(conn.default_channel, "client", None)
                if client is None:
                    return None
                return str(client.info("server").get("run_id"))
        except Exception as exc:
            self.unavailable.failed(exc)
            return None
