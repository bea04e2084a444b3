"""Recording a materialization that happened outside tidegate (typically of an external asset,
declared by AssetSpec), shared by ``tidegate assets report`` and the REST API."""

from __future__ import annotations

from collections.abc import Mapping

from tidegate.definitions.defs import Definitions
from tidegate.definitions.limits import check_metadata
from tidegate.errors import PartitionKeyError
from tidegate.storage.api import Storage
from tidegate.storage.records import MaterializationRecord


def report_materialization(
    defs: Definitions,
    storage: Storage,
    asset_key: str,
    *,
    partition_key: str | None = None,
    metadata: Mapping[str, str] | None = None,
) -> MaterializationRecord:
    """Check the asset, its partition key and the metadata, then record the materialization:
    asset sensors and the asset listings see it like a run's. Raises DefinitionError for an
    unknown asset, PartitionKeyError for a missing, unexpected or unknown key."""
    asset = defs.get_asset(asset_key)
    partitions_def = asset.partitions_def
    if partitions_def is None and partition_key is not None:
        raise PartitionKeyError(f"asset '{asset.key}': not partitioned, but partition key {partition_key!r} given")
    if partitions_def is not None:
        if partition_key is None:
            raise PartitionKeyError(
                f"asset '{asset.key}': partitioned by {partitions_def.describe()}; give a partition"
            )
        try:
            partitions_def.validate_key(partition_key, dynamic_keys=storage.dynamic_partition_keys)
        except PartitionKeyError as exc:
            raise PartitionKeyError(f"asset '{asset.key}': {exc}") from None
    values = dict(metadata or {})
    check_metadata(f"asset '{asset.key}'", values, stored=True)
    return storage.report_materialization(str(asset.key), partition_key=partition_key, metadata=values)
