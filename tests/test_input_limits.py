"""Oversized and odd input (tidegate.definitions.limits): refused where it comes in with an
InputLimitError naming the value (cut short) and the limit, the same on SQLite and PostgreSQL,
at import, in a RunRequest, in the beat's sensor ticks, in launches and on the command line;
and the longest values the limits accept fit the columns on both databases."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import tidegate as tg
from tests.support import ROOT, TIDEGATE
from tidegate.definitions import limits
from tidegate.definitions.key import AssetKey
from tidegate.errors import LaunchRequestError
from tidegate.names import SENSOR_TAG, TickStatus
from tidegate.scheduler.beat import Beat
from tidegate.scheduler.clock import FakeClock
from tidegate.storage import schema
from tidegate.storage.api import Storage
from tidegate.submit import prepare_job_run

RUNNING = tg.DefaultSensorStatus.RUNNING
T0 = datetime(2024, 3, 4, tzinfo=UTC)
LONG = "x" * 10_000
LONG_CRON = " ".join(",".join(map(str, r)) for r in (range(60), range(24), range(1, 32))) + " * *"


def _fn() -> int:
    return 1


def _one_line_naming(message: str, *fragments: str) -> None:
    """A readable message: one line, short whatever the value's size, with each fragment."""
    assert "\n" not in message and len(message) < 400, message
    for fragment in fragments:
        assert fragment in message, message


# -- the columns and the limits --------------------------------------------------------------


def test_each_limit_fits_its_column_with_what_tidegate_adds() -> None:
    assert schema.runs.c.run_key.type.length == limits.RUN_KEY_COLUMN  # type: ignore[attr-defined]
    assert schema.runs.c.job_name.type.length == limits.NAME_COLUMN  # type: ignore[attr-defined]
    assert schema.steps.c.display_name.type.length == limits.ASSET_KEY_COLUMN  # type: ignore[attr-defined]
    assert schema.dynamic_partitions.c.partition_key.type.length == limits.PARTITION_KEY_COLUMN  # type: ignore[attr-defined]
    tick_time = datetime(2024, 3, 4, 1, 0, 0, 1, tzinfo=timezone(timedelta(hours=5, minutes=45))).isoformat()
    assert len(tick_time) + 1 + limits.MAX_RUN_KEY_LENGTH <= limits.RUN_KEY_COLUMN  # "<tick>:<run key>"
    assert len("schedule:") + limits.MAX_NAME_LENGTH <= limits.NAME_COLUMN  # a run's origin
    # a step's display name "<asset key>[<partition key>]"
    assert limits.MAX_ASSET_KEY_LENGTH + 2 + limits.MAX_PARTITION_KEY_LENGTH <= limits.ASSET_KEY_COLUMN
    assert schema.asset_partitions.c.partition_key.type.length == limits.MAX_PARTITION_KEY_LENGTH  # type: ignore[attr-defined]


# -- definitions, at import -------------------------------------------------------------------

