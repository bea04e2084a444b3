"""Partitions: time windows, static keys and dynamic keys (kept in SQL), and how a
downstream partition maps to upstream partitions.

A time-window partition's key is its window's start, formatted with ``fmt``; the partition
exists once its window has ended (``end_offset`` > 0 also admits that many windows after the
last ended one, e.g. the one in progress). Windows follow the cron schedule on local wall
time, with the DST rules of :mod:`tidegate.definitions.cron`.
"""

from __future__ import annotations

import bisect
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from tidegate.definitions.cron import cron_ticks, validate_cron, validate_timezone
from tidegate.definitions.limits import MAX_PARTITION_KEY_LENGTH, check_name, shown
from tidegate.errors import InvalidDefinitionError, InvalidPartitionKeyError, PartitionKeyError, TidegateError

# Control characters (C0, DEL, C1), line and paragraph separators, lone surrogates (no UTF-8
# for them); commas (lists: --partitions a,b), brackets (step names: asset[key]), backslashes
# (a path separator on Windows). Dagster refuses \0, \a, \b, \t, \n, \v, \f and \r, a subset.
_FORBIDDEN_CHARACTER = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff,\[\]\\]")
# '/' may separate segments (Dagster allows 'a/b'), but no segment may be empty, '.' or '..'
_PATH_OUT_OF_FOLDER = re.compile(r"^/|//|/$|(?:^|/)\.\.?(?:/|$)")


@dataclass(frozen=True)
class TimeWindow:
    start: datetime  # timezone-aware, in the definition's timezone
    end: datetime


@dataclass(frozen=True)
class PartitionKeyRange:
    start: str
    end: str


DynamicKeys = Callable[[str], Sequence[str]]  # dynamic partitions name -> its keys


class PartitionsDefinition:
    """Base of every partitions definition."""

    def get_partition_keys(
        self, current_time: datetime | None = None, dynamic_keys: DynamicKeys | None = None
    ) -> list[str]:
        raise NotImplementedError

    def validate_key(
        self, key: str, current_time: datetime | None = None, dynamic_keys: DynamicKeys | None = None
    ) -> str:
        if not isinstance(key, str) or key not in self.get_partition_keys(current_time, dynamic_keys):
            raise PartitionKeyError(f"{self.describe()}: unknown partition key {key!r}")
        return key

    def keys_in_range(
        self, start: str, end: str, current_time: datetime | None = None, dynamic_keys: DynamicKeys | None = None
    ) -> list[str]:
        keys = self.get_partition_keys(current_time, dynamic_keys)
        for key in (start, end):
            if key not in keys:
                raise PartitionKeyError(f"{self.describe()}: unknown partition key {key!r}")
        first, last = keys.index(start), keys.index(end)
        if first > last:
            raise PartitionKeyError(f"{self.describe()}: range {start!r}..{end!r} is reversed")
        return keys[first : last + 1]

    def describe(self) -> str:
        return type(self).__name__


# -- which strings may be partition keys --------------------------------------------------------


def partition_key_problem(key: str) -> str | None:
    """Why ``key`` may not be a partition key, or None if it may."""
    if not key:
        return "it is empty"
    if len(key) > MAX_PARTITION_KEY_LENGTH:
        return f"{len(key)} characters, at most {MAX_PARTITION_KEY_LENGTH}"
    bad = _FORBIDDEN_CHARACTER.search(key)
    if bad is not None:
        return f"it holds {bad.group()!r}: no control characters, commas, brackets or backslashes"
    if ("/" in key or key in (".", "..")) and _PATH_OUT_OF_FOLDER.search(key):
        return "it names a path outside its folder: '/' may only separate names, none of them '.' or '..'"
    return None


def check_partition_key(label: str, key: object) -> str:
    """``key`` if any partitions definition may hold it; else InvalidPartitionKeyError naming
    ``label`` (the definition, sensor or job it came through) and the key. Every way in calls
    this: definitions, sensor results, the CLI, launches, the storage of dynamic keys."""
    if not isinstance(key, str):
        raise InvalidPartitionKeyError(f"{label}: partition key must be a string, got {key!r}")
    problem = partition_key_problem(key)
    if problem is not None:
        raise InvalidPartitionKeyError(f"{label}: invalid partition key {shown(key)} ({problem})")
    return key


