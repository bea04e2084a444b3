"""/api/v1/assets: assets with their last materialization and partition counts, one asset's
materializations (paginated), partition status and latest automation evaluation ("why / why
not"), reporting an external materialization."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from starlette.requests import HTTPConnection

from tidegate.definitions.asset import AssetsDefinition
from tidegate.definitions.defs import Definitions
from tidegate.errors import DefinitionError, NotFoundError
from tidegate.external import report_materialization
from tidegate.names import PartitionStatus, Role
from tidegate.storage.api import Storage
from tidegate.webserver.app import web_context
from tidegate.webserver.auth import Principal, require_role
from tidegate.webserver.errors import error_responses
from tidegate.webserver.models import (
    Asset,
    AutomationEvaluation,
    Materialization,
    MaterializationPage,
    PartitionCounts,
    PartitionState,
    ReportMaterialization,
)

router = APIRouter(tags=["assets"], responses=error_responses())
Viewer = Annotated[Principal, Depends(require_role(Role.VIEWER))]
Launcher = Annotated[Principal, Depends(require_role(Role.LAUNCHER))]


def _asset(defs: Definitions, asset_key: str) -> AssetsDefinition:
    try:
        return defs.get_asset(asset_key)
    except DefinitionError as exc:
        raise NotFoundError(str(exc)) from None


def _counts(storage: Storage, asset: AssetsDefinition, status: dict[str, int]) -> PartitionCounts | None:
    if asset.partitions_def is None:
        return None
    total = len(asset.partitions_def.get_partition_keys(dynamic_keys=storage.dynamic_partition_keys))
    done, failed = status.get(PartitionStatus.MATERIALIZED, 0), status.get(PartitionStatus.FAILED, 0)
    return PartitionCounts(materialized=done, failed=failed, missing=max(0, total - done - failed), total=total)


@router.get("/assets", summary="Every asset with its last materialization and partition counts")
def list_assets(principal: Viewer, connection: HTTPConnection) -> list[Asset]:
    context = web_context(connection)
    storage, defs = context.storage, context.defs
    latest = storage.latest_materializations()
    counts = storage.partition_status_counts()
    listed = []
    for key in defs.graph.order:
        asset = defs.graph.assets[key]
        record = latest.get(str(key))
        listed.append(
            Asset(
                asset_key=str(key),
                group_name=asset.group_name,
                description=asset.description,
                last_materialization=Materialization.of(record) if record else None,
                partitions=_counts(storage, asset, counts.get(str(key), {})),
            )
        )
    return listed


@router.get(
    "/assets/{asset_key:path}/materializations",
    summary="An asset's materializations, oldest first",
    responses=error_responses(404),
)
def asset_materializations(
    asset_key: str,
    principal: Viewer,
    connection: HTTPConnection,
    after: Annotated[int, Query(ge=0, le=2**62, description="Only materializations after this id")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> MaterializationPage:
    context = web_context(connection)
    asset = _asset(context.defs, asset_key)
    records = context.storage.get_materializations(str(asset.key), after_id=after, limit=limit)
    return MaterializationPage(
        materializations=[Materialization.of(m) for m in records],
        next_cursor=records[-1].id if len(records) == limit else None,
    )


@router.get(
    "/assets/{asset_key:path}/partitions",
    summary="Each partition of an asset with its status",
    responses=error_responses(400, 404),
)
def asset_partitions(
    asset_key: str,
    principal: Viewer,
    connection: HTTPConnection,
    status: PartitionStatus | None = None,
) -> list[PartitionState]:
    context = web_context(connection)
    asset = _asset(context.defs, asset_key)
    if asset.partitions_def is None:
        raise NotFoundError(f"asset '{asset.key}': not partitioned")
    keys = asset.partitions_def.get_partition_keys(dynamic_keys=context.storage.dynamic_partition_keys)
    statuses = context.storage.partition_statuses(str(asset.key))
    rows = []
    for key in keys:
        state, when, run_id = statuses.get(key, (PartitionStatus.MISSING, None, None))
        if status is None or state == status:
            rows.append(PartitionState(partition_key=key, status=state, updated_at=when, run_id=run_id))
    return rows


@router.get(
    "/assets/{asset_key:path}/automation",
    summary="An asset's latest automation evaluation: its condition tree, each node true or false and why",
    responses=error_responses(404),
)
def asset_automation(
    asset_key: str,
    principal: Viewer,
    connection: HTTPConnection,
    tick: Annotated[
        int | None, Query(ge=0, le=2**62, description="The evaluation in force at this tick id (default: the newest)")
    ] = None,
) -> AutomationEvaluation:
    context = web_context(connection)
    asset = _asset(context.defs, asset_key)
    rows = context.storage.automation_evaluations(str(asset.key), tick_id=tick, limit=1)
    if not rows:
        at = f" at or before tick {tick}" if tick is not None else ""
        raise NotFoundError(f"asset '{asset.key}': no automation evaluation stored{at}")
    condition = asset.automation_condition.display() if asset.automation_condition is not None else None
    return AutomationEvaluation.of(rows[0], condition)


@router.post(
    "/assets/{asset_key:path}/materializations",
    status_code=201,
    summary="Report a materialization made outside tidegate",
    responses=error_responses(400, 404),
)
def report_asset_materialization(
    asset_key: str, body: ReportMaterialization, principal: Launcher, connection: HTTPConnection
) -> Materialization:
    context = web_context(connection)
    asset = _asset(context.defs, asset_key)
    record = report_materialization(
        context.defs, context.storage, str(asset.key), partition_key=body.partition, metadata=body.metadata
    )
    return Materialization.of(record)
