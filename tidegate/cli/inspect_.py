"""Reading runs and assets from the command line."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import click

from tidegate.cli.common import code_location_options, handle_errors, is_embedded_broker, load, open_storage
from tidegate.cli.output import Column, json_option, print_json, print_table
from tidegate.definitions.config import redacted
from tidegate.errors import TidegateError
from tidegate.names import PartitionStatus, RunStatus

_RUN_COLUMNS: tuple[Column, ...] = (
    Column("RUN ID"),
    Column("JOB"),
    Column("STATUS", styled=True),
    Column("CREATED"),
    Column("DURATION", "right"),
    Column("ORIGIN"),
)
_STEP_COLUMNS: tuple[Column, ...] = (
    Column("STEP"),
    Column("STATUS", styled=True),
    Column("ATTEMPT", "right"),
    Column("DURATION", "right"),
    Column("WORKER"),
)


def _when(value: datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _seconds(start: datetime | None, end: datetime | None) -> str:
    duration = _duration(start, end)
    return f"{duration:.2f}s" if duration is not None else "-"


def _duration(start: datetime | None, end: datetime | None) -> float | None:
    return (end - start).total_seconds() if start and end else None


@click.group()
def runs() -> None:
    """List and inspect runs."""


@runs.command("list")
@click.option("--status", type=click.Choice(sorted([RunStatus.QUEUED, RunStatus.STARTED, *RunStatus.TERMINAL])))
@click.option("--limit", type=int, default=20, show_default=True)
@json_option
@handle_errors
def list_runs(status: str | None, limit: int, as_json: bool) -> None:
    """Newest runs first."""
    storage = open_storage()
    records = storage.list_runs(status=status, limit=limit)
    if as_json:
        print_json(
            [
                {
                    "run_id": r.run_id,
                    "job_name": r.job_name,
                    "status": r.status,
                    "origin": r.origin,
                    "run_key": r.run_key,
                    "priority": r.priority,
                    "tags": dict(r.tags),
                    "run_config": redacted(r.run_config) if r.run_config else None,
                    "created_at": r.created_at,
                    "started_at": r.started_at,
                    "ended_at": r.ended_at,
                    "duration_seconds": _duration(r.started_at, r.ended_at),
                }
                for r in records
            ]
        )
        return
    if not records:
        click.echo("no runs")
        return
    print_table(
        _RUN_COLUMNS,
        (
            [r.run_id, r.job_name, r.status, _when(r.created_at), _seconds(r.started_at, r.ended_at), r.origin]
            for r in records
        ),
    )


@runs.command("show")
@click.argument("run_id")
@handle_errors
def show_run(run_id: str) -> None:
    """Steps of a run with durations, attempts and errors (a unique id prefix is enough)."""
    storage = open_storage()
    run = storage.get_run(storage.find_run_id(run_id))
    click.echo(f"run      {run.run_id}")
    click.echo(f"job      {run.job_name}")
    click.echo(f"status   {run.status}")
    click.echo(f"origin   {run.origin}" + (f" (run key {run.run_key})" if run.run_key else ""))
    if run.tags:
        click.echo("tags     " + ", ".join(f"{k}={v}" for k, v in sorted(run.tags.items())))
    if run.run_config:
        # EnvVar values are never stored; their markers show as redacted
        shown = json.dumps(redacted(run.run_config), indent=2, sort_keys=True).replace("\n", "\n         ")
        click.echo(f"config   {shown}")
    click.echo(f"created  {_when(run.created_at)}   started {_when(run.started_at)}   ended {_when(run.ended_at)}")
    click.echo("")
    steps = storage.get_steps(run.run_id)
    print_table(
        _STEP_COLUMNS,
        ([s.step_key, s.status, str(s.attempt), _seconds(s.started_at, s.ended_at), s.worker or "-"] for s in steps),
    )
    for s in steps:
        if s.error:
            click.echo("")
            click.echo(click.style(f"error in step '{s.step_key}' (attempt {s.attempt}):", fg="red"))
            click.echo(s.error.rstrip())


@click.group()
def assets() -> None:
    """Inspect assets."""


@assets.command("list")
@code_location_options
@json_option
@handle_errors
def list_assets(module: str | None, file_: str | None, as_json: bool) -> None:
    """Every asset with its group and last materialization."""
    defs = load(module, file_)
    storage = open_storage()
    latest = storage.latest_materializations()
    counts = storage.partition_status_counts()
    dynamic = storage.dynamic_partition_keys
    listed: list[dict[str, Any]] = []
    for key in defs.graph.order:
        record = latest.get(str(key))
        partitions: dict[str, int] | None = None
        partitions_def = defs.assets[key].partitions_def
        if partitions_def is not None:
            total = len(partitions_def.get_partition_keys(dynamic_keys=dynamic))
            status = counts.get(str(key), {})
            done, failed = status.get(PartitionStatus.MATERIALIZED, 0), status.get(PartitionStatus.FAILED, 0)
            missing = max(0, total - done - failed)
            partitions = {"materialized": done, "failed": failed, "missing": missing, "total": total}
        listed.append(
            {
                "asset_key": str(key),
                "group_name": defs.assets[key].group_name,
                "last_materialized_at": record.timestamp if record else None,
                "last_run_id": record.run_id if record else None,
                "partitions": partitions,
            }
        )
    if as_json:
        print_json(listed)
        return
    print_table(
        [Column("ASSET"), Column("GROUP"), Column("LAST MATERIALIZED"), Column("RUN"), Column("PARTITIONS", wrap=True)],
        (
            [
                a["asset_key"],
                a["group_name"],
                _when(a["last_materialized_at"]) if a["last_materialized_at"] else "never",
                a["last_run_id"] or "-",
                "{materialized} materialized, {failed} failed, {missing} missing of {total}".format(**a["partitions"])
                if a["partitions"]
                else "-",
            ]
            for a in listed
        ),
    )


@runs.command("cancel")
@click.argument("run_id")
@handle_errors
def cancel_run(run_id: str) -> None:
    """Cancel a run: steps not started never start, running steps are terminated."""
    from tidegate.broker import CeleryPublisher, get_app

    storage = open_storage()
    full_id = storage.find_run_id(run_id)
    result = storage.cancel_run(full_id)
    if not result.canceled:
        raise TidegateError(f"run '{full_id}': already {storage.get_run(full_id).status}; nothing to cancel")
    publisher = CeleryPublisher(get_app(), storage)
    publisher.revoke(result.running)
    publisher(result.released)  # pool slots it freed went to other runs' waiting steps
    click.echo(f"run {full_id} CANCELED ({len(result.running)} running step(s) terminated)")


@runs.command("reexecute")
@click.argument("run_id")
@code_location_options
@click.option("--from-failure", is_flag=True, help="Only the steps that did not succeed.")
@handle_errors
def reexecute_run(run_id: str, module: str | None, file_: str | None, from_failure: bool) -> None:
    """Submit a new run of RUN_ID's steps (all, or only failed and skipped ones)."""
    from tidegate.broker import CeleryPublisher, get_app
    from tidegate.scheduler.launcher import Launcher
    from tidegate.scheduler.reexecution import submit_reexecution

    defs = load(module, file_)
    storage = open_storage()
    full_id = storage.find_run_id(run_id)
    result = submit_reexecution(defs, storage, full_id, from_failure=from_failure)
    steps = storage.get_steps(result.run_id)
    click.echo(f"run {result.run_id} submitted: re-execution of {full_id}, {len(steps)} step(s)")
    if not is_embedded_broker():
        from tidegate.config import Settings

        Launcher(storage, CeleryPublisher(get_app(), storage), defs=defs, config=Settings.load()).tick()


