"""Starts QUEUED runs within the run queue's limits, publishes steps that are due but
unsent, and runs the run monitor. The beat calls ``tick()`` every round; so do the launching
CLI command and ``tidegate dev``.

A round first reads :class:`PendingWork` (one statement: is any run QUEUED, any step READY,
WAITING, RUNNING or ENQUEUED, any run failed since the last look?) and then does only what it
says exists, so an idle round is one indexed statement. Nothing waits longer than before: a
QUEUED run is considered at every round while any is queued (so a freed slot is used at the
next round), and the monitor looks at every round while any step is in flight.

A run whose job the loaded code does not define is failed only by a launcher of the run's own
code location (the ``tidegate/code_location`` tag; untagged runs by any launcher); a launcher
of another code location, e.g. ``tidegate job launch -m other``, leaves it queued.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tidegate.config import Settings
from tidegate.definitions.defs import Definitions
from tidegate.scheduler.monitor import RunMonitor
from tidegate.scheduler.run_queue import QueueDecision, decide, location_hold
from tidegate.storage.api import Storage
from tidegate.storage.control import PendingWork
from tidegate.storage.records import StepRef

log = logging.getLogger("tidegate.launcher")


@dataclass
class Launcher:
    storage: Storage
    publish: Callable[[Sequence[StepRef]], None]
    republish_grace_seconds: float = 2.0
    defs: Definitions | None = None
    config: Settings = field(default_factory=Settings.defaults)
    monitor: RunMonitor | None = None

    def __post_init__(self) -> None:
        if self.monitor is None:
            publisher: Any = self.publish if hasattr(self.publish, "revoke") else None
            self.monitor = RunMonitor(self.storage, self.publish, self.defs, self.config.run_monitor, publisher)

    def queue_decisions(self) -> list[QueueDecision]:
        hold = None
        if self.defs is not None:
            jobs, location = set(self.defs.jobs), self.defs.code_location
            hold = functools.partial(location_hold, jobs=jobs, location=location)
        queued, started = self.storage.queue_view()
        return decide(self.config.run_queue, queued, started, hold=hold)

    def pending(self) -> PendingWork:
        """This launcher's look at the start of a round (see the module docstring)."""
        assert self.monitor is not None
        return self.storage.pending_work(failed_since=self.monitor.failed_since())

    def tick(self, pending: PendingWork | None = None) -> int:
        """Start what the run queue allows, publish due steps, run the monitor; returns how
        many steps were published. ``pending``: the round's look if the caller read it (the
        beat, in its own round's transaction), else read here."""
        pending = pending or self.pending()
        published = self.start_queued() if pending.queued else 0
        due = []
        if pending.ready:
            due += self.storage.steps_to_publish(grace_seconds=self.republish_grace_seconds)
        if pending.waiting:
            due += self.storage.fill_all_pools()
        if due:
            self.publish(due)
            published += len(due)
        assert self.monitor is not None
        self.monitor.check(pending=pending)
        return published

    def start_queued(self) -> int:
        """The run queue's part of a round: start what it allows and publish those runs' ready
        steps; returns how many. (The beat's launcher thread runs only this when a tick has just
        committed runs, between its full rounds.)"""
        published = 0
        for decision in self.queue_decisions():
            if not decision.start:
                continue
            run = decision.run
            if self.defs is not None and run.job_name not in self.defs.jobs:
                message = f"job '{run.job_name}' is not defined in the loaded code (was it renamed or removed?)"
                self.storage.fail_run(run.run_id, message)
                log.warning("run %s failed: %s", run.run_id, message)
                continue
            ready = self.storage.start_run(run.run_id)
            if ready:
                log.info("run %s started: %d step(s) ready", run.run_id, len(ready))
            self.publish(ready)
            published += len(ready)
        return published
