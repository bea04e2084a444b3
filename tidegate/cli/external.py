"""``tidegate assets report``: record a materialization that happened outside tidegate."""

from __future__ import annotations

import click

from tidegate.cli.common import code_location_options, handle_errors, load, open_storage
from tidegate.external import report_materialization


@click.command("report")
@click.argument("asset_key")
@click.option("--partition", "partition_key", default=None, help="The partition that was materialized.")
@click.option("--metadata", "metadata", multiple=True, metavar="KEY=VALUE", help="Metadata to record (repeatable).")
@code_location_options
@handle_errors
def report_asset(
    asset_key: str, partition_key: str | None, metadata: tuple[str, ...], module: str | None, file_: str | None
) -> None:
    """Record that ASSET_KEY (typically an external asset, declared by AssetSpec) was materialized
    by another system: asset sensors and `tidegate assets list` see it like a run's."""
    values: dict[str, str] = {}
    for item in metadata:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r}: expected KEY=VALUE", param_hint="--metadata")
        values[key] = value
    defs = load(module, file_)
    record = report_materialization(defs, open_storage(), asset_key, partition_key=partition_key, metadata=values)
    shown = f"{record.asset_key}[{partition_key}]" if partition_key is not None else record.asset_key
    click.echo(f"recorded materialization {record.id} of {shown}")
