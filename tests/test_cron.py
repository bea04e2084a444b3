"""Cron ticks in a timezone, across daylight-saving transitions (pure: no storage, no beat).

Every expected tick is written out literally, as the UTC instant and the local wall time it
stands for, so a change of rule shows up as a diff of this file. The rules are the ones in
``tidegate/definitions/cron.py``'s docstring.
"""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

import tidegate as tg
from tidegate.definitions.cron import cron_ticks, next_tick, ticks_between


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _ticks(cron: str, tz: str, after: str, until: str) -> list[str]:
    """The ticks in (after, until] as 'UTC instant = local wall time' strings."""
    zone = ZoneInfo(tz)
    return [
        f"{t.strftime('%Y-%m-%d %H:%M')}Z = {t.astimezone(zone).isoformat()}"
        for t in ticks_between(cron, zone, _utc(after), _utc(until))
    ]


# -- Europe/Berlin: CET (+01:00) / CEST (+02:00); 2024-03-31 02:00 -> 03:00, 2024-10-27 03:00 -> 02:00


def test_berlin_daily_tick_in_the_spring_gap_fires_at_the_end_of_the_gap() -> None:
    assert _ticks("30 2 * * *", "Europe/Berlin", "2024-03-29 12:00", "2024-04-02 00:00") == [
        "2024-03-30 01:30Z = 2024-03-30T02:30:00+01:00",
        "2024-03-31 01:00Z = 2024-03-31T03:00:00+02:00",  # 02:30 does not exist: first instant after the gap
        "2024-04-01 00:30Z = 2024-04-01T02:30:00+02:00",
    ]


def test_berlin_daily_tick_in_the_repeated_hour_fires_once_at_its_later_occurrence() -> None:
    assert _ticks("30 2 * * *", "Europe/Berlin", "2024-10-25 12:00", "2024-10-29 00:00") == [
        "2024-10-26 00:30Z = 2024-10-26T02:30:00+02:00",
        "2024-10-27 01:30Z = 2024-10-27T02:30:00+01:00",  # not at 00:30Z (02:30+02:00), as Dagster
        "2024-10-28 01:30Z = 2024-10-28T02:30:00+01:00",
    ]


def test_the_issue_examples_fire_when_dagster_fires() -> None:
    # `0 2 * * *` in Europe/Berlin on 2023-10-29 and `0 1 5 * *` in US/Central on 2023-11-05:
    # Dagster fires at 02:00+01:00 and 01:00-06:00, the second pass of the repeated hour.
    assert _ticks("0 2 * * *", "Europe/Berlin", "2023-10-28 12:00", "2023-10-29 12:00") == [
        "2023-10-29 01:00Z = 2023-10-29T02:00:00+01:00",
    ]
    assert _ticks("0 1 5 * *", "US/Central", "2023-10-06 00:00", "2023-11-30 00:00") == [
        "2023-11-05 07:00Z = 2023-11-05T01:00:00-06:00",
    ]


def test_berlin_hourly_schedule_skips_the_missing_hour_in_spring() -> None:
    assert _ticks("0 * * * *", "Europe/Berlin", "2024-03-30 22:30", "2024-03-31 03:00") == [
        "2024-03-30 23:00Z = 2024-03-31T00:00:00+01:00",
        "2024-03-31 00:00Z = 2024-03-31T01:00:00+01:00",
        "2024-03-31 01:00Z = 2024-03-31T03:00:00+02:00",
        "2024-03-31 02:00Z = 2024-03-31T04:00:00+02:00",
        "2024-03-31 03:00Z = 2024-03-31T05:00:00+02:00",
    ]


def test_berlin_hourly_schedule_fires_in_both_passes_of_the_repeated_hour() -> None:
    assert _ticks("30 * * * *", "Europe/Berlin", "2024-10-26 22:00", "2024-10-27 03:00") == [
        "2024-10-26 22:30Z = 2024-10-27T00:30:00+02:00",
        "2024-10-26 23:30Z = 2024-10-27T01:30:00+02:00",
        "2024-10-27 00:30Z = 2024-10-27T02:30:00+02:00",
        "2024-10-27 01:30Z = 2024-10-27T02:30:00+01:00",
        "2024-10-27 02:30Z = 2024-10-27T03:30:00+01:00",
    ]


def test_berlin_weekly_sunday_schedule_across_spring_forward() -> None:
    assert _ticks("0 2 * * 0", "Europe/Berlin", "2024-03-24 00:00", "2024-04-08 00:00") == [
        "2024-03-24 01:00Z = 2024-03-24T02:00:00+01:00",
        "2024-03-31 01:00Z = 2024-03-31T03:00:00+02:00",
        "2024-04-07 00:00Z = 2024-04-07T02:00:00+02:00",
    ]


