"""The beat: evaluates due schedules and sensors, commits their ticks, starts queued runs.

``tick(now)`` does one round and is what tests call with a fake clock; ``run_forever``
loops, sleeping until the next schedule or sensor is due (or the launcher's next round).

Cost per tick: schedules and sensors wait in a heap keyed by their next due time, so a tick
touches only the due ones, plus one indexed query for instigator rows changed since the last
tick (started, stopped or reset from the CLI).

Two clocks: schedules and sensors are due by the beat's own ``Clock`` (injectable; tests step
it), while everything compared with other processes (the leader lease, "changed since the last
tick", the launcher's and monitor's ages) uses the database's clock.
"""

from __future__ import annotations

import functools
import heapq
import logging
import os
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from tidegate.config import Settings
from tidegate.definitions.context import Resources
from tidegate.definitions.cron import next_tick, ticks_between
from tidegate.definitions.defs import Definitions
from tidegate.definitions.instigator import DefaultScheduleStatus
from tidegate.definitions.partitions import (
    AddDynamicPartitionsRequest,
    DeleteDynamicPartitionsRequest,
    check_dynamic_partitions_request,
)
from tidegate.definitions.run_request import Evaluation, RunRequest
from tidegate.definitions.schedule import ScheduleDefinition, ScheduleEvaluationContext
from tidegate.definitions.sensor import SensorDefinition, SensorEvaluationContext
from tidegate.errors import TidegateError
from tidegate.names import PRIORITY_TAG, SCHEDULE_TAG, SENSOR_TAG, TICK_TAG, InstigatorStatus, TickStatus
from tidegate.scheduler.backfill import BackfillDaemon
from tidegate.scheduler.clock import Clock, SystemClock
from tidegate.scheduler.launcher import Launcher
from tidegate.storage.api import Storage
from tidegate.storage.instance import DagsterInstance
from tidegate.storage.instigators import (
    InstigatorState,
    PlannedRun,
    TickOutcome,
    TickRecord,
)
from tidegate.storage.records import StepRef

log = logging.getLogger("tidegate.beat")

LEASE_NAME = "beat"


@dataclass
class TickReport:
    """What one beat tick did, for tests and logs."""

    leader: bool
    schedule_ticks: list[str] = field(default_factory=list)  # "name@iso"
    sensor_ticks: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    published: int = 0


@dataclass
class _Inflight:
    thread: threading.Thread
    result: dict[str, Any]
    started_at: datetime
    state: InstigatorState
    context: SensorEvaluationContext
    deadline: float  # time.monotonic() by which the evaluation must have returned


