"""The run queue's decisions, tidegate.toml, and the storage of pools, cancellation,
re-execution and run retries (on SQLite and PostgreSQL, no broker).

Real worker processes exercise the same features in tests/test_run_control.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import case, func, select

import tidegate as tg
from tests.support import dedicated_pg_database
from tidegate.config import MonitorConfig, RunQueueConfig, Settings, TagLimit
from tidegate.definitions.loading import CodeLocation
from tidegate.errors import ConfigError, TidegateError
from tidegate.names import (
    CODE_LOCATION_TAG,
    MAX_RETRIES_TAG,
    PARENT_RUN_TAG,
    PRIORITY_TAG,
    RETRY_NUMBER_TAG,
    ROOT_RUN_TAG,
    RunStatus,
    StepStatus,
)
from tidegate.scheduler.launcher import Launcher
from tidegate.scheduler.monitor import RUN_RETRY_ORIGIN, RunMonitor
from tidegate.scheduler.reexecution import reexecution_plan, submit_reexecution
from tidegate.scheduler.run_queue import decide
from tidegate.storage.api import Storage
from tidegate.storage.control import PoolInfo
from tidegate.storage.records import RunRecord, StepRef
from tidegate.storage.schema import steps as steps_table

PROJECT = Path(__file__).parent / "projects" / "queue_project.py"
DEFS = CodeLocation(file=str(PROJECT)).load()
POOL_HOLDERS = (StepStatus.READY, StepStatus.ENQUEUED, StepStatus.RUNNING)


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    """This module's own PostgreSQL database: conftest's ``database_url`` and ``storage``
    fixtures use it."""
    with dedicated_pg_database("tidegate_test_queue") as url:
        yield url


# -- helpers -----------------------------------------------------------------------------------


def record(run_id: str, *, priority: int = 0, **tags: str) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        job_name="hold_job",
        status=RunStatus.QUEUED,
        origin="test",
        run_key=None,
        priority=priority,
        tags=tags,
        asset_selection=None,
        parent_run_id=None,
        steps_remaining=1,
        created_at=datetime.now(UTC),
        started_at=None,
        ended_at=None,
    )


def queue_config(max_runs: int | None = None, *limits: dict[str, Any]) -> RunQueueConfig:
    data: dict[str, Any] = {"tag_concurrency_limits": list(limits)}
    if max_runs is not None:
        data["max_concurrent_runs"] = max_runs
    return Settings.from_dict({"run_queue": data}).run_queue


def verdicts(config: RunQueueConfig, queued: Sequence[RunRecord], in_progress: Sequence[RunRecord]) -> list[str]:
    """``run_id`` for a run that starts, ``run_id: reason`` for one that waits, in order."""
    return [d.run.run_id if d.start else f"{d.run.run_id}: {d.reason}" for d in decide(config, queued, in_progress)]


def submit(storage: Storage, job: str, *, priority: int = 0, **tags: str) -> str:
    if priority:
        tags[PRIORITY_TAG] = str(priority)
    return storage.submit_run(DEFS.plan(job), origin="test", tags=tags, priority=priority).run_id


def statuses(storage: Storage, run_id: str) -> dict[str, str]:
    return {s.step_key: s.status for s in storage.get_steps(run_id)}


def succeed(storage: Storage, run_id: str, step_key: str) -> list[tuple[str, str]]:
    step = next(s for s in storage.get_steps(run_id) if s.step_key == step_key)
    assert storage.claim_step(run_id, step_key, step.attempt, "w") is not None, (step_key, step.status)
    ready = storage.complete_step(run_id, step_key, step.attempt, asset_key=step.asset_key, metadata={})
    assert ready is not None
    return [(r.run_id, r.step_key) for r in ready]


def fail(storage: Storage, run_id: str, step_key: str, error: str = "boom") -> list[tuple[str, str]]:
    step = next(s for s in storage.get_steps(run_id) if s.step_key == step_key)
    assert storage.claim_step(run_id, step_key, step.attempt, "w") is not None, (step_key, step.status)
    ready = storage.fail_step(run_id, step_key, step.attempt, error=error, retry_delay=None)
    assert ready is not None
    return [(r.run_id, r.step_key) for r in ready]


def pool_holders(storage: Storage, pool: str = "warehouse") -> int:
    return pool_state(storage, pool)[0]


def pool_state(storage: Storage, pool: str = "warehouse") -> tuple[int, int]:
    """(slot holders, waiting steps) of ``pool``, read in one statement (one snapshot)."""
    holding = func.sum(case((steps_table.c.status.in_(POOL_HOLDERS), 1), else_=0))
    waiting = func.sum(case((steps_table.c.status == StepStatus.WAITING, 1), else_=0))
    with storage.engine.connect() as conn:
        row = conn.execute(select(holding, waiting).where(steps_table.c.pool == pool)).one()
    return int(row[0] or 0), int(row[1] or 0)


class Sent:
    """A publish callable for launcher and monitor tests without a broker: it records the
    steps and marks them ENQUEUED, as CeleryPublisher does after sending."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.refs: list[StepRef] = []

    def __call__(self, refs: Sequence[StepRef]) -> None:
        self.refs.extend(refs)
        self.storage.mark_enqueued(refs)

    def keys(self) -> list[tuple[str, str]]:
        return [(r.run_id, r.step_key) for r in self.refs]