@click.command("queue")
@code_location_options
@json_option
@handle_errors
def queue(module: str | None, file_: str | None, as_json: bool) -> None:
    """What is queued, in start order, and why each run waits (with -m/-f: as a launcher
    that has loaded that code location sees it)."""
    import functools

    from tidegate.config import Settings
    from tidegate.scheduler.run_queue import decide, location_hold

    hold = None
    if module or file_:
        defs = load(module, file_)
        hold = functools.partial(location_hold, jobs=set(defs.jobs), location=defs.code_location)
    storage = open_storage()
    config = Settings.load()
    in_progress = storage.started_runs()
    limit = config.run_queue.max_concurrent_runs
    decisions = decide(config.run_queue, storage.queued_runs(), in_progress, hold=hold)
    if as_json:
        print_json(
            {
                "config": config.source,
                "max_concurrent_runs": limit,
                "tag_concurrency_limits": [
                    {"key": t.key, "value": t.value, "per_value": t.per_value, "limit": t.limit}
                    for t in config.run_queue.tag_concurrency_limits
                ],
                "in_progress": len(in_progress),
                "queued": [
                    {"run_id": d.run.run_id, "job_name": d.run.job_name, "priority": d.run.priority}
                    | {"starts": d.start, "waits_for": d.reason or None}
                    for d in decisions
                ],
            }
        )
        return
    click.echo(f"config {config.source}: max_concurrent_runs={limit if limit is not None else 'unlimited'}")
    for tag_limit in config.run_queue.tag_concurrency_limits:
        click.echo(f"  tag limit {tag_limit.describe}: {tag_limit.limit}")
    click.echo(f"{len(in_progress)} run(s) in progress")
    if not decisions:
        click.echo("nothing queued")
        return
    print_table(
        [Column("RUN ID"), Column("JOB"), Column("PRIORITY", "right"), Column("WAITS FOR", wrap=True)],
        ([d.run.run_id, d.run.job_name, str(d.run.priority), d.reason or "starts next tick"] for d in decisions),
    )


