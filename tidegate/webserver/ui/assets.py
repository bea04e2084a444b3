"""Assets: the catalog (group, last materialization, partition counts) and an asset's page
(materialization history with metadata, the partition status grid, lineage)."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from starlette.responses import Response

from tidegate.names import PartitionStatus
from tidegate.webserver.ui.base import UIRequest, UIRoute, page
from tidegate.webserver.ui.lineage import layout
from tidegate.webserver.ui.queries import (
    GRID_CODES,
    IN_PROGRESS_CODE,
    PartitionGridCache,
    latest_materializations,
    materialization_page,
    partition_counts,
    range_rows,
)

router = APIRouter(route_class=UIRoute)
Page = Annotated[UIRequest, Depends(page)]
HISTORY_PAGE = 25
CATALOG_PAGE = 200
GRIDS = PartitionGridCache()
RANGE_ROWS = 200
CODE_NAMES = {
    GRID_CODES[PartitionStatus.MATERIALIZED]: "materialized",
    GRID_CODES[PartitionStatus.FAILED]: "failed",
    GRID_CODES[PartitionStatus.MISSING]: "missing",
    IN_PROGRESS_CODE: "in progress",
}


@router.get("/assets")
def asset_list(ui: Page, group: str = "", q: str = "", page: Annotated[int, Query(ge=1)] = 1) -> Response:
    defs, storage = ui.context.defs, ui.context.storage
    chosen = [
        defs.assets[key]
        for key in sorted(defs.assets, key=str)
        if (not group or defs.assets[key].group_name == group) and (not q or q.lower() in str(key).lower())
    ]
    shown = chosen[(page - 1) * CATALOG_PAGE : page * CATALOG_PAGE]
    names = [str(a.key) for a in shown]
    latest = latest_materializations(storage, names)
    counts = partition_counts(storage, [str(a.key) for a in shown if a.partitions_def is not None])
    rows = [(a, latest.get(str(a.key)), counts.get(str(a.key), {})) for a in shown]
    groups = sorted({a.group_name for a in defs.assets.values()})
    return ui.render(
        "assets.html",
        rows=rows,
        groups=groups,
        group=group,
        q=q,
        page=page,
        total=len(chosen),
        more=page * CATALOG_PAGE < len(chosen),
    )


@router.get("/assets/{key:path}")
def asset_detail(
    ui: Page,
    key: str,
    before: int | None = None,
    depth: Annotated[int, Query(ge=1, le=10)] = 2,
) -> Response:
    defs, storage = ui.context.defs, ui.context.storage
    definition = defs.get_asset(key)
    history = materialization_page(storage, str(definition.key), before_id=before, limit=HISTORY_PAGE)
    grid = None
    ranges: list[tuple[str, str, str, int]] = []
    if definition.partitions_def is not None:
        keys = definition.partitions_def.get_partition_keys(dynamic_keys=storage.dynamic_partition_keys)
        grid = GRIDS.grid(storage, str(definition.key), keys)
        ranges = range_rows(keys, grid, RANGE_ROWS)
    return ui.render(
        "asset.html",
        asset=definition,
        history=history,
        next_before=history[-1].id if len(history) == HISTORY_PAGE else None,
        grid=grid,
        grid_json=json.dumps({"runs": grid.runs, "first": grid.first_key, "last": grid.last_key}) if grid else None,
        ranges=ranges,
        code_names=CODE_NAMES,
        lineage=layout(defs.graph, definition.key, depth),
        upstream=sorted(str(k) for k in defs.graph.upstream[definition.key]),
        downstream=sorted(str(k) for k in defs.graph.downstream[definition.key]),
    )
