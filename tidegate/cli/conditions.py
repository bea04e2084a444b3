"""``tidegate automation explain|history``: what the automation conditions decided per asset.

Each automation tick stores, per asset whose evaluation changed (or that requested runs), the
condition tree with each node's true subset, candidate size and why. ``explain`` prints the
evaluation in force at a tick (the newest by default); ``history`` lists the stored evaluations
with the runs and backfills they requested.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from tidegate.cli.common import handle_errors, load, open_storage
from tidegate.cli.output import Column, json_option, print_json, print_table
from tidegate.definitions.automation_records import EvaluationRecord, PartitionKey, explained
from tidegate.definitions.key import AssetKey
from tidegate.errors import InvalidInvocationError
from tidegate.storage.automation import EvaluationRow


@click.group()
def automation() -> None:
    """Explain declarative automation: why each asset was (not) requested."""


def _asset(value: str) -> str:
    try:
        return AssetKey.from_user_string(value).to_user_string()
    except Exception as exc:
        raise InvalidInvocationError(f"invalid asset key {value!r} ({exc})") from None


def _ordered(module: str | None, file_: str | None, asset: str) -> Sequence[PartitionKey]:
    """The asset's partition keys in order, from the code location (needed for --partition)."""
    defs = load(module, file_)
    key = AssetKey.from_user_string(asset)
    if key not in defs.graph.assets:
        raise InvalidInvocationError(f"asset '{asset}': not defined in the loaded code")
    partitions_def = defs.graph.assets[key].partitions_def
    if partitions_def is None:
        raise InvalidInvocationError(f"asset '{asset}': not partitioned; drop --partition")
    storage = open_storage()
    try:
        return list(partitions_def.get_partition_keys(None, storage.dynamic_partition_keys))
    finally:
        storage.dispose()


def _evaluations(asset: str, **kwargs: Any) -> list[EvaluationRow]:
    storage = open_storage()
    try:
        return storage.automation_evaluations(asset, **kwargs)
    finally:
        storage.dispose()


@automation.command()
@click.argument("asset")
@click.option("--partition", "partition", default=None, help="Say true/false for this partition at each node.")
@click.option("--tick", "tick", type=int, default=None, help="The evaluation in force at this tick id.")
@click.option("-m", "--module", default=None, help="Module holding Definitions (for --partition).")
@click.option("-f", "--file", "file_", default=None, help="Python file holding Definitions (for --partition).")
@json_option
@handle_errors
def explain(
    asset: str, partition: str | None, tick: int | None, module: str | None, file_: str | None, as_json: bool
) -> None:
    """The condition tree of ASSET as last evaluated (or at --tick): each node true or false,
    on how many of its candidate partitions, and why."""
    name = _asset(asset)
    rows = _evaluations(name, tick_id=tick, limit=1)
    if not rows:
        at = f" at or before tick {tick}" if tick is not None else ""
        raise InvalidInvocationError(
            f"asset '{name}': no automation evaluation stored{at} (no automation sensor evaluated it, "
            "or its evaluations were pruned)"
        )
    row = rows[0]
    if as_json:
        print_json(_row_json(row))
        return
    record = EvaluationRecord.from_dict(row.record)
    ordered = _ordered(module, file_, name) if partition is not None else None
    requested = ", ".join("(unpartitioned)" if p is None else p for p in record.requested[:10]) or "nothing"
    if len(record.requested) > 10:
        requested += f", ... ({len(record.requested)} in all)"
    click.echo(f"asset {name}: sensor {row.sensor}, tick {row.tick_id} at {row.evaluated_at.isoformat()}")
    click.echo(f"requested: {requested}")
    if row.run_ids or row.backfill_ids:
        click.echo(f"runs: {', '.join(row.run_ids) or '-'}; backfills: {', '.join(row.backfill_ids) or '-'}")
    for line in record.explain_lines(partition, ordered):
        click.echo(line)


@automation.command()
@click.argument("asset")
@click.option("--limit", type=int, default=20, show_default=True)
@click.option("--requested", "requested_only", is_flag=True, help="Only evaluations that requested runs.")
@json_option
@handle_errors
def history(asset: str, limit: int, requested_only: bool, as_json: bool) -> None:
    """The stored evaluations of ASSET, newest first, with the runs they requested. A tick
    stores an asset's evaluation when it changed or requested runs."""
    name = _asset(asset)
    rows = _evaluations(name, limit=limit, requested_only=requested_only)
    if as_json:
        print_json([_row_json(r) for r in rows])
        return
    if not rows:
        click.echo(f"no automation evaluations of {name}")
        return
    columns = [
        Column("TICK", justify="right"),
        Column("EVALUATED_AT"),
        Column("SENSOR"),
        Column("REQUESTED", justify="right"),
        Column("ROOT"),
        Column("RUNS"),
        Column("WHY", wrap=True),
    ]
    table = []
    for r in rows:
        root = explained(r.record)["root"]
        launched = [*(x[:8] for x in r.run_ids), *(f"backfill {x}" for x in r.backfill_ids)]
        table.append(
            [
                str(r.tick_id),
                r.evaluated_at.isoformat(timespec="seconds"),
                r.sensor,
                str(r.requested),
                _root_summary(root),
                ",".join(launched) or "-",
                str(root.get("why", "")),
            ]
        )
    print_table(columns, table)


def _root_summary(root: dict[str, object]) -> str:
    title = root.get("label") or root.get("name", "?")
    return f"{title} [{root.get('true_count', 0)}/{root.get('candidate_count', 0)}]"


def _row_json(row: EvaluationRow) -> dict[str, object]:
    return {
        "tick_id": row.tick_id,
        "sensor": row.sensor,
        "asset_key": row.asset_key,
        "evaluated_at": row.evaluated_at,
        "requested": row.requested,
        "run_ids": list(row.run_ids),
        "backfill_ids": list(row.backfill_ids),
        "evaluation": explained(row.record),
    }
