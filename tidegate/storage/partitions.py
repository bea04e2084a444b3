"""Storage of dynamic partition keys. Mixed into :class:`tidegate.storage.api.Storage`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import Connection, delete, select

from tidegate.definitions.partitions import check_partition_key
from tidegate.errors import InvalidPartitionKeyError
from tidegate.storage.engine import dialect_insert
from tidegate.storage.schema import dynamic_partitions

if TYPE_CHECKING:
    from sqlalchemy import Engine


class DynamicPartitionStorage:
    if TYPE_CHECKING:  # provided by Storage, which mixes this class in
        engine: Engine
        dialect: str

    def dynamic_partition_keys(self, name: str) -> list[str]:
        """The keys of dynamic partitions ``name``, in the order they were added."""
        query = (
            select(dynamic_partitions.c.partition_key)
            .where(dynamic_partitions.c.partitions_def == name)
            .order_by(dynamic_partitions.c.id)
        )
        with self.engine.connect() as conn:
            return list(conn.execute(query).scalars())

    def add_dynamic_partitions(self, name: str, keys: Sequence[str]) -> list[str]:
        """Add keys (existing ones are kept as they are) in one transaction; returns those that
        were new. InvalidPartitionKeyError, and nothing added, if one may not be a key."""
        with self.engine.begin() as conn:
            return self.add_dynamic_partitions_in(conn, name, keys)

    def delete_dynamic_partitions(self, name: str, keys: Sequence[str]) -> int:
        with self.engine.begin() as conn:
            return self.delete_dynamic_partitions_in(conn, name, keys)

    def add_dynamic_partitions_in(self, conn: Connection, name: str, keys: Sequence[str]) -> list[str]:
        """``add_dynamic_partitions`` inside the caller's transaction (a sensor's tick). Every key
        is checked first: InvalidPartitionKeyError (nothing added) if one may not be a key."""
        label = f"dynamic partitions '{name}'"
        if isinstance(keys, str):
            raise InvalidPartitionKeyError(f"{label}: partition keys must be a list of strings, got {keys!r}")
        for key in keys:
            check_partition_key(label, key)
        added = []
        now = datetime.now(UTC)
        for key in keys:
            inserted = conn.execute(
                dialect_insert(self.dialect)(dynamic_partitions)
                .values(partitions_def=name, partition_key=key, created_at=now)
                .on_conflict_do_nothing(index_elements=["partitions_def", "partition_key"])
                .returning(dynamic_partitions.c.id)
            ).first()
            if inserted is not None:
                added.append(key)
        return added

    def delete_dynamic_partitions_in(self, conn: Connection, name: str, keys: Sequence[str]) -> int:
        return conn.execute(
            delete(dynamic_partitions).where(
                dynamic_partitions.c.partitions_def == name, dynamic_partitions.c.partition_key.in_(list(keys))
            )
        ).rowcount