@click.group()
def pool() -> None:
    """Concurrency pools: at most N steps of a pool run at once, across all workers."""


@pool.command("set")
@click.argument("name")
@click.argument("slots", type=click.IntRange(min=0))
@handle_errors
def pool_set(name: str, slots: int) -> None:
    promoted = open_storage().set_pool_limit(name, slots)
    click.echo(f"pool {name}: {slots} slot(s)" + (f"; {len(promoted)} waiting step(s) released" if promoted else ""))


@pool.command("list")
@json_option
@handle_errors
def pool_list(as_json: bool) -> None:
    """Each pool with its slots, the steps holding one and the steps waiting for one."""
    overview = open_storage().pools_overview()
    if as_json:
        print_json([{"pool": p.name, "slots": p.slots, "active": p.active, "waiting": p.waiting} for p in overview])
        return
    if not overview:
        click.echo("no pools")
        return
    print_table(
        [Column("POOL"), Column("SLOTS", "right"), Column("ACTIVE", "right"), Column("WAITING", "right")],
        (
            [p.name, str(p.slots) if p.slots is not None else "no limit", str(p.active), str(p.waiting)]
            for p in overview
        ),
    )


@click.group()
def partitions() -> None:
    """Dynamic partitions: list, add and delete keys."""


def _dynamic(module: str | None, file_: str | None, name: str) -> None:
    from tidegate.definitions.partitions import DynamicPartitionsDefinition

    defs = load(module, file_)
    known = {
        a.partitions_def.name for a in defs.assets.values() if isinstance(a.partitions_def, DynamicPartitionsDefinition)
    }
    if name not in known:
        raise TidegateError(f"dynamic partitions '{name}': not used by any asset (known: {sorted(known) or 'none'})")


@partitions.command("list")
@click.argument("name")
@code_location_options
@json_option
@handle_errors
def partitions_list(name: str, module: str | None, file_: str | None, as_json: bool) -> None:
    """The keys of dynamic partitions NAME, one a line."""
    _dynamic(module, file_, name)
    keys = open_storage().dynamic_partition_keys(name)
    if as_json:
        print_json(list(keys))
        return
    click.echo("\n".join(keys) if keys else f"no keys in dynamic partitions '{name}'")


@partitions.command("add")
@click.argument("name")
@click.argument("keys", nargs=-1, required=True)
@code_location_options
@handle_errors
def partitions_add(name: str, keys: tuple[str, ...], module: str | None, file_: str | None) -> None:
    from tidegate.definitions.partitions import DynamicPartitionsDefinition

    _dynamic(module, file_, name)
    checked = DynamicPartitionsDefinition(name).build_add_request(list(keys)).partition_keys
    added = open_storage().add_dynamic_partitions(name, list(checked))
    click.echo(f"dynamic partitions '{name}': added {len(added)} of {len(keys)} key(s)")


@partitions.command("delete")
@click.argument("name")
@click.argument("keys", nargs=-1, required=True)
@code_location_options
@handle_errors
def partitions_delete(name: str, keys: tuple[str, ...], module: str | None, file_: str | None) -> None:
    _dynamic(module, file_, name)
    removed = open_storage().delete_dynamic_partitions(name, list(keys))
    click.echo(f"dynamic partitions '{name}': deleted {removed} key(s)")


@assets.command("partitions")
@click.argument("asset")
@code_location_options
@click.option("--missing", is_flag=True, help="Only partitions not materialized (never, or failed since).")
@json_option
@handle_errors
def asset_partitions(asset: str, module: str | None, file_: str | None, missing: bool, as_json: bool) -> None:
    """Each partition of ASSET with its status, when it last changed and in which run (no header
    line: one partition a line)."""
    defs = load(module, file_)
    definition = defs.get_asset(asset)
    if definition.partitions_def is None:
        raise TidegateError(f"asset '{asset}': not partitioned")
    storage = open_storage()
    keys = definition.partitions_def.get_partition_keys(dynamic_keys=storage.dynamic_partition_keys)
    statuses = storage.partition_statuses(str(definition.key))
    rows: list[tuple[str, str, datetime | None, str | None]] = []
    for key in keys:
        status, when, run_id = statuses.get(key, (PartitionStatus.MISSING, None, None))
        if not (missing and status == PartitionStatus.MATERIALIZED):
            rows.append((key, status, when, run_id))
    if as_json:
        print_json([{"partition_key": k, "status": s, "updated_at": w, "run_id": r} for k, s, w, r in rows])
        return
    print_table(
        [Column("PARTITION"), Column("STATUS", styled=True), Column("UPDATED"), Column("RUN")],
        ([k, s, _when(w), r or "-"] for k, s, w, r in rows),
        header=False,
    )
