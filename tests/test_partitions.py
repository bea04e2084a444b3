"""Partitions: definitions, mappings, partitioned runs, the seed's partitioned schedule and
dynamic partitions added by a sensor in the same transaction as its runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tidegate as dg  # the seed's import line, changed
import tidegate as tg
from tidegate.names import PARTITION_TAG
from tidegate.scheduler.beat import Beat
from tidegate.scheduler.clock import FakeClock
from tidegate.storage.api import Storage
from tidegate.storage.records import StepRef


def test_daily_partitions_exist_once_their_window_has_ended() -> None:
    daily = tg.DailyPartitionsDefinition(start_date="2024-01-20", timezone="Europe/Berlin")
    at_six = datetime(2024, 1, 23, 5, 0, tzinfo=UTC)  # 06:00 in Berlin
    assert daily.get_partition_keys(at_six) == ["2024-01-20", "2024-01-21", "2024-01-22"]
    assert daily.last_ended_key(at_six) == "2024-01-22"
    window = daily.time_window_for_key("2024-01-22")
    assert (window.start.isoformat(), window.end.isoformat()) == (
        "2024-01-22T00:00:00+01:00",
        "2024-01-23T00:00:00+01:00",
    )
    in_progress = tg.DailyPartitionsDefinition(start_date="2024-01-20", end_offset=1)
    assert in_progress.get_partition_keys(at_six)[-1] == "2024-01-23"


def test_hourly_partitions_across_spring_forward_skip_the_missing_hour() -> None:
    hourly = tg.HourlyPartitionsDefinition(start_date="2024-03-31-00:00", timezone="Europe/Berlin")
    keys = hourly.get_partition_keys(datetime(2024, 3, 31, 3, 0, tzinfo=UTC))  # 05:00 CEST
    assert keys == ["2024-03-31-00:00", "2024-03-31-01:00", "2024-03-31-03:00", "2024-03-31-04:00"]


def test_daily_windows_with_an_hour_offset_follow_the_schedules_dst_rule() -> None:
    # Windows start at the ticks of '0 2 * * *': 02:00 on the fall-back day is its second pass
    # (02:00+01:00), as a schedule on that cron fires and as Dagster's windows start.
    daily = tg.DailyPartitionsDefinition(start_date="2023-10-25", hour_offset=2, timezone="Europe/Berlin")
    windows = {
        key: (w.start.isoformat(), w.end.isoformat())
        for key in ("2023-10-27", "2023-10-28", "2023-10-29")
        for w in [daily.time_window_for_key(key)]
    }
    assert windows == {
        "2023-10-27": ("2023-10-27T02:00:00+02:00", "2023-10-28T02:00:00+02:00"),
        "2023-10-28": ("2023-10-28T02:00:00+02:00", "2023-10-29T02:00:00+01:00"),  # 25 hours
        "2023-10-29": ("2023-10-29T02:00:00+01:00", "2023-10-30T02:00:00+01:00"),
    }
    # the key of the day of the change exists once its (second-pass) window has ended
    assert daily.last_ended_key(datetime(2023, 10, 30, 0, 59, tzinfo=UTC)) == "2023-10-28"
    assert daily.last_ended_key(datetime(2023, 10, 30, 1, 0, tzinfo=UTC)) == "2023-10-29"
    now = datetime(2023, 11, 1, tzinfo=UTC)
    assert daily.keys_in_range("2023-10-28", "2023-10-30", now) == ["2023-10-28", "2023-10-29", "2023-10-30"]
    # an hourly upstream read through the mapping covers exactly the 25 hours of that window,
    # the last being the first pass of 02:00 on the 29th
    hourly = tg.HourlyPartitionsDefinition(start_date="2023-10-25-00:00", timezone="Europe/Berlin")
    upstream = tg.TimeWindowPartitionMapping().upstream_keys("2023-10-28", daily, hourly, now)
    assert len(upstream) == 25 and (upstream[0], upstream[-1]) == ("2023-10-28-02:00", "2023-10-29-02:00")


def test_unknown_and_malformed_partition_keys_are_named() -> None:
    daily = tg.DailyPartitionsDefinition(start_date="2024-01-01")

    @tg.asset(partitions_def=daily)
    def sales() -> int:
        return 1

    defs = tg.Definitions(assets=[sales], jobs=[tg.define_asset_job("sales_job", "sales")])
    now = datetime(2024, 2, 1, tzinfo=UTC)
    with pytest.raises(tg.PartitionKeyError, match=r"job 'sales_job': .*unknown partition key '2023-12-31'"):
        defs.plan("sales_job", partition_key="2023-12-31", current_time=now)
    with pytest.raises(tg.PartitionKeyError, match=r"malformed partition key 'yesterday' \(expected %Y-%m-%d\)"):
        defs.plan("sales_job", partition_key="yesterday", current_time=now)
    with pytest.raises(tg.PartitionKeyError, match="give a partition key"):
        defs.plan("sales_job")
    plan = defs.plan("sales_job", partition_key="2024-01-05", current_time=now)
    assert plan.partition_key == "2024-01-05" and plan.tags[PARTITION_TAG] == "2024-01-05"
    assert plan.steps[0].display_name == "sales[2024-01-05]"


def test_mismatched_partitions_without_a_mapping_fail_at_load_time() -> None:
    daily = tg.DailyPartitionsDefinition(start_date="2024-01-01")
    weekly = tg.WeeklyPartitionsDefinition(start_date="2024-01-01")

    @tg.asset(partitions_def=daily)
    def sales() -> int:
        return 1

    @tg.asset(partitions_def=weekly)
    def weekly_sales(sales: int) -> int:
        return sales

    with pytest.raises(tg.InvalidDefinitionError, match=r"asset 'weekly_sales': partitioned by .* upstream 'sales'"):
        tg.Definitions(assets=[sales, weekly_sales])

    @tg.asset(
        partitions_def=weekly,
        ins={"sales": tg.AssetIn(partition_mapping=tg.TimeWindowPartitionMapping())},
        name="weekly_sales",
    )
    def mapped(sales: dict[str, int]) -> int:
        return sum(sales.values())

    tg.Definitions(assets=[sales, mapped])  # a mapping makes it valid


def test_partitioned_runs_store_one_output_per_partition_and_map_windows() -> None:
    daily = tg.DailyPartitionsDefinition(start_date="2024-01-01")

    @tg.asset(partitions_def=daily)
    def sales(context: tg.AssetExecutionContext) -> int:
        assert context.partition_time_window.start.day == int(context.partition_key[-2:])
        return int(context.partition_key[-2:])

    rolling_mapping = tg.TimeWindowPartitionMapping(start_offset=-6)

    @tg.asset(partitions_def=daily, ins={"sales": tg.AssetIn(partition_mapping=rolling_mapping)})
    def rolling_week(sales: dict[str, int]) -> int:
        return sum(sales.values())

    @tg.asset
    def all_time(sales: dict[str, int]) -> int:  # unpartitioned downstream: every partition
        return sum(sales.values())

    io = tg.InMemoryIOManager()
    for day in range(1, 11):
        result = tg.materialize(
            [sales, rolling_week, all_time],
            resources={"io_manager": io},
            selection="sales",
            partition_key=f"2024-01-{day:02d}",
        )
        assert [m.partition_key for m in result.materializations] == [f"2024-01-{day:02d}"]
    tg.materialize(
        [sales, rolling_week, all_time],
        resources={"io_manager": io},
        selection="rolling_week",
        partition_key="2024-01-10",
    )
    assert io.values[(tg.AssetKey("rolling_week"), "2024-01-10")] == sum(range(4, 11))
    assert io.values[(tg.AssetKey("sales"), "2024-01-03")] == 3


SEED_START = "2024-03-20"


def _seed_defs() -> tg.Definitions:
    # The seed's code (003_e23af6d093eecb9b.txt), with `import dagster as dg` -> tidegate.
    partitions_def = dg.DailyPartitionsDefinition(start_date=SEED_START, timezone="Europe/Berlin")

    @dg.asset(partitions_def=partitions_def)
    def import_partition_file(context: dg.AssetExecutionContext) -> str:
        return context.partition_key

    import_partition_job = dg.define_asset_job(name="import_partition_job", selection=[import_partition_file])
    asset_partitioned_schedule = dg.build_schedule_from_partitioned_job(
        import_partition_job,
        cron_schedule="0 6 * * *",
    )
    return dg.Definitions(
        assets=[import_partition_file], jobs=[import_partition_job], schedules=[asset_partitioned_schedule]
    )


def test_the_seed_partitioned_schedule_over_two_weeks_across_dst(storage: Storage) -> None:
    defs = _seed_defs()
    schedule = defs.schedules["import_partition_job_schedule"]
    assert schedule.cron_schedule == "0 6 * * *" and schedule.execution_timezone == "Europe/Berlin"
    storage.set_instigator_status(schedule.name, "schedule", "RUNNING", datetime(2024, 3, 24, 12, tzinfo=UTC))
    sent: list[StepRef] = []
    clock = FakeClock(datetime(2024, 3, 24, 12, tzinfo=UTC))
    beat = Beat(defs, storage, sent.extend, clock=clock)
    for _ in range(14 * 4):  # every 6 hours for two weeks; Berlin moves to CEST on 2024-03-31
        beat.tick()
        clock.advance(6 * 3600)
    ticks = sorted(storage.get_ticks(schedule.name, limit=100), key=lambda t: t.tick_time)
    # 06:00 Berlin is 05:00 UTC before 31 March and 04:00 UTC from then on.
    expected = [
        ("2024-03-25T05:00:00+00:00", "2024-03-24"),
        ("2024-03-26T05:00:00+00:00", "2024-03-25"),
        ("2024-03-27T05:00:00+00:00", "2024-03-26"),
        ("2024-03-28T05:00:00+00:00", "2024-03-27"),
        ("2024-03-29T05:00:00+00:00", "2024-03-28"),
        ("2024-03-30T05:00:00+00:00", "2024-03-29"),
        ("2024-03-31T04:00:00+00:00", "2024-03-30"),
        ("2024-04-01T04:00:00+00:00", "2024-03-31"),
        ("2024-04-02T04:00:00+00:00", "2024-04-01"),
        ("2024-04-03T04:00:00+00:00", "2024-04-02"),
        ("2024-04-04T04:00:00+00:00", "2024-04-03"),
        ("2024-04-05T04:00:00+00:00", "2024-04-04"),
        ("2024-04-06T04:00:00+00:00", "2024-04-05"),
        ("2024-04-07T04:00:00+00:00", "2024-04-06"),
    ]
    runs = {r.run_id: r for r in storage.list_runs(limit=100)}
    got = []
    for tick in ticks:
        (run_id,) = tick.run_ids
        got.append((tick.tick_time.isoformat(), runs[run_id].tags[PARTITION_TAG]))
    assert got == expected
    assert len(runs) == 14


def test_a_run_request_for_an_unknown_partition_fails_its_tick_with_a_clear_error(storage: Storage) -> None:
    daily = tg.DailyPartitionsDefinition(start_date="2024-01-01")

    @tg.asset(partitions_def=daily)
    def sales() -> int:
        return 1

    job = tg.define_asset_job("sales_job", "sales")

    @tg.sensor(target=job, default_status=tg.DefaultSensorStatus.RUNNING)
    def asks_for_the_future(context: tg.SensorEvaluationContext) -> tg.RunRequest:
        return tg.RunRequest(run_key="x", partition_key="2030-01-01")

    defs = tg.Definitions(assets=[sales], jobs=[job], sensors=[asks_for_the_future])
    beat = Beat(defs, storage, lambda refs: None, clock=FakeClock(datetime(2024, 2, 1, tzinfo=UTC)))
    beat.tick()
    (tick,) = storage.get_ticks("asks_for_the_future")
    assert tick.status == "FAILURE"
    assert "unknown partition key '2030-01-01'" in (tick.error or "")
    assert storage.list_runs() == []


def test_a_sensor_adds_dynamic_partitions_and_their_runs_in_one_tick(storage: Storage) -> None:
    files = tg.DynamicPartitionsDefinition(name="files")

    @tg.asset(partitions_def=files)
    def imported(context: tg.AssetExecutionContext) -> str:
        return context.partition_key

    job = tg.define_asset_job("import_job", "imported")
    batches = [["a.csv", "b.csv"], ["b.csv", "c.csv"]]

    @tg.sensor(target=job, default_status=tg.DefaultSensorStatus.RUNNING, minimum_interval_seconds=10)
    def new_files(context: tg.SensorEvaluationContext) -> tg.SensorResult:
        batch = batches[int(context.cursor or 0)]
        return tg.SensorResult(
            run_requests=[tg.RunRequest(run_key=name, partition_key=name) for name in batch],
            cursor=str(int(context.cursor or 0) + 1),
            dynamic_partitions_requests=[files.build_add_request(batch)],
        )

    defs = tg.Definitions(assets=[imported], jobs=[job], sensors=[new_files])
    clock = FakeClock(datetime(2024, 2, 1, tzinfo=UTC))
    beat = Beat(defs, storage, lambda refs: None, clock=clock)
    beat.tick()
    clock.advance(11)
    beat.tick()
    assert storage.dynamic_partition_keys("files") == ["a.csv", "b.csv", "c.csv"]
    runs = storage.list_runs(limit=10)
    assert sorted(r.tags[PARTITION_TAG] for r in runs) == ["a.csv", "b.csv", "c.csv"]
    second = storage.get_ticks("new_files")[0]
    assert second.new_run_keys == ("c.csv",) and second.skipped_run_keys == ("b.csv",)
    assert storage.get_instigator("new_files").cursor == "2"  # type: ignore[union-attr]
    storage.delete_dynamic_partitions("files", ["a.csv"])
    assert storage.dynamic_partition_keys("files") == ["b.csv", "c.csv"]
    with pytest.raises(tg.PartitionKeyError, match=r"unknown partition key 'a\.csv'"):
        defs.plan("import_job", partition_key="a.csv", dynamic_keys=storage.dynamic_partition_keys)


@pytest.mark.parametrize(
    ("key", "expected_first", "expected_last"),
    [
        ("2024-03-03", "2024-02-26", "2024-03-03"),  # across a month end in a leap year
        ("2024-01-02", "2023-12-27", "2024-01-02"),  # across a year end
        ("2023-03-01", "2023-02-23", "2023-03-01"),  # February of a common year
    ],
)
def test_a_rolling_seven_day_window_reads_exactly_seven_upstream_partitions(
    key: str, expected_first: str, expected_last: str
) -> None:
    daily = tg.DailyPartitionsDefinition(start_date="2023-01-01")
    keys = tg.TimeWindowPartitionMapping(start_offset=-6).upstream_keys(key, daily, daily)
    assert len(keys) == 7
    assert (keys[0], keys[-1]) == (expected_first, expected_last)
    assert keys == sorted(keys) and len(set(keys)) == 7


def test_a_rolling_window_near_the_first_partition_is_cut_at_the_start() -> None:
    daily = tg.DailyPartitionsDefinition(start_date="2024-01-01")
    assert tg.TimeWindowPartitionMapping(start_offset=-6).upstream_keys("2024-01-03", daily, daily) == [
        "2024-01-01",
        "2024-01-02",
        "2024-01-03",
    ]


# -- the fast paths agree with the slow ones ---------------------------------------------------

_ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]


@settings(max_examples=60, deadline=None)
@given(
    after=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2030, 12, 31)),
    minute=st.integers(0, 59),
    hour=st.one_of(st.just("*"), st.integers(0, 23).map(str)),
)
def test_arithmetic_wall_times_match_croniter(after: datetime, minute: int, hour: str) -> None:
    from croniter import croniter

    from tidegate.definitions.cron import _wall_times

    cron = f"{minute} {hour} * * *"
    expected = croniter(cron, after)
    fast = _wall_times(cron, after)
    for _ in range(30):
        assert next(fast) == expected.get_next(datetime)


@settings(max_examples=25, deadline=None)
@given(
    zone=st.sampled_from(_ZONES),
    hourly=st.booleans(),
    start_days=st.integers(0, 3000),
    spans=st.lists(st.integers(0, 400), min_size=1, max_size=4),
    end_offset=st.integers(-1, 2),
)
def test_cached_windows_match_a_plain_cron_walk(
    zone: str, hourly: bool, start_days: int, spans: list[int], end_offset: int
) -> None:
    """Keys, lookups and ranges from the tick cache equal a fresh walk of the cron, however the
    cache was filled before (times asked in any order)."""
    from tidegate.definitions.cron import cron_ticks

    start = datetime(2015, 1, 1) + timedelta(days=start_days)
    factory = tg.HourlyPartitionsDefinition if hourly else tg.DailyPartitionsDefinition
    fmt = "%Y-%m-%d-%H:%M" if hourly else "%Y-%m-%d"
    definition = factory(start_date=start.strftime(fmt), timezone=zone, end_offset=end_offset)
    step = timedelta(hours=1 if hourly else 24)
    for span in spans:
        now = start.replace(tzinfo=ZoneInfo(zone)) + span * step + timedelta(minutes=7)
        ticks = cron_ticks(
            definition.cron_schedule, ZoneInfo(zone), start.replace(tzinfo=ZoneInfo(zone)) - timedelta(microseconds=1)
        )
        instants = [next(ticks)]
        while instants[-1] <= now:
            instants.append(next(ticks))
        ended = len(instants) - 2  # the last instant is past ``now``
        for _ in range(max(0, end_offset)):
            instants.append(next(ticks))
        expected = [definition.fmt_key(t) for t in instants[: max(0, ended + end_offset)]]
        keys = definition.get_partition_keys(now)
        assert keys == expected
        for index in {0, len(keys) // 2, len(keys) - 1} if keys else set():
            assert keys.index(keys[index]) == definition.partition_index(keys[index], now)
            assert definition.keys_in_range(keys[0], keys[index], now) == keys[: index + 1]
        if keys:
            with pytest.raises(tg.PartitionKeyError, match="unknown partition key"):
                definition.validate_key(definition.fmt_key(instants[len(keys)] + 100 * step), now)


def test_a_mapping_onto_a_bounded_upstream_reads_only_windows_before_its_end() -> None:
    """An upstream with an end_date: the mapping looks at every upstream window (not only those
    ended when the downstream one ends) and stops at the end instead of walking time forever."""
    upstream = tg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-10")
    downstream = tg.DailyPartitionsDefinition(start_date="2024-01-01")
    rolling = tg.TimeWindowPartitionMapping(start_offset=-2, end_offset=1)
    assert rolling.upstream_keys("2024-01-05", downstream, upstream) == [
        "2024-01-03",
        "2024-01-04",
        "2024-01-05",
        "2024-01-06",
    ]
    assert rolling.upstream_keys("2024-01-09", downstream, upstream) == ["2024-01-07", "2024-01-08", "2024-01-09"]
    assert rolling.upstream_keys("2024-02-01", downstream, upstream) == []
    assert upstream.last_ended_key(datetime(2030, 1, 1, tzinfo=UTC)) == "2024-01-09"
    assert upstream.get_partition_keys(datetime(2030, 1, 1, tzinfo=UTC))[-1] == "2024-01-09"


def test_a_day_reads_its_week_once_the_week_has_ended() -> None:
    """As in Dagster: a downstream window maps to every upstream window overlapping it that
    exists at ``current_time``, not only those that had ended when the downstream one ended
    (which left every day but a week's last reading no week at all, ever)."""
    weekly = tg.WeeklyPartitionsDefinition(start_date="2024-01-07")
    daily = tg.DailyPartitionsDefinition(start_date="2024-01-07")
    mapping = tg.TimeWindowPartitionMapping()
    during = datetime(2024, 1, 17, 12, tzinfo=UTC)  # the week of the 14th runs until the 21st
    after = datetime(2024, 1, 21, 0, tzinfo=UTC)
    assert mapping.upstream_keys("2024-01-15", daily, weekly, during) == []
    assert [mapping.upstream_keys(f"2024-01-{d}", daily, weekly, after) for d in range(14, 21)] == [["2024-01-14"]] * 7
    # the next day, read with end_offset=1, once it exists
    tomorrow = tg.TimeWindowPartitionMapping(end_offset=1)
    assert tomorrow.upstream_keys("2024-01-15", daily, daily, datetime(2024, 1, 16, 12, tzinfo=UTC)) == ["2024-01-15"]
    assert tomorrow.upstream_keys("2024-01-15", daily, daily, datetime(2024, 1, 17, tzinfo=UTC)) == [
        "2024-01-15",
        "2024-01-16",
    ]
