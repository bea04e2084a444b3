"""Ops, graphs and op jobs in this process (``execute_in_process`` and the in-process step
loop): the same step code the workers run, on SQLite. The worker-process tests are in
test_op_processes.py."""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path

import pytest

import tidegate as dg
from tidegate.names import RunStatus, StepStatus, TickStatus
from tidegate.scheduler.reexecution import submit_reexecution
from tidegate.storage.api import Storage
from tidegate.storage.records import StepRef
from tidegate.workers.execution import StepExecutor
from tidegate.workers.inprocess import _run_to_end


@dg.op
def one() -> int:
    return 1


@dg.op
def plus_one(x: int) -> int:
    return x + 1


@dg.op
def total(values: list[int]) -> int:
    return sum(values)


@dg.op(out=dg.DynamicOut())
def numbers(context: dg.OpExecutionContext):  # type: ignore[no-untyped-def]
    for i in range(int(context.op_config["n"]) if context.op_config else 3):
        yield dg.DynamicOutput(i, mapping_key=f"k{i}")


def test_map_over_an_empty_dynamic_output_collects_an_empty_list() -> None:
    @dg.op(out=dg.DynamicOut())
    def nothing() -> list[dg.DynamicOutput]:
        return []

    @dg.job
    def empty_fan_out() -> None:
        total(nothing().map(plus_one).collect())

    result = empty_fan_out.execute_in_process()
    assert result.success
    assert result.output_for_node("total") == 0
    assert [s.step_key for s in result.steps] == ["nothing", "total"]


def test_nested_map_plans_inner_steps_per_outer_key() -> None:
    @dg.op(out=dg.DynamicOut())
    def pairs(x: int):  # type: ignore[no-untyped-def]
        yield dg.DynamicOutput(x * 10, mapping_key="a")
        yield dg.DynamicOutput(x * 10 + 1, mapping_key="b")

    @dg.job
    def nested_map() -> None:
        def per_number(n: dg.OpDefinition) -> object:
            return total(pairs(n).map(plus_one).collect())

        total.alias("grand_total")(numbers().map(per_number).collect())

    result = nested_map.execute_in_process()
    assert result.success
    keys = {s.step_key for s in result.steps}
    assert {"plus_one[k0,a]", "plus_one[k2,b]", "pairs[k1]", "total[k2]", "grand_total"} <= keys
    assert len(keys) == 1 + 3 * (1 + 2 + 1) + 1
    assert result.output_for_node("grand_total") == sum(10 * i + 1 + 10 * i + 2 for i in range(3))


def test_optional_output_not_emitted_skips_consumers_and_run_succeeds() -> None:
    @dg.op(out={"yes": dg.Out(), "no": dg.Out(is_required=False)})
    def choose():  # type: ignore[no-untyped-def]
        yield dg.Output(5, "yes")

    @dg.job
    def optional() -> None:
        yes, no = choose()
        plus_one.alias("after_yes")(yes)
        plus_one.alias("after_no")(plus_one.alias("first_no")(no))

    result = optional.execute_in_process()
    assert result.success and result.run.status == RunStatus.SUCCESS
    statuses = {s.step_key: s.status for s in result.steps}
    assert statuses == {
        "choose": StepStatus.SUCCEEDED,
        "after_yes": StepStatus.SUCCEEDED,
        "first_no": StepStatus.SKIPPED,
        "after_no": StepStatus.SKIPPED,
    }
    skipped = [e.message for e in result.all_events if e.event_type == "STEP_SKIPPED"]
    assert skipped == ["op 'choose' did not emit output 'no'"] * 2


def test_required_output_missing_fails_the_step_naming_it() -> None:
    @dg.op(out={"a": dg.Out(), "b": dg.Out()})
    def half():  # type: ignore[no-untyped-def]
        yield dg.Output(1, "a")

    @dg.job
    def half_job() -> None:
        half()

    result = half_job.execute_in_process(raise_on_error=False)
    assert not result.success
    assert "op 'half': did not emit required output 'b'" in result.step("half").error


class Greeting(dg.Config):
    word: str


class Suffix(dg.ConfigurableResource):
    text: str


