"""Constants shared by every process: task names, tag keys, states."""

EXECUTE_STEP_TASK = "tidegate.execute_step"
LAUNCH_JOB_TASK = "tidegate.launch_job"  # launch a job from Flower: POST /api/task/async-apply/<this>

TAG_PREFIX = "tidegate/"
PRIORITY_TAG = "tidegate/priority"
MAX_RETRIES_TAG = "tidegate/max_retries"
RETRY_NUMBER_TAG = "tidegate/retry_number"
PARENT_RUN_TAG = "tidegate/parent_run_id"
ROOT_RUN_TAG = "tidegate/root_run_id"


def step_task_id(run_id: str, step_key: str, attempt: int) -> str:
    """The Celery task id of one attempt of one step: known without asking the broker, so a
    running step can be revoked by whoever cancels its run."""
    return f"{run_id}.{step_key}.{attempt}"


class RunStatus:
    QUEUED = "QUEUED"
    STARTED = "STARTED"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    CANCELED = "CANCELED"
    TERMINAL = frozenset({SUCCESS, FAILURE, CANCELED})


class StepStatus:
    PLANNED = "PLANNED"  # waiting for upstream steps
    WAITING = "WAITING"  # upstream done; waiting for a slot of its concurrency pool
    READY = "READY"  # may run; not yet handed to the broker (or due for a retry)
    ENQUEUED = "ENQUEUED"  # published to the broker
    RUNNING = "RUNNING"  # claimed by a worker for the current attempt
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"  # an upstream step failed
    CANCELED = "CANCELED"
    TERMINAL = frozenset({SUCCEEDED, FAILED, SKIPPED, CANCELED})


class PartitionStatus:
    """The latest outcome of one partition of one asset (MISSING: no outcome yet)."""

    MATERIALIZED = "MATERIALIZED"
    FAILED = "FAILED"
    MISSING = "MISSING"
