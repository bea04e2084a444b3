"""Reading runs and assets from the command line."""

from __future__ import annotations

from datetime import datetime

import click

from tidegate.cli.common import code_location_options, handle_errors, is_embedded_broker, load, open_storage
from tidegate.errors import TidegateError
from tidegate.names import PartitionStatus, RunStatus


def _when(value: datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _seconds(start: datetime | None, end: datetime | None) -> str:
    return f"{(end - start).total_seconds():.2f}s" if start and end else "-"


@click.group()
def runs() -> None:
    """List and inspect runs."""


@runs.command("list")
@click.option("--status", type=click.Choice(sorted([RunStatus.QUEUED, RunStatus.STARTED, *RunStatus.TERMINAL])))
@click.option("--limit", type=int, default=20, show_default=True)
@handle_errors
def list_runs(status: str | None, limit: int) -> None:
    """Newest runs first."""
    storage = open_storage()
    records = storage.list_runs(status=status, limit=limit)
    if not records:
        click.echo("no runs")
        return
    click.echo(f"{'RUN ID':<34}{'JOB':<24}{'STATUS':<10}{'CREATED':<21}{'DURATION':>9}  ORIGIN")
    for r in records:
        click.echo(
            f"{r.run_id:<34}{r.job_name:<24}{r.status:<10}{_when(r.created_at):<21}"
            f"{_seconds(r.started_at, r.ended_at):>9}  {r.origin}"
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
    click.echo(f"created  {_when(run.created_at)}   started {_when(run.started_at)}   ended {_when(run.ended_at)}")
    click.echo("")
    click.echo(f"{'STEP':<32}{'STATUS':<11}{'ATTEMPT':>7}  {'DURATION':>9}  WORKER")
    steps = storage.get_steps(run.run_id)
    for s in steps:
        click.echo(
            f"{s.step_key:<32}{s.status:<11}{s.attempt:>7}  {_seconds(s.started_at, s.ended_at):>9}  {s.worker or '-'}"
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
@handle_errors
def list_assets(module: str | None, file_: str | None) -> None:
    """Every asset with its group and last materialization."""
    defs = load(module, file_)
    storage = open_storage()
    latest = storage.latest_materializations()
    counts = storage.partition_status_counts()
    dynamic = storage.dynamic_partition_keys
    click.echo(f"{'ASSET':<32}{'GROUP':<16}{'LAST MATERIALIZED':<21}  {'RUN':<34}PARTITIONS")
    for key in defs.graph.order:
        record = latest.get(str(key))
        when = _when(record.timestamp) if record else "never"
        run = record.run_id if record else "-"
        partitions = "-"
        partitions_def = defs.assets[key].partitions_def
        if partitions_def is not None:
            total = len(partitions_def.get_partition_keys(dynamic_keys=dynamic))
            status = counts.get(str(key), {})
            done, failed = status.get(PartitionStatus.MATERIALIZED, 0), status.get(PartitionStatus.FAILED, 0)
            partitions = f"{done} materialized, {failed} failed, {max(0, total - done - failed)} missing of {total}"
        click.echo(f"{key!s:<32}{defs.assets[key].group_name:<16}{when:<21}  {run:<34}{partitions}")


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
@handle_errors
def queue() -> None:
    """What is queued, in start order, and why each run waits."""
    from tidegate.config import Settings
    from tidegate.scheduler.run_queue import decide

    storage = open_storage()
    config = Settings.load()
    in_progress = storage.started_runs()
    limit = config.run_queue.max_concurrent_runs
    click.echo(f"config {config.source}: max_concurrent_runs={limit if limit is not None else 'unlimited'}")
    for tag_limit in config.run_queue.tag_concurrency_limits:
        click.echo(f"  tag limit {tag_limit.describe}: {tag_limit.limit}")
    click.echo(f"{len(in_progress)} run(s) in progress")
    decisions = decide(config.run_queue, storage.queued_runs(), in_progress)
    if not decisions:
        click.echo("nothing queued")
        return
    click.echo(f"{'RUN ID':<34}{'JOB':<24}{'PRIORITY':>8}  WAITS FOR")
    for d in decisions:
        click.echo(f"{d.run.run_id:<34}{d.run.job_name:<24}{d.run.priority:>8}  {d.reason or 'starts next tick'}")


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
@handle_errors
def pool_list() -> None:
    overview = open_storage().pools_overview()
    if not overview:
        click.echo("no pools")
        return
    click.echo(f"{'POOL':<24}{'SLOTS':>9}{'ACTIVE':>8}{'WAITING':>9}")
    for p in overview:
        click.echo(f"{p.name:<24}{p.slots if p.slots is not None else 'no limit':>9}{p.active:>8}{p.waiting:>9}")


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
@handle_errors
def partitions_list(name: str, module: str | None, file_: str | None) -> None:
    _dynamic(module, file_, name)
    keys = open_storage().dynamic_partition_keys(name)
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
@handle_errors
def asset_partitions(asset: str, module: str | None, file_: str | None, missing: bool) -> None:
    """Each partition of ASSET with its last materialization."""
    defs = load(module, file_)
    definition = defs.get_asset(asset)
    if definition.partitions_def is None:
        raise TidegateError(f"asset '{asset}': not partitioned")
    storage = open_storage()
    keys = definition.partitions_def.get_partition_keys(dynamic_keys=storage.dynamic_partition_keys)
    statuses = storage.partition_statuses(str(definition.key))
    for key in keys:
        status, when, run_id = statuses.get(key, (PartitionStatus.MISSING, None, "-"))
        if missing and status == PartitionStatus.MATERIALIZED:
            continue
        click.echo(f"{key:<28}{status:<14}{_when(when) if when else '-':<21}  {run_id}")