DEFINITIONS: dict[str, tuple[Callable[[], object], tuple[str, ...]]] = {
    "asset key too long": (
        lambda: tg.asset(key=["a" * 128, "b" * 128])(_fn),
        ("AssetKey: asset key 'aaaa", "is 257 characters long; at most 255"),
    ),
    "asset name with a trailing newline": (  # '$' in the name pattern let it through
        lambda: tg.asset(name="orders\n")(_fn),
        ("asset 'orders\\n': AssetKey: asset key 'orders\\n' holds the control character '\\n' (U+000A)",),
    ),
    "job name too long": (
        lambda: tg.define_asset_job("j" * 201, "*"),
        ("job: name 'jjjj", "is 201 characters long; at most 200"),
    ),
    "job name with a trailing newline": (
        lambda: tg.define_asset_job("daily\n", "*"),
        ("job: name 'daily\\n' holds the control character '\\n'",),
    ),
    "job tag value too long": (
        lambda: tg.define_asset_job("j", "*", tags={"team": "v" * 4097}),
        ("job 'j': tag 'team': value 'vvvv", "is 4097 characters long; at most 4096"),
    ),
    "sensor name too long": (
        lambda: tg.sensor(name="s" * 201, target="*")(lambda: None),
        ("sensor: name 'ssss", "characters long; at most 200"),
    ),
    "schedule name with an escape": (
        lambda: tg.ScheduleDefinition("nightly\x1b[2J", cron_schedule="0 * * * *", target="*"),
        ("schedule: name 'nightly\\x1b[2J' holds the control character '\\x1b' (U+001B)",),
    ),
    "schedule tag key with NUL": (
        lambda: tg.ScheduleDefinition("nightly", cron_schedule="0 * * * *", target="*", tags={"k\x00": "v"}),
        ("schedule 'nightly'", "tag key 'k\\x00' holds the control character '\\x00'"),
    ),
    "asset with 101 tags": (
        lambda: tg.asset(tags={f"t{i}": "v" for i in range(101)})(_fn),
        ("asset '_fn': 101 tags, at most 100",),
    ),
    "asset metadata key too long": (
        lambda: tg.asset(metadata={"m" * 256: 1})(_fn),
        ("asset '_fn': metadata key 'mmmm", "characters long; at most 255"),
    ),
    "asset queue name too long": (
        lambda: tg.asset(queue="q" * 201)(_fn),
        ("asset '_fn': queue name 'qqqq", "characters long; at most 200"),
    ),
    "asset pool name with a trailing newline": (
        lambda: tg.asset(pool="warehouse\n")(_fn),
        ("asset '_fn': pool name 'warehouse\\n' holds the control character '\\n'",),
    ),
    "cron longer than its column": (  # a valid cron: lists of every minute, hour and day
        lambda: tg.ScheduleDefinition("nightly", cron_schedule=LONG_CRON, target="*"),
        ("schedule 'nightly': cron '0,1,2,", "is 319 characters long; at most 255 (use ranges"),
    ),
    "dynamic partitions name with a trailing newline": (
        lambda: tg.DynamicPartitionsDefinition(name="files\n"),
        ("DynamicPartitionsDefinition: name 'files\\n' holds the control character '\\n'",),
    ),
    "asset spec metadata key with a control character": (
        lambda: tg.AssetSpec("feed", metadata={"rows\x85": 1}),
        ("AssetSpec 'feed': metadata key 'rows\\x85' holds the control character '\\x85'",),
    ),
}


@pytest.mark.parametrize("case", list(DEFINITIONS))
def test_definitions_refuse_oversized_and_odd_values_at_import(case: str) -> None:
    build, fragments = DEFINITIONS[case]
    with pytest.raises(tg.InputLimitError) as raised:
        build()
    assert isinstance(raised.value, tg.InvalidDefinitionError)  # what a definition's bad argument raises
    _one_line_naming(str(raised.value), *fragments)


def test_the_longest_accepted_definitions_are_accepted() -> None:
    key = AssetKey(["a" * 127, "b" * 127])  # 255 characters with the '/'
    assert len(key.to_user_string()) == limits.MAX_ASSET_KEY_LENGTH
    assert tg.define_asset_job("j" * limits.MAX_NAME_LENGTH, "*").name == "j" * 200
    tags = {f"{i:0>255}": "v" * limits.MAX_TAG_VALUE_LENGTH for i in range(limits.MAX_TAGS)}
    assert tg.asset(tags=tags, queue="q" * 200, pool="p" * 200)(_fn).tags == tags
    assert tg.AssetSpec("feed", metadata={"é" * 255: 1}).metadata == {"é" * 255: 1}


# -- RunRequest and sensor results ----------------------------------------------------------------

REQUESTS: dict[str, tuple[Callable[[], object], tuple[str, ...]]] = {
    "run key too long": (
        lambda: tg.RunRequest(run_key=LONG),
        ("RunRequest: run_key 'xxxx", "is 10000 characters long; at most 960 (hash a longer key)"),
    ),
    "run key with NUL": (
        lambda: tg.RunRequest(run_key="file\x00.csv"),
        ("RunRequest: run_key 'file\\x00.csv' holds the control character '\\x00' (U+0000)",),
    ),
    "run key with a lone surrogate": (
        lambda: tg.RunRequest(run_key="file\udcff.csv"),
        ("RunRequest: run_key 'file\\udcff.csv' holds the control character '\\udcff'",),
    ),
    "tag value with NUL": (
        lambda: tg.RunRequest(tags={"source": "a\x00b"}),
        ("RunRequest: tag 'source': value 'a\\x00b' holds the control character '\\x00'",),
    ),
    "tag key too long": (
        lambda: tg.RunRequest(tags={"k" * 256: "v"}),
        ("RunRequest: tag key 'kkkk", "is 256 characters long; at most 255"),
    ),
    "101 tags": (
        lambda: tg.RunRequest(tags={f"t{i}": "v" for i in range(101)}),
        ("RunRequest: 101 tags, at most 100",),
    ),
    "skip message with NUL": (
        lambda: tg.SkipReason("nothing\x00new"),
        ("SkipReason: skip message 'nothing\\x00new' holds '\\x00', which the database cannot store",),
    ),
}


