"""``file_sensor``: one run per new file in a directory.

The cursor is a single timestamp, so it stays the same size however many files arrive. Each
tick lists the directory and requests every matching file whose change time (the later of
mtime and ctime, so a file renamed into place counts when it lands) is at or after the cursor;
the new cursor is the listing's start time minus a safety lag. Files that land while the
directory is listed, or many files sharing one mtime, are therefore requested by the next
tick at the latest, and files requested twice are dropped by their run key (the path
relative to the directory), which a sensor never reuses. A file re-written under the same
name is not a new arrival.
"""

from __future__ import annotations

import fnmatch
import os
import time
from pathlib import Path
from typing import Any

from tidegate.definitions.instigator import DefaultSensorStatus
from tidegate.definitions.run_request import RunRequest, SensorResult, SkipReason
from tidegate.definitions.sensor import (
    DEFAULT_MINIMUM_INTERVAL,
    DEFAULT_TIME_LIMIT,
    SensorDefinition,
    SensorEvaluationContext,
    make_sensor,
)
from tidegate.errors import InvalidDefinitionError
from tidegate.names import FILE_TAG

SAFETY_LAG_SECONDS = 5.0


def file_sensor(
    name: str,
    directory: str | os.PathLike[str],
    pattern: str = "*.csv",
    *,
    target: Any = None,
    job: Any = None,
    recursive: bool = False,
    minimum_interval_seconds: float = DEFAULT_MINIMUM_INTERVAL,
    time_limit_seconds: float = DEFAULT_TIME_LIMIT,
    default_status: DefaultSensorStatus = DefaultSensorStatus.STOPPED,
    lag_seconds: float = SAFETY_LAG_SECONDS,
) -> SensorDefinition:
    root = Path(directory)
    if not isinstance(pattern, str) or not pattern:
        raise InvalidDefinitionError(f"sensor {name!r}: pattern must be a non-empty glob, got {pattern!r}")

    def evaluate(context: SensorEvaluationContext) -> SensorResult | SkipReason:
        if not root.is_dir():
            return SkipReason(f"directory {root} does not exist")
        started_ns = time.time_ns()
        since = int(context.cursor) if context.cursor else 0
        requests = []
        for path, changed_ns in _list(root, pattern, recursive):
            if changed_ns >= since:
                relative = path.relative_to(root).as_posix()
                requests.append(RunRequest(run_key=relative, tags={FILE_TAG: str(path)}))
        cursor = str(max(since, started_ns - int(lag_seconds * 1e9)))
        if not requests:
            return SensorResult(cursor=cursor, skip_reason=SkipReason(f"no new file matching {pattern!r} in {root}"))
        return SensorResult(run_requests=requests, cursor=cursor)

    evaluate.__name__ = name
    return make_sensor(
        evaluate,
        name=name,
        job=job,
        target=target,
        minimum_interval_seconds=minimum_interval_seconds,
        time_limit_seconds=time_limit_seconds,
        default_status=default_status,
        description=f"One run per new file matching {pattern!r} in {root}",
    )


def _list(root: Path, pattern: str, recursive: bool) -> list[tuple[Path, int]]:
    found = []
    walker = os.walk(root) if recursive else [(str(root), [], os.listdir(root))]
    for folder, _dirs, names in walker:
        for filename in sorted(names):
            if not fnmatch.fnmatch(filename, pattern):
                continue
            path = Path(folder) / filename
            try:
                info = path.stat()
            except FileNotFoundError:  # deleted while listing
                continue
            if path.is_file():
                found.append((path, max(info.st_mtime_ns, info.st_ctime_ns)))
    return found
