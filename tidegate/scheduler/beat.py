"""The beat: evaluates due schedules and sensors, commits their ticks, starts queued runs.

``tick(now)`` does one round and is what tests call with a fake clock; ``run_forever``
loops, sleeping until the next schedule or sensor is due (or the launcher's next round).
``run_forever`` runs the launcher (run queue, publishing, run monitor) in a thread of its own
every ``launcher_interval`` while this beat leads, so that neither waits for the other (the
run queue reads every queued run: with tens of thousands queued, a round takes a while).

Cost per tick: schedules and sensors wait in a heap keyed by their next due time, so a tick
touches only the due ones. Each round starts with one read (``Storage.beat_round``): the
``PendingWork`` flags (anything queued, in flight, failed, a backfill requested? who holds the
lease?) joined with the instigator rows changed since the last round (started, stopped or reset
from the CLI or API: seen at the next round, so within one ``launcher_interval``, 1 s). The
lease is renewed once a quarter of ``lease_seconds`` has passed, not at every round (a write is
a disk flush). An idle round is that one statement and nothing else: backfills, the run queue,
publishing and the run monitor read only when a flag says they have something (see
tidegate/scheduler/launcher.py and monitor.py for their bounds).

A tick that commits runs wakes the launcher's thread at once (``run_forever``), which then runs
the run queue's part of its round, so a schedule's run starts right after its tick, not at the
launcher's next round.

Sensors evaluate concurrently, each in a thread of its own that also commits its tick (in
bounded batches when large), so a slow sensor or a large tick never holds up the loop: the
loop starts due evaluations, collects finished ones (rescheduling them) and fails those past
their time limit, while schedules, the other sensors, the run queue and the run monitor keep
their cadence. At most ``[beat] max_concurrent_evaluations`` evaluations within their time
limit run at once (a due sensor beyond that waits for a free slot); a sensor is never
evaluated twice at once. ``[beat] synchronous_sensors`` makes each tick wait for the
evaluations it started, up to their time limits (what tests stepping a fake clock use, and the
earlier behaviour that bench/faults.py measures against).

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
from collections.abc import Callable, Collection, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from tidegate.config import Settings
from tidegate.definitions.automation_sensor import AutomationConditionSensorDefinition
from tidegate.definitions.config import instigator_resources
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
from tidegate.scheduler.automation import AutomationTicks, collector_paused
from tidegate.scheduler.backfill import BackfillDaemon
from tidegate.scheduler.clock import Clock, SystemClock
from tidegate.scheduler.launcher import Launcher
from tidegate.storage.api import Storage
from tidegate.storage.instance import DagsterInstance
from tidegate.storage.instigators import (
    BeatRound,
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
    """One sensor evaluation in its thread. The thread evaluates, then (unless the loop timed
    it out first: ``lock`` decides which of the two happens) commits the tick and records what
    came of it in ``record``/``error``/``fresh``; the loop collects it once ``done`` is set."""

    started_at: datetime
    state: InstigatorState
    deadline: float  # time.monotonic() by which the evaluation must have returned
    lock: threading.Lock = field(default_factory=threading.Lock)
    evaluated: threading.Event = field(default_factory=threading.Event)  # returned in time: committing
    done: threading.Event = field(default_factory=threading.Event)  # the thread is over
    timed_out: bool = False  # the loop failed its tick: whatever the evaluation returns is dropped
    record: TickRecord | None = None
    error: str | None = None  # the tick could not be recorded at all
    fresh: InstigatorState | None = None
    backlog: bool = False  # an event sensor left events for later: due again at once


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
        synchronous_sensors: bool | None = None,
    ) -> None:
        self.defs = defs
        self.storage = storage
        self.clock = clock or SystemClock()
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.lease_seconds = lease_seconds
        self.backfills = BackfillDaemon(defs, storage)
        self.automation = AutomationTicks(defs, storage)
        self.launcher = Launcher(storage, publish, defs=defs, config=config or Settings.defaults())
        self.launcher_interval = launcher_interval
        self.retention = skipped_tick_retention
        # EnvVar fields read once, here: a resource whose variable is unset fails only its users' ticks
        self._resources = instigator_resources(defs.resources)
        self.resources = Resources(self._resources)
        self.instance = DagsterInstance(storage)  # context.instance of schedules and sensors
        self._states: dict[str, InstigatorState] = {}
        self._refreshed_at: datetime | None = None
        self._renew_after: datetime | None = None  # the database's time after which to renew the lease
        self._heap: list[tuple[datetime, str, str]] = []  # (due, kind, name)
        self._due: dict[str, datetime] = {}
        self._inflight: dict[str, _Inflight] = {}
        self.options = (config or Settings.defaults()).beat
        self._synchronous = synchronous_sensors  # None: see the synchronous_sensors property
        self._looping = False  # run_forever is running
        self._wake = threading.Event()  # set by an evaluation's thread when it is over
        self._launch_now = threading.Event()  # set when a tick committed runs: the launcher's round starts
        self._leading = False  # this beat held the lease at its last tick
        self._launcher_thread: threading.Thread | None = None  # run_forever's; tick() runs the launcher if None
        self._last_purge: datetime | None = None
        self._cron_seen: dict[str, datetime] = {}  # schedule -> when this beat first saw its changed cron

    @property
    def synchronous_sensors(self) -> bool:
        """Whether a tick waits for the evaluations it starts (up to their time limits). The
        constructor's ``synchronous_sensors`` if given, else ``[beat] synchronous_sensors``, else
        only when ``tick()`` is called on its own: ``run_forever`` evaluates concurrently, while
        a test stepping ``tick()`` with a fake clock sees each tick's outcome when it returns."""
        if self._synchronous is not None:
            return self._synchronous
        return self.options.synchronous_sensors or not self._looping

    # -- the loop --------------------------------------------------------------------------

    def run_forever(self, stop: threading.Event) -> None:
        log.info("beat %s: %d schedule(s), %d sensor(s)", self.holder, len(self.defs.schedules), len(self.defs.sensors))
        self._looping = True
        launcher = None
        if not self.synchronous_sensors:
            launcher = threading.Thread(target=self._launch_forever, args=(stop,), name="launcher", daemon=True)
            self._launcher_thread = launcher
            launcher.start()
        try:
            while not stop.is_set():
                try:
                    self.tick()
                except Exception:  # the database may be away; the next tick retries
                    log.exception("beat tick failed")
                self._sleep(stop, self.seconds_until_next())
        finally:
            if launcher is not None:
                self._launch_now.set()  # it sees ``stop`` at once
                launcher.join(timeout=30)
            self.storage.release_lease(LEASE_NAME, self.holder)

    def _launch_forever(self, stop: threading.Event) -> None:
        """The launcher's own loop (see the module docstring), while this beat holds the lease:
        a full round every ``launcher_interval``; between them, woken by a tick that committed
        runs, only the run queue's part (those runs start at once, the rest keeps its cadence)."""
        last_round = time.monotonic() - self.launcher_interval
        woken = False
        while not stop.is_set():
            full = not woken or time.monotonic() - last_round >= self.launcher_interval
            if self._leading:
                try:
                    if full:
                        self.launcher.tick()
                    else:
                        self.launcher.start_queued()
                except Exception:  # the database may be away; the next round retries
                    log.exception("launcher round failed")
            if full:
                last_round = time.monotonic()
            # until the next full round, or a tick committed runs (one committed meanwhile: at once)
            woken = self._launch_now.wait(max(0.0, last_round + self.launcher_interval - time.monotonic()))
            self._launch_now.clear()

    def _sleep(self, stop: threading.Event, seconds: float) -> None:
        """Until ``seconds`` pass, ``stop`` is set or an evaluation's thread ends (its sensor
        may be due again at once)."""
        end = time.monotonic() + seconds
        while not stop.is_set() and not self._wake.is_set():
            left = end - time.monotonic()
            if left <= 0:
                break
            self._wake.wait(min(left, 0.1))
        self._wake.clear()

    def seconds_until_next(self) -> float:
        """Until the earliest due schedule or sensor or the earliest time limit of a running
        evaluation, capped by the launcher's interval."""
        now = self.clock.now()
        wait = self.launcher_interval
        if self._heap:
            wait = min(wait, (self._heap[0][0] - now).total_seconds())
        for flight in self._inflight.values():
            if not flight.timed_out and not flight.evaluated.is_set():
                wait = min(wait, flight.deadline - time.monotonic())
        return max(0.01, wait)

    def wait_for_evaluations(self, timeout: float | None = None, *, sensors: Collection[str] | None = None) -> bool:
        """Wait until every evaluation in flight (of ``sensors`` if given) has ended (committed,
        or timed out and returned); the next ``tick`` collects them. For tests stepping
        concurrent evaluation; False if ``timeout`` passed first."""
        end = None if timeout is None else time.monotonic() + timeout
        for name, flight in list(self._inflight.items()):
            if sensors is not None and name not in sensors:
                continue
            left = None if end is None else max(0.0, end - time.monotonic())
            if not flight.done.wait(left):
                return False
        return True

    def tick(self, now: datetime | None = None) -> TickReport:
        now = now or self.clock.now()
        inline = self._launcher_thread is None  # this tick runs the launcher's round too
        assert self.launcher.monitor is not None
        look = self.storage.beat_round(
            LEASE_NAME,
            self.holder,
            ttl_seconds=self.lease_seconds,
            changed_after=self._refreshed_at,
            failed_since=self.launcher.monitor.failed_since() if inline else None,
            renew_after=self._renew_after,
        )
        self._leading = look.leader
        if not self._leading:
            self._heap.clear()  # a standby rebuilds from SQL when it becomes leader
            self._refreshed_at = None
            self._renew_after = None
            return TickReport(leader=False)
        if look.lease_expires is not None:  # renewed: again once a quarter of the lease has passed
            self._renew_after = look.lease_expires - timedelta(seconds=0.75 * self.lease_seconds)
        report = TickReport(leader=True)
        self._refresh(now, look)
        self._collect_sensors(report)
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
        self._collect_sensors(report, wait=self.synchronous_sensors)
        backfilling = look.pending is None or look.pending.backfills
        if backfilling:
            self.backfills.tick(now)
        if inline:
            # what this tick committed is not in the look: then the launcher looks again itself
            fresh = not report.schedule_ticks and not report.sensor_ticks and not backfilling
            report.published = self.launcher.tick(look.pending if fresh else None)
        self._purge(now)
        return report

    # -- instigator state ------------------------------------------------------------------

    def _refresh(self, now: datetime, look: BeatRound) -> None:
        """(Re)schedule the instigators whose state rows ``look`` read as changed since the
        last refresh (all of them at the first).

        "Since" is measured by the database's clock, which stamps every change (from the CLI
        on any host, or another beat), not by this beat's clock."""
        first = self._refreshed_at is None
        changed = {  # the overlap re-reads rows: only those that differ from what this beat holds
            name: state for name, state in look.changed.items() if state != self._states.get(name)
        }
        self._refreshed_at = look.now - timedelta(seconds=1)  # overlap: transactions still committing
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
                    batch_size=self.options.tick_batch_size,
                ),
            )
            if record is None:  # another beat committed it: reload and carry on from there
                state = self.storage.get_instigator(schedule.name) or state
                version = state.version
                continue
            version += 1
            if record.run_ids:
                self._launch_now.set()
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
            evaluation = schedule.evaluate(context, self._resources)
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
        live = sum(1 for f in self._inflight.values() if not f.timed_out)
        if live >= self.options.max_concurrent_evaluations:
            self._push(sensor.name, "sensor", now + timedelta(seconds=0.1))  # when a slot is free
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
        flight = _Inflight(now, state, time.monotonic() + sensor.time_limit_seconds)
        self._inflight[sensor.name] = flight
        thread = threading.Thread(
            target=self._evaluate_sensor, args=(sensor, context, flight), name=f"sensor-{sensor.name}", daemon=True
        )
        thread.start()

    def _evaluate_sensor(self, sensor: SensorDefinition, context: SensorEvaluationContext, flight: _Inflight) -> None:
        """The thread of one evaluation: evaluate, then commit the tick unless timed out. An
        automation tick runs with the cyclic garbage collector paused until it committed
        (``collector_paused``: its writes are then freed before any collection scans them)."""
        with collector_paused() if isinstance(sensor, AutomationConditionSensorDefinition) else nullcontext():
            self._evaluate_and_commit(sensor, context, flight)

    def _evaluate_and_commit(
        self, sensor: SensorDefinition, context: SensorEvaluationContext, flight: _Inflight
    ) -> None:
        on_commit: Callable[[], None] | None = None
        try:
            try:
                if isinstance(sensor, AutomationConditionSensorDefinition):
                    tick = self.automation.evaluate(sensor, context.cursor, flight.started_at)
                    outcome, on_commit = tick.outcome, tick.install
                else:
                    evaluation = sensor.evaluate(context, self._resources)
                    outcome = _outcome(evaluation, self._plan(sensor, evaluation, None))
                    on_commit = evaluation.on_commit
                    flight.backlog = evaluation.backlog
            except Exception:
                outcome = TickOutcome(TickStatus.FAILURE, error=traceback.format_exc())
            with flight.lock:
                if flight.timed_out:
                    return  # its tick failed already; this late result is dropped
                flight.evaluated.set()
            try:
                flight.record = self._commit_sensor(sensor, flight, outcome)
                flight.fresh = self.storage.get_instigator(sensor.name)
            except Exception as exc:  # the database went away: evaluate again at the next interval
                log.exception("%s: tick not recorded", sensor.label)
                flight.error = f"{exc!r:.200}"
                return
            if flight.record is not None and flight.record.run_ids:
                self._launch_now.set()
            if flight.record is not None and flight.record.status != TickStatus.FAILURE:
                _after_commit(sensor, on_commit)
        finally:
            flight.done.set()
            self._wake.set()

    def _collect_sensors(self, report: TickReport, *, wait: bool = False) -> None:
        """Report and reschedule finished evaluations; fail those past their time limit.
        With ``wait``, first wait (in real time) for each evaluation up to its own deadline
        and, once it returned in time, for its commit."""
        for name, flight in list(self._inflight.items()):
            sensor = self.defs.sensors[name]
            if wait and not flight.timed_out:
                flight.evaluated.wait(timeout=max(0.0, flight.deadline - time.monotonic()))
                if flight.evaluated.is_set():
                    flight.done.wait()
            if flight.done.is_set():
                del self._inflight[name]
                if not flight.timed_out:  # a timed-out one was reported and rescheduled already
                    self._report_sensor(sensor, flight, report)
                continue
            if flight.timed_out or time.monotonic() < flight.deadline:
                continue
            with flight.lock:
                if flight.evaluated.is_set():
                    continue  # it returned in time and is committing
                flight.timed_out = True  # kept in flight until its thread ends
            outcome = TickOutcome(
                TickStatus.FAILURE,
                error=f"TimeoutError: evaluation exceeded its time limit of {sensor.time_limit_seconds:g}s",
            )
            try:
                flight.record = self._commit_sensor(sensor, flight, outcome)
                flight.fresh = self.storage.get_instigator(sensor.name)
            except Exception as exc:
                log.exception("%s: tick not recorded", sensor.label)
                flight.error = f"{exc!r:.200}"
            self._report_sensor(sensor, flight, report)

    def _commit_sensor(self, sensor: SensorDefinition, flight: _Inflight, outcome: TickOutcome) -> TickRecord | None:
        """Commit one evaluation's tick (from its thread, or from the loop when it timed out)."""
        if outcome.status == TickStatus.FAILURE:
            outcome = TickOutcome(TickStatus.FAILURE, error=outcome.error)  # the cursor does not move
        when = flight.started_at
        return self._commit(
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
                batch_size=self.options.tick_batch_size,
            ),
        )

    def _report_sensor(self, sensor: SensorDefinition, flight: _Inflight, report: TickReport) -> None:
        """In the loop: report what came of an evaluation and schedule the sensor's next one."""
        when = flight.started_at
        if flight.error is not None:
            report.failures.append(f"{sensor.label}: tick not recorded: {flight.error}")
            self._push(sensor.name, "sensor", when + timedelta(seconds=sensor.minimum_interval_seconds))
            return
        record = flight.record
        if record is None:
            log.info("%s: tick at %s superseded (another beat or a cursor reset)", sensor.label, when)
        else:
            report.sensor_ticks.append(f"{sensor.name}@{when.isoformat()}")
            if record.status == TickStatus.FAILURE:
                report.failures.append(f"{sensor.label}: {_last_line(record.error)}")
                log.warning("%s: tick FAILURE: %s", sensor.label, _last_line(record.error))
        if flight.fresh is not None:
            self._states[sensor.name] = flight.fresh
        if self._running(sensor.name, sensor.default_status):
            # an event sensor that left events for later is due again at once (the next tick time)
            backlog = record is not None and flight.backlog and not flight.timed_out
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
        if self._last_purge is not None and now - self._last_purge < timedelta(hours=1):
            return
        self._last_purge = now
        if self.retention is not None:
            removed = self.storage.purge_ticks(status=TickStatus.SKIPPED, before=now - self.retention)
            if removed:
                log.info("purged %d SKIPPED tick(s) older than %s", removed, self.retention)
        kept = timedelta(days=self.options.automation_evaluation_retention_days)
        removed = self.storage.prune_automation_evaluations(before=now - kept)
        if removed:
            log.info("pruned %d automation evaluation(s) older than %s", removed, kept)


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