# -- decide(): priority order and limits -------------------------------------------------------


def test_without_limits_every_queued_run_starts_in_queue_order() -> None:
    queued = [record("a", priority=5), record("b"), record("c", priority=-1)]
    assert verdicts(queue_config(), queued, [record("x")] * 20) == ["a", "b", "c"]


def test_max_concurrent_runs_counts_runs_in_progress_and_runs_started_this_round() -> None:
    config = queue_config(3)
    queued = [record("a"), record("b"), record("c")]
    assert verdicts(config, queued, [record("x")]) == [
        "a",
        "b",
        "c: max_concurrent_runs=3 reached",
    ]
    assert verdicts(config, queued, []) == ["a", "b", "c"]
    assert verdicts(config, queued, [record("x"), record("y"), record("z")]) == [
        "a: max_concurrent_runs=3 reached",
        "b: max_concurrent_runs=3 reached",
        "c: max_concurrent_runs=3 reached",
    ]
    assert verdicts(queue_config(0), queued[:1], []) == ["a: max_concurrent_runs=0 reached"]


def test_a_tag_limit_with_a_value_holds_back_only_matching_runs() -> None:
    config = queue_config(None, {"key": "team", "value": "finance", "limit": 2})
    queued = [
        record("f2", team="finance"),
        record("f3", team="finance"),
        record("m1", team="marketing"),
        record("n1"),
        record("f4", team="finance"),
    ]
    assert verdicts(config, queued, [record("f1", team="finance")]) == [
        "f2",
        "f3: tag limit team=finance: 2 run(s) in progress",
        "m1",
        "n1",
        "f4: tag limit team=finance: 2 run(s) in progress",
    ]


def test_a_per_value_limit_counts_each_value_separately() -> None:
    config = queue_config(None, {"key": "customer", "limit": 1, "per_value": True})
    queued = [
        record("acme2", customer="acme"),
        record("globex1", customer="globex"),
        record("globex2", customer="globex"),
        record("initech1", customer="initech"),
        record("untagged"),
    ]
    assert verdicts(config, queued, [record("acme1", customer="acme")]) == [
        "acme2: tag limit customer=acme: 1 run(s) in progress",
        "globex1",
        "globex2: tag limit customer=globex: 1 run(s) in progress",
        "initech1",
        "untagged",
    ]


def test_a_limit_on_a_key_alone_counts_every_value_together() -> None:
    config = queue_config(None, {"key": "customer", "limit": 2})
    queued = [record("b", customer="globex"), record("c", customer="initech"), record("d")]
    assert verdicts(config, queued, [record("a", customer="acme")]) == [
        "b",
        "c: tag limit customer (any value): 2 run(s) in progress",
        "d",
    ]


def test_a_run_held_back_by_a_tag_limit_neither_blocks_nor_counts_against_max_concurrent_runs() -> None:
    config = queue_config(
        2, {"key": "team", "value": "finance", "limit": 1}, {"key": "customer", "limit": 1, "per_value": True}
    )
    queued = [
        record("f2", priority=9, team="finance"),
        record("acme2", priority=5, customer="acme"),
        record("g1", customer="globex"),
        record("m1"),
        record("m2"),
    ]
    in_progress = [record("f1", team="finance", customer="acme")]
    assert verdicts(config, queued, in_progress) == [
        "f2: tag limit team=finance: 1 run(s) in progress",
        "acme2: tag limit customer=acme: 1 run(s) in progress",
        "g1",
        "m1: max_concurrent_runs=2 reached",
        "m2: max_concurrent_runs=2 reached",
    ]


def test_a_run_must_fit_every_limit_it_matches() -> None:
    config = queue_config(
        None, {"key": "team", "value": "finance", "limit": 2}, {"key": "customer", "limit": 1, "per_value": True}
    )
    queued = [record("b", team="finance", customer="acme"), record("c", team="finance", customer="globex")]
    assert verdicts(config, queued, [record("a", customer="acme")]) == [
        "b: tag limit customer=acme: 1 run(s) in progress",
        "c",
    ]


