"""Constants shared by every process: task names, tag keys, states."""

EXECUTE_STEP_TASK = "tidegate.execute_step"

TAG_PREFIX = "tidegate/"
PRIORITY_TAG = "tidegate/priority"


class RunStatus:
    QUEUED = "QUEUED"
    STARTED = "STARTED"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    CANCELED = "CANCELED"
    TERMINAL = frozenset({SUCCESS, FAILURE, CANCELED})


class StepStatus:
    PLANNED = "PLANNED"  # waiting for upstream steps
    READY = "READY"  # may run; not yet handed to the broker (or due for a retry)
    ENQUEUED = "ENQUEUED"  # published to the broker
    RUNNING = "RUNNING"  # claimed by a worker for the current attempt
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"  # an upstream step failed
    CANCELED = "CANCELED"
    TERMINAL = frozenset({SUCCEEDED, FAILED, SKIPPED, CANCELED})