def test_several_wall_times_in_one_gap_collapse_into_one_tick() -> None:
    # 02:00 and 02:30 both fall in the gap; 03:00 is where they land: one tick, not three.
    assert _ticks("0,30 2,3 * * *", "Europe/Berlin", "2024-03-30 22:00", "2024-03-31 03:00") == [
        "2024-03-31 01:00Z = 2024-03-31T03:00:00+02:00",
        "2024-03-31 01:30Z = 2024-03-31T03:30:00+02:00",
    ]


def test_next_tick_from_inside_the_repeated_hour() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    # 00:45Z is 02:45+02:00, the first pass: the daily 02:30 fires in the second pass, at 01:30Z.
    assert next_tick("30 2 * * *", berlin, _utc("2024-10-27 00:45")) == _utc("2024-10-27 01:30")
    # 01:45Z is 02:45+01:00, the second pass: today's 02:30 has fired, the next is tomorrow's.
    assert next_tick("30 2 * * *", berlin, _utc("2024-10-27 01:45")) == _utc("2024-10-28 01:30")
    # 00:45Z is 02:45+02:00, the first pass: an hourly schedule still has 02:00+01:00 ahead.
    assert next_tick("0 * * * *", berlin, _utc("2024-10-27 00:45")) == _utc("2024-10-27 01:00")
    # strictly after: a tick at exactly `after` is not returned
    assert next_tick("0 * * * *", berlin, _utc("2024-10-27 01:00")) == _utc("2024-10-27 02:00")


def test_quarter_hourly_schedule_just_before_the_clock_goes_back() -> None:
    # From 02:50+02:00 the next ticks are the second pass's 02:00 and 02:15, wall times that
    # read earlier than the wall time of `after` itself.
    assert _ticks("*/15 * * * *", "Europe/Berlin", "2024-10-27 00:50", "2024-10-27 01:20") == [
        "2024-10-27 01:00Z = 2024-10-27T02:00:00+01:00",
        "2024-10-27 01:15Z = 2024-10-27T02:15:00+01:00",
    ]
    assert _ticks("*/15 * * * *", "America/New_York", "2024-11-03 05:50", "2024-11-03 06:20") == [
        "2024-11-03 06:00Z = 2024-11-03T01:00:00-05:00",
        "2024-11-03 06:15Z = 2024-11-03T01:15:00-05:00",
    ]


def test_next_tick_of_a_per_minute_schedule_is_cheap() -> None:
    """The beat calls next_tick several times per due schedule and tick."""
    berlin = ZoneInfo("Europe/Berlin")
    after = _utc("2024-10-26 23:00")  # across the fall-back hour, the most expensive case
    started = time.perf_counter()
    ticks = [next_tick("* * * * *", berlin, after + timedelta(minutes=m, seconds=30)) for m in range(200)]
    assert time.perf_counter() - started < 3.0
    assert ticks[-1] == after + timedelta(minutes=200)


# -- America/New_York: EST (-05:00) / EDT (-04:00); 2024-03-10 02:00 -> 03:00, 2024-11-03 02:00 -> 01:00


def test_new_york_daily_tick_in_the_spring_gap() -> None:
    assert _ticks("0 2 * * *", "America/New_York", "2024-03-08 12:00", "2024-03-12 00:00") == [
        "2024-03-09 07:00Z = 2024-03-09T02:00:00-05:00",
        "2024-03-10 07:00Z = 2024-03-10T03:00:00-04:00",
        "2024-03-11 06:00Z = 2024-03-11T02:00:00-04:00",
    ]


def test_new_york_daily_tick_in_the_repeated_hour() -> None:
    assert _ticks("30 1 * * *", "America/New_York", "2024-11-01 12:00", "2024-11-05 00:00") == [
        "2024-11-02 05:30Z = 2024-11-02T01:30:00-04:00",
        "2024-11-03 06:30Z = 2024-11-03T01:30:00-05:00",  # the later 01:30, not 05:30Z (-04:00)
        "2024-11-04 06:30Z = 2024-11-04T01:30:00-05:00",
    ]


