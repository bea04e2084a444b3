"""Submitting runs from the command line and following them live."""

from __future__ import annotations

import sys
import time
from contextlib import nullcontext

import click

from tidegate.broker import CeleryPublisher, get_app
from tidegate.cli.common import (
    code_location_options,
    embedded_worker,
    handle_errors,
    is_embedded_broker,
    load,
    open_storage,
    parse_tags,
    read_run_config,
    run_config_options,
)
from tidegate.cli.output import STATUS_STYLES
from tidegate.config import Settings
from tidegate.definitions.defs import Definitions
from tidegate.definitions.job import IMPLICIT_ASSET_JOB
from tidegate.definitions.limits import check_launch
from tidegate.names import PRIORITY_TAG, RunStatus, StepStatus
from tidegate.scheduler.launcher import Launcher
from tidegate.storage.api import Storage
from tidegate.storage.records import StepRecord
from tidegate.submit import JobRunRequest, prepare_job_run


def submit_and_follow(defs: Definitions, storage: Storage, request: JobRunRequest, *, wait: bool) -> None:
    """Submit a run, start it (the beat's job until it runs), and optionally follow it."""
    embedded = is_embedded_broker()
    if embedded and not wait:
        # Nothing outside this process reaches an in-memory broker: leave the run QUEUED for
        # the `tidegate dev` process that shares this database.
        result = request.submit(storage, origin="cli")
        click.echo(f"run {result.run_id} queued: a running `tidegate dev` on {storage.safe_url} starts it")
        return
    app = get_app()
    publisher = CeleryPublisher(app, storage)
    launcher = Launcher(storage, publisher, defs=defs, config=Settings.load())
    with embedded_worker(defs) if embedded else nullcontext():
        result = request.submit(storage, origin="cli")
        if not result.created:
            click.echo(f"run {result.run_id} already exists for run key {request.run_key!r}; nothing submitted")
        else:
            click.echo(f"run {result.run_id} submitted: job {request.plan.job_name}, {len(request.plan.steps)} step(s)")
        launcher.tick()
        if publisher.unavailable.error is not None:
            # The run is in SQL: its steps stay READY and the beat sends them when the broker
            # is back. Launching did its job, so this is a warning, not a failure.
            click.echo(
                f"warning: broker {Settings.load().safe_broker_url} unreachable "
                f"({publisher.unavailable.error}): run {result.run_id} is queued in the database; "
                "its steps are sent when the broker is back",
                err=True,
            )
        if not wait:
            return
        status = follow_run(storage, launcher, result.run_id)
    sys.exit(0 if status == RunStatus.SUCCESS else 1)


def follow_run(storage: Storage, launcher: Launcher, run_id: str, poll: float = 0.2) -> str:
    """Print each step's transitions until the run ends; keep publishing due steps."""
    seen: dict[str, tuple[str, int]] = {}
    while True:
        launcher.tick()
        run = storage.get_run(run_id)  # read before the steps: a terminal run's steps are final
        for step in storage.get_steps(run_id):
            state = (step.status, step.attempt)
            if seen.get(step.step_key) == state or step.status == StepStatus.PLANNED:
                continue
            seen[step.step_key] = state
            click.echo(
                f"  {step.step_key:<32} " + click.style(step.status, fg=STATUS_STYLES.get(step.status)) + _detail(step)
            )
        if run.status in RunStatus.TERMINAL:
            elapsed = (run.ended_at - run.started_at).total_seconds() if run.ended_at and run.started_at else 0.0
            status = click.style(run.status, fg=STATUS_STYLES.get(run.status), bold=True)
            click.echo(f"run {run_id} {status} in {elapsed:.2f}s")
            return run.status
        time.sleep(poll)


def _detail(step: StepRecord) -> str:
    if step.status == StepStatus.RUNNING:
        return f" attempt {step.attempt} on {step.worker}"
    if step.status == StepStatus.SUCCEEDED and step.duration is not None:
        return f" in {step.duration:.2f}s"
    if step.status in (StepStatus.READY, StepStatus.FAILED) and step.error:
        last = step.error.strip().splitlines()[-1]
        retry = f"; retry as attempt {step.attempt}" if step.status == StepStatus.READY else ""
        return f" ({last}){retry}"
    return ""


@click.command()
@code_location_options
@click.option("--select", "selection", default="*", show_default=True, help='Assets, e.g. "raw_orders+".')
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="Tag the run (repeatable).")
@run_config_options
@click.option("--wait/--no-wait", default=True, show_default=True, help="Follow the run until it ends.")
@handle_errors
def materialize(
    module: str | None,
    file_: str | None,
    selection: str,
    tags: tuple[str, ...],
    config_file: str | None,
    config_json: str | None,
    wait: bool,
) -> None:
    """Materialize a selection of assets on the workers; exit code 0 if the run succeeds."""
    defs = load(module, file_)
    run_tags = check_launch("materialize", tags=parse_tags(tags))
    run_config = read_run_config(config_file, config_json)
    request = JobRunRequest(defs.plan(IMPLICIT_ASSET_JOB, selection, run_config=run_config), run_tags)
    submit_and_follow(defs, open_storage(), request, wait=wait)


@click.group()
def job() -> None:
    """Launch and list jobs."""


@job.command("launch")
@click.argument("name")
@code_location_options
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="Tag the run (repeatable).")
@click.option("--run-key", default=None, help="Idempotency key: a second launch with it is a no-op.")
@click.option("--priority", type=int, default=None, help=f"Run priority (the {PRIORITY_TAG} tag).")
@click.option("--partition", "partition_key", default=None, help="The partition key (partitioned jobs).")
@run_config_options
@click.option("--wait/--no-wait", default=False, show_default=True, help="Follow the run until it ends.")
@handle_errors
def launch(
    name: str,
    module: str | None,
    file_: str | None,
    tags: tuple[str, ...],
    run_key: str | None,
    priority: int | None,
    partition_key: str | None,
    config_file: str | None,
    config_json: str | None,
    wait: bool,
) -> None:
    """Launch a run of job NAME (of one partition with --partition), configured by --config
    FILE or --config-json (checked before the run is created; exit 2 naming the field)."""
    defs = load(module, file_)
    run_config = read_run_config(config_file, config_json)
    storage = open_storage()
    request = prepare_job_run(
        defs,
        storage,
        name,
        partition_key=partition_key,
        tags=parse_tags(tags),
        priority=priority,
        run_key=run_key,
        run_config=run_config,
    )
    submit_and_follow(defs, storage, request, wait=wait)
