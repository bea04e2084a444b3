"""Constants shared by every process: task names, tag keys and every status, in one place.

Statuses are :class:`enum.StrEnum` members, so they compare equal to (and are stored as) their
plain string values; no status is spelled as a string literal anywhere else.
"""

from enum import StrEnum, nonmember

EXECUTE_STEP_TASK = "tidegate.execute_step"
LAUNCH_JOB_TASK = "tidegate.launch_job"  # launch a job from Flower: POST /api/task/async-apply/<this>

# -- tag keys: every tag tidegate writes starts with TAG_PREFIX ---------------------------------

TAG_PREFIX = "tidegate/"
PRIORITY_TAG = "tidegate/priority"
MAX_RETRIES_TAG = "tidegate/max_retries"
RETRY_NUMBER_TAG = "tidegate/retry_number"
PARENT_RUN_TAG = "tidegate/parent_run_id"
ROOT_RUN_TAG = "tidegate/root_run_id"
PARTITION_TAG = "tidegate/partition"
PARTITION_RANGE_START_TAG = "tidegate/partition_range_start"
PARTITION_RANGE_END_TAG = "tidegate/partition_range_end"
SCHEDULE_TAG = "tidegate/schedule"
SENSOR_TAG = "tidegate/sensor"
TICK_TAG = "tidegate/tick"
BACKFILL_TAG = "tidegate/backfill"
LAUNCHED_BY_TAG = "tidegate/launched_by"  # the API token that launched a run through the webserver
ASSET_SELECTION_TAG = "tidegate/asset_selection"  # a backfill of some assets of its job: a JSON list of keys
AUTOMATION_TAG = "tidegate/automation_sensor"  # the automation condition sensor that requested the run
CODE_LOCATION_TAG = "tidegate/code_location"  # the code location whose Definitions planned the run
FILE_TAG = "tidegate/file"
S3_BUCKET_TAG = "tidegate/s3_bucket"
S3_KEY_TAG = "tidegate/s3_key"
S3_ETAG_TAG = "tidegate/s3_etag"
S3_SIZE_TAG = "tidegate/s3_size"


def step_task_id(run_id: str, step_key: str, attempt: int) -> str:
    """The Celery task id of one attempt of one step: known without asking the broker, so a
    running step can be revoked by whoever cancels its run."""
    return f"{run_id}.{step_key}.{attempt}"


# -- statuses -----------------------------------------------------------------------------------


class RunStatus(StrEnum):
    QUEUED = "QUEUED"
    STARTED = "STARTED"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    CANCELED = "CANCELED"
    TERMINAL = nonmember(frozenset({SUCCESS, FAILURE, CANCELED}))


class StepStatus(StrEnum):
    PLANNED = "PLANNED"  # waiting for upstream steps
    WAITING = "WAITING"  # upstream done; waiting for a slot of its concurrency pool
    READY = "READY"  # may run; not yet handed to the broker (or due for a retry)
    ENQUEUED = "ENQUEUED"  # published to the broker
    RUNNING = "RUNNING"  # claimed by a worker for the current attempt
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"  # an upstream step failed
    CANCELED = "CANCELED"
    TERMINAL = nonmember(frozenset({SUCCEEDED, FAILED, SKIPPED, CANCELED}))


class PartitionStatus(StrEnum):
    """The latest outcome of one partition of one asset (MISSING: no outcome yet)."""

    MATERIALIZED = "MATERIALIZED"
    FAILED = "FAILED"
    MISSING = "MISSING"


class TickStatus(StrEnum):
    """How one schedule or sensor tick ended."""

    SUCCESS = "SUCCESS"
    SKIPPED = "SKIPPED"
    FAILURE = "FAILURE"


class InstigatorStatus(StrEnum):
    """Whether a schedule or sensor is evaluated by the beat."""

    RUNNING = "RUNNING"
    STOPPED = "STOPPED"


class Role(StrEnum):
    """What an API token may do, each role including the ones before it: a viewer reads, a
    launcher also launches and cancels runs and backfills, an admin also changes schedules,
    sensors, cursors, pools and tokens."""

    VIEWER = "viewer"
    LAUNCHER = "launcher"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return list(Role).index(self)

    def includes(self, other: "Role") -> bool:
        return self.rank >= other.rank


class BackfillStatus(StrEnum):
    REQUESTED = "REQUESTED"
    COMPLETED = "COMPLETED"
    CANCELED = "CANCELED"


class EventType(StrEnum):
    """The event types of the event log that sensors read (Dagster's ``DagsterEventType``
    names; RUN_START and RUN_ENQUEUED are Dagster's names of RUN_STARTED and RUN_QUEUED)."""

    ASSET_MATERIALIZATION = "ASSET_MATERIALIZATION"
    ASSET_OBSERVATION = "ASSET_OBSERVATION"
    RUN_QUEUED = "RUN_QUEUED"
    RUN_ENQUEUED = "RUN_QUEUED"
    RUN_STARTED = "RUN_STARTED"
    RUN_START = "RUN_STARTED"
    RUN_SUCCESS = "RUN_SUCCESS"
    RUN_FAILURE = "RUN_FAILURE"
    RUN_CANCELED = "RUN_CANCELED"
    STEP_STARTED = "STEP_STARTED"
    STEP_SUCCESS = "STEP_SUCCESS"
    STEP_FAILURE = "STEP_FAILURE"
    STEP_UP_FOR_RETRY = "STEP_UP_FOR_RETRY"
    STEP_SKIPPED = "STEP_SKIPPED"
    STEP_OUTPUT = "STEP_OUTPUT"  # an op step's output (its name and metadata)
    DYNAMIC_OUTPUT = "DYNAMIC_OUTPUT"  # an op step's dynamic output: its mapping keys, in order
    LOG = "LOG"

    @classmethod
    def for_run_status(cls, status: str) -> "EventType":
        """The event a run's change to ``status`` writes (RUN_<status>)."""
        return cls(f"RUN_{status}")