@pytest.mark.parametrize("case", list(REQUESTS))
def test_run_requests_refuse_oversized_and_odd_values_when_built(case: str) -> None:
    build, fragments = REQUESTS[case]
    with pytest.raises(tg.InputLimitError) as raised:
        build()
    _one_line_naming(str(raised.value), *fragments)


def test_run_requests_keep_what_fits() -> None:
    assert tg.RunRequest(run_key="k" * 960, tags={"ü": "über"}).run_key == "k" * 960
    assert tg.SkipReason("several\nlines\tand tabs").skip_message  # free text: only NUL is refused


def _limits_defs(*sensors: tg.SensorDefinition, schedules: Any = ()) -> tg.Definitions:
    @tg.asset
    def raw() -> int:
        return 1

    return tg.Definitions(assets=[raw], sensors=list(sensors), schedules=list(schedules))


def test_a_sensor_result_over_a_limit_fails_its_tick_and_the_beat_goes_on(storage: Storage) -> None:
    """On both databases: a FAILURE tick whose last line names the sensor's mistake (not a
    SQLAlchemy link), no run, the cursor unchanged; the honest sensor beside it keeps ticking."""

    def sensor(name: str, result: Callable[[], Any]) -> tg.SensorDefinition:
        return tg.sensor(name=name, target="*", default_status=RUNNING, minimum_interval_seconds=10)(
            lambda context: result()
        )

    bad = {
        "long_key": (lambda: tg.RunRequest(run_key=LONG), "run_key 'xxxx"),
        "nul_key": (lambda: [tg.RunRequest(run_key="a.csv"), tg.RunRequest(run_key="b\x00.csv")], "'b\\x00.csv'"),
        "nul_tag": (lambda: tg.RunRequest(run_key="c", tags={"file": "c\x00"}), "tag 'file': value 'c\\x00'"),
        "huge_cursor": (
            lambda: tg.SensorResult([tg.RunRequest(run_key="d")], cursor="c" * (limits.MAX_CURSOR_BYTES + 1)),
            "sensor 'huge_cursor': cursor 'cccc",
        ),
        "nul_partitions": (
            lambda: tg.SensorResult(dynamic_partitions_requests=[tg.AddDynamicPartitionsRequest("files\x00", ["a"])]),
            "sensor 'nul_partitions': dynamic partitions name 'files\\x00' holds the control character",
        ),
        "nul_cursor": (
            lambda: tg.SensorResult([tg.RunRequest(run_key="e")], cursor='{"last": "\x00"}'),
            "sensor 'nul_cursor': cursor '{\"last\": \"\\x00\"}' holds '\\x00'",
        ),
    }
    sensors = [sensor(name, result) for name, (result, _) in bad.items()]
    sensors.append(sensor("honest", lambda: tg.SensorResult([tg.RunRequest(run_key="ok")], cursor="1" * 1000)))
    clock = FakeClock(T0)
    beat = Beat(_limits_defs(*sensors), storage, lambda refs: None, clock=clock)
    first = beat.tick()
    clock.advance(11)
    second = beat.tick()

    for name, (_, fragment) in bad.items():
        ticks = storage.get_ticks(name)
        assert [t.status for t in ticks] == [TickStatus.FAILURE, TickStatus.FAILURE], name
        last_line = (ticks[0].error or "").strip().splitlines()[-1]
        assert last_line.startswith("tidegate.errors.InputLimitError: "), last_line
        _one_line_naming(last_line, fragment)
        assert any(f.startswith(f"sensor '{name}': tidegate.errors.InputLimitError: ") for f in first.failures)
        assert storage.get_instigator(name).cursor is None  # type: ignore[union-attr]
        assert [r for r in storage.list_runs() if r.tags.get(SENSOR_TAG) == name] == []
    assert len(second.failures) == len(bad)
    assert [t.status for t in storage.get_ticks("honest")] == [TickStatus.SKIPPED, TickStatus.SUCCESS]
    assert storage.get_instigator("honest").cursor == "1" * 1000  # type: ignore[union-attr]
    assert [r.run_key for r in storage.list_runs()] == ["ok"]


