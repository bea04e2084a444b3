"""The ``tidegate`` command line (click)."""

from __future__ import annotations

import logging
import os
import signal
import threading

import click

from tidegate.cli.automation import schedule, sensor, ticks
from tidegate.cli.backfill import backfill
from tidegate.cli.common import (
    all_queue_names,
    code_location_options,
    embedded_worker,
    handle_errors,
    load,
    open_storage,
    resolve_location,
)
from tidegate.cli.conditions import automation
from tidegate.cli.external import report_asset
from tidegate.cli.flower import flower
from tidegate.cli.inspect_ import assets, partitions, pool, queue, runs
from tidegate.cli.job_list import job_list
from tidegate.cli.launch import job, materialize
from tidegate.cli.webserver import token, webserver
from tidegate.config import Settings
from tidegate.definitions.asset import DEFAULT_QUEUE
from tidegate.definitions.defs import Definitions


@click.group()
@click.version_option(package_name="tidegate")
@click.option("-v", "--verbose", is_flag=True, help="Log at INFO.")
def main(verbose: bool) -> None:
    """tidegate: assets, jobs, schedules and sensors, executed on Celery workers."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


main.add_command(materialize)
main.add_command(job)
job.add_command(job_list)
main.add_command(runs)
main.add_command(assets)
assets.add_command(report_asset)
main.add_command(schedule)
main.add_command(sensor)
main.add_command(ticks)
main.add_command(queue)
main.add_command(pool)
main.add_command(partitions)
main.add_command(backfill)
main.add_command(flower)
main.add_command(webserver)
main.add_command(token)
main.add_command(automation)


@main.group()
def db() -> None:
    """The database schema."""


@db.command("upgrade")
@handle_errors
def db_upgrade() -> None:
    """Create or migrate the schema to this version of tidegate (safe to re-run)."""
    from tidegate.storage import migrate

    storage = open_storage(upgrade=True)
    click.echo(f"database {storage.safe_url} at revision {migrate.current_revision(storage.engine)}")


@main.command()
@code_location_options
@click.option(
    "-Q",
    "--queues",
    default=None,
    help=f"Comma-separated queues to consume (default: {DEFAULT_QUEUE}, the default queue).",
)
@click.option("--all-queues", is_flag=True, help="Consume every queue the loaded assets name (as `tidegate dev` does).")
@click.option("-c", "--concurrency", type=int, default=None, help="Worker processes or threads (default: CPUs).")
@click.option("-P", "--pool", type=click.Choice(["prefork", "threads", "solo"]), default="prefork", show_default=True)
@click.option("-n", "--hostname", default=None, help="Worker node name (default: tidegate@%h).")
@click.option("-l", "--loglevel", default="INFO", show_default=True)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
@handle_errors
def worker(
    module: str | None,
    file_: str | None,
    queues: str | None,
    all_queues: bool,
    concurrency: int | None,
    pool: str,
    hostname: str | None,
    loglevel: str,
    celery_args: tuple[str, ...],
) -> None:
    """Run a Celery worker that executes steps (a real `celery worker` with tidegate's app).

    As with Celery, a worker consumes the default queue unless told otherwise: steps of assets
    with ``queue="heavy"`` wait for a worker started with ``-Q heavy`` (or ``--all-queues``).
    Arguments after ``--`` go to ``celery worker`` as they are (e.g. ``-- --without-mingle``).
    """
    if queues and all_queues:
        raise click.UsageError("give -Q or --all-queues, not both")
    defs = load(module, file_)  # fail fast on broken definitions, before forking children
    open_storage()  # and on an unreachable or outdated database
    from tidegate.workers.app import app

    queue_list = queues or DEFAULT_QUEUE
    if all_queues:
        queue_list = ",".join(all_queue_names(defs))
    argv = ["worker", "-Q", queue_list, "-P", pool, "-l", loglevel, "-E"]
    argv += ["-n", hostname or f"tidegate-{os.getpid()}@%h"]
    if concurrency:
        argv += ["-c", str(concurrency)]
    app.worker_main([*argv, *celery_args])


@main.command()
@code_location_options
@click.option("--lease-seconds", type=float, default=20.0, show_default=True, help="Leader lease length.")
@handle_errors
def beat(module: str | None, file_: str | None, lease_seconds: float) -> None:
    """Evaluate schedules and sensors, start queued runs, publish due steps.

    Several beats may run: one holds the lease in the database and works, the others stand
    by and take over within a few lease periods if it dies.
    """
    defs = load(module, file_)
    _run_beat(defs, stop=_stop_on_signal(), lease_seconds=lease_seconds)


@main.command()
@code_location_options
@click.option("--threads", type=int, default=4, show_default=True, help="Worker threads.")
@handle_errors
def dev(module: str | None, file_: str | None, threads: int) -> None:
    """Everything in one process: SQLite, the in-memory broker, a worker and the launcher."""
    os.environ.setdefault("TIDEGATE_BROKER_URL", "memory://localhost/")
    location = resolve_location(module, file_)
    defs = location.load()
    settings = Settings.load()
    open_storage()
    click.echo(f"tidegate dev: {location}")
    click.echo(f"  database {settings.safe_database_url}")
    click.echo(f"  broker   {settings.safe_broker_url}")
    # Never a password, even in the hint: the other shell sets the same variable as this one.
    broker = settings.broker_url if settings.safe_broker_url == settings.broker_url else "<as in this shell>"
    click.echo(
        "  queue runs from another shell (same directory or TIDEGATE_HOME):\n"
        f"    TIDEGATE_BROKER_URL={broker} tidegate job launch JOB"
    )
    for schedule_def in defs.schedules.values():
        click.echo(f"  schedule {schedule_def.name}: {schedule_def.cron_schedule} ({schedule_def.execution_timezone})")
    for sensor_def in defs.sensors.values():
        click.echo(f"  sensor   {sensor_def.name}: {sensor_def.description or ''}")
    stop = _stop_on_signal()
    with embedded_worker(defs, concurrency=threads):
        _run_beat(defs, stop)


def _stop_on_signal() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def _run_beat(defs: Definitions, stop: threading.Event, lease_seconds: float = 20.0) -> None:
    from tidegate.broker import CeleryPublisher, get_app
    from tidegate.scheduler.beat import Beat

    storage = open_storage()
    from tidegate.config import Settings

    publisher = CeleryPublisher(get_app(), storage)
    config = Settings.load()
    Beat(defs, storage, publisher, lease_seconds=lease_seconds, config=config).run_forever(stop)
