"""Jobs: the list (with each job's kind, assets or ops) and the launch form (partition picker,
run config editor, tags, priority). The form is checked by the server as it is filled in
(``/check``: the same validation as a launch, run config included, nothing submitted), and
launches go through the REST API's own handler."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from starlette.datastructures import FormData
from starlette.responses import JSONResponse, Response

from tidegate.definitions.defs import Definitions
from tidegate.definitions.job import IMPLICIT_ASSET_JOB
from tidegate.definitions.op_job import PartitionedConfig
from tidegate.errors import LaunchRequestError, RunConfigError, TidegateError
from tidegate.names import Role
from tidegate.submit import prepare_job_run
from tidegate.webserver.api import runs as api_runs
from tidegate.webserver.models import LaunchRequest
from tidegate.webserver.ui.base import UIRequest, UIRoute, action, page, redirect

router = APIRouter(route_class=UIRoute)
Page = Annotated[UIRequest, Depends(page)]
LaunchAction = Annotated[UIRequest, Depends(action(Role.LAUNCHER))]
PICKER_KEYS = 500  # a <select> of every key up to this many; beyond, a text field with the newest as suggestions


def _form_text(form: FormData | None, name: str) -> str:
    value = form.get(name) if form is not None else None
    return value.strip() if isinstance(value, str) else ""


def parse_tags(text: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        key, sep, value = line.strip().partition("=")
        if not sep or not key.strip():
            raise LaunchRequestError(f"tags, line {number}: {line.strip()!r} is not KEY=VALUE")
        tags[key.strip()] = value.strip()
    return tags


def parse_run_config(text: str) -> dict[str, Any] | None:
    """The editor's text (YAML, so JSON too) as a run config dict; empty: None (the job's
    default config). Malformed text raises RunConfigError naming the line, never echoing it."""
    if not text.strip():
        return None
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1} column {where.column + 1}" if where is not None else ""
        raise RunConfigError(f"run config: not valid YAML or JSON{at}") from None
    if value is None:
        return None
    if not isinstance(value, dict):
        raise RunConfigError(
            f"run config: expected a mapping with 'ops' and/or 'resources', got {type(value).__name__}"
        )
    return value


def default_config_text(defs: Definitions, name: str) -> str:
    """The job's default run config as YAML, to start the editor from ('' when it has none, or
    when it depends on the partition)."""
    job = defs.get_job(name)
    if job.config is None or isinstance(job.config, PartitionedConfig):
        return ""
    import yaml

    stored = defs.check_job_config(name, None)  # EnvVars stay {"env": NAME} markers: no value is read
    return yaml.safe_dump(stored, sort_keys=False) if stored else ""


def _launch_request(name: str, form: FormData | None) -> LaunchRequest:
    priority = _form_text(form, "priority")
    if priority and not priority.lstrip("-").isdigit():
        raise LaunchRequestError(f"priority {priority!r}: expected a whole number")
    return LaunchRequest(
        job=name,
        asset_selection=None,
        run_key=None,
        partition=_form_text(form, "partition") or None,
        tags=parse_tags(_form_text(form, "tags")),
        priority=int(priority) if priority else None,
        run_config=parse_run_config(_form_text(form, "run_config")),
    )


@router.get("/jobs")
def job_list(ui: Page) -> Response:
    jobs = [j for name, j in sorted(ui.context.defs.jobs.items()) if name != IMPLICIT_ASSET_JOB]
    return ui.render("jobs.html", jobs=jobs)


@router.get("/jobs/{name}")
def job_detail(ui: Page, name: str) -> Response:
    defs = ui.context.defs
    job = defs.get_job(name)
    keys: list[str] = []
    if job.partitions_def is not None:
        keys = job.partitions_def.get_partition_keys(dynamic_keys=ui.context.storage.dynamic_partition_keys)
    return ui.render(
        "job.html",
        job=job,
        partition_keys=keys if len(keys) <= PICKER_KEYS else keys[-PICKER_KEYS:],
        picker=len(keys) <= PICKER_KEYS,
        partition_count=len(keys),
        config_text=default_config_text(defs, name),
        partitioned_config=isinstance(job.config, PartitionedConfig),
    )


@router.post("/jobs/{name}/check")
def check_launch(ui: LaunchAction, name: str) -> JSONResponse:
    """What a launch with this form would refuse, without launching."""
    try:
        body = _launch_request(name, ui.form)
        prepare_job_run(
            ui.context.defs,
            ui.context.storage,
            name,
            partition_key=body.partition,
            tags=body.tags,
            priority=body.priority,
            run_config=body.run_config,
        )
    except TidegateError as exc:
        return JSONResponse({"ok": False, "message": str(exc)})
    return JSONResponse({"ok": True, "message": "ready to launch"})


@router.post("/jobs/{name}/launch")
def launch(ui: LaunchAction, name: str) -> Response:
    try:
        body = _launch_request(name, ui.form)
        run = api_runs.launch_run(body, ui.principal, ui.request)
    except TidegateError as exc:
        return redirect(f"/jobs/{name}", problem=str(exc))
    return redirect(f"/runs/{run.run_id}", notice=f"run of {name} launched")
