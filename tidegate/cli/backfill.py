"""``tidegate backfill``: run a job over many partitions, through the run queue."""

from __future__ import annotations

import sys
import time
from contextlib import nullcontext
from typing import Any

import click

from tidegate.cli.common import (
    code_location_options,
    embedded_worker,
    handle_errors,
    is_embedded_broker,
    load,
    open_storage,
    read_run_config,
    run_config_options,
)
from tidegate.cli.output import Column, json_option, print_json, print_table
from tidegate.names import BackfillStatus, RunStatus
from tidegate.storage.api import Storage
from tidegate.storage.backfills import BackfillRecord


class _BackfillGroup(click.Group):
    """``tidegate backfill JOB ...`` launches; ``list``, ``show`` and ``cancel`` inspect."""

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            return "launch", self.commands["launch"], args
        return super().resolve_command(ctx, args)


@click.group(cls=_BackfillGroup)
def backfill() -> None:
    """Backfill a partitioned job: tidegate backfill JOB (--from K --to K | --partitions a,b | --all | --missing)."""


@backfill.command("launch", hidden=True)
@click.argument("job_name")
@code_location_options
@click.option("--from", "from_key", default=None, help="First partition key of a range.")
@click.option("--to", "to_key", default=None, help="Last partition key of a range.")
@click.option("--partitions", default=None, help="Comma-separated partition keys.")
@click.option("--all", "all_keys", is_flag=True, help="Every partition.")
@click.option("--missing", is_flag=True, help="Partitions of the job's assets never materialized.")
@click.option("--max-concurrent", type=click.IntRange(min=1), default=None, help="Runs in flight at once.")
@run_config_options
@click.option("--wait/--no-wait", default=True, show_default=True, help="Show live progress until done.")
@handle_errors
def launch(
    job_name: str,
    module: str | None,
    file_: str | None,
    from_key: str | None,
    to_key: str | None,
    partitions: str | None,
    all_keys: bool,
    missing: bool,
    max_concurrent: int | None,
    config_file: str | None,
    config_json: str | None,
    wait: bool,
) -> None:
    from tidegate.scheduler.backfill import backfill_partitions, create_backfill

    defs = load(module, file_)
    run_config = read_run_config(config_file, config_json)
    storage = open_storage()
    keys = backfill_partitions(
        defs,
        storage,
        job_name,
        from_key=from_key,
        to_key=to_key,
        partitions=[k.strip() for k in partitions.split(",") if k.strip()] if partitions is not None else None,
        all_keys=all_keys,
        missing=missing,
    )
    if not keys:
        click.echo("no partitions to backfill")
        return
    record = create_backfill(defs, storage, job_name, keys, max_concurrent=max_concurrent, run_config=run_config)
    runs = f", {len(record.run_ranges)} run(s) over ranges" if record.run_ranges is not None else ""
    click.echo(
        f"backfill {record.backfill_id}: job {job_name}, {len(keys)} partition(s) ({keys[0]} .. {keys[-1]}){runs}"
    )
    if not wait:
        if is_embedded_broker():
            click.echo("a running `tidegate dev` on this database carries it out")
        return
    status = _follow(defs, storage, record)
    failed = storage.backfill_progress(storage.get_backfill(record.backfill_id)).by_status.get(RunStatus.FAILURE, 0)
    sys.exit(0 if status == BackfillStatus.COMPLETED and not failed else 1)  # 1: a run failed or it was canceled


def _follow(defs: Any, storage: Storage, record: BackfillRecord) -> str:
    """Act as the beat while showing progress: submit runs, start them, publish steps."""
    from tidegate.broker import CeleryPublisher, get_app
    from tidegate.config import Settings
    from tidegate.scheduler.backfill import BackfillDaemon
    from tidegate.scheduler.launcher import Launcher

    daemon = BackfillDaemon(defs, storage)
    launcher = Launcher(storage, CeleryPublisher(get_app(), storage), defs=defs, config=Settings.load())
    with embedded_worker(defs) if is_embedded_broker() else nullcontext():
        while True:
            daemon.tick()
            launcher.tick()
            current = storage.get_backfill(record.backfill_id)
            progress = storage.backfill_progress(current)
            width = 30
            filled = int(width * progress.done / max(1, progress.total))
            failed = progress.by_status.get(RunStatus.FAILURE, 0)
            line = (
                f"\r[{'#' * filled}{'.' * (width - filled)}] {progress.done}/{progress.total} done, "
                f"{progress.in_flight} in flight, {failed} failed"
            )
            click.echo(line, nl=False)
            if current.status != BackfillStatus.REQUESTED:
                click.echo(f"\nbackfill {current.backfill_id} {current.status}")
                return current.status
            time.sleep(0.3)


@backfill.command("list")
@json_option
@handle_errors
def list_backfills(as_json: bool) -> None:
    """Backfills with their status and how many of their runs are done."""
    storage = open_storage()
    records = storage.list_backfills()
    progress = {b.backfill_id: storage.backfill_progress(b) for b in records}
    if as_json:
        print_json(
            [
                {
                    "backfill_id": b.backfill_id,
                    "job_name": b.job_name,
                    "status": b.status,
                    "partitions": progress[b.backfill_id].total,
                    "partitions_done": progress[b.backfill_id].done,
                    "partitions_by_run_status": dict(progress[b.backfill_id].by_status),
                    "created_at": b.created_at,
                    "ended_at": b.ended_at,
                }
                for b in records
            ]
        )
        return
    if not records:
        click.echo("no backfills")
        return
    print_table(
        [Column("BACKFILL"), Column("JOB"), Column("STATUS", styled=True), Column("DONE", "right"), Column("CREATED")],
        (
            [
                b.backfill_id,
                b.job_name,
                b.status,
                f"{progress[b.backfill_id].done}/{progress[b.backfill_id].total}",
                f"{b.created_at:%Y-%m-%d %H:%M:%S}",
            ]
            for b in records
        ),
    )


@backfill.command("show")
@click.argument("backfill_id")
@handle_errors
def show_backfill(backfill_id: str) -> None:
    storage = open_storage()
    b = storage.get_backfill(backfill_id)
    progress = storage.backfill_progress(b)
    click.echo(f"backfill {b.backfill_id}: job {b.job_name}, {b.status}")
    click.echo(f"partitions {len(b.partition_keys)} ({b.partition_keys[0]} .. {b.partition_keys[-1]})")
    click.echo(f"max concurrent {b.max_concurrent or 'unlimited'}")
    click.echo("runs " + (", ".join(f"{k}={v}" for k, v in sorted(progress.by_status.items())) or "none yet"))


@backfill.command("cancel")
@click.argument("backfill_id")
@handle_errors
def cancel(backfill_id: str) -> None:
    from tidegate.scheduler.backfill import cancel_backfill

    run_ids = cancel_backfill(open_storage(), backfill_id)
    click.echo(f"backfill {backfill_id} CANCELED ({len(run_ids)} unfinished run(s) canceled)")
