"""``tidegate assets report``: record a materialization that happened outside tidegate."""

from __future__ import annotations

import click

from tidegate.cli.common import code_location_options, handle_errors, load, open_storage
from tidegate.definitions.limits import check_metadata
from tidegate.errors import PartitionKeyError


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
    defs = load(module, file_)
    asset = defs.get_asset(asset_key)
    storage = open_storage()
    partitions_def = asset.partitions_def
    if partitions_def is None and partition_key is not None:
        raise PartitionKeyError(f"asset '{asset.key}': not partitioned, but partition key {partition_key!r} given")
    if partitions_def is not None:
        if partition_key is None:
            raise PartitionKeyError(
                f"asset '{asset.key}': partitioned by {partitions_def.describe()}; give --partition"
            )
        try:
            partitions_def.validate_key(partition_key, dynamic_keys=storage.dynamic_partition_keys)
        except PartitionKeyError as exc:
            raise PartitionKeyError(f"asset '{asset.key}': {exc}") from None
    values: dict[str, str] = {}
    for item in metadata:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r}: expected KEY=VALUE", param_hint="--metadata")
        values[key] = value
    check_metadata(f"asset '{asset.key}'", values, stored=True)
    record = storage.report_materialization(str(asset.key), partition_key=partition_key, metadata=values)
    shown = f"{asset.key}[{partition_key}]" if partition_key is not None else str(asset.key)
    click.echo(f"recorded materialization {record.id} of {shown}")
