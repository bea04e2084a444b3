"""Cron schedules in a timezone, with explicit daylight-saving rules.

Ticks are computed on local wall-clock time (croniter over naive datetimes), then placed on
the time line:

* A wall time that does not exist (spring forward, e.g. 02:30 in Europe/Berlin on the last
  Sunday of March) fires at the first instant after the gap (03:00 local) — unless the
  schedule fires every hour (hour field ``*``), whose missing hour is simply absent.
* A wall time that happens twice (fall back, e.g. 02:30 in Europe/Berlin on the last Sunday
  of October) fires once, at its later occurrence (02:30+01:00) — unless the schedule fires
  every hour (hour field ``*``), which then fires in both occurrences, so it keeps one tick per
  elapsed hour.
* Zones without DST (Asia/Kolkata, +05:30) have neither case; half-hour offsets are just
  offsets.

These are Dagster's rules (``dagster._utils.schedules``: a repeated time takes the later of its
two instants, a missing one moves to the end of the gap, a schedule that repeats every hour
keeps both passes and skips the gap), so a schedule ported from Dagster fires at the same
instants. Each tick is identified by its UTC instant, which is what the database keys on.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, CroniterBadDateError, croniter

from tidegate.definitions.limits import check_cron
from tidegate.errors import InvalidDefinitionError

ALIASES = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}


def validate_cron(label: str, cron: str) -> str:
    """Return the cron string (aliases such as ``@daily`` expanded) or raise naming ``label``."""
    if not isinstance(cron, str):
        raise InvalidDefinitionError(f"{label}: cron_schedule must be a string, got {cron!r}")
    cron = check_cron(label, ALIASES.get(cron.strip(), cron))
    fields = cron.split()
    if len(fields) != 5:
        raise InvalidDefinitionError(f"{label}: invalid cron {cron!r} (expected 5 fields, got {len(fields)})")
    try:
        croniter(cron)
    except (CroniterBadCronError, ValueError, KeyError) as exc:
        raise InvalidDefinitionError(f"{label}: invalid cron {cron!r} ({exc})") from None
    try:  # valid fields that never match a date (e.g. February 31st) would fail in the beat
        croniter(cron, datetime(2000, 1, 1)).get_next(datetime)
    except CroniterBadDateError:
        raise InvalidDefinitionError(f"{label}: invalid cron {cron!r} (it never fires: no such date)") from None
    return cron


def validate_timezone(label: str, name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidDefinitionError(
            f"{label}: unknown timezone {name!r} (expected an IANA name such as 'Europe/Berlin')"
        ) from None


def _exists(wall: datetime, tz: ZoneInfo) -> bool:
    aware = wall.replace(tzinfo=tz)
    return aware.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == wall


def _instants(wall: datetime, tz: ZoneInfo, hourly: bool) -> list[datetime]:
    """The UTC instants at which the wall time ``wall`` fires."""
    first = wall.replace(tzinfo=tz)
    second = wall.replace(tzinfo=tz, fold=1)
    if first.utcoffset() == second.utcoffset():  # neither in a gap nor repeated: the common case
        return [first.astimezone(UTC)]
    if not _exists(wall, tz):
        if hourly:
            return []
        # fold=0 reads the wall time with the offset before the gap; the transition instant
        # is the first existing minute at or after it.
        probe = wall
        while not _exists(probe, tz):
            probe += timedelta(minutes=1)
        return [probe.replace(tzinfo=tz).astimezone(UTC)]
    if hourly:  # repeated: an hourly schedule fires in both occurrences
        return [first.astimezone(UTC), second.astimezone(UTC)]
    return [second.astimezone(UTC)]  # repeated: once, at the later occurrence (as Dagster)


def repeats_every_hour(cron: str) -> bool:
    """Whether ``cron``'s hour field matches every hour (``*``, ``*/1``, ``0-23``): such a
    schedule keeps one tick per elapsed hour across DST transitions."""
    hours: list[int | str] = croniter.expand(cron)[0][1]
    return hours == ["*"]


def cron_ticks(cron: str, tz: ZoneInfo, after: datetime) -> Iterator[datetime]:
    """Tick instants (aware, UTC) strictly after ``after``, in order, forever."""
    hourly = repeats_every_hour(cron)
    # Start from the earlier of the wall times of ``after`` read with today's and with
    # tomorrow's offset: a clock turned back later today repeats wall times before
    # ``after``'s own. (Starting a whole day early costs 1,440 steps for '* * * * *'.)
    today = after.astimezone(tz).replace(tzinfo=None)
    tomorrow = (after + timedelta(days=1)).astimezone(tz).replace(tzinfo=None) - timedelta(days=1)
    last: datetime | None = None
    walls = _wall_times(cron, min(today, tomorrow) - timedelta(minutes=1))
    for wall in walls:
        instants = _instants(wall, tz, hourly)
        if len(instants) == 2:  # an hourly schedule reached a repeated wall time
            instants = _both_passes(instants, walls, tz)
        for instant in instants:
            if instant > after and (last is None or instant > last):
                last = instant
                yield instant


def _both_passes(instants: list[datetime], walls: Iterator[datetime], tz: ZoneInfo) -> list[datetime]:
    """Both passes of a repeated interval, in time order: ``instants`` (the two of its first
    wall time) and those of the following wall times, up to the first wall time read after the
    second pass has begun. ('*/15 * * * *' fires at 02:00, 02:15, 02:30, 02:45 of the first
    pass, then again of the second, as Dagster does.)"""
    batch = list(instants)
    second_pass = instants[1]
    for wall in walls:
        following = _instants(wall, tz, hourly=True)
        batch.extend(following)
        if following and following[0] >= second_pass:
            break
    return sorted(batch)


def _wall_times(cron: str, after: datetime) -> Iterator[datetime]:
    """Naive wall times matching ``cron`` strictly after ``after``, in order, forever.

    Every hour at a fixed minute and every day at a fixed time (what the hourly and daily
    partitions and schedules use) are arithmetic sequences of wall times, generated directly:
    croniter costs ~30 microseconds a step, too much for 100,000 hourly partitions. Any other
    cron goes through croniter."""
    minute, hour, *rest = cron.split()
    if minute.isdigit() and (hour == "*" or hour.isdigit()) and rest == ["*", "*", "*"]:
        step = timedelta(hours=1) if hour == "*" else timedelta(days=1)
        wall = after.replace(minute=int(minute), second=0, microsecond=0)
        if hour != "*":
            wall = wall.replace(hour=int(hour))
        while wall > after:
            wall -= step
        while True:
            wall += step
            yield wall
    walls = croniter(cron, after)
    while True:
        yield walls.get_next(datetime)


def next_tick(cron: str, tz: ZoneInfo, after: datetime) -> datetime:
    return next(cron_ticks(cron, tz, after))


def ticks_between(cron: str, tz: ZoneInfo, after: datetime, until: datetime) -> list[datetime]:
    """Ticks in ``(after, until]``."""
    found = []
    for instant in cron_ticks(cron, tz, after):
        if instant > until:
            break
        found.append(instant)
    return found