def test_new_york_hourly_schedule_across_spring_forward() -> None:
    assert _ticks("*/30 * * * *", "America/New_York", "2024-03-10 05:50", "2024-03-10 08:00") == [
        "2024-03-10 06:00Z = 2024-03-10T01:00:00-05:00",
        "2024-03-10 06:30Z = 2024-03-10T01:30:00-05:00",
        "2024-03-10 07:00Z = 2024-03-10T03:00:00-04:00",  # 02:00 and 02:30 do not exist
        "2024-03-10 07:30Z = 2024-03-10T03:30:00-04:00",
        "2024-03-10 08:00Z = 2024-03-10T04:00:00-04:00",
    ]


def test_new_york_hourly_schedule_across_fall_back() -> None:
    assert _ticks("0 * * * *", "America/New_York", "2024-11-03 03:30", "2024-11-03 08:00") == [
        "2024-11-03 04:00Z = 2024-11-03T00:00:00-04:00",
        "2024-11-03 05:00Z = 2024-11-03T01:00:00-04:00",
        "2024-11-03 06:00Z = 2024-11-03T01:00:00-05:00",
        "2024-11-03 07:00Z = 2024-11-03T02:00:00-05:00",
        "2024-11-03 08:00Z = 2024-11-03T03:00:00-05:00",
    ]


# -- Asia/Kolkata: +05:30 all year, no DST


def test_kolkata_daily_schedule_on_a_half_hour_offset() -> None:
    # The dates of the US spring transition: nothing happens in Kolkata.
    assert _ticks("0 6 * * *", "Asia/Kolkata", "2024-03-09 00:00", "2024-03-12 00:00") == [
        "2024-03-09 00:30Z = 2024-03-09T06:00:00+05:30",
        "2024-03-10 00:30Z = 2024-03-10T06:00:00+05:30",
        "2024-03-11 00:30Z = 2024-03-11T06:00:00+05:30",
    ]


def test_kolkata_six_hourly_schedule_crosses_the_utc_date_line_at_18_30() -> None:
    assert _ticks("15 */6 * * *", "Asia/Kolkata", "2024-10-26 18:00", "2024-10-27 18:45") == [
        "2024-10-26 18:45Z = 2024-10-27T00:15:00+05:30",
        "2024-10-27 00:45Z = 2024-10-27T06:15:00+05:30",
        "2024-10-27 06:45Z = 2024-10-27T12:15:00+05:30",
        "2024-10-27 12:45Z = 2024-10-27T18:15:00+05:30",
        "2024-10-27 18:45Z = 2024-10-28T00:15:00+05:30",
    ]


def test_kolkata_midnight_is_the_previous_utc_day() -> None:
    kolkata = ZoneInfo("Asia/Kolkata")
    assert next_tick("0 0 * * *", kolkata, _utc("2024-01-01 00:00")) == _utc("2024-01-01 18:30")
    assert next_tick("0 0 1 * *", kolkata, _utc("2024-01-31 18:29")) == _utc("2024-01-31 18:30")


# -- the same instants as Dagster
#
# Expected sequences from Dagster's own DST tests (DST_PARAMS in
# python_modules/dagster/dagster_tests/scheduler_tests/test_cron_string_iterator.py, used by
# test_dst_transition_advances and test_reversed_dst_transition_advances), written as local
# wall times; "+1" marks Dagster's fold=1, the second pass of a repeated hour.

