"""Jobs: the list and the launch form (partition picker, tags, priority). The form is checked
by the server as it is filled in (``/check``: the same validation as a launch, nothing
submitted), and launches go through the REST API's own handler."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from starlette.datastructures import FormData
from starlette.responses import JSONResponse, Response

from tidegate.definitions.job import IMPLICIT_ASSET_JOB
from tidegate.errors import LaunchRequestError, TidegateError
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
