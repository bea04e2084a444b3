"""Schedules, sensors and their ticks from the command line."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

import click

from tidegate.cli.common import code_location_options, handle_errors, load, open_storage
from tidegate.cli.output import Column, json_option, print_json, print_table
from tidegate.definitions.config import instigator_resources
from tidegate.definitions.context import Resources
from tidegate.definitions.cron import cron_ticks
from tidegate.definitions.defs import Definitions
from tidegate.definitions.event_sensor import EventSensorDefinition
from tidegate.definitions.instigator import DefaultScheduleStatus
from tidegate.definitions.limits import check_cursor
from tidegate.definitions.schedule import ScheduleDefinition, ScheduleEvaluationContext
from tidegate.definitions.sensor import SensorDefinition, SensorEvaluationContext
from tidegate.errors import TidegateError
from tidegate.names import InstigatorStatus
from tidegate.storage.instance import DagsterInstance
from tidegate.storage.instigators import InstigatorState


def _status(defs_default: DefaultScheduleStatus, stored: str | None) -> str:
    return stored or defs_default.value + " (default)"


def _stored_or_default(defs_default: DefaultScheduleStatus, state: InstigatorState | None) -> str:
    return _field(state, "status") or defs_default.value


def _field(state: InstigatorState | None, name: str) -> Any:
    """A field of the stored state; None when nothing is stored yet."""
    return getattr(state, name) if state is not None else None


def _get(defs: Definitions, kind: str, name: str) -> ScheduleDefinition | SensorDefinition:
    found = (defs.schedules if kind == "schedule" else defs.sensors).get(name)
    if found is None:
        known = ", ".join(sorted(defs.schedules if kind == "schedule" else defs.sensors)) or "none"
        raise TidegateError(f"{kind} '{name}': not defined in the loaded code ({kind}s: {known})")
    return found


@click.group()
def schedule() -> None:
    """List, start, stop and preview schedules."""


_SCHEDULE_COLUMNS: tuple[Column, ...] = (
    Column("SCHEDULE"),
    Column("CRON"),
    Column("TIMEZONE"),
    Column("STATUS"),
    Column("LAST TICK"),
    Column("TARGET", wrap=True),
)
_SENSOR_COLUMNS: tuple[Column, ...] = (
    Column("SENSOR"),
    Column("INTERVAL", "right"),
    Column("STATUS"),
    Column("LAST TICK"),
    Column("CURSOR"),
    Column("LAG", "right"),
    Column("TARGET", wrap=True),
)


def _lag(s: SensorDefinition, instance: DagsterInstance, state: InstigatorState | None) -> Any:
    """An event sensor's lag (events waiting after its cursor, the oldest one's age); None for
    other sensors."""
    if not isinstance(s, EventSensorDefinition):
        return None
    return s.lag(instance, state.cursor if state else None, instance.storage.db_now().timestamp())


def _last_tick(state: InstigatorState | None) -> str:
    return state.last_tick_at.isoformat(timespec="seconds") if state and state.last_tick_at else "-"


@schedule.command("list")
@code_location_options
@json_option
@handle_errors
def schedule_list(module: str | None, file_: str | None, as_json: bool) -> None:
    """Each schedule with its cron, status, last tick and target."""
    defs = load(module, file_)
    storage = open_storage()
    states = {name: storage.get_instigator(name) for name in sorted(defs.schedules)}
    if as_json:
        print_json(
            [
                {
                    "name": name,
                    "cron_schedule": s.cron_schedule,
                    "execution_timezone": s.execution_timezone,
                    "status": _stored_or_default(s.default_status, states[name]),
                    "default_status": s.default_status.value,
                    "last_tick_at": _field(states[name], "last_tick_at"),
                    "target": s.target.describe,
                }
                for name, s in sorted(defs.schedules.items())
            ]
        )
        return
    print_table(
        _SCHEDULE_COLUMNS,
        (
            [
                name,
                s.cron_schedule,
                s.execution_timezone,
                _status(s.default_status, _field(states[name], "status")),
                _last_tick(states[name]),
                s.target.describe,
            ]
            for name, s in sorted(defs.schedules.items())
        ),
    )


@schedule.command("preview")
@click.argument("name")
@code_location_options
@click.option("--ticks", type=int, default=5, show_default=True, help="How many upcoming ticks.")
@handle_errors
def schedule_preview(name: str, module: str | None, file_: str | None, ticks: int) -> None:
    """Show the next ticks and what each would request (commits nothing)."""
    defs = load(module, file_)
    s = _get(defs, "schedule", name)
    assert isinstance(s, ScheduleDefinition)
    upcoming = cron_ticks(s.cron_schedule, s.timezone, datetime.now(UTC))
    instance = DagsterInstance(open_storage())
    for _ in range(ticks):
        when = next(upcoming)
        context = ScheduleEvaluationContext(
            when.astimezone(s.timezone),
            s.name,
            Resources(instigator_resources(defs.resources)),
            logging.getLogger("tidegate.preview"),
            instance=instance,
        )
        try:
            evaluation = s.evaluate(context, instigator_resources(defs.resources))
            what = ", ".join(f"run_key={r.run_key!r} tags={dict(r.tags)}" for r in evaluation.run_requests)
            what = what or f"skip ({evaluation.skip_reason})"
        except Exception as exc:
            what = f"FAILURE: {exc!r}"
        click.echo(f"{when.astimezone(s.timezone).isoformat()}  {what}")


@click.group()
def sensor() -> None:
    """List, start, stop, preview sensors and manage their cursors."""


@sensor.command("list")
@code_location_options
@json_option
@handle_errors
def sensor_list(module: str | None, file_: str | None, as_json: bool) -> None:
    """Each sensor with its interval, status, last tick, cursor (cut to 22 characters in the
    table; whole in JSON), lag (asset and run-status sensors: events waiting after the cursor,
    the oldest one's age) and target."""
    defs = load(module, file_)
    storage = open_storage()
    states = {name: storage.get_instigator(name) for name in sorted(defs.sensors)}
    instance = DagsterInstance(storage)
    lags = {name: _lag(s, instance, states[name]) for name, s in defs.sensors.items()}
    if as_json:
        print_json(
            [
                {
                    "name": name,
                    "minimum_interval_seconds": s.minimum_interval_seconds,
                    "status": _stored_or_default(s.default_status, states[name]),
                    "default_status": s.default_status.value,
                    "last_tick_at": _field(states[name], "last_tick_at"),
                    "cursor": _field(states[name], "cursor"),
                    "lag": {
                        "events_waiting": lags[name].events_waiting,
                        "oldest_age_seconds": lags[name].oldest_age_seconds,
                    }
                    if lags[name] is not None
                    else None,
                    "target": s.target.describe,
                }
                for name, s in sorted(defs.sensors.items())
            ]
        )
        return
    rows = []
    for name, s in sorted(defs.sensors.items()):
        state = states[name]
        cursor = (state.cursor or "-") if state else "-"
        status = _status(s.default_status, state.status if state else None)
        interval = f"{s.minimum_interval_seconds:g}s"
        lag = lags[name].describe() if lags[name] is not None else "-"
        rows.append([name, interval, status, _last_tick(state), cursor[:22], lag, s.target.describe])
    print_table(
        _SENSOR_COLUMNS,
        rows,
    )


@sensor.command("preview")
@click.argument("name")
@code_location_options
@click.option("--cursor", default=None, help="Evaluate from this cursor instead of the stored one.")
@handle_errors
def sensor_preview(name: str, module: str | None, file_: str | None, cursor: str | None) -> None:
    """Evaluate once and print the requests and the cursor it would store (commits nothing)."""
    defs = load(module, file_)
    s = _get(defs, "sensor", name)
    assert isinstance(s, SensorDefinition)
    storage = open_storage()
    state = storage.get_instigator(name)
    context = SensorEvaluationContext(
        sensor_name=name,
        cursor=cursor if cursor is not None else (state.cursor if state else None),
        last_tick_completion_time=state.last_tick_at if state else None,
        last_run_key=state.last_run_key if state else None,
        resources=Resources(instigator_resources(defs.resources)),
        log=logging.getLogger("tidegate.preview"),
        instance=DagsterInstance(storage),
    )
    try:
        evaluation = s.evaluate(context, instigator_resources(defs.resources))
    except TidegateError:
        raise
    except Exception as exc:
        raise TidegateError(f"sensor '{name}': evaluation raised {exc!r}") from exc
    for r in evaluation.run_requests:
        click.echo(f"RunRequest run_key={r.run_key!r} tags={json.dumps(dict(r.tags))}")
    if not evaluation.run_requests:
        click.echo(f"skip: {evaluation.skip_reason or 'no run requested'}")
    click.echo(f"cursor: {evaluation.cursor!r}" if evaluation.cursor_set else "cursor: unchanged")


@sensor.command("cursor")
@click.argument("name")
@code_location_options
@click.option("--set", "value", default=None, help="Store this cursor.")
@click.option("--reset", is_flag=True, help="Clear the cursor.")
@handle_errors
def sensor_cursor(name: str, module: str | None, file_: str | None, value: str | None, reset: bool) -> None:
    """Show, set or reset a sensor's cursor."""
    defs = load(module, file_)
    _get(defs, "sensor", name)
    storage = open_storage()
    if value is not None and reset:
        raise click.UsageError("give --set or --reset, not both")
    found = _get(defs, "sensor", name)
    if value is not None and isinstance(found, EventSensorDefinition):
        found.check_cursor(value)  # a storage id (JSON per asset for a multi-asset sensor), or refused
    if value is not None or reset:
        storage.set_cursor(name, "sensor", None if reset else check_cursor(f"sensor '{name}'", value))
    state = storage.get_instigator(name)
    click.echo(f"{name}: cursor {state.cursor if state and state.cursor is not None else '(none)'}")
    lag = _lag(_get(defs, "sensor", name), DagsterInstance(storage), state)  # type: ignore[arg-type]
    if lag is not None:
        click.echo(f"{name}: lag {lag.describe()} (events waiting after the cursor)")


def _start_stop(kind: str, status: str) -> click.Command:
    @click.command(status.lower().replace("running", "start").replace("stopped", "stop"))
    @click.argument("names", nargs=-1, required=True)
    @code_location_options
    @handle_errors
    def command(names: tuple[str, ...], module: str | None, file_: str | None, **options: Any) -> None:
        defs = load(module, file_)
        storage = open_storage()
        for name in names:
            found = _get(defs, kind, name)
            if options.get("from_beginning"):
                if not isinstance(found, EventSensorDefinition):
                    raise TidegateError(f"sensor '{name}': --from-beginning is for asset and run-status sensors")
                storage.set_cursor(name, kind, found.beginning_cursor())
            storage.set_instigator_status(name, kind, status, datetime.now(UTC))
            click.echo(f"{kind} {name}: {status}" + (" from the beginning" if options.get("from_beginning") else ""))

    command.help = f"{'Start' if status == InstigatorStatus.RUNNING else 'Stop'} {kind}s by name."
    if kind == "sensor" and status == InstigatorStatus.RUNNING:
        command = click.option(
            "--from-beginning",
            is_flag=True,
            help="Asset and run-status sensors: handle every event kept, not only those from now on.",
        )(command)
    return command


for _group, _kind in ((schedule, "schedule"), (sensor, "sensor")):
    _group.add_command(_start_stop(_kind, InstigatorStatus.RUNNING))
    _group.add_command(_start_stop(_kind, InstigatorStatus.STOPPED))


@click.command()
@click.argument("name")
@click.option("--limit", type=int, default=20, show_default=True)
@json_option
@handle_errors
def ticks(name: str, limit: int, as_json: bool) -> None:
    """Tick history of a schedule or sensor, newest first."""
    records = open_storage().get_ticks(name, limit=limit)
    if as_json:
        print_json(
            [
                {
                    "tick_time": t.tick_time,
                    "status": t.status,
                    "run_ids": list(t.run_ids),
                    "new_run_keys": list(t.new_run_keys),
                    "skipped_run_keys": list(t.skipped_run_keys),
                    "skip_reason": t.skip_reason,
                    "error": t.error,
                    "cursor": t.cursor,
                    "started_at": t.started_at,
                    "ended_at": t.ended_at,
                }
                for t in records
            ]
        )
        return
    if not records:
        click.echo(f"no ticks for {name}")
        return
    for t in records:
        detail = ""
        if t.run_ids:
            detail += f" runs={','.join(r[:8] for r in t.run_ids)}"
        if t.new_run_keys:
            detail += f" new_keys={list(t.new_run_keys)[:5]}{'...' if len(t.new_run_keys) > 5 else ''}"
        if t.skipped_run_keys:
            detail += f" skipped_keys={len(t.skipped_run_keys)}"
        if t.skip_reason:
            detail += f" ({t.skip_reason})"
        if t.error:
            detail += f" error: {t.error.strip().splitlines()[-1]}"
        click.echo(f"{t.tick_time.isoformat(timespec='seconds')}  {t.status:<8}{detail}")