def check_dynamic_partitions_request(label: str, request: object) -> None:
    """Check a dynamic partitions request a sensor or schedule returned (``label`` names it):
    a partitions name and a list (not a string) of valid keys to add. Keys to delete are not
    checked, so a key stored before it was refused can still be deleted."""
    if not isinstance(request, AddDynamicPartitionsRequest | DeleteDynamicPartitionsRequest):
        raise TidegateError(f"{label}: {request!r} is not a dynamic partitions request")
    name, keys = request.partitions_def_name, request.partition_keys
    if not isinstance(name, str) or isinstance(keys, str) or not isinstance(keys, Sequence | set | frozenset):
        raise InvalidPartitionKeyError(
            f"{label}: {type(request).__name__} needs a partitions name and a list of keys, got {request!r}"
        )
    check_name(label, "dynamic partitions name", name)
    if isinstance(request, AddDynamicPartitionsRequest):
        for key in keys:
            check_partition_key(f"{label}: dynamic partitions '{name}'", key)


# -- time windows -----------------------------------------------------------------------------


@dataclass(frozen=True, eq=True)
class TimeWindowPartitionsDefinition(PartitionsDefinition):
    cron_schedule: str
    start: datetime | str
    fmt: str
    timezone: str | None = None
    end_offset: int = 0
    end: datetime | str | None = None
    _tz: ZoneInfo = field(init=False, repr=False, compare=False)
    _start: datetime = field(init=False, repr=False, compare=False)
    _end: datetime | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        label = f"{type(self).__name__}(start={self.start!r})"
        validate_cron(label, self.cron_schedule)
        tz = validate_timezone(label, self.timezone)
        object.__setattr__(self, "_tz", tz)
        object.__setattr__(self, "_start", self._parse_bound(label, self.start))
        object.__setattr__(self, "_end", self._parse_bound(label, self.end) if self.end is not None else None)
        if not isinstance(self.end_offset, int):
            raise InvalidDefinitionError(f"{label}: end_offset must be an integer, got {self.end_offset!r}")
        try:
            sample = datetime(2024, 1, 2, 3, 4).strftime(self.fmt)
        except ValueError as exc:
            raise InvalidDefinitionError(f"{label}: invalid fmt {self.fmt!r} ({exc})") from None
        if partition_key_problem(sample) is not None:  # e.g. '../%Y' or '%Y,%m'
            raise InvalidDefinitionError(f"{label}: fmt {self.fmt!r} makes invalid partition keys ({sample!r})")

    def _parse_bound(self, label: str, value: datetime | str) -> datetime:
        if isinstance(value, datetime):
            return value if value.tzinfo is not None else value.replace(tzinfo=self._tz)
        if isinstance(value, date):
            return datetime(value.year, value.month, value.day, tzinfo=self._tz)
        for fmt in (self.fmt, "%Y-%m-%d", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S"):
            try:
                return datetime.strptime(value, fmt).replace(tzinfo=self._tz)
            except (ValueError, TypeError):
                continue
        raise InvalidDefinitionError(f"{label}: cannot parse {value!r} with fmt {self.fmt!r}")

    @property
    def tz(self) -> ZoneInfo:
        return self._tz

    def describe(self) -> str:
        return f"{type(self).__name__}(cron={self.cron_schedule!r}, start={self.fmt_key(self._start)!r})"

    def fmt_key(self, start: datetime) -> str:
        return start.astimezone(self._tz).strftime(self.fmt)

    def _count(self, current_time: datetime | None) -> int:
        """How many windows exist at ``current_time``: those ended, plus ``end_offset``, none
        starting at or after ``end``."""
        count = max(0, self._ended(current_time or datetime.now(UTC)) + self.end_offset)
        limit = self._limit()
        if limit is not None:
            count = min(count, limit)
        self._ticks.ensure(count + 1)
        return count

    def _ended(self, now: datetime) -> int:
        """How many windows have ended at ``now`` (window i ends at tick i + 1)."""
        limit = self._limit()
        if limit is not None:  # nothing past the last window's end is needed
            self._ticks.ensure(limit + 1)
            now = min(now, self._ticks.instants[limit])
        return self._ticks.count_through(now) - 1

    def _limit(self) -> int | None:
        """How many windows start before ``end``; None without an end."""
        return None if self._end is None else self._ticks.count_before(self._end)

    @property
    def _ticks(self) -> _Ticks:
        ticks: _Ticks | None = self.__dict__.get("_tick_cache")
        if ticks is None:  # the first tick at or after ``start`` opens the first window
            ticks = _Ticks(cron_ticks(self.cron_schedule, self._tz, self._start - timedelta(microseconds=1)))
            object.__setattr__(self, "_tick_cache", ticks)
        return ticks

    def get_partition_keys(
        self, current_time: datetime | None = None, dynamic_keys: DynamicKeys | None = None
    ) -> list[str]:
        count = self._count(current_time)
        return self._ticks.keys(count, self.fmt_key)

    def partition_index(self, key: str, current_time: datetime | None = None) -> int:
        """The position of ``key`` among the partitions that exist at ``current_time``, found
        without listing them; PartitionKeyError if it is malformed or does not exist."""
        start = self._parse_key(key)
        count = self._count(current_time)
        starts = self._ticks.instants
        # A key names a window start on the wall clock; bisecting from the first of a repeated
        # wall time's two instants finds either (daily windows start in the second pass, an
        # hourly key names the first of its two windows).
        index = bisect.bisect_left(starts, start.replace(fold=0).astimezone(UTC), 0, count)
        for candidate in (index, index - 1, index + 1):
            if 0 <= candidate < count and self.fmt_key(starts[candidate]) == key:
                return candidate
        raise PartitionKeyError(f"{self.describe()}: unknown partition key {key!r}")

    def validate_key(
        self, key: str, current_time: datetime | None = None, dynamic_keys: DynamicKeys | None = None
    ) -> str:
        self.partition_index(key, current_time)
        return key

    def keys_in_range(
        self, start: str, end: str, current_time: datetime | None = None, dynamic_keys: DynamicKeys | None = None
    ) -> list[str]:
        first, last = self.partition_index(start, current_time), self.partition_index(end, current_time)
        if first > last:
            raise PartitionKeyError(f"{self.describe()}: range {start!r}..{end!r} is reversed")
        return self._ticks.keys(last + 1, self.fmt_key)[first:]

    def _parse_key(self, key: str) -> datetime:
        """The wall-clock window start a key names; PartitionKeyError if malformed."""
        if not isinstance(key, str):
            raise PartitionKeyError(f"{self.describe()}: partition key must be a string, got {key!r}")
        try:
            return datetime.strptime(key, self.fmt).replace(tzinfo=self._tz)
        except ValueError:
            raise PartitionKeyError(
                f"{self.describe()}: malformed partition key {key!r} (expected {self.fmt})"
            ) from None

    def time_window_for_key(self, key: str) -> TimeWindow:
        """The window a key names: from the first tick at or after the wall time the key reads
        as (its time of day may be left out by ``fmt``, and a repeated wall time may start its
        window in the second pass, see :mod:`tidegate.definitions.cron`) to the tick after it."""
        parsed = self._parse_key(key)
        ticks = cron_ticks(self.cron_schedule, self._tz, parsed.astimezone(UTC) - timedelta(microseconds=1))
        start, following = next(ticks), next(ticks)
        window = TimeWindow(start.astimezone(self._tz), following.astimezone(self._tz))
        if self.fmt_key(start) != key or start < self._start:
            raise PartitionKeyError(f"{self.describe()}: unknown partition key {key!r}")
        return window

    def last_ended_key(self, current_time: datetime) -> str | None:
        """The most recent partition whose window has ended at ``current_time``."""
        ended = self._ended(current_time)
        return self.fmt_key(self._ticks.instants[ended - 1]) if ended > 0 else None


class _Ticks:
    """The tick instants (UTC) of one time-window definition from its first window on,
    computed once per process and extended as time goes on, with their keys: listing or
    looking up 100,000 hourly partitions is then a slice or a bisection, not a cron walk."""

    def __init__(self, source: Iterator[datetime]) -> None:
        self._source = source
        self.instants: list[datetime] = []
        self._keys: list[str] = []
        self._lock = threading.Lock()

    def ensure(self, n: int) -> None:
        """At least ``n`` instants computed."""
        if len(self.instants) < n:
            with self._lock:
                while len(self.instants) < n:
                    self.instants.append(next(self._source))

    def count_through(self, moment: datetime) -> int:
        """The number of ticks at or before ``moment`` (computing one past it)."""
        with self._lock:
            while not self.instants or self.instants[-1] <= moment:
                self.instants.append(next(self._source))
        return bisect.bisect_right(self.instants, moment)

    def count_before(self, moment: datetime) -> int:
        """The number of ticks before ``moment`` (computing one at or past it)."""
        with self._lock:
            while not self.instants or self.instants[-1] < moment:
                self.instants.append(next(self._source))
        return bisect.bisect_left(self.instants, moment)

    def keys(self, n: int, fmt_key: Callable[[datetime], str]) -> list[str]:
        """The first ``n`` window keys."""
        self.ensure(n)
        if len(self._keys) < n:
            with self._lock:
                self._keys.extend(fmt_key(t) for t in self.instants[len(self._keys) : n])
        return self._keys[:n]


def _time_window(
    cls_name: str,
    cron: str,
    start_date: datetime | str,
    end_date: datetime | str | None,
    timezone: str | None,
    fmt: str,
    end_offset: int,
) -> TimeWindowPartitionsDefinition:
    return TimeWindowPartitionsDefinition(
        cron_schedule=cron, start=start_date, fmt=fmt, timezone=timezone, end_offset=end_offset, end=end_date
    )


def _offsets(label: str, minute_offset: int, hour_offset: int) -> None:
    if not 0 <= minute_offset < 60 or not 0 <= hour_offset < 24:
        raise InvalidDefinitionError(f"{label}: minute_offset must be 0-59 and hour_offset 0-23")


def DailyPartitionsDefinition(
    start_date: datetime | str,
    end_date: datetime | str | None = None,
    timezone: str | None = None,
    fmt: str | None = None,
    hour_offset: int = 0,
    minute_offset: int = 0,
    end_offset: int = 0,
) -> TimeWindowPartitionsDefinition:
    _offsets("DailyPartitionsDefinition", minute_offset, hour_offset)
    cron = f"{minute_offset} {hour_offset} * * *"
    return _time_window("Daily", cron, start_date, end_date, timezone, fmt or "%Y-%m-%d", end_offset)


def HourlyPartitionsDefinition(
    start_date: datetime | str,
    end_date: datetime | str | None = None,
    timezone: str | None = None,
    fmt: str | None = None,
    minute_offset: int = 0,
    end_offset: int = 0,
) -> TimeWindowPartitionsDefinition:
    _offsets("HourlyPartitionsDefinition", minute_offset, 0)
    cron = f"{minute_offset} * * * *"
    return _time_window("Hourly", cron, start_date, end_date, timezone, fmt or "%Y-%m-%d-%H:%M", end_offset)


def WeeklyPartitionsDefinition(
    start_date: datetime | str,
    end_date: datetime | str | None = None,
    timezone: str | None = None,
    fmt: str | None = None,
    hour_offset: int = 0,
    minute_offset: int = 0,
    day_offset: int = 0,
    end_offset: int = 0,
) -> TimeWindowPartitionsDefinition:
    _offsets("WeeklyPartitionsDefinition", minute_offset, hour_offset)
    if not 0 <= day_offset <= 6:
        raise InvalidDefinitionError("WeeklyPartitionsDefinition: day_offset must be 0 (Sunday) to 6")
    cron = f"{minute_offset} {hour_offset} * * {day_offset}"
    return _time_window("Weekly", cron, start_date, end_date, timezone, fmt or "%Y-%m-%d", end_offset)


def MonthlyPartitionsDefinition(
    start_date: datetime | str,
    end_date: datetime | str | None = None,
    timezone: str | None = None,
    fmt: str | None = None,
    hour_offset: int = 0,
    minute_offset: int = 0,
    day_offset: int = 1,
    end_offset: int = 0,
) -> TimeWindowPartitionsDefinition:
    _offsets("MonthlyPartitionsDefinition", minute_offset, hour_offset)
    if not 1 <= day_offset <= 28:
        raise InvalidDefinitionError("MonthlyPartitionsDefinition: day_offset must be 1 to 28")
    cron = f"{minute_offset} {hour_offset} {day_offset} * *"
    return _time_window("Monthly", cron, start_date, end_date, timezone, fmt or "%Y-%m-%d", end_offset)


# -- static and dynamic -----------------------------------------------------------------------


def _check_keys(label: str, keys: Iterable[str]) -> tuple[str, ...]:
    """The keys, each valid and none twice; InvalidPartitionKeyError naming ``label`` if not."""
    if isinstance(keys, str):
        raise InvalidPartitionKeyError(f"{label}: partition keys must be a list of strings, got {keys!r}")
    result = tuple(keys)
    seen: set[str] = set()
    for key in result:
        check_partition_key(label, key)
        if key in seen:
            raise InvalidPartitionKeyError(f"{label}: duplicate partition key {key!r}")
        seen.add(key)
    return result


@dataclass(frozen=True)
class StaticPartitionsDefinition(PartitionsDefinition):
    partition_keys: Sequence[str]

    def __post_init__(self) -> None:
        try:
            keys = _check_keys("StaticPartitionsDefinition", self.partition_keys)
        except InvalidPartitionKeyError as exc:  # a definition: fails at import, as a definition error
            raise InvalidDefinitionError(str(exc)) from None
        if not keys:
            raise InvalidDefinitionError("StaticPartitionsDefinition: no partition keys")
        object.__setattr__(self, "partition_keys", keys)

    def get_partition_keys(
        self, current_time: datetime | None = None, dynamic_keys: DynamicKeys | None = None
    ) -> list[str]:
        return list(self.partition_keys)

    def describe(self) -> str:
        return f"StaticPartitionsDefinition({len(self.partition_keys)} keys)"


@dataclass(frozen=True)
class AddDynamicPartitionsRequest:
    partitions_def_name: str
    partition_keys: Sequence[str]


@dataclass(frozen=True)
class DeleteDynamicPartitionsRequest:
    partitions_def_name: str
    partition_keys: Sequence[str]


@dataclass(frozen=True)
class DynamicPartitionsDefinition(PartitionsDefinition):
    """Keys added and deleted at run time (by sensors or the CLI), stored in SQL."""

    name: str

    def __post_init__(self) -> None:
        if isinstance(self.name, str):
            check_name("DynamicPartitionsDefinition", "name", self.name)
        if not isinstance(self.name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-]*", self.name):
            raise InvalidDefinitionError(f"DynamicPartitionsDefinition: invalid name {self.name!r}")

    def get_partition_keys(
        self, current_time: datetime | None = None, dynamic_keys: DynamicKeys | None = None
    ) -> list[str]:
        if dynamic_keys is None:
            raise TidegateError(f"{self.describe()}: its keys live in the database; pass dynamic_keys")
        # A key stored before it was refused (say '../x') is no partition: it is never planned,
        # backfilled or counted; `tidegate partitions delete` removes it.
        return [key for key in dynamic_keys(self.name) if partition_key_problem(key) is None]

    def validate_key(
        self, key: str, current_time: datetime | None = None, dynamic_keys: DynamicKeys | None = None
    ) -> str:
        """``key`` if it is valid and stored (a key stored before it was refused is not launched)."""
        check_partition_key(self.describe(), key)
        return super().validate_key(key, current_time, dynamic_keys)

    def build_add_request(self, partition_keys: Sequence[str]) -> AddDynamicPartitionsRequest:
        keys = _check_keys(f"dynamic partitions '{self.name}'", partition_keys)
        return AddDynamicPartitionsRequest(self.name, keys)

    def build_delete_request(self, partition_keys: Sequence[str]) -> DeleteDynamicPartitionsRequest:
        return DeleteDynamicPartitionsRequest(self.name, tuple(partition_keys))

    def describe(self) -> str:
        return f"DynamicPartitionsDefinition('{self.name}')"


# -- mappings ----------------------------------------------------------------------------------


class PartitionMapping:
    def upstream_keys(
        self,
        downstream_key: str | None,
        downstream: PartitionsDefinition | None,
        upstream: PartitionsDefinition,
        current_time: datetime | None = None,
        dynamic_keys: DynamicKeys | None = None,
    ) -> list[str]:
        raise NotImplementedError


@dataclass(frozen=True)
class IdentityPartitionMapping(PartitionMapping):
    def upstream_keys(
        self,
        downstream_key: str | None,
        downstream: PartitionsDefinition | None,
        upstream: PartitionsDefinition,
        current_time: datetime | None = None,
        dynamic_keys: DynamicKeys | None = None,
    ) -> list[str]:
        return [downstream_key] if downstream_key is not None else []


@dataclass(frozen=True)
class AllPartitionMapping(PartitionMapping):
    def upstream_keys(
        self,
        downstream_key: str | None,
        downstream: PartitionsDefinition | None,
        upstream: PartitionsDefinition,
        current_time: datetime | None = None,
        dynamic_keys: DynamicKeys | None = None,
    ) -> list[str]:
        return upstream.get_partition_keys(current_time, dynamic_keys)


@dataclass(frozen=True)
class TimeWindowPartitionMapping(PartitionMapping):
    """Upstream windows overlapping the downstream window, widened by offsets counted in
    upstream windows: ``start_offset=-6`` reads a 7-day rolling window of daily partitions."""

    start_offset: int = 0
    end_offset: int = 0

    def upstream_keys(
        self,
        downstream_key: str | None,
        downstream: PartitionsDefinition | None,
        upstream: PartitionsDefinition,
        current_time: datetime | None = None,
        dynamic_keys: DynamicKeys | None = None,
    ) -> list[str]:
        if not isinstance(upstream, TimeWindowPartitionsDefinition) or not isinstance(
            downstream, TimeWindowPartitionsDefinition
        ):
            raise TidegateError("TimeWindowPartitionMapping needs time-window partitions on both sides")
        if downstream_key is None:
            return []
        window = downstream.time_window_for_key(downstream_key)
        # Upstream windows that exist at ``current_time`` (now if not given; all of them for a
        # bounded definition), found by bisection over the upstream's tick instants. As in
        # Dagster, a window yet to end maps once it exists: a day maps to its week when the
        # week has ended, not only if it ended with that day.
        count = upstream._count(datetime.max.replace(tzinfo=UTC) if upstream._end else current_time)
        starts = upstream._ticks.instants  # window i is [starts[i], starts[i + 1])
        first = max(0, bisect.bisect_right(starts, window.start) - 1)  # the first ending after its start
        last = min(count, bisect.bisect_left(starts, window.end)) - 1  # the last starting before its end
        if first > last:
            return []
        first, last = max(0, first + self.start_offset), min(count - 1, last + self.end_offset)
        return upstream._ticks.keys(last + 1, upstream.fmt_key)[first:]


@dataclass(frozen=True)
class BackfillPolicy:
    max_partitions_per_run: int | None = 1

    @classmethod
    def single_run(cls) -> BackfillPolicy:
        return cls(max_partitions_per_run=None)

    @classmethod
    def multi_run(cls, max_partitions_per_run: int = 1) -> BackfillPolicy:
        if max_partitions_per_run < 1:
            raise InvalidDefinitionError("BackfillPolicy.multi_run: max_partitions_per_run must be >= 1")
        return cls(max_partitions_per_run=max_partitions_per_run)