def test_config_resources_and_partition_reach_the_op() -> None:
    @dg.op
    def greet(context: dg.OpExecutionContext, config: Greeting, suffix: Suffix) -> str:
        return f"{config.word} {context.partition_key}{suffix.text}"

    @dg.job(partitions_def=dg.StaticPartitionsDefinition(["x", "y"]))
    def greeting() -> None:
        greet()

    result = greeting.execute_in_process(
        run_config=dg.RunConfig(ops={"greet": Greeting(word="hi")}),
        resources={"suffix": Suffix(text="!")},
        partition_key="y",
    )
    assert result.output_for_node("greet") == "hi y!"
    with pytest.raises(dg.RunConfigError, match=r"op 'greet': config field 'word': Field required"):
        greeting.execute_in_process(resources={"suffix": Suffix(text="!")}, partition_key="x")


def test_bad_graphs_fail_when_defined_naming_the_op() -> None:
    with pytest.raises(dg.InvalidDefinitionError, match=r"op 'plus_one': input 'x' is not connected"):

        @dg.job
        def unconnected() -> None:
            plus_one()

    with pytest.raises(dg.InvalidDefinitionError, match=r"gets dynamic output 'numbers.result' directly"):

        @dg.job
        def unmapped() -> None:
            plus_one(numbers())

    with pytest.raises(dg.InvalidDefinitionError, match=r"invalid mapping_key 'a b'"):
        dg.DynamicOutput(1, mapping_key="a b")

    @dg.op(required_resource_keys={"warehouse"})
    def needs_warehouse() -> None:
        return None

    @dg.job
    def needs() -> None:
        needs_warehouse()

    with pytest.raises(dg.MissingResourceError, match=r"op 'needs_warehouse' needs resource 'warehouse'"):
        dg.Definitions(jobs=[needs])


def test_ops_and_assets_in_one_definitions() -> None:
    @dg.asset
    def table() -> int:
        return 1

    @dg.job(metadata={"owner": "ops"})
    def op_job() -> None:
        plus_one(one())

    asset_job = dg.define_asset_job("asset_job", "*")
    defs = dg.Definitions(assets=[table], jobs=[op_job, asset_job])
    assert defs.get_job("op_job").kind == "ops" and defs.get_job("asset_job").kind == "assets"
    plan = defs.plan("op_job")
    assert [(s.step_key, s.upstream) for s in plan.steps] == [("one", ()), ("plus_one", ("one",))]


def test_reexecution_from_failure_reruns_only_the_failed_mapped_keys(tmp_path: Path) -> None:
    flaky = tmp_path / "flaky"
    flaky.write_text("fail")

    @dg.op
    def fragile(n: int) -> int:
        if n == 1 and flaky.read_text() == "fail":
            raise RuntimeError("k1 fails in the first run")
        with (tmp_path / f"ran-k{n}").open("a") as ran:
            ran.write("x")
        return n * 100

    @dg.job
    def fan() -> None:
        total(numbers().map(fragile).collect())

    defs = dg.Definitions(jobs=[fan], resources={"io_manager": dg.FilesystemIOManager(tmp_path / "io")})
    storage = Storage.open(f"sqlite:///{tmp_path / 'db.sqlite'}", upgrade=True)
    pending: deque[StepRef] = deque()
    executor = StepExecutor(defs, storage, publish=pending.extend, worker_name="test")
    first = storage.submit_run(defs.plan("fan"), origin="test").run_id
    _run_to_end(storage, executor, pending, first)
    steps = {s.step_key: s.status for s in storage.get_steps(first)}
    assert storage.get_run(first).status == RunStatus.FAILURE
    assert steps["fragile[k1]"] == StepStatus.FAILED and steps["total"] == StepStatus.SKIPPED

    flaky.write_text("ok")
    second = submit_reexecution(defs, storage, first, from_failure=True).run_id
    assert sorted(s.step_key for s in storage.get_steps(second)) == ["fragile[k1]", "total"]
    _run_to_end(storage, executor, pending, second)
    assert storage.get_run(second).status == RunStatus.SUCCESS
    assert [(tmp_path / f"ran-k{i}").read_text() for i in range(3)] == ["x", "x", "x"]  # k0, k2 not re-run
    io = dg.FilesystemIOManager(tmp_path / "io")
    out = dg.OutputContext(None, second, "total")
    assert io.load_input(dg.InputContext(None, second, "check", upstream_output=out)) == 0 + 100 + 200
    storage.dispose()


def test_direct_invocation_calls_the_function() -> None:
    assert plus_one(41) == 42


