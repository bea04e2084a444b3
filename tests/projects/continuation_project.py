"""A project for tests/test_continuation.py's real-worker revoke test: ``first -> stuck``.

``stuck`` appends ``started <run_id> <pid>`` to ``$TIDEGATE_TEST_EFFECTS/stuck.log``, then
sleeps without calling anything of its context (so no cooperative interruption can stop it)
for up to 120 s, and appends ``finished <run_id>`` if it ever gets there: only terminating its
process stops it early.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import tidegate as tg


def _effect(line: str) -> None:
    directory = Path(os.environ["TIDEGATE_TEST_EFFECTS"])
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "stuck.log", "a") as out:
        out.write(line + "\n")


@tg.asset
def first() -> None:
    pass


@tg.asset(deps=[first])
def stuck(context: tg.AssetExecutionContext) -> None:
    _effect(f"started {context.run_id} {os.getpid()}")
    run_id = context.run_id
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.05)
    _effect(f"finished {run_id}")


defs = tg.Definitions(assets=[first, stuck], jobs=[tg.define_asset_job("stuck_job", [first, stuck])])
