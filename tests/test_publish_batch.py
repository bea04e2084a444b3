"""Publishing the children a step readies, with one broker producer for all of them
(``CeleryPublisher``): every child is sent and marked ENQUEUED, and a worker that dies between
its success transaction and the publish loses none (they stay READY in SQL, the outbox, and
the launcher sends them). On SQLite and PostgreSQL with the real executor and storage; the
broker test on the real Redis."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import tidegate as tg
from tidegate.broker import CeleryPublisher, make_celery_app
from tidegate.definitions.asset import DEFAULT_QUEUE
from tidegate.names import RunStatus, StepStatus
from tidegate.scheduler.launcher import Launcher
from tidegate.storage.api import Storage
from tidegate.storage.records import StepRef
from tidegate.workers.execution import Outcome, StepExecutor
from tidegate.workers.io import FilesystemIOManager

WIDTH = 60


@tg.asset
def root() -> None:
    pass


LEAVES = [tg.asset(name=f"leaf_{i:03d}", deps=[root])(lambda: None) for i in range(WIDTH)]
DEFS = tg.Definitions(assets=[root, *LEAVES], jobs=[tg.define_asset_job("wide", [root, *LEAVES])])


class _ProcessDied(BaseException):
    """Stands for the worker process being killed: nothing after it runs."""


def _die(refs: object) -> None:
    raise _ProcessDied("killed between the success transaction's commit and the publish")


def _started(storage: Storage) -> str:
    run_id = storage.submit_run(DEFS.plan("wide"), origin="test").run_id
    storage.start_run(run_id)
    return run_id


def _executor(storage: Storage, tmp_path: Path, publish: object) -> StepExecutor:
    return StepExecutor(
        defs=DEFS,
        storage=storage,
        publish=publish,  # type: ignore[arg-type]
        worker_name="w@test",
        default_io_manager=FilesystemIOManager(tmp_path / "io"),
    )


@pytest.mark.parametrize("queue", [None, DEFAULT_QUEUE], ids=["published", "with-continuation"])
def test_a_worker_dying_between_commit_and_publish_loses_no_child(
    storage: Storage, tmp_path: Path, queue: str | None
) -> None:
    run_id = _started(storage)
    with pytest.raises(_ProcessDied):
        _executor(storage, tmp_path, _die).execute(run_id, "root", 1, queue=queue)
    statuses = {s.step_key: s.status for s in storage.get_steps(run_id)}
    assert statuses.pop("root") == StepStatus.SUCCEEDED
    # With continuation one child was claimed in the same transaction (RUNNING: the run
    # monitor's heartbeat check owns it, see test_continuation); every other one is READY.
    continued = [k for k, s in statuses.items() if s == StepStatus.RUNNING]
    assert len(continued) == (0 if queue is None else 1)
    assert sorted(k for k, s in statuses.items() if s == StepStatus.READY) == sorted(set(statuses) - set(continued))
    sent: list[StepRef] = []
    Launcher(storage, sent.extend, republish_grace_seconds=0.0).tick()  # the beat's outbox pass
    assert sorted(r.step_key for r in sent) == sorted(set(statuses) - set(continued))
    worker = _executor(storage, tmp_path, sent.extend)
    for ref in list(sent):
        assert worker.execute(ref.run_id, ref.step_key, ref.attempt) == Outcome.SUCCEEDED
    if continued:
        assert worker.execute(run_id, continued[0], 1) == Outcome.DUPLICATE  # claimed already: never twice
    done = {s.step_key: s.status for s in storage.get_steps(run_id)}
    assert [k for k, s in done.items() if s != StepStatus.SUCCEEDED] == continued


def test_one_publish_sends_every_child_of_a_wide_fan_out(storage: Storage, tmp_path: Path, redis_url: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    app = make_celery_app(redis_url)
    publisher = CeleryPublisher(app, storage)
    run_id = _started(storage)
    assert _executor(storage, tmp_path, publisher).execute(run_id, "root", 1) == Outcome.SUCCEEDED
    assert client.llen(DEFAULT_QUEUE) == WIDTH  # one message per child, none lost or doubled
    statuses = {s.step_key: s.status for s in storage.get_steps(run_id)}
    assert statuses.pop("root") == StepStatus.SUCCEEDED
    assert set(statuses.values()) == {StepStatus.ENQUEUED}
    assert storage.get_run(run_id).status == RunStatus.STARTED
    client.flushdb()


def test_a_publish_larger_than_a_batch_sends_every_child_once_with_its_sent_event(
    storage: Storage, tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Children beyond ``PUBLISH_BATCH`` go out in further pipelines: every child is sent
    once, marked ENQUEUED, and Flower's task-sent event goes with each (same pipeline)."""
    import redis

    import tidegate.broker

    monkeypatch.setattr(tidegate.broker, "PUBLISH_BATCH", 25)  # 60 children: batches of 25, 25, 10
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    app = make_celery_app(redis_url)
    publisher = CeleryPublisher(app, storage)
    run_id = _started(storage)
    events = client.pubsub()
    # Pub/sub channels are server-wide: kombu prefixes this database's fanout topics with /<db>.
    events.psubscribe(f"/{client.connection_pool.connection_kwargs.get('db', 0)}.celeryev*")
    events.get_message(timeout=1.0)  # the subscription's confirmation
    assert _executor(storage, tmp_path, publisher).execute(run_id, "root", 1) == Outcome.SUCCEEDED
    assert client.llen(DEFAULT_QUEUE) == WIDTH
    bodies = [json.loads(m)["headers"]["id"] for m in client.lrange(DEFAULT_QUEUE, 0, -1)]
    assert len(set(bodies)) == WIDTH
    sent = 0
    while (message := events.get_message(timeout=1.0)) is not None:
        if message["type"] == "pmessage" and b"task.sent" in message["channel"]:
            sent += 1
    assert sent == WIDTH
    statuses = {s.step_key: s.status for s in storage.get_steps(run_id)}
    assert statuses.pop("root") == StepStatus.SUCCEEDED
    assert set(statuses.values()) == {StepStatus.ENQUEUED}
    events.close()
    client.flushdb()