def test_the_longest_accepted_values_fit_the_columns_on_both_databases(storage: Storage) -> None:
    """A schedule and a sensor with the longest names, run keys, tags, asset and partition keys
    and cursor the limits accept: each tick commits on SQLite and on PostgreSQL."""
    partition = "p" * limits.MAX_PARTITION_KEY_LENGTH
    parts = tg.StaticPartitionsDefinition([partition])
    key = ["a" * 127, "b" * 127]

    @tg.asset(key=key, partitions_def=parts, queue="q" * 200, pool="l" * 200)
    def widest() -> int:
        return 1

    job = tg.define_asset_job("j" * limits.MAX_NAME_LENGTH, [widest], partitions_def=parts)
    tags = {f"{i:0>255}": "v" * limits.MAX_TAG_VALUE_LENGTH for i in range(limits.MAX_TAGS)}
    run_key = "k" * limits.MAX_RUN_KEY_LENGTH

    @tg.schedule("0 * * * *", name="s" * 200, job=job, default_status=RUNNING, execution_timezone="Asia/Kathmandu")
    def longest_schedule(context: tg.ScheduleEvaluationContext) -> tg.RunRequest:
        return tg.RunRequest(run_key=run_key, tags=tags, partition_key=partition)

    @tg.sensor(name="n" * 200, job=job, default_status=RUNNING, minimum_interval_seconds=10)
    def longest_sensor(context: tg.SensorEvaluationContext) -> tg.SensorResult:
        cursor = "é" * (limits.MAX_CURSOR_BYTES // 2)  # 2 bytes each in UTF-8: exactly the cap
        return tg.SensorResult([tg.RunRequest(run_key=run_key, tags=tags, partition_key=partition)], cursor=cursor)

    defs = tg.Definitions(assets=[widest], jobs=[job], schedules=[longest_schedule], sensors=[longest_sensor])
    clock = FakeClock(T0)
    beat = Beat(defs, storage, lambda refs: None, clock=clock)
    beat.tick()
    clock.advance(3600)
    report = beat.tick()
    assert report.failures == []
    assert [t.status for t in storage.get_ticks("s" * 200)] == [TickStatus.SUCCESS]
    assert storage.get_ticks("n" * 200)[-1].status == TickStatus.SUCCESS
    assert len(storage.get_instigator("n" * 200).cursor or "") == limits.MAX_CURSOR_BYTES // 2  # type: ignore[union-attr]
    runs = storage.list_runs()
    assert len(runs) == 2
    for run in runs:
        assert run.run_key is not None and run.run_key.endswith(run_key)
        step = storage.get_steps(run.run_id)[0]
        assert step.display_name == f"{'a' * 127}/{'b' * 127}[{partition}]"
        assert len(step.display_name) == limits.ASSET_KEY_COLUMN


# -- launches (the CLI's and the Flower task's shared path) ----------------------------------------


def _project_defs() -> tg.Definitions:
    from tests.projects.limits_project import defs

    return defs


@pytest.mark.parametrize(
    ("kwargs", "error", "fragments"),
    [
        (
            {"run_key": LONG},
            tg.InputLimitError,
            ("job 'raw_job': run key 'xxxx", "is 10000 characters long; at most 960"),
        ),
        ({"tags": {"k": "\x00"}}, tg.InputLimitError, ("job 'raw_job': tag 'k': value '\\x00' holds",)),
        ({"tags": {str(i): "v" for i in range(101)}}, tg.InputLimitError, ("job 'raw_job': 101 tags, at most 100",)),
        (
            {"partition_key": LONG},
            tg.InvalidPartitionKeyError,
            ("invalid partition key 'xxxx", "10000 characters, at most 255"),
        ),
    ],
)
def test_a_launch_refuses_oversized_and_odd_values(
    storage: Storage, kwargs: dict[str, Any], error: type[Exception], fragments: tuple[str, ...]
) -> None:
    job = "files_job" if "partition_key" in kwargs else "raw_job"
    with pytest.raises(error) as raised:
        prepare_job_run(_project_defs(), storage, job, **kwargs)
    assert isinstance(raised.value, tg.TidegateError)
    if error is tg.InputLimitError:
        assert isinstance(raised.value, LaunchRequestError)  # what a malformed launch raises
    _one_line_naming(str(raised.value), *fragments)
    assert storage.list_runs() == []


# -- the command line, real processes ----------------------------------------------------------

PROJECT = ROOT / "tests" / "projects" / "limits_project.py"


def _cli(tmp_path: Path, database_url: str, *args: str | bytes) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDEGATE_")}
    env.update(
        TIDEGATE_HOME=str(tmp_path / "home"),
        TIDEGATE_BROKER_URL="memory://localhost/",
        TIDEGATE_DATABASE_URL=database_url,
        TIDEGATE_DEFINITIONS=str(PROJECT),
    )
    return subprocess.run(
        [TIDEGATE, *args], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path, errors="replace"
    )


CLI_CASES: list[tuple[list[str | bytes], tuple[str, ...]]] = [
    (
        ["job", "launch", "raw_job", "--run-key", LONG],
        ("job 'raw_job': run key 'xxxx", "is 10000 characters long; at most 960"),
    ),
    # argv is bytes: what is not UTF-8 reaches Python as a lone surrogate
    ([b"job", b"launch", b"raw_job", b"--run-key", b"file\xff.csv"], ("run key 'file\\udcff.csv' holds",)),
    (["job", "launch", "raw_job", "--tag", "k" * 300 + "=v"], ("tag key 'kkkk", "is 300 characters long; at most 255")),
    (["job", "launch", "raw_job", "--tag", "note=\x1b[2J"], ("tag 'note': value '\\x1b[2J' holds the control",)),
    (
        ["job", "launch", "files_job", "--partition", "p" * 300],
        ("invalid partition key 'pppp", "300 characters, at most 255"),
    ),
    (["partitions", "add", "files", "ok.csv", "p" * 300], ("dynamic partitions 'files': invalid partition key 'pppp",)),
    (["materialize", "--select", "raw", "--no-wait", "--tag", "v=" + LONG], ("materialize: tag 'v': value 'xxxx",)),
    ([b"sensor", b"cursor", b"watch", b"--set", b"{\xff}"], ("sensor 'watch': cursor '{\\udcff}' holds '\\udcff'",)),
    (
        ["assets", "report", "vendor_feed", *(f"--metadata=m{i}={'x' * 120_000}" for i in range(9))],
        ("asset 'vendor_feed': metadata is 1080", "bytes as JSON, at most 1048576"),
    ),
    (["assets", "report", "vendor_feed", "--metadata", "rows\x07=3"], ("metadata key 'rows\\x07' holds",)),
]


@pytest.mark.slow
def test_the_cli_refuses_oversized_and_odd_values_with_one_line(
    tmp_path: Path, database_url: str, storage: Storage
) -> None:
    """Each way in of the command line, on SQLite and PostgreSQL: exit 2, one line on stderr
    naming the value and the limit, no traceback, nothing stored."""
    for args, fragments in CLI_CASES:
        result = _cli(tmp_path, database_url, *args)
        shown = " ".join(a if isinstance(a, str) else a.decode(errors="replace") for a in args)[:80]
        assert result.returncode == 2, f"{shown}: {result.returncode}\n{result.stdout}\n{result.stderr[-2000:]}"
        assert "Traceback" not in result.stderr, result.stderr[-2000:]
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
        _one_line_naming(lines[0], *fragments)
    assert storage.list_runs() == []
    assert storage.get_instigator("watch") is None
    assert storage.get_materializations("vendor_feed") == []
    assert storage.dynamic_partition_keys("files") == []
    # the same commands with values that fit do their work
    fits = _cli(tmp_path, database_url, "job", "launch", "raw_job", "--run-key", "k" * 960, "--tag", "note=ok")
    assert fits.returncode == 0, fits.stderr[-2000:]
    cursor = _cli(tmp_path, database_url, "sensor", "cursor", "watch", "--set", '{"after": "ü\\n"}')
    assert cursor.returncode == 0, cursor.stderr[-2000:]
    assert [r.run_key for r in storage.list_runs()] == ["k" * 960]