DAGSTER_SEQUENCES = [
    # daily, fall back (Europe/Berlin repeats 02:00-03:00 on 2023-10-29)
    ("Europe/Berlin", "45 1 * * *", ["2023-10-28 01:45", "2023-10-29 01:45", "2023-10-30 01:45"]),
    ("Europe/Berlin", "0 2 * * *", ["2023-10-28 02:00", "2023-10-29 02:00 +1", "2023-10-30 02:00"]),
    ("Europe/Berlin", "30 2 * * *", ["2023-10-28 02:30", "2023-10-29 02:30 +1", "2023-10-30 02:30"]),
    ("Europe/Berlin", "0 3 * * *", ["2023-10-28 03:00", "2023-10-29 03:00", "2023-10-30 03:00"]),
    # Lord Howe moves its clock by 30 minutes: 02:00 -> 02:30 on 2023-10-01
    ("Australia/Lord_Howe", "0 2 * * *", ["2023-09-30 02:00", "2023-10-01 02:30", "2023-10-02 02:00"]),
    # hourly, fall back: both passes
    (
        "Europe/Berlin",
        "45 * * * *",
        ["2023-10-29 01:45", "2023-10-29 02:45", "2023-10-29 02:45 +1", "2023-10-29 03:45"],
    ),
    (
        "Europe/Berlin",
        "*/15 * * * *",
        [
            "2023-10-29 01:45",
            *(f"2023-10-29 02:{m:02d}" for m in (0, 15, 30, 45)),
            *(f"2023-10-29 02:{m:02d} +1" for m in (0, 15, 30, 45)),
            "2023-10-29 03:00",
        ],
    ),
    # weekly and monthly, fall back (US/Central repeats 01:00-02:00 on 2023-11-05)
    ("Europe/Berlin", "0 2 * * 0", ["2023-10-22 02:00", "2023-10-29 02:00 +1", "2023-11-05 02:00"]),
    ("Europe/Berlin", "30 2 * * 0", ["2023-10-22 02:30", "2023-10-29 02:30 +1", "2023-11-05 02:30"]),
    ("US/Central", "45 0 5 * *", ["2023-10-05 00:45", "2023-11-05 00:45", "2023-12-05 00:45"]),
    ("US/Central", "0 1 5 * *", ["2023-10-05 01:00", "2023-11-05 01:00 +1", "2023-12-05 01:00"]),
    ("US/Central", "30 1 5 * *", ["2023-10-05 01:30", "2023-11-05 01:30 +1", "2023-12-05 01:30"]),
    ("US/Central", "0 2 5 * *", ["2023-10-05 02:00", "2023-11-05 02:00 +1", "2023-12-05 02:00"]),
    # spring forward (Europe/Berlin skips 02:00-03:00 on 2023-03-26)
    ("Europe/Berlin", "0 1 * * *", ["2023-03-25 01:00", "2023-03-26 01:00", "2023-03-27 01:00"]),
    ("Europe/Berlin", "0 2 * * *", ["2023-03-25 02:00", "2023-03-26 03:00", "2023-03-27 02:00"]),
    ("Europe/Berlin", "30 2 * * *", ["2023-03-25 02:30", "2023-03-26 03:00", "2023-03-27 02:30"]),
    ("Europe/Berlin", "30 2 * * 0", ["2023-03-19 02:30", "2023-03-26 03:00", "2023-04-02 02:30"]),
    ("Europe/Berlin", "0 2 26 * *", ["2023-02-26 02:00", "2023-03-26 03:00", "2023-04-26 02:00"]),
    ("Europe/Berlin", "0 * * * *", ["2023-03-26 00:00", "2023-03-26 01:00", "2023-03-26 03:00", "2023-03-26 04:00"]),
    (
        "Europe/Berlin",
        "*/15 * * * *",
        ["2023-03-26 01:30", "2023-03-26 01:45", "2023-03-26 03:00", "2023-03-26 03:15"],
    ),
]


def _wall(text: str, zone: ZoneInfo) -> datetime:
    wall, _, fold = text.partition(" +")
    return datetime.fromisoformat(wall).replace(tzinfo=zone, fold=1 if fold else 0).astimezone(UTC)


@pytest.mark.parametrize(("tz", "cron", "walls"), DAGSTER_SEQUENCES)
def test_ticks_match_dagsters_dst_sequences(tz: str, cron: str, walls: list[str]) -> None:
    zone = ZoneInfo(tz)
    expected = [_wall(w, zone) for w in walls]
    for i in range(len(expected) - 1):
        # from just before a tick: that tick and every one after it
        ticks = cron_ticks(cron, zone, expected[i] - timedelta(seconds=1))
        assert [next(ticks) for _ in expected[i:]] == expected[i:], (tz, cron, walls[i])
        # from eleven points between two ticks (both ends included): the next tick onwards
        gap = expected[i + 1] - expected[i]
        for step in range(11):
            after = expected[i] + gap * step / 11
            ticks = cron_ticks(cron, zone, after)
            assert [next(ticks) for _ in expected[i + 1 :]] == expected[i + 1 :], (tz, cron, after)


def test_any_hour_field_that_matches_every_hour_keeps_both_passes() -> None:
    # Dagster expands the hour field: '*/1' and '0-23' repeat every hour as '*' does.
    for cron in ("0 * * * *", "0 */1 * * *", "0 0-23 * * *"):
        assert _ticks(cron, "Europe/Berlin", "2024-10-26 23:30", "2024-10-27 01:30") == [
            "2024-10-27 00:00Z = 2024-10-27T02:00:00+02:00",
            "2024-10-27 01:00Z = 2024-10-27T02:00:00+01:00",
        ], cron
    # every other hour does not: 02:00 is one wall time, fired once, in the second pass
    assert _ticks("0 */2 * * *", "Europe/Berlin", "2024-10-26 23:30", "2024-10-27 01:30") == [
        "2024-10-27 01:00Z = 2024-10-27T02:00:00+01:00",
    ]


