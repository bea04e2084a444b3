"""Assets: the catalog (group, last materialization, partition counts, automation condition) and
an asset's page (materialization history with metadata, the partition status grid, lineage, the
latest automation evaluation: "why / why not"), and its automation evaluation history."""

from __future__ import annotations

import dataclasses
import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from starlette.responses import Response

from tidegate.definitions.automation_records import EvaluationRecord, explained
from tidegate.names import PartitionStatus
from tidegate.storage.api import Storage
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


EVALUATION_HISTORY = 50


def _evaluation(storage: Storage, asset_key: str, tick: int | None) -> dict[str, Any] | None:
    """The asset's evaluation in force at ``tick`` (the newest without), explained as
    ``tidegate automation explain`` prints it."""
    rows = storage.automation_evaluations(asset_key, tick_id=tick, limit=1)
    if not rows:
        return None
    record = EvaluationRecord.from_dict(rows[0].record)
    return {"row": rows[0], "requested": record.requested, "lines": record.explain_lines()}


@router.get("/assets/{key:path}/automation")
def automation_history(ui: Page, key: str) -> Response:
    """The asset's stored automation evaluations, newest first (as ``tidegate automation history``)."""
    definition = ui.context.defs.get_asset(key)
    stored = ui.context.storage.automation_evaluations(str(definition.key), limit=EVALUATION_HISTORY)
    rows = [dataclasses.replace(r, record=explained(r.record)) for r in stored]  # the template reads the tree
    return ui.render("asset_automation.html", asset=definition, rows=rows, limit=EVALUATION_HISTORY)


@router.get("/assets/{key:path}")
def asset_detail(
    ui: Page,
    key: str,
    before: int | None = None,
    depth: Annotated[int, Query(ge=1, le=10)] = 2,
    tick: Annotated[int | None, Query(ge=0, le=2**62)] = None,
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
        evaluation=_evaluation(storage, str(definition.key), tick),
        tick=tick,
    )