def test_job_list_and_launch_show_op_jobs(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from tidegate.cli import main as cli

    project = str(Path(__file__).parent / "projects" / "ops_project.py")
    env = {"TIDEGATE_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}", "TIDEGATE_BROKER_URL": "memory://"}
    runner = CliRunner()
    listed = runner.invoke(cli, ["job", "list", "-f", project, "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    jobs = {j["name"]: j for j in json.loads(listed.output)}
    assert jobs["diamond_job"]["kind"] == "ops" and jobs["diamond_job"]["metadata"] == {"owner": "data"}
    assert jobs["daily_job"]["schedules"] == ["daily_job_schedule"] and jobs["daily_job"]["partitions"]
    launched = runner.invoke(cli, ["job", "launch", "fan_out_job", "-f", project], env=env)
    assert launched.exit_code == 0, launched.output
    storage = Storage.open(env["TIDEGATE_DATABASE_URL"], upgrade=True)
    (run,) = storage.list_runs()
    assert [s.step_key for s in storage.get_steps(run.run_id)] == ["split", "total"]  # mapped ones come later
    storage.dispose()


class Batch(dg.Config):
    size: int


@dg.op
def sized(config: Batch) -> int:
    return config.size


@dg.job
def sized_job() -> None:
    plus_one(sized())


def test_sensor_run_request_carries_op_config_and_bad_config_fails_the_tick(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from tidegate.scheduler.beat import Beat
    from tidegate.scheduler.clock import FakeClock

    sizes = iter([3, "big"])

    @dg.sensor(job=sized_job, minimum_interval_seconds=1, default_status=dg.DefaultSensorStatus.RUNNING)
    def batches(context: dg.SensorEvaluationContext) -> dg.RunRequest:
        return dg.RunRequest(run_config=dg.RunConfig(ops={"sized": {"config": {"size": next(sizes)}}}))

    defs = dg.Definitions(jobs=[sized_job], sensors=[batches])
    storage = Storage.open(f"sqlite:///{tmp_path / 'db.sqlite'}", upgrade=True)
    pending: deque[StepRef] = deque()
    clock = FakeClock(datetime(2024, 1, 1, tzinfo=UTC))
    beat = Beat(defs, storage, pending.extend, clock=clock, holder="test", synchronous_sensors=True)
    beat.tick()
    (run,) = storage.list_runs()
    assert run.run_config == {"ops": {"sized": {"config": {"size": 3}}}}
    executor = StepExecutor(defs, storage, publish=pending.extend, worker_name="test")
    _run_to_end(storage, executor, pending, run.run_id)
    assert storage.get_run(run.run_id).status == RunStatus.SUCCESS

    clock.set(datetime(2024, 1, 1, 0, 1, tzinfo=UTC))
    beat.tick()
    assert len(storage.list_runs()) == 1  # the bad request created no run
    tick = storage.get_ticks("batches", limit=1)[0]
    assert tick.status == TickStatus.FAILURE and "op 'sized'" in (tick.error or "") and "size" in (tick.error or "")
    storage.dispose()


def test_run_monitor_retries_a_lost_op_step_by_its_retry_policy(tmp_path: Path) -> None:
    from datetime import timedelta

    from tidegate.config import MonitorConfig
    from tidegate.scheduler.monitor import RunMonitor

    @dg.op(retry_policy=dg.RetryPolicy(max_retries=1))
    def slow() -> int:
        return 1

    @dg.job(partitions_def=dg.StaticPartitionsDefinition(["p"]))
    def lost_job() -> None:
        plus_one(slow())

    defs = dg.Definitions(jobs=[lost_job])
    storage = Storage.open(f"sqlite:///{tmp_path / 'db.sqlite'}", upgrade=True)
    run_id = storage.submit_run(defs.plan("lost_job", partition_key="p"), origin="test").run_id
    storage.start_run(run_id)
    assert storage.claim_step(run_id, "slow", 1, "worker@gone") is not None
    config = MonitorConfig(heartbeat_timeout_seconds=20, worker_lost_retries=0)  # only the op policy retries
    monitor = RunMonitor(storage, [].extend, defs, config)
    assert monitor.check(now=storage.db_now() + timedelta(seconds=21))["lost"] == 1
    step = next(s for s in storage.get_steps(run_id) if s.step_key == "slow")
    assert step.status == StepStatus.READY and step.attempt == 2  # retried per the op's policy
    assert storage.partition_status_counts() == {}  # an op step records no asset partition status
    storage.dispose()
