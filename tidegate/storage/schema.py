"""The SQL schema. Migrations in ``migrations/versions`` create exactly these tables.

The sizes of the columns that hold user input come from tidegate.definitions.limits, which
checks every value against them where it comes in (changing one needs a migration)."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from tidegate.definitions.limits import ASSET_KEY_COLUMN, CRON_COLUMN, NAME_COLUMN, PARTITION_KEY_COLUMN, RUN_KEY_COLUMN

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
Id = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData()

runs = Table(
    "runs",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("job_name", String(NAME_COLUMN), nullable=False),
    Column("status", String(16), nullable=False),
    Column("origin", String(NAME_COLUMN), nullable=False),
    Column("run_key", String(RUN_KEY_COLUMN), nullable=True),
    Column("priority", Integer, nullable=False, default=0),
    Column("tags", JSON, nullable=False),
    Column("asset_selection", JSON, nullable=True),
    Column("parent_run_id", String(64), nullable=True),
    Column("steps_remaining", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=True),
    Column("ended_at", DateTime(timezone=True), nullable=True),
    # {"ops": {...}, "resources": {...}}; an EnvVar as {"env": NAME}, never its value
    Column("run_config", JSON, nullable=True),
    UniqueConstraint("origin", "run_key", name="uq_runs_origin_run_key"),
)
Index("ix_runs_status_priority", runs.c.status, runs.c.priority, runs.c.created_at)
Index("ix_runs_created_at", runs.c.created_at)

steps = Table(
    "steps",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("run_id", String(64), nullable=False),
    Column("step_key", String(ASSET_KEY_COLUMN), nullable=False),
    Column("asset_key", String(ASSET_KEY_COLUMN), nullable=False),
    Column("display_name", String(ASSET_KEY_COLUMN), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("queue", String(NAME_COLUMN), nullable=False),
    Column("downstream", JSON, nullable=False),
    Column("pending_upstream", Integer, nullable=False),
    Column("worker", String(255), nullable=True),
    Column("ready_at", DateTime(timezone=True), nullable=True),
    Column("enqueued_at", DateTime(timezone=True), nullable=True),
    Column("started_at", DateTime(timezone=True), nullable=True),
    Column("ended_at", DateTime(timezone=True), nullable=True),
    Column("heartbeat_at", DateTime(timezone=True), nullable=True),
    Column("error", Text, nullable=True),
    Column("pool", String(NAME_COLUMN), nullable=True),
    Column("timeout", Float, nullable=True),
    UniqueConstraint("run_id", "step_key", name="uq_steps_run_step"),
)
Index("ix_steps_status_ready_at", steps.c.status, steps.c.ready_at)
Index("ix_steps_pool_status", steps.c.pool, steps.c.status)

pools = Table(
    "pools",
    metadata,
    Column("name", String(NAME_COLUMN), primary_key=True),
    Column("slots", Integer, nullable=False),
)

events = Table(
    "events",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("run_id", String(64), nullable=False),
    Column("step_key", String(ASSET_KEY_COLUMN), nullable=True),
    Column("event_type", String(64), nullable=False),
    Column("timestamp", DateTime(timezone=True), nullable=False),
    Column("message", Text, nullable=True),
    Column("data", JSON, nullable=True),
)
Index("ix_events_run_id", events.c.run_id, events.c.id)
Index("ix_events_type_id", events.c.event_type, events.c.id)  # run-status sensors read one type after a cursor

materializations = Table(
    "materializations",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("asset_key", String(ASSET_KEY_COLUMN), nullable=False),
    Column("partition_key", String(PARTITION_KEY_COLUMN), nullable=True),
    Column("run_id", String(64), nullable=False),
    Column("step_key", String(ASSET_KEY_COLUMN), nullable=False),
    Column("metadata", JSON, nullable=False),
    Column("timestamp", DateTime(timezone=True), nullable=False),
)
Index("ix_materializations_asset", materializations.c.asset_key, materializations.c.id)

instigators = Table(
    "instigators",
    metadata,
    Column("name", String(NAME_COLUMN), primary_key=True),
    Column("kind", String(16), nullable=False),  # schedule | sensor
    Column("status", String(16), nullable=True),  # RUNNING | STOPPED; NULL: the code's default
    Column("cursor", Text, nullable=True),
    Column("version", Integer, nullable=False),  # compare-and-set token for tick commits
    Column("cron", String(CRON_COLUMN), nullable=True),  # the cron the last schedule tick used
    Column("running_since", DateTime(timezone=True), nullable=True),
    Column("last_tick_at", DateTime(timezone=True), nullable=True),
    Column("next_tick_at", DateTime(timezone=True), nullable=True),
    Column("last_run_key", String(RUN_KEY_COLUMN), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
Index("ix_instigators_updated_at", instigators.c.updated_at)

ticks = Table(
    "ticks",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("instigator", String(NAME_COLUMN), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("tick_time", DateTime(timezone=True), nullable=False),
    Column("status", String(16), nullable=False),  # SUCCESS | SKIPPED | FAILURE
    Column("run_ids", JSON, nullable=False),
    Column("new_run_keys", JSON, nullable=False),
    Column("skipped_run_keys", JSON, nullable=False),
    Column("skip_reason", Text, nullable=True),
    Column("error", Text, nullable=True),
    Column("cursor", Text, nullable=True),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("ended_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("instigator", "tick_time", name="uq_ticks_instigator_time"),
)
Index("ix_ticks_instigator_id", ticks.c.instigator, ticks.c.id)

leases = Table(
    "leases",
    metadata,
    Column("name", String(NAME_COLUMN), primary_key=True),
    Column("holder", String(255), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)

dynamic_partitions = Table(
    "dynamic_partitions",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("partitions_def", String(NAME_COLUMN), nullable=False),
    Column("partition_key", String(PARTITION_KEY_COLUMN), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("partitions_def", "partition_key", name="uq_dynamic_partitions_key"),
)

backfills = Table(
    "backfills",
    metadata,
    Column("backfill_id", String(64), primary_key=True),
    Column("job_name", String(NAME_COLUMN), nullable=False),
    Column("partition_keys", JSON, nullable=False),
    Column("status", String(16), nullable=False),  # REQUESTED | COMPLETED | CANCELED
    Column("max_concurrent", Integer, nullable=True),
    Column("tags", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("ended_at", DateTime(timezone=True), nullable=True),
    # [[first, last], ...]: one run per range (BackfillPolicy); NULL: one run per partition
    Column("run_ranges", JSON, nullable=True),
    Column("run_config", JSON, nullable=True),  # each run's config, as runs.run_config
)

# The latest outcome of every (asset, partition): what `assets list` counts and what a
# --missing backfill leaves out, without reading every materialization.
asset_partitions = Table(
    "asset_partitions",
    metadata,
    Column("asset_key", String(ASSET_KEY_COLUMN), primary_key=True),
    Column("partition_key", String(PARTITION_KEY_COLUMN), primary_key=True),
    Column("status", String(16), nullable=False),  # MATERIALIZED | FAILED
    Column("run_id", String(64), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
Index("ix_asset_partitions_status", asset_partitions.c.asset_key, asset_partitions.c.status)

# API tokens of the webserver: only a SHA-256 digest of each token is kept (a token is 256
# random bits, so a fast digest cannot be reversed by guessing).
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("token_id", String(32), primary_key=True),
    Column("name", String(NAME_COLUMN), nullable=False),
    Column("role", String(16), nullable=False),  # viewer | launcher | admin
    Column("token_hash", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("last_used_at", DateTime(timezone=True), nullable=True),
    UniqueConstraint("name", name="uq_api_tokens_name"),
    UniqueConstraint("token_hash", name="uq_api_tokens_hash"),
)


# Per automation tick and asset whose evaluation changed (or requested runs): the condition tree
# as evaluated (each node's true subset and candidate size, and why) and the runs requested.
automation_evaluations = Table(
    "automation_evaluations",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("sensor", String(NAME_COLUMN), nullable=False),
    Column("tick_id", BigInteger, nullable=False),
    Column("asset_key", String(ASSET_KEY_COLUMN), nullable=False),
    Column("evaluated_at", DateTime(timezone=True), nullable=False),  # the tick time (the beat's clock)
    Column("requested", Integer, nullable=False),  # how many (asset, partition)s were requested
    Column("record", JSON, nullable=False),
    Column("run_ids", JSON, nullable=False),
    Column("backfill_ids", JSON, nullable=False),
)
Index("ix_automation_evaluations_asset", automation_evaluations.c.asset_key, automation_evaluations.c.tick_id)
Index("ix_automation_evaluations_time", automation_evaluations.c.evaluated_at)

# The condition templates that stored evaluation records name by digest (a record of eager()
# was 1.3 KB, 0.74 of it the template, the same for every asset with the condition): one row
# per distinct template, written in the transaction of the first tick whose records name it,
# never pruned (a few rows: one per distinct condition ever evaluated).
automation_templates = Table(
    "automation_templates",
    metadata,
    Column("digest", String(64), primary_key=True),
    Column("template", Text, nullable=False),
)

# An automation sensor's cursor, per asset: the instigator row keeps the cursor's head (event
# ids, a sequence number); each asset's state is a row here, written only when it changed, in
# the tick's transaction. ``seq`` is the head's sequence number of the tick that wrote it.
automation_cursor_entries = Table(
    "automation_cursor_entries",
    metadata,
    Column("sensor", String(NAME_COLUMN), primary_key=True),
    Column("asset_key", String(ASSET_KEY_COLUMN), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("entry", Text, nullable=False),  # the AssetCursor as JSON
    # every tick rewrites the entries it evaluated: room on each page keeps the updates
    # heap-only (migration 0013)
    postgresql_with={"fillfactor": 40},
)
