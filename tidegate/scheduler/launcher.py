"""Starts QUEUED runs and publishes steps that are due but unsent.

This is the simple launcher of the core issue: every QUEUED run starts at once (highest
priority first). The beat calls ``tick()``; until it runs, the launching CLI command and
``tidegate dev`` call it themselves.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tidegate.storage.api import Storage
from tidegate.storage.records import StepRef

log = logging.getLogger("tidegate.launcher")


@dataclass
class Launcher:
    storage: Storage
    publish: Callable[[Sequence[StepRef]], None]
    republish_grace_seconds: float = 2.0

    def tick(self) -> int:
        """Start queued runs and publish due steps; returns how many steps were published."""
        published = 0
        for run_id in self.storage.queued_run_ids():
            ready = self.storage.start_run(run_id)
            if ready:
                log.info("run %s started: %d root step(s)", run_id, len(ready))
            self.publish(ready)
            published += len(ready)
        due = self.storage.steps_to_publish(grace_seconds=self.republish_grace_seconds)
        if due:
            self.publish(due)
            published += len(due)
        return published