# -- general properties


def test_ticks_are_strictly_increasing_and_unique_through_a_whole_year() -> None:
    for tz, hourly_per_year in (("Europe/Berlin", 8784), ("America/New_York", 8784), ("Asia/Kolkata", 8784)):
        zone = ZoneInfo(tz)
        # 2024 is a leap year: 366 days x 24 elapsed hours, whatever the zone does with its clocks.
        hourly = ticks_between("0 * * * *", zone, _utc("2023-12-31 23:59"), _utc("2024-12-31 23:58"))
        assert len(hourly) == hourly_per_year, tz
        assert all(b - a == (hourly[1] - hourly[0]) for a, b in itertools.pairwise(hourly)), tz
        daily = ticks_between("30 2 * * *", zone, _utc("2023-12-31 12:00"), _utc("2024-12-31 12:00"))
        assert len(daily) == 366, tz  # one per day, including both transition days
        assert daily == sorted(set(daily))


def test_cron_ticks_is_an_endless_iterator_of_aware_utc_instants() -> None:
    ticks = cron_ticks("0 0 29 2 *", ZoneInfo("Europe/Berlin"), _utc("2025-01-01 00:00"))
    assert [next(ticks) for _ in range(2)] == [_utc("2028-02-28 23:00"), _utc("2032-02-28 23:00")]


# -- validation at definition time


@pytest.mark.parametrize(
    ("cron", "fragment"),
    [
        ("0 6 * *", "expected 5 fields, got 4"),
        ("0 6 * * * *", "expected 5 fields, got 6"),
        ("61 * * * *", "invalid cron '61 * * * *'"),
        ("0 25 * * *", "invalid cron '0 25 * * *'"),
        ("0 6 * * 8", "invalid cron '0 6 * * 8'"),
        ("a b c d e", "invalid cron 'a b c d e'"),
        ("0 6 31 2 *", "invalid cron '0 6 31 2 *'"),  # valid fields, but February never has a 31st
    ],
)
def test_an_invalid_cron_fails_at_definition_time_naming_the_schedule(cron: str, fragment: str) -> None:
    with pytest.raises(tg.InvalidDefinitionError) as raised:
        tg.ScheduleDefinition("daily_import", cron_schedule=cron, target="*")
    assert "schedule 'daily_import'" in str(raised.value)
    assert fragment in str(raised.value)

    with pytest.raises(tg.InvalidDefinitionError, match="schedule 'decorated'"):

        @tg.schedule(cron, target="*")
        def decorated(_context: tg.ScheduleEvaluationContext) -> None:
            return None


@pytest.mark.parametrize("tz", ["Mars/Olympus_Mons", "europe/berlin", "../etc/passwd", "CEST"])
def test_an_unknown_timezone_fails_at_definition_time_naming_the_schedule(tz: str) -> None:
    with pytest.raises(tg.InvalidDefinitionError) as raised:
        tg.ScheduleDefinition("daily_import", cron_schedule="0 6 * * *", target="*", execution_timezone=tz)
    assert "schedule 'daily_import'" in str(raised.value)
    assert f"unknown timezone {tz!r}" in str(raised.value)


def test_a_valid_schedule_keeps_its_cron_and_timezone() -> None:
    @tg.schedule("0 6 * * 1-5", target="*", execution_timezone="Asia/Kolkata", tags={"team": "ops"})
    def weekday_import(_context: tg.ScheduleEvaluationContext) -> tg.RunRequest:
        """Import on weekdays."""
        return tg.RunRequest()

    assert weekday_import.name == "weekday_import"
    assert weekday_import.cron_schedule == "0 6 * * 1-5"
    assert weekday_import.execution_timezone == "Asia/Kolkata"
    assert weekday_import.description == "Import on weekdays."
    assert weekday_import.default_status is tg.DefaultScheduleStatus.STOPPED
    default_utc = tg.ScheduleDefinition("plain", cron_schedule="0 6 * * *", target="*")
    assert default_utc.execution_timezone == "UTC"


def test_dagster_cron_aliases_expand() -> None:
    from tidegate.definitions.cron import validate_cron

    assert validate_cron("schedule 'x'", "@daily") == "0 0 * * *"
    assert validate_cron("schedule 'x'", "@hourly") == "0 * * * *"
    assert validate_cron("schedule 'x'", "@weekly") == "0 0 * * 0"
    assert validate_cron("schedule 'x'", "@monthly") == "0 0 1 * *"
