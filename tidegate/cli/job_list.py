"""``tidegate job list``: each job of the code location with its kind, description, metadata,
tags, partitioning and the schedules and sensors that target it.

A job describes itself through what every ``JobDefinition`` has (``kind``, ``description``,
``metadata``, ``tags``, ``run_tags``, ``partitions_def``, ``config_nodes``), so asset jobs and
op jobs are listed alike."""

from __future__ import annotations

import json
from typing import Any

import click

from tidegate.cli.common import code_location_options, handle_errors, load
from tidegate.cli.output import Column, json_option, print_json, print_table
from tidegate.definitions.defs import Definitions
from tidegate.definitions.job import IMPLICIT_ASSET_JOB, JobDefinition
from tidegate.definitions.metadata import metadata_json_default

_COLUMNS: tuple[Column, ...] = (
    Column("JOB"),
    Column("KIND"),
    Column("NODES", "right"),
    Column("PARTITIONS", wrap=True),
    Column("TAGS", wrap=True),
    Column("METADATA", wrap=True),
    Column("TARGETED BY", wrap=True),
    Column("DESCRIPTION", wrap=True),
)


def describe_job(defs: Definitions, job: JobDefinition) -> dict[str, Any]:
    """One job as the listing shows it (JSON-ready)."""
    partitions = job.partitions_def.describe() if job.partitions_def is not None else None
    return {
        "name": job.name,
        "kind": job.kind,
        "description": job.description,
        "metadata": json.loads(json.dumps(dict(job.metadata), default=metadata_json_default)),
        "tags": dict(job.tags),
        "run_tags": dict(job.run_tags),
        "partitions": partitions,
        "nodes": sorted(job.config_nodes),
        "schedules": sorted(n for n, s in defs.schedules.items() if job.name in s.target.job_names),
        "sensors": sorted(n for n, s in defs.sensors.items() if job.name in s.target.job_names),
    }


@click.command("list")
@code_location_options
@json_option
@handle_errors
def job_list(module: str | None, file_: str | None, as_json: bool) -> None:
    """Each job: kind (assets/ops), nodes, partitioning, tags, metadata, the schedules and
    sensors targeting it, description."""
    defs = load(module, file_)
    jobs = [describe_job(defs, job) for name, job in sorted(defs.jobs.items()) if name != IMPLICIT_ASSET_JOB]
    if as_json:
        print_json(jobs)
        return
    if not jobs:
        click.echo("no jobs")
        return
    print_table(
        _COLUMNS,
        (
            [
                j["name"],
                j["kind"],
                str(len(j["nodes"])),
                j["partitions"] or "-",
                _pairs({**j["tags"], **j["run_tags"]}),
                _pairs(j["metadata"]),
                ", ".join([*(f"schedule {n}" for n in j["schedules"]), *(f"sensor {n}" for n in j["sensors"])]) or "-",
                (j["description"] or "-").strip().splitlines()[0] if j["description"] else "-",
            ]
            for j in jobs
        ),
    )


def _pairs(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in sorted(values.items())) or "-"