class Beat:
    def __init__(
        self,
        defs: Definitions,
        storage: Storage,
        publish: Callable[[Sequence[StepRef]], None],
        *,
        clock: Clock | None = None,
        holder: str | None = None,
        lease_seconds: float = 20.0,
        launcher_interval: float = 1.0,
        skipped_tick_retention: timedelta | None = timedelta(days=7),
        config: Settings | None = None,
    ) -> None:
        self.defs = defs
        self.storage = storage
        self.clock = clock or SystemClock()
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.lease_seconds = lease_seconds
        self.backfills = BackfillDaemon(defs, storage)
        self.launcher = Launcher(storage, publish, defs=defs, config=config or Settings.defaults())
        self.launcher_interval = launcher_interval
        self.retention = skipped_tick_retention
        self.resources = Resources(defs.resources)
        self.instance = DagsterInstance(storage)  # context.instance of schedules and sensors
        self._states: dict[str, InstigatorState] = {}
        self._refreshed_at: datetime | None = None
        self._heap: list[tuple[datetime, str, str]] = []  # (due, kind, name)
        self._due: dict[str, datetime] = {}
        self._inflight: dict[str, _Inflight] = {}
        self._last_purge: datetime | None = None
        self._cron_seen: dict[str, datetime] = {}  # schedule -> when this beat first saw its changed cron

    # -- the loop --------------------------------------------------------------------------

    def run_forever(self, stop: threading.Event) -> None:
        log.info("beat %s: %d schedule(s), %d sensor(s)", self.holder, len(self.defs.schedules), len(self.defs.sensors))
        try:
            while not stop.is_set():
                try:
                    self.tick()
                except Exception:  # the database may be away; the next tick retries
                    log.exception("beat tick failed")
                stop.wait(self.seconds_until_next())
        finally:
            self.storage.release_lease(LEASE_NAME, self.holder)

    def seconds_until_next(self) -> float:
        """Until the earliest due schedule or sensor, capped by the launcher's interval."""
        now = self.clock.now()
        wait = self.launcher_interval
        if self._heap:
            wait = min(wait, (self._heap[0][0] - now).total_seconds())
        return max(0.01, wait)

    def tick(self, now: datetime | None = None) -> TickReport:
        now = now or self.clock.now()
        if not self.storage.acquire_lease(LEASE_NAME, self.holder, ttl_seconds=self.lease_seconds):
            self._heap.clear()  # a standby rebuilds from SQL when it becomes leader
            self._refreshed_at = None
            return TickReport(leader=False)
        report = TickReport(leader=True)
        self._refresh(now)
        self._collect_sensors(now, report)
        due: list[tuple[str, str]] = []
        while self._heap and self._heap[0][0] <= now:
            when, kind, name = heapq.heappop(self._heap)
            if self._due.get(name) == when:
                del self._due[name]  # the heap may hold this entry twice: evaluate it once
                due.append((kind, name))
        for kind, name in due:
            try:
                if kind == "schedule":
                    self._run_schedule(self.defs.schedules[name], now, report)
                else:
                    self._start_sensor(self.defs.sensors[name], now)
            except Exception as exc:  # the database refused or went away: retry at the next tick
                log.exception("%s '%s': tick not recorded", kind, name)
                report.failures.append(f"{kind} '{name}': tick not recorded: {exc!r:.200}")
                self._push(name, kind, now)
        self._collect_sensors(now, report, wait_until=now)
        self.backfills.tick(now)
        report.published = self.launcher.tick()
        self._purge(now)
        return report

    # -- instigator state ------------------------------------------------------------------

    def _refresh(self, now: datetime) -> None:
        """Load state rows changed since the last refresh and (re)schedule those instigators.

        "Since" is measured by the database's clock, which stamps every change (from the CLI
        on any host, or another beat), not by this beat's clock."""
        first = self._refreshed_at is None
        read_at = self.storage.db_now()
        changed = {  # the overlap re-reads rows: only those that differ from what this beat holds
            name: state
            for name, state in self.storage.instigator_states(
                changed_after=None if first else self._refreshed_at
            ).items()
            if state != self._states.get(name)
        }
        self._refreshed_at = read_at - timedelta(seconds=1)  # overlap: transactions still committing
        self._states.update(changed)
        names = set(self.defs.schedules) | set(self.defs.sensors) if first else set(changed)
        if first:  # create the rows of instigators running by default that were never seen, at once
            fresh = [
                (name, "schedule" if name in self.defs.schedules else "sensor")
                for name in sorted(names)
                if (self._states.get(name) is None or self._states[name].running_since is None)
                and self._running(name, self._default_status(name))
            ]
            self._states.update(self.storage.initialize_instigators(fresh, now))
        for name in names:
            self._reschedule(name, now)

    def _default_status(self, name: str) -> DefaultScheduleStatus:
        found = self.defs.schedules.get(name) or self.defs.sensors.get(name)
        return found.default_status if found is not None else DefaultScheduleStatus.STOPPED

    def _running(self, name: str, default: DefaultScheduleStatus) -> bool:
        state = self._states.get(name)
        if state is None or state.status is None:
            return default is DefaultScheduleStatus.RUNNING
        return state.status == InstigatorStatus.RUNNING

    def _state(self, name: str, kind: str, now: datetime) -> InstigatorState:
        state = self._states.get(name)
        if state is None or state.running_since is None:
            state = self.storage.initialize_instigator(name, kind, now)
            self._states[name] = state
        return state

    def _reschedule(self, name: str, now: datetime) -> None:
        if name in self.defs.schedules:
            schedule = self.defs.schedules[name]
            if not self._running(name, schedule.default_status):
                self._due.pop(name, None)
                return
            state = self._state(name, "schedule", now)
            after = self._schedule_floor(schedule, state, now)
            self._push(name, "schedule", next_tick(schedule.cron_schedule, schedule.timezone, after))
        elif name in self.defs.sensors:
            sensor = self.defs.sensors[name]
            if not self._running(name, sensor.default_status):
                self._due.pop(name, None)
                return
            state = self._state(name, "sensor", now)
            self._push(name, "sensor", state.next_tick_at or now)

    def _push(self, name: str, kind: str, when: datetime) -> None:
        self._due[name] = when
        heapq.heappush(self._heap, (when, kind, name))

    # -- schedules -------------------------------------------------------------------------

    def _schedule_floor(self, schedule: ScheduleDefinition, state: InstigatorState, now: datetime) -> datetime:
        """Ticks strictly after this instant may run: never before the schedule was started,
        never one already done, and never an old one of a cron that has since changed (a new
        cron counts from when this beat first saw it, so its first tick runs even if late)."""
        floor = max(t for t in (state.last_tick_at, state.running_since) if t is not None)
        if state.cron is not None and state.cron != schedule.cron_schedule:
            seen = self._cron_seen.setdefault(schedule.name, now - timedelta(seconds=1))
            floor = max(floor, seen)
        return floor

    def _run_schedule(self, schedule: ScheduleDefinition, now: datetime, report: TickReport) -> None:
        state = self.storage.get_instigator(schedule.name) or self._state(schedule.name, "schedule", now)
        floor = self._schedule_floor(schedule, state, now)
        missed = ticks_between(schedule.cron_schedule, schedule.timezone, floor, now)
        version = state.version
        for tick_time in missed[-schedule.max_catchup_ticks :]:
            outcome = self._evaluate_schedule(schedule, tick_time)
            following = next_tick(schedule.cron_schedule, schedule.timezone, max(tick_time, now))
            record = self._commit(
                outcome,
                functools.partial(
                    self.storage.commit_tick,
                    schedule.name,
                    "schedule",
                    expected_version=version,
                    tick_time=tick_time,
                    started_at=now,
                    origin=f"schedule:{schedule.name}",
                    next_tick_at=following,
                    cron=schedule.cron_schedule,
                ),
            )
            if record is None:  # another beat committed it: reload and carry on from there
                state = self.storage.get_instigator(schedule.name) or state
                version = state.version
                continue
            version += 1
            report.schedule_ticks.append(f"{schedule.name}@{tick_time.isoformat()}")
            if record.status == TickStatus.FAILURE:
                report.failures.append(f"{schedule.label}: {_last_line(record.error)}")
                log.warning("%s: tick FAILURE: %s", schedule.label, _last_line(record.error))
        fresh = self.storage.get_instigator(schedule.name)
        if fresh is not None:
            self._states[schedule.name] = fresh
        self._push(schedule.name, "schedule", next_tick(schedule.cron_schedule, schedule.timezone, now))

    def _evaluate_schedule(self, schedule: ScheduleDefinition, tick_time: datetime) -> TickOutcome:
        context = ScheduleEvaluationContext(
            scheduled_execution_time=tick_time.astimezone(schedule.timezone),
            schedule_name=schedule.name,
            resources=self.resources,
            log=logging.getLogger(f"tidegate.schedule.{schedule.name}"),
            instance=self.instance,
        )
        try:
            evaluation = schedule.evaluate(context, self.defs.resources)
            runs = self._plan(schedule, evaluation, tick_time)
        except Exception:
            return TickOutcome(TickStatus.FAILURE, error=traceback.format_exc())
        return _outcome(evaluation, runs)

    # -- sensors ---------------------------------------------------------------------------

    def _start_sensor(self, sensor: SensorDefinition, now: datetime) -> None:
        if sensor.name in self._inflight:
            # the previous evaluation is still running (or hung): never two at once; try again later
            self._push(sensor.name, "sensor", now + timedelta(seconds=sensor.minimum_interval_seconds))
            return
        state = self.storage.get_instigator(sensor.name) or self._state(sensor.name, "sensor", now)
        context = SensorEvaluationContext(
            sensor_name=sensor.name,
            cursor=state.cursor,
            last_tick_completion_time=state.last_tick_at,
            last_run_key=state.last_run_key,
            resources=self.resources,
            log=logging.getLogger(f"tidegate.sensor.{sensor.name}"),
            instance=self.instance,
        )
        result: dict[str, Any] = {}

        def evaluate() -> None:
            try:
                evaluation = sensor.evaluate(context, self.defs.resources)
                result["outcome"] = _outcome(evaluation, self._plan(sensor, evaluation, None))
                result["on_commit"] = evaluation.on_commit
                result["backlog"] = evaluation.backlog
            except Exception:
                result["outcome"] = TickOutcome(TickStatus.FAILURE, error=traceback.format_exc())

        thread = threading.Thread(target=evaluate, name=f"sensor-{sensor.name}", daemon=True)
        deadline = time.monotonic() + sensor.time_limit_seconds
        self._inflight[sensor.name] = _Inflight(thread, result, now, state, context, deadline)
        thread.start()

    def _collect_sensors(self, now: datetime, report: TickReport, wait_until: datetime | None = None) -> None:
        """Commit finished evaluations; fail those past their time limit. With
        ``wait_until``, wait (in real time) for this tick's evaluations up to their limits."""
        for name, flight in list(self._inflight.items()):
            sensor = self.defs.sensors[name]
            if wait_until is not None and "committed" not in flight.result:
                # Every evaluation of this tick runs concurrently: wait for each only until its
                # own deadline, so hung sensors do not add up.
                flight.thread.join(timeout=max(0.0, flight.deadline - time.monotonic()))
            if flight.result.get("committed"):
                if not flight.thread.is_alive():
                    del self._inflight[name]  # a hung evaluation finally returned
                continue
            if flight.thread.is_alive():
                if wait_until is None:
                    continue
                outcome = TickOutcome(
                    TickStatus.FAILURE,
                    error=f"TimeoutError: evaluation exceeded its time limit of {sensor.time_limit_seconds:g}s",
                )
                flight.result["committed"] = True  # keep it in flight until the thread ends
            else:
                outcome = flight.result["outcome"]
                del self._inflight[name]
            try:
                self._commit_sensor(sensor, flight, outcome, report)
            except Exception as exc:  # the database went away: evaluate again at the next interval
                log.exception("%s: tick not recorded", sensor.label)
                report.failures.append(f"{sensor.label}: tick not recorded: {exc!r:.200}")
                self._push(name, "sensor", flight.started_at + timedelta(seconds=sensor.minimum_interval_seconds))

    def _commit_sensor(
        self, sensor: SensorDefinition, flight: _Inflight, outcome: TickOutcome, report: TickReport
    ) -> None:
        if outcome.status == TickStatus.FAILURE:
            outcome = TickOutcome(TickStatus.FAILURE, error=outcome.error)  # the cursor does not move
        when = flight.started_at
        record = self._commit(
            outcome,
            functools.partial(
                self.storage.commit_tick,
                sensor.name,
                "sensor",
                expected_version=flight.state.version,
                tick_time=when,
                started_at=when,
                origin=f"sensor:{sensor.name}",
                next_tick_at=when + timedelta(seconds=sensor.minimum_interval_seconds),
            ),
        )
        if record is None:
            log.info("%s: tick at %s superseded (another beat or a cursor reset)", sensor.label, when)
        else:
            report.sensor_ticks.append(f"{sensor.name}@{when.isoformat()}")
            if record.status == TickStatus.FAILURE:
                report.failures.append(f"{sensor.label}: {_last_line(record.error)}")
                log.warning("%s: tick FAILURE: %s", sensor.label, _last_line(record.error))
            else:
                _after_commit(sensor, flight.result.get("on_commit"))
        fresh = self.storage.get_instigator(sensor.name)
        if fresh is not None:
            self._states[sensor.name] = fresh
        if self._running(sensor.name, sensor.default_status):
            # an event sensor that left events for later is due again at once (the next tick time)
            backlog = record is not None and flight.result.get("backlog", False)
            interval = timedelta(microseconds=1) if backlog else timedelta(seconds=sensor.minimum_interval_seconds)
            self._push(sensor.name, "sensor", when + interval)

    # -- shared ----------------------------------------------------------------------------

    @staticmethod
    def _commit(outcome: TickOutcome, commit: Callable[..., TickRecord | None]) -> TickRecord | None:
        """Commit ``outcome``; if the database refuses it (say a value too long for a column),
        commit a FAILURE tick with the error instead: no run, the cursor does not move."""
        try:
            return commit(outcome=outcome)
        except Exception:
            if outcome.status == TickStatus.FAILURE:
                raise
            log.exception("tick commit failed; recording it as FAILURE")
            return commit(outcome=TickOutcome(TickStatus.FAILURE, error=traceback.format_exc()))

    def _plan(
        self, instigator: ScheduleDefinition | SensorDefinition, evaluation: Evaluation, tick_time: datetime | None
    ) -> list[PlannedRun]:
        pending_add: dict[str, list[str]] = {}
        pending_delete: dict[str, set[str]] = {}
        for item in evaluation.dynamic_partitions_requests:
            check_dynamic_partitions_request(instigator.label, item)  # a bad key fails the tick
            if isinstance(item, AddDynamicPartitionsRequest):
                pending_add.setdefault(item.partitions_def_name, []).extend(item.partition_keys)
            elif isinstance(item, DeleteDynamicPartitionsRequest):
                pending_delete.setdefault(item.partitions_def_name, set()).update(item.partition_keys)
            else:
                raise TidegateError(f"{instigator.label}: {item!r} is not a dynamic partitions request")

        def dynamic_keys(name: str) -> list[str]:
            """The keys as they will be once this tick's requests are applied with its runs."""
            keys = [*self.storage.dynamic_partition_keys(name), *pending_add.get(name, [])]
            return [k for k in dict.fromkeys(keys) if k not in pending_delete.get(name, set())]

        now = tick_time or self.clock.now()
        runs = []
        for index, request in enumerate(evaluation.run_requests):
            plan = self.defs.plan_request(
                instigator.target, request, instigator.label, dynamic_keys=dynamic_keys, current_time=now
            )
            tags = dict(request.tags)
            run_key = request.run_key
            if isinstance(instigator, ScheduleDefinition):
                assert tick_time is not None
                tags[SCHEDULE_TAG] = instigator.name
                tags[TICK_TAG] = tick_time.isoformat()
                # One tick, one run per request: the tick time is part of the key.
                run_key = f"{tick_time.isoformat()}:{run_key}" if run_key else f"{tick_time.isoformat()}#{index}"
            else:
                tags[SENSOR_TAG] = instigator.name
            priority = _priority(request, tags)
            runs.append(PlannedRun(plan, run_key, tags, priority))
        return runs

    def _purge(self, now: datetime) -> None:
        if self.retention is None:
            return
        if self._last_purge is not None and now - self._last_purge < timedelta(hours=1):
            return
        self._last_purge = now
        removed = self.storage.purge_ticks(status=TickStatus.SKIPPED, before=now - self.retention)
        if removed:
            log.info("purged %d SKIPPED tick(s) older than %s", removed, self.retention)


def _after_commit(sensor: SensorDefinition, hook: Callable[[], None] | None) -> None:
    """Run a SensorResult's on_commit now that its tick is committed; its failure is logged only."""
    if hook is None:
        return
    try:
        hook()
    except Exception:
        log.exception("%s: on_commit failed (the tick stays committed)", sensor.label)


def _last_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[-1] if lines else ""


def _priority(request: RunRequest, tags: dict[str, str]) -> int:
    if request.priority is not None:
        tags[PRIORITY_TAG] = str(request.priority)
        return request.priority
    try:
        return int(tags.get(PRIORITY_TAG, "0"))
    except ValueError:
        return 0


def _outcome(evaluation: Evaluation, runs: list[PlannedRun]) -> TickOutcome:
    status = TickStatus.SUCCESS if runs or evaluation.dynamic_partitions_requests else TickStatus.SKIPPED
    return TickOutcome(
        status,
        runs=runs,
        skip_reason=evaluation.skip_reason,
        cursor_set=evaluation.cursor_set,
        cursor=evaluation.cursor,
        dynamic_partitions_requests=tuple(evaluation.dynamic_partitions_requests),
    )
