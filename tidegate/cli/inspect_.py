"""Reading runs and assets from the command line."""

from __future__ import annotations

from datetime import datetime

import click

from tidegate.cli.common import code_location_options, handle_errors, load, open_storage
from tidegate.names import RunStatus


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
    latest = open_storage().latest_materializations()
    click.echo(f"{'ASSET':<32}{'GROUP':<16}{'LAST MATERIALIZED':<21}  RUN")
    for key in defs.graph.order:
        record = latest.get(str(key))
        when = _when(record.timestamp) if record else "never"
        run = record.run_id if record else "-"
        click.echo(f"{key!s:<32}{defs.assets[key].group_name:<16}{when:<21}  {run}")