def test_a_value_limit_and_a_per_value_limit_on_one_key_are_counted_separately() -> None:
    config = queue_config(
        None, {"key": "customer", "value": "acme", "limit": 2}, {"key": "customer", "limit": 3, "per_value": True}
    )
    # One acme run in progress: acme may have two, so one more starts, then the limit holds.
    queued = [record("acme2", customer="acme"), record("acme3", customer="acme")]
    assert verdicts(config, queued, [record("acme1", customer="acme")]) == [
        "acme2",
        "acme3: tag limit customer=acme: 2 run(s) in progress",
    ]


# -- tidegate.toml -----------------------------------------------------------------------------

EXAMPLE_TOML = """
[run_queue]
max_concurrent_runs = 10
tag_concurrency_limits = [
    { key = "team", value = "finance", limit = 2 },
    { key = "customer", limit = 1, per_value = true },
]

[run_monitor]
heartbeat_timeout_seconds = 45
worker_lost_retries = 1
"""


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No TIDEGATE_* variable that would select a config, and an empty working directory."""
    for name in ("TIDEGATE_CONFIG", "TIDEGATE_HOME", "TIDEGATE_MAX_CONCURRENT_RUNS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_documented_example_loads(clean_env: Path) -> None:
    path = clean_env / "elsewhere.toml"
    path.write_text(EXAMPLE_TOML)
    config = Settings.load(path)
    assert config.source == str(path)
    assert config.run_queue == RunQueueConfig(
        10, (TagLimit("team", 2, value="finance"), TagLimit("customer", 1, per_value=True))
    )
    assert config.run_monitor == MonitorConfig(heartbeat_timeout_seconds=45.0, worker_lost_retries=1)
    assert isinstance(config.run_monitor.heartbeat_timeout_seconds, float)


def test_config_is_found_through_tidegate_config_then_cwd_then_tidegate_home(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert Settings.load() == Settings.defaults()
    home = clean_env / "home"
    home.mkdir()
    (home / "tidegate.toml").write_text("[run_queue]\nmax_concurrent_runs = 1\n")
    monkeypatch.setenv("TIDEGATE_HOME", str(home))
    assert Settings.load().run_queue.max_concurrent_runs == 1
    (clean_env / "tidegate.toml").write_text("[run_queue]\nmax_concurrent_runs = 2\n")
    assert Settings.load().run_queue.max_concurrent_runs == 2
    explicit = clean_env / "explicit.toml"
    explicit.write_text("[run_queue]\nmax_concurrent_runs = 3\n")
    monkeypatch.setenv("TIDEGATE_CONFIG", str(explicit))
    loaded = Settings.load()
    assert (loaded.run_queue.max_concurrent_runs, loaded.source) == (3, str(explicit))


def test_tidegate_config_naming_a_missing_file_is_an_error(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = clean_env / "nope.toml"
    monkeypatch.setenv("TIDEGATE_CONFIG", str(missing))
    with pytest.raises(ConfigError, match=f"TIDEGATE_CONFIG={missing}: no such file"):
        Settings.load()


def test_the_environment_overrides_max_concurrent_runs(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = clean_env / "tidegate.toml"
    path.write_text(EXAMPLE_TOML)
    monkeypatch.setenv("TIDEGATE_MAX_CONCURRENT_RUNS", "4")
    config = Settings.load()
    assert config.run_queue.max_concurrent_runs == 4
    assert len(config.run_queue.tag_concurrency_limits) == 2  # the rest of the file still applies
    assert Settings.from_dict({}).run_queue.max_concurrent_runs == 4


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("[run_queue]\nmax_concurrent_runs = 'many'\n", ["run_queue.max_concurrent_runs", "'many'"]),
        ("[run_queue]\nmax_concurrent_runs = -1\n", ["run_queue.max_concurrent_runs", ">= 0"]),
        ("[run_queue]\nmax_runs = 3\n", ["[run_queue]", "max_runs"]),
        ("[runqueue]\nmax_concurrent_runs = 3\n", ["runqueue"]),
        ("run_queue = 3\n", ["[run_queue] must be a table"]),
        (
            "[run_queue]\ntag_concurrency_limits = [{ key = 'team', value = 'finance' }]\n",
            ["tag_concurrency_limits[0]", "limit"],
        ),
        (
            "[run_queue]\ntag_concurrency_limits = [{ key = 'c', limit = 1, value = 'a', per_value = true }]\n",
            ["tag_concurrency_limits[0]", "per_value"],
        ),
        (
            "[run_queue]\ntag_concurrency_limits = [{ key = 'a', limit = 1 }, { key = 'c', limt = 1 }]\n",
            ["tag_concurrency_limits[1]", "limit"],
        ),
        (
            "[run_queue]\ntag_concurrency_limits = [{ key = 'c', limit = 1, vaule = 'x' }]\n",
            ["tag_concurrency_limits[0]", "vaule"],
        ),
        (
            "[run_queue]\ntag_concurrency_limits = [{ key = 'a', limit = 1 }, { key = 'c', limit = 'two' }]\n",
            ["tag_concurrency_limits[1].limit", "'two'"],
        ),
        ("[run_monitor]\nheartbeat_seconds = 5\n", ["[run_monitor]", "heartbeat_seconds"]),
        ("[run_queue\nmax_concurrent_runs = 3\n", []),  # not TOML at all: the file is named
    ],
)
def test_an_invalid_config_names_the_file_and_the_key(clean_env: Path, text: str, names: list[str]) -> None:
    path = clean_env / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        Settings.load(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: "), message
    for name in names:
        assert name in message, message


def test_an_invalid_run_monitor_value_names_its_key(clean_env: Path) -> None:
    path = clean_env / "bad.toml"
    path.write_text("[run_monitor]\nheartbeat_timeout_seconds = 'soon'\n")
    with pytest.raises(ConfigError) as caught:
        Settings.load(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert "heartbeat_timeout_seconds" in str(caught.value)


def test_an_invalid_max_concurrent_runs_variable_is_named(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = clean_env / "tidegate.toml"
    path.write_text("[run_queue]\nmax_concurrent_runs = 3\n")
    monkeypatch.setenv("TIDEGATE_MAX_CONCURRENT_RUNS", "lots")
    with pytest.raises(ConfigError, match="TIDEGATE_MAX_CONCURRENT_RUNS"):
        Settings.load()


def test_a_numeric_tag_limit_value_is_not_silently_ignored(clean_env: Path) -> None:
    path = clean_env / "tidegate.toml"
    path.write_text("[run_queue]\ntag_concurrency_limits = [{ key = 'year', value = 2024, limit = 1 }]\n")
    try:
        config = Settings.load(path)
    except ConfigError as exc:  # rejecting it, naming the key, is fine too
        assert "tag_concurrency_limits[0]" in str(exc)
        return
    queued = [record("b", year="2024")]
    assert verdicts(config.run_queue, queued, [record("a", year="2024")]) == [
        "b: tag limit year=2024: 1 run(s) in progress"
    ]


@pytest.mark.parametrize("value", ["2.7", "true"])
def test_a_non_integer_max_concurrent_runs_is_rejected(clean_env: Path, value: str) -> None:
    path = clean_env / "tidegate.toml"
    path.write_text(f"[run_queue]\nmax_concurrent_runs = {value}\n")
    with pytest.raises(ConfigError, match="max_concurrent_runs"):
        Settings.load(path)


# -- storage: the queue's order ----------------------------------------------------------------


def test_queued_runs_come_highest_priority_first_then_oldest(storage: Storage) -> None:
    ids = {}
    for name, priority in [("a", 0), ("b", 5), ("c", 0), ("d", -3), ("e", 5)]:
        ids[name] = submit(storage, "hold_job", priority=priority)
        time.sleep(0.002)  # distinct creation times
    order = [name for run in storage.queued_runs() for name, rid in ids.items() if rid == run.run_id]
    assert order == ["b", "e", "a", "c", "d"]
    assert storage.queued_run_ids() == [ids[n] for n in order]
    assert storage.get_run(ids["b"]).tags[PRIORITY_TAG] == "5"
    storage.start_run(ids["b"])
    assert [r.run_id for r in storage.started_runs()] == [ids["b"]]
    assert ids["b"] not in [r.run_id for r in storage.queued_runs()]


def test_the_launcher_starts_what_the_queue_allows_and_more_as_runs_end(storage: Storage) -> None:
    config = Settings.from_dict(
        {"run_queue": {"max_concurrent_runs": 2, "tag_concurrency_limits": [{"key": "team", "limit": 1}]}}
    )
    sent = Sent(storage)
    launcher = Launcher(storage, sent, defs=DEFS, config=config)
    f1 = submit(storage, "hold_job", team="finance")
    f2 = submit(storage, "hold_job", team="finance")
    n1 = submit(storage, "hold_job")
    n2 = submit(storage, "hold_job")
    assert launcher.tick() == 2
    assert sent.keys() == [(f1, "hold"), (n1, "hold")]
    assert [d.reason for d in launcher.queue_decisions()] == [
        "max_concurrent_runs=2 reached",
        "max_concurrent_runs=2 reached",
    ]
    assert launcher.tick() == 0
    succeed(storage, n1, "hold")
    assert storage.get_run(n1).status == RunStatus.SUCCESS
    launcher.tick()  # f2 is still held by the team limit: n2 starts instead
    assert sent.keys()[2:] == [(n2, "hold")]
    succeed(storage, f1, "hold")
    launcher.tick()
    assert sent.keys()[3:] == [(f2, "hold")]
    assert storage.get_run(f2).status == RunStatus.STARTED


def test_the_launcher_fails_a_run_whose_job_is_gone(storage: Storage) -> None:
    run_id = submit(storage, "hold_job")
    redeployed = tg.Definitions(assets=[], jobs=[])  # the run's own code location, without the job
    redeployed.code_location = DEFS.code_location
    Launcher(storage, Sent(storage), defs=redeployed).tick()
    run = storage.get_run(run_id)
    assert run.status == RunStatus.FAILURE
    assert statuses(storage, run_id) == {"hold": StepStatus.CANCELED}
    assert any("job 'hold_job' is not defined" in (e.message or "") for e in storage.get_events(run_id))


def test_only_a_launcher_of_the_runs_code_location_fails_it_as_job_not_defined(storage: Storage) -> None:
    @tg.asset
    def elsewhere() -> int:
        return 1

    other = tg.Definitions(assets=[elsewhere], jobs=[tg.define_asset_job("other_job", [elsewhere])])
    other.code_location = "other_project.py"  # as CodeLocation(file=".../other_project.py").load() sets it
    assert DEFS.code_location == "queue_project.py"
    held = submit(storage, "hold_job")  # planned by queue_project.py, older than the next run
    assert storage.get_run(held).tags[CODE_LOCATION_TAG] == "queue_project.py"
    own = storage.submit_run(other.plan("other_job"), origin="test").run_id
    config = Settings.from_dict({"run_queue": {"max_concurrent_runs": 1}})

    # e.g. `tidegate job launch -m other_project` or a beat of the other code location
    launcher = Launcher(storage, Sent(storage), defs=other, config=config)
    assert [(d.run.run_id, d.start, d.reason) for d in launcher.queue_decisions()] == [
        (held, False, "a launcher of code location 'queue_project.py' (job 'hold_job' is not in 'other_project.py')"),
        (own, True, ""),  # the held run takes no slot
    ]
    launcher.tick()
    assert storage.get_run(held).status == RunStatus.QUEUED
    assert storage.get_run(own).status == RunStatus.STARTED
    # A launcher of Definitions it cannot name leaves it queued too.
    unnamed = tg.Definitions(assets=[], jobs=[])
    Launcher(storage, Sent(storage), defs=unnamed).tick()
    assert storage.get_run(held).status == RunStatus.QUEUED

    # Its own code location's launcher starts it (or, had the job gone, would fail it).
    Launcher(storage, Sent(storage), defs=DEFS).tick()
    assert storage.get_run(held).status == RunStatus.STARTED


def test_a_code_location_name_is_the_same_on_every_host() -> None:
    assert CodeLocation(module="etl.definitions").name == "etl.definitions"
    assert CodeLocation(file="/srv/app/defs.py", attribute="prod").name == "defs.py"
    assert CodeLocation(file="defs.py").name == "defs.py"
    assert DEFS.plan("hold_job").tags[CODE_LOCATION_TAG] == "queue_project.py"


# -- storage: pools ----------------------------------------------------------------------------


def test_pool_steps_wait_for_a_slot_and_each_finisher_hands_its_slot_over(storage: Storage) -> None:
    assert storage.set_pool_limit("warehouse", 2) == []
    r1 = submit(storage, "pool_job")
    ready = storage.start_run(r1)
    assert sorted(r.step_key for r in ready) == sorted([f"free_{i}" for i in range(6)] + ["pooled_0", "pooled_1"])
    states = statuses(storage, r1)
    assert [states[f"pooled_{i}"] for i in range(2, 6)] == [StepStatus.WAITING] * 4
    assert states["pooled_sink"] == StepStatus.PLANNED
    assert storage.pools_overview() == [PoolInfo("warehouse", 2, 2, 4)]

    time.sleep(0.002)
    r2 = submit(storage, "pool_job")
    assert sorted(r.step_key for r in storage.start_run(r2)) == [f"free_{i}" for i in range(6)]
    assert storage.pools_overview() == [PoolInfo("warehouse", 2, 2, 10)]

    # Finishing (or failing) a pool step promotes exactly one waiting step, oldest first, in
    # the same transaction; the child that just became due queues behind older waiters.
    handed: list[tuple[str, str]] = []
    handed += succeed(storage, r1, "pooled_0")
    assert handed == [(r1, "pooled_2")]
    assert statuses(storage, r1)["pooled_sink"] == StepStatus.WAITING
    handed += fail(storage, r1, "pooled_1")
    assert handed[-1] == (r1, "pooled_3")
    while True:
        holding = [
            (s.run_id, s.step_key)
            for run_id in (r1, r2)
            for s in storage.get_steps(run_id)
            if s.pool == "warehouse" and s.status in POOL_HOLDERS
        ]
        assert len(holding) <= 2
        assert pool_holders(storage) == len(holding)
        if not holding:
            break
        promoted = succeed(storage, *holding[0])
        assert len(promoted) <= 1
        handed += promoted
    expected = [(r1, f"pooled_{i}") for i in range(2, 6)] + [(r2, f"pooled_{i}") for i in range(6)]
    assert handed == [*expected, (r1, "pooled_sink"), (r2, "pooled_sink")]
    assert storage.pools_overview() == [PoolInfo("warehouse", 2, 0, 0)]
    for run_id in (r1, r2):
        for i in range(6):
            succeed(storage, run_id, f"free_{i}")
    assert storage.get_run(r1).status == RunStatus.FAILURE
    assert storage.get_run(r2).status == RunStatus.SUCCESS


def test_changing_a_pool_limit_releases_waiting_steps(storage: Storage) -> None:
    storage.set_pool_limit("warehouse", 0)
    run_id = submit(storage, "pool_job")
    assert all(r.step_key.startswith("free_") for r in storage.start_run(run_id))
    assert storage.pools_overview() == [PoolInfo("warehouse", 0, 0, 6)]
    assert storage.fill_all_pools() == []
    assert [r.step_key for r in storage.set_pool_limit("warehouse", 1)] == ["pooled_0"]
    assert storage.set_pool_limit("warehouse", 1) == []
    assert [r.step_key for r in storage.set_pool_limit("warehouse", 3)] == ["pooled_1", "pooled_2"]
    assert storage.pools_overview() == [PoolInfo("warehouse", 3, 3, 3)]
    storage.set_pool_limit("warehouse", 1)  # lowering a limit stops nothing that holds a slot
    assert storage.pools_overview() == [PoolInfo("warehouse", 1, 3, 3)]
    succeed(storage, run_id, "pooled_0")
    assert storage.pools_overview() == [PoolInfo("warehouse", 1, 2, 4)]  # + pooled_sink waiting
    assert sorted(r.step_key for r in storage.set_pool_limit("warehouse", None)) == [
        "pooled_3",
        "pooled_4",
        "pooled_5",
        "pooled_sink",
    ]
    assert storage.pools_overview() == [PoolInfo("warehouse", None, 6, 0)]


def test_concurrent_workers_never_exceed_a_pool_and_never_stall_it(storage: Storage) -> None:
    """Six threads claim and finish pool steps of three runs as fast as they can; the pool is
    sampled after every claim. Nothing but the hand-over releases slots, and every committed
    state must have no free slot while a step waits (a lost hand-over would leave one idle)."""
    storage.set_pool_limit("warehouse", 3)
    runs = [submit(storage, "pool_job") for _ in range(3)]
    for run_id in runs:
        storage.start_run(run_id)
    seen: list[int] = []
    idle_slots: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def ready_pool_steps() -> list[tuple[str, str, int]]:
        with storage.engine.connect() as conn:
            rows = conn.execute(
                select(steps_table.c.run_id, steps_table.c.step_key, steps_table.c.attempt).where(
                    steps_table.c.pool == "warehouse", steps_table.c.status == StepStatus.READY
                )
            ).all()
        return [(r.run_id, r.step_key, r.attempt) for r in rows]

    def remaining() -> int:
        with storage.engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).where(
                        steps_table.c.pool == "warehouse", steps_table.c.status != StepStatus.SUCCEEDED
                    )
                ).scalar_one()
            )

    def work(index: int) -> None:
        idle_since = time.monotonic()
        try:
            while remaining():
                candidates = ready_pool_steps()
                if not candidates:
                    assert time.monotonic() - idle_since < 10, "pool stalled: steps WAITING, no slot handed over"
                    time.sleep(0.005)
                    continue
                run_id, step_key, attempt = candidates[index % len(candidates)]
                if storage.claim_step(run_id, step_key, attempt, f"t{index}") is None:
                    continue
                idle_since = time.monotonic()
                holders, waiting = pool_state(storage)
                with lock:
                    seen.append(holders)
                    if waiting:
                        idle_slots.append(3 - holders)
                time.sleep(0.01)
                storage.complete_step(run_id, step_key, attempt, asset_key=step_key, metadata={})
        except BaseException as exc:
            errors.append(exc)

    with ThreadPoolExecutor(6) as executor:
        list(executor.map(work, range(6)))
    assert not errors, errors
    assert len(seen) == 3 * 7
    assert max(seen) <= 3
    assert max(seen) == 3  # the slots were used in parallel, not one at a time
    assert set(idle_slots) == {0}, "a slot stayed free while steps were waiting"
    for run_id in runs:
        assert all(s.status == StepStatus.SUCCEEDED for s in storage.get_steps(run_id) if s.pool)


# -- storage: cancellation ---------------------------------------------------------------------


def test_canceling_a_queued_run_means_it_never_starts(storage: Storage) -> None:
    run_id = submit(storage, "reexec_job")
    result = storage.cancel_run(run_id)
    assert result.canceled and result.running == ()
    run = storage.get_run(run_id)
    assert run.status == RunStatus.CANCELED and run.ended_at is not None and run.started_at is None
    assert set(statuses(storage, run_id).values()) == {StepStatus.CANCELED}
    assert storage.start_run(run_id) == []
    assert storage.queued_runs() == []
    assert Launcher(storage, Sent(storage), defs=DEFS).tick() == 0


def test_canceling_a_started_run_stops_unstarted_steps_and_disowns_running_ones(storage: Storage) -> None:
    run_id = submit(storage, "reexec_job")
    ready = {r.step_key: r for r in storage.start_run(run_id)}
    assert set(ready) == {"base", "side"}
    storage.mark_enqueued([ready["side"]])
    assert storage.claim_step(run_id, "base", 1, "w") is not None

    result = storage.cancel_run(run_id)
    assert result.canceled
    assert [(r.run_id, r.step_key, r.attempt) for r in result.running] == [(run_id, "base", 1)]
    run = storage.get_run(run_id)
    assert (run.status, run.steps_remaining) == (RunStatus.CANCELED, 0)
    assert run.ended_at is not None
    assert set(statuses(storage, run_id).values()) == {StepStatus.CANCELED}
    # The step already sent never starts; the running one's outcome is not recorded.
    assert storage.claim_step(run_id, "side", 1, "w") is None
    assert storage.complete_step(run_id, "base", 1, asset_key="base", metadata={"x": 1}) is None
    assert storage.fail_step(run_id, "base", 1, error="late", retry_delay=None) is None
    assert storage.get_run(run_id).status == RunStatus.CANCELED
    assert [m for m in storage.get_materializations() if m.run_id == run_id] == []
    assert storage.steps_to_publish(grace_seconds=0) == []
    assert "RUN_CANCELED" in [e.event_type for e in storage.get_events(run_id)]
    again = storage.cancel_run(run_id)
    assert not again.canceled and again.running == ()


def test_canceling_a_run_hands_its_pool_slots_to_other_runs(storage: Storage) -> None:
    storage.set_pool_limit("warehouse", 1)
    r1 = submit(storage, "pool_job")
    storage.start_run(r1)
    time.sleep(0.002)
    r2 = submit(storage, "pool_job")
    storage.start_run(r2)
    assert storage.claim_step(r1, "pooled_0", 1, "w") is not None
    assert statuses(storage, r2)["pooled_0"] == StepStatus.WAITING
    storage.cancel_run(r1)
    assert statuses(storage, r2)["pooled_0"] == StepStatus.READY
    assert pool_holders(storage) == 1
    assert (r2, "pooled_0") in [(r.run_id, r.step_key) for r in storage.steps_to_publish(grace_seconds=0)]


# -- storage: re-execution and run retries -----------------------------------------------------


def failed_reexec_run(storage: Storage) -> str:
    """reexec_job ending FAILURE: base and side succeeded, doubled failed, final skipped."""
    run_id = submit(storage, "reexec_job", priority=3, team="finance")
    storage.start_run(run_id)
    succeed(storage, run_id, "base")
    succeed(storage, run_id, "side")
    fail(storage, run_id, "doubled")
    assert statuses(storage, run_id) == {
        "base": StepStatus.SUCCEEDED,
        "doubled": StepStatus.FAILED,
        "final": StepStatus.SKIPPED,
        "side": StepStatus.SUCCEEDED,
    }
    assert storage.get_run(run_id).status == RunStatus.FAILURE
    return run_id


def test_reexecution_from_failure_plans_only_failed_and_skipped_steps(storage: Storage) -> None:
    parent = failed_reexec_run(storage)
    run = storage.get_run(parent)
    assert [s.step_key for s in reexecution_plan(DEFS, storage, run, from_failure=True).steps] == ["doubled", "final"]
    assert sorted(s.step_key for s in reexecution_plan(DEFS, storage, run, from_failure=False).steps) == [
        "base",
        "doubled",
        "final",
        "side",
    ]
    child = submit_reexecution(DEFS, storage, parent, from_failure=True).run_id
    record_ = storage.get_run(child)
    assert record_.parent_run_id == parent
    assert record_.priority == 3
    assert record_.tags == {
        "team": "finance",
        PRIORITY_TAG: "3",
        PARENT_RUN_TAG: parent,
        ROOT_RUN_TAG: parent,
        CODE_LOCATION_TAG: "queue_project.py",
    }
    assert record_.asset_selection == ("doubled", "final")
    assert [r.step_key for r in storage.start_run(child)] == ["doubled"]  # its upstream is outside the run
    fail(storage, child, "doubled")
    grandchild = submit_reexecution(DEFS, storage, child, from_failure=True).run_id
    assert storage.get_run(grandchild).tags[ROOT_RUN_TAG] == parent
    assert storage.get_run(grandchild).tags[PARENT_RUN_TAG] == child
    assert [r.run_id for r in storage.child_runs(parent)] == [child]


def test_reexecution_is_refused_for_unfinished_successful_or_unknown_runs(storage: Storage) -> None:
    running = submit(storage, "hold_job")
    with pytest.raises(TidegateError, match=f"run '{running}': still QUEUED"):
        submit_reexecution(DEFS, storage, running, from_failure=False)
    storage.start_run(running)
    succeed(storage, running, "hold")
    with pytest.raises(TidegateError, match="succeeded, nothing to re-execute from failure"):
        submit_reexecution(DEFS, storage, running, from_failure=True)
    again = submit_reexecution(DEFS, storage, running, from_failure=False).run_id
    assert statuses(storage, again) == {"hold": StepStatus.PLANNED}
    with pytest.raises(TidegateError, match="job 'hold_job' is not defined"):
        submit_reexecution(tg.Definitions(assets=[]), storage, running, from_failure=False)


def fail_whole_run(storage: Storage, run_id: str) -> None:
    storage.start_run(run_id)
    for key in statuses(storage, run_id):
        if statuses(storage, run_id)[key] in (StepStatus.READY, StepStatus.ENQUEUED):
            fail(storage, run_id, key)
    assert storage.get_run(run_id).status == RunStatus.FAILURE


def test_the_monitor_retries_a_failed_run_up_to_its_max_retries_tag(storage: Storage) -> None:
    monitor = RunMonitor(storage, Sent(storage), DEFS)
    first = submit(storage, "always_fails_job")  # the job's tags hold tidegate/max_retries=1
    assert storage.get_run(first).tags[MAX_RETRIES_TAG] == "1"
    untagged = storage.submit_run(DEFS.plan("retry_job"), origin="test", tags={MAX_RETRIES_TAG: "0"}).run_id
    garbage = storage.submit_run(DEFS.plan("retry_job"), origin="test", tags={MAX_RETRIES_TAG: "x"}).run_id
    for run_id in (first, untagged, garbage):
        fail_whole_run(storage, run_id)

    assert monitor.check()["run_retries"] == 1
    (retry,) = storage.child_runs(first)
    assert retry.origin == RUN_RETRY_ORIGIN
    assert retry.tags[RETRY_NUMBER_TAG] == "1"
    assert (retry.tags[PARENT_RUN_TAG], retry.tags[ROOT_RUN_TAG], retry.parent_run_id) == (first, first, first)
    assert storage.child_runs(untagged) == [] and storage.child_runs(garbage) == []
    assert monitor.check()["run_retries"] == 0  # one retry per failed run, however often it looks
    assert RunMonitor(storage, Sent(storage), DEFS).check()["run_retries"] == 0  # also after a restart

    fail_whole_run(storage, retry.run_id)
    assert monitor.check()["run_retries"] == 0  # retry 1 of 1 failed: that was the last
    assert storage.child_runs(retry.run_id) == []
    assert RunMonitor(storage, Sent(storage), None).check()["run_retries"] == 0  # no defs, no retries


def test_the_monitor_fails_a_step_past_its_timeout(storage: Storage) -> None:
    sent = Sent(storage)
    monitor = RunMonitor(storage, sent, DEFS, MonitorConfig(timeout_grace_seconds=0.5))
    run_id = submit(storage, "timeout_job")
    storage.start_run(run_id)
    assert storage.claim_step(run_id, "too_slow", 1, "w") is not None
    started = next(s for s in storage.get_steps(run_id) if s.step_key == "too_slow").started_at
    assert started is not None
    assert monitor.check(now=started + timedelta(seconds=1.4))["timed_out"] == 0
    assert monitor.check(now=started + timedelta(seconds=1.6))["timed_out"] == 1
    step = next(s for s in storage.get_steps(run_id) if s.step_key == "too_slow")
    assert step.status == StepStatus.FAILED
    assert step.error == "TimeoutError: step 'too_slow' exceeded its timeout of 1s"
    assert storage.complete_step(run_id, "too_slow", 1, asset_key="too_slow", metadata={}) is None


@pytest.fixture(autouse=True)
def _no_config_leaks(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("TIDEGATE_MAX_CONCURRENT_RUNS", raising=False)
    yield
