"""The ``tidegate`` command line (click)."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

import click

from tidegate.cli.common import (
    code_location_options,
    embedded_worker,
    handle_errors,
    load,
    open_storage,
    resolve_location,
)
from tidegate.cli.inspect_ import assets, runs
from tidegate.cli.launch import job, materialize
from tidegate.config import Settings


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
main.add_command(runs)
main.add_command(assets)


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
@click.option("-Q", "--queues", default=None, help="Comma-separated queues (default: every queue the assets use).")
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
    concurrency: int | None,
    pool: str,
    hostname: str | None,
    loglevel: str,
    celery_args: tuple[str, ...],
) -> None:
    """Run a Celery worker that executes steps (a real `celery worker` with tidegate's app).

    Arguments after ``--`` go to ``celery worker`` as they are (e.g. ``-- --without-mingle``).
    """
    defs = load(module, file_)  # fail fast on broken definitions, before forking children
    open_storage()  # and on an unreachable or outdated database
    from tidegate.workers.app import app

    queue_list = queues or ",".join(sorted({a.queue for a in defs.assets.values()} or {"tidegate"}))
    argv = ["worker", "-Q", queue_list, "-P", pool, "-l", loglevel, "-E"]
    argv += ["-n", hostname or f"tidegate-{os.getpid()}@%h"]
    if concurrency:
        argv += ["-c", str(concurrency)]
    app.worker_main([*argv, *celery_args])


@main.command()
@code_location_options
@click.option("--interval", type=float, default=0.5, show_default=True, help="Seconds between launcher ticks.")
@handle_errors
def beat(module: str | None, file_: str | None, interval: float) -> None:
    """Start queued runs and publish due steps (retries, unsent steps) in a loop."""
    load(module, file_)
    _launch_loop(interval, stop=_stop_on_signal())


@main.command()
@code_location_options
@click.option("--threads", type=int, default=4, show_default=True, help="Worker threads.")
@handle_errors
def dev(module: str | None, file_: str | None, threads: int) -> None:
    """Everything in one process: SQLite, the in-memory broker, a worker and the launcher."""
    os.environ.setdefault("TIDEGATE_BROKER_URL", "memory://localhost/")
    location = resolve_location(module, file_)
    defs = location.load()
    settings = Settings.from_env()
    open_storage()
    click.echo(f"tidegate dev: {location}")
    click.echo(f"  database {settings.database_url}")
    click.echo(f"  broker   {settings.broker_url}")
    click.echo(
        "  queue runs from another shell (same directory or TIDEGATE_HOME):\n"
        f"    TIDEGATE_BROKER_URL={settings.broker_url} tidegate job launch JOB"
    )
    stop = _stop_on_signal()
    with embedded_worker(defs, concurrency=threads):
        _launch_loop(0.5, stop)


def _stop_on_signal() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def _launch_loop(interval: float, stop: threading.Event) -> None:
    from tidegate.broker import CeleryPublisher, get_app
    from tidegate.scheduler.launcher import Launcher

    storage = open_storage()
    launcher = Launcher(storage, CeleryPublisher(get_app(), storage))
    log = logging.getLogger("tidegate.beat")
    while not stop.is_set():
        try:
            launcher.tick()
        except Exception:  # the database or broker may be briefly away; keep going
            log.exception("launcher tick failed")
        stop.wait(interval)
    time.sleep(0)
