"""The webserver's REST API in-process (FastAPI's test client) on real SQLite and PostgreSQL
storage: every endpoint's auth matrix, launching and its errors (409 duplicate run key, 400
invalid partition with no run created), pagination, the event stream, tokens."""

from __future__ import annotations

import json
import logging
import pickle
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from tests.support import ROOT
from tidegate.config import Settings
from tidegate.definitions.key import AssetKey
from tidegate.definitions.loading import CodeLocation
from tidegate.errors import AuthenticationError
from tidegate.names import Role, RunStatus
from tidegate.storage.api import Storage
from tidegate.storage.schema import api_tokens
from tidegate.webserver import create_app
from tidegate.webserver.auth import FailedAuthLimiter, check_startup

PROJECT = ROOT / "tests" / "projects" / "api_project.py"
DEFS = CodeLocation.parse(str(PROJECT)).load()
EXPLAIN_PROJECT = ROOT / "tests" / "projects" / "explain_project.py"


class Api:
    """A test client plus one token per role."""

    def __init__(self, storage: Storage, limiter: FailedAuthLimiter | None = None, defs: Any = DEFS) -> None:
        self.storage = storage
        self.app = create_app(defs, storage, settings=Settings(), limiter=limiter or FailedAuthLimiter(10_000))
        self.client = TestClient(self.app)
        self.tokens = {role: storage.create_token(f"t-{role.value}", role).token for role in Role}

    def call(self, method: str, path: str, role: Role | None = Role.ADMIN, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"} if role is not None else {}
        return self.client.request(method, path, headers=headers, **kwargs)


@pytest.fixture
def api(storage: Storage) -> Iterator[Api]:
    found = Api(storage)
    with found.client:
        yield found


def _launch(api: Api, **body: Any) -> dict[str, Any]:
    response = api.call("POST", "/api/v1/runs", json={"job": "numbers_job", **body})
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


# -- the auth matrix ----------------------------------------------------------------------------

# (method, path, the lowest role allowed, body): every route of the API and /metrics.
MATRIX: list[tuple[str, str, Role, Any]] = [
    ("POST", "/api/v1/runs", Role.LAUNCHER, {"job": "numbers_job"}),
    ("GET", "/api/v1/runs", Role.VIEWER, None),
    ("GET", "/api/v1/runs/{run_id}", Role.VIEWER, None),
    ("POST", "/api/v1/runs/{run_id}/cancel", Role.LAUNCHER, None),
    ("POST", "/api/v1/runs/{run_id}/reexecute", Role.LAUNCHER, {"from_failure": False}),
    ("GET", "/api/v1/runs/{run_id}/events", Role.VIEWER, None),
    ("GET", "/api/v1/runs/{run_id}/events/stream", Role.VIEWER, None),
    ("GET", "/api/v1/runs/{run_id}/steps/{step_key}/logs", Role.VIEWER, None),
    ("GET", "/api/v1/assets", Role.VIEWER, None),
    ("GET", "/api/v1/assets/{asset_key}/materializations", Role.VIEWER, None),
    ("POST", "/api/v1/assets/{asset_key}/materializations", Role.LAUNCHER, {}),
    ("GET", "/api/v1/assets/{asset_key}/partitions", Role.VIEWER, None),
    ("GET", "/api/v1/assets/{asset_key}/automation", Role.VIEWER, None),
    ("GET", "/api/v1/schedules", Role.VIEWER, None),
    ("GET", "/api/v1/schedules/{name}", Role.VIEWER, None),
    ("POST", "/api/v1/schedules/{name}/start", Role.ADMIN, None),
    ("POST", "/api/v1/schedules/{name}/stop", Role.ADMIN, None),
    ("GET", "/api/v1/schedules/{name}/ticks", Role.VIEWER, None),
    ("GET", "/api/v1/schedules/{name}/preview", Role.LAUNCHER, None),
    ("GET", "/api/v1/sensors", Role.VIEWER, None),
    ("GET", "/api/v1/sensors/{name}", Role.VIEWER, None),
    ("POST", "/api/v1/sensors/{name}/start", Role.ADMIN, None),
    ("POST", "/api/v1/sensors/{name}/stop", Role.ADMIN, None),
    ("GET", "/api/v1/sensors/{name}/ticks", Role.VIEWER, None),
    ("PUT", "/api/v1/sensors/{name}/cursor", Role.ADMIN, {"cursor": "7"}),
    ("DELETE", "/api/v1/sensors/{name}/cursor", Role.ADMIN, None),
    ("POST", "/api/v1/sensors/{name}/preview", Role.LAUNCHER, None),
    ("POST", "/api/v1/backfills", Role.LAUNCHER, {"job": "daily_job", "all": True}),
    ("GET", "/api/v1/backfills", Role.VIEWER, None),
    ("GET", "/api/v1/backfills/{backfill_id}", Role.VIEWER, None),
    ("POST", "/api/v1/backfills/{backfill_id}/cancel", Role.LAUNCHER, None),
    ("GET", "/api/v1/queue", Role.VIEWER, None),
    ("GET", "/api/v1/pools", Role.VIEWER, None),
    ("PUT", "/api/v1/pools/{name}", Role.ADMIN, {"slots": 2}),
    ("GET", "/metrics", Role.VIEWER, None),
]


def _routes(api: Api) -> set[tuple[str, str]]:
    """Every operation the OpenAPI document lists, but the health checks."""
    paths = api.app.openapi()["paths"]
    return {(m.upper(), p) for p, ops in paths.items() for m in ops if p not in ("/healthz", "/readyz")}


def test_the_auth_matrix_covers_every_route(api: Api) -> None:
    assert _routes(api) == {(m, p) for m, p, _, _ in MATRIX}


def test_every_route_refuses_no_token_a_wrong_token_and_lower_roles(api: Api) -> None:
    canceled = _launch(api)["run_id"]
    assert api.call("POST", f"/api/v1/runs/{canceled}/cancel").status_code == 200  # a finished run: its stream ends
    backfill = api.call("POST", "/api/v1/backfills", json={"job": "daily_job", "all": True}).json()["backfill_id"]
    values = {"run_id": canceled, "step_key": "numbers", "backfill_id": backfill}
    wrong = "tg_0123456789abcdef_" + "x" * 43
    for method, template, lowest, body in MATRIX:
        name = "every_call" if "/sensors/" in template else "morning" if "/schedules/" in template else "db"
        asset = "external_feed" if method == "POST" else "daily_sales"
        path = template.format(**values, name=name, asset_key=asset)
        kwargs = {"json": body} if body is not None else {}
        what = f"{method} {path}"
        response = api.client.request(method, path, **kwargs)
        assert response.status_code == 401 and response.json()["code"] == "unauthenticated", what
        assert response.headers["www-authenticate"] == "Bearer", what
        response = api.client.request(method, path, headers={"Authorization": f"Bearer {wrong}"}, **kwargs)
        assert response.status_code == 401, what
        response = api.client.request(method, path, headers={"Authorization": "Basic dXNlcjpwdw=="}, **kwargs)
        assert response.status_code == 401, what
        for role in Role:
            response = api.call(method, path, role, **kwargs)
            if role.includes(lowest):
                assert response.status_code not in (401, 403, 500), f"{what} as {role}: {response.text}"
            else:
                assert response.status_code == 403, f"{what} as {role}: {response.text}"
                assert response.json() == {
                    "code": "forbidden",
                    "message": f"token 't-{role.value}' has role {role.value}; this needs {lowest.value}",
                }


def test_health_and_readiness_need_no_token_and_the_openapi_document_is_served(api: Api) -> None:
    assert api.client.get("/healthz").json() == {"status": "ok"}
    assert api.client.get("/readyz").json() == {"status": "ok", "database": "reachable"}
    document = api.client.get("/api/v1/openapi.json").json()
    assert "/api/v1/runs" in document["paths"]


# -- launching ----------------------------------------------------------------------------------


def test_launch_then_read_the_run_with_its_steps_tagged_with_the_token(api: Api) -> None:
    run = _launch(api, tags={"team": "data", "tidegate/launched_by": "someone else"}, priority=3, run_key="k1")
    assert run["status"] == RunStatus.QUEUED and run["origin"] == "api" and run["priority"] == 3
    assert run["tags"]["team"] == "data" and run["tags"]["tidegate/launched_by"] == "t-admin"
    detail = api.call("GET", f"/api/v1/runs/{run['run_id']}", Role.VIEWER).json()
    assert [s["step_key"] for s in detail["steps"]] == ["numbers", "total"]
    assert {s["status"] for s in detail["steps"]} == {"PLANNED"}
    body = {"asset_selection": "daily_sales", "partition": "2024-01-02"}
    selected = api.call("POST", "/api/v1/runs", Role.LAUNCHER, json=body).json()
    assert selected["job_name"] == "__ASSET_JOB" and selected["tags"]["tidegate/partition"] == "2024-01-02"
    steps = api.call("GET", f"/api/v1/runs/{selected['run_id']}").json()["steps"]
    assert [s["step_key"] for s in steps] == ["daily_sales"]
    unpartitioned = api.call("POST", "/api/v1/runs", json={"asset_selection": "total"})
    assert unpartitioned.status_code == 201, unpartitioned.text
    steps = api.call("GET", f"/api/v1/runs/{unpartitioned.json()['run_id']}").json()["steps"]
    assert [s["step_key"] for s in steps] == ["total"]


def test_a_duplicate_run_key_is_409_naming_the_run_and_creates_nothing(api: Api) -> None:
    first = _launch(api, run_key="nightly-1")
    response = api.call("POST", "/api/v1/runs", json={"job": "numbers_job", "run_key": "nightly-1"})
    assert response.status_code == 409
    assert response.json()["code"] == "duplicate_run_key"
    assert first["run_id"] in response.json()["message"] and "nightly-1" in response.json()["message"]
    assert [r["run_id"] for r in api.call("GET", "/api/v1/runs").json()["runs"]] == [first["run_id"]]


@pytest.mark.parametrize(
    ("body", "code", "named"),
    [
        ({"job": "daily_job", "partition": "2099-01-01"}, "invalid_partition", "2099-01-01"),
        ({"job": "daily_job", "partition": "../etc"}, "invalid_partition", "../etc"),
        ({"job": "no_such_job"}, "unknown_job", "no_such_job"),
        ({"asset_selection": "nope+"}, "invalid_selection", "nope"),
        ({"job": "numbers_job", "asset_selection": "total"}, "invalid_launch", "exactly one"),
        ({"job": "numbers_job", "tags": {"tidegate/priority": "high"}}, "invalid_launch", "high"),
        ({"job": "numbers_job", "surprise": 1}, "invalid_request", "surprise"),
        ({"job": "numbers_job", "run_key": "k" * 2000}, "input_limit", "run key"),
    ],
)
def test_invalid_launches_are_400_naming_the_value_and_create_no_run(
    api: Api, body: dict[str, Any], code: str, named: str
) -> None:
    response = api.call("POST", "/api/v1/runs", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == code
    assert named in response.json()["message"]
    assert api.call("GET", "/api/v1/runs").json() == {"runs": [], "next_cursor": None}


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"job": "greet_job", "run_config": {"ops": {"greeting": {"config": {"times": 2}}}}}, "person_name"),
        ({"job": "greet_job", "run_config": {"ops": {"greeting": {"config": {"person_name": 5}}}}}, "person_name"),
        ({"job": "greet_job", "run_config": {"ops": {"nobody": {"config": {}}}}}, "nobody"),
        ({"job": "scale_job", "run_config": {"ops": {"scaled": {"config": {"factor": "x"}}}}}, "factor"),
        ({"asset_selection": "greeting", "run_config": {"solids": {}}}, "solids"),
    ],
)
def test_invalid_run_config_is_400_naming_the_node_and_field_and_creates_no_run(
    api: Api, body: dict[str, Any], named: str
) -> None:
    response = api.call("POST", "/api/v1/runs", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_run_config"
    assert named in response.json()["message"]
    assert api.call("GET", "/api/v1/runs").json() == {"runs": [], "next_cursor": None}


def test_run_config_is_launched_with_and_shown_with_env_vars_redacted(api: Api) -> None:
    config = {"ops": {"greeting": {"config": {"person_name": {"env": "GREETING_SECRET_NAME"}, "times": 2}}}}
    run = _launch(api, job="greet_job", run_config=config)
    detail = api.call("GET", f"/api/v1/runs/{run['run_id']}", Role.VIEWER).json()
    assert detail["run_config"] == {
        "ops": {"greeting": {"config": {"person_name": "<redacted> (EnvVar GREETING_SECRET_NAME)", "times": 2}}}
    }
    default = api.call("GET", f"/api/v1/runs/{_launch(api, job='greet_job')['run_id']}").json()
    assert default["run_config"] == {"ops": {"greeting": {"config": {"person_name": "everyone", "times": 1}}}}
    selected = _launch(
        api, job=None, asset_selection="greeting", run_config={"ops": {"greeting": {"config": {"person_name": "sel"}}}}
    )
    assert selected["job_name"] == "__ASSET_JOB"
    op_run = _launch(api, job="scale_job", run_config={"ops": {"scaled": {"config": {"factor": 7}}}})
    op_detail = api.call("GET", f"/api/v1/runs/{op_run['run_id']}").json()
    assert op_detail["run_config"] == {"ops": {"scaled": {"config": {"factor": 7}}}}
    assert {s["step_key"] for s in op_detail["steps"]} == {"base_value", "scaled"}


def test_an_op_job_and_an_asset_selection_launched_with_config_run_to_success(api: Api, tmp_path: Path) -> None:
    """The beat's run queue and the worker's step code, in this process, run what the API launched."""
    from tidegate.scheduler.beat import Beat
    from tidegate.storage.records import StepRef
    from tidegate.workers.execution import StepExecutor
    from tidegate.workers.io import FilesystemIOManager

    pending: list[StepRef] = []
    beat = Beat(DEFS, api.storage, pending.extend, holder="api-test")
    executor = StepExecutor(
        DEFS,
        api.storage,
        publish=pending.extend,
        worker_name="w@api-test",
        heartbeat_seconds=5,
        default_io_manager=FilesystemIOManager(tmp_path / "io"),
    )
    op_run = _launch(api, job="scale_job", run_config={"ops": {"scaled": {"config": {"factor": 7}}}})["run_id"]
    config = {"ops": {"greeting": {"config": {"person_name": "Ada", "times": 2}}}}
    selected = _launch(api, job=None, asset_selection="greeting", run_config=config)["run_id"]
    beat.launcher.tick()
    while pending:
        ref = pending.pop(0)
        executor.execute(ref.run_id, ref.step_key, ref.attempt)
        beat.launcher.tick()
    for run_id in (op_run, selected):
        detail = api.call("GET", f"/api/v1/runs/{run_id}").json()
        assert detail["status"] == RunStatus.SUCCESS, detail
    io = FilesystemIOManager(tmp_path / "io")
    assert pickle.loads(io.op_output_path([op_run, "scaled", "result"]).read_bytes()) == 14  # 2 * factor 7
    assert pickle.loads(io.path_for(AssetKey(["greeting"])).read_bytes()) == "hello Adahello Ada"


def test_runs_list_filters_and_cursor_pagination(api: Api) -> None:
    ids = [_launch(api, tags={"n": str(i)})["run_id"] for i in range(5)]
    api.call("POST", f"/api/v1/runs/{ids[0]}/cancel")
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = api.call("GET", "/api/v1/runs", Role.VIEWER, params=params).json()
        seen += [r["run_id"] for r in page["runs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]
    queued = api.call("GET", "/api/v1/runs", params={"status": "QUEUED"}).json()["runs"]
    assert {r["run_id"] for r in queued} == set(ids[1:])
    tagged = api.call("GET", "/api/v1/runs", params={"tag": ["n=3", "n=4"]}).json()["runs"]
    assert [r["run_id"] for r in tagged] == [ids[4], ids[3]]
    assert api.call("GET", "/api/v1/runs", params={"job": "broken_job"}).json()["runs"] == []
    bad = api.call("GET", "/api/v1/runs", params={"status": "DONE"})
    assert bad.status_code == 400 and "status" in bad.json()["message"]


def test_cancel_then_stream_the_events_of_the_finished_run(api: Api) -> None:
    run_id = _launch(api)["run_id"]
    canceled = api.call("POST", f"/api/v1/runs/{run_id}/cancel", Role.LAUNCHER).json()
    assert canceled["status"] == RunStatus.CANCELED
    again = api.call("POST", f"/api/v1/runs/{run_id}/cancel")
    assert again.status_code == 409 and "CANCELED" in again.json()["message"]
    events = api.call("GET", f"/api/v1/runs/{run_id}/events").json()["events"]
    assert [e["event_type"] for e in events][-1] == "RUN_CANCELED"
    with api.client.stream("GET", f"/api/v1/runs/{run_id}/events/stream", headers=_auth(api)) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        text = "".join(response.iter_text())
    kinds = [line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("event: ")]
    assert kinds == [e["event_type"] for e in events] + ["end"]
    assert '"status": "CANCELED"' in text.split("event: end")[1]
    headers = {**_auth(api), "Last-Event-ID": str(events[-1]["id"])}
    with api.client.stream("GET", f"/api/v1/runs/{run_id}/events/stream", headers=headers) as response:
        assert [ln for ln in "".join(response.iter_text()).splitlines() if ln.startswith("event: ")] == ["event: end"]
    logs = api.call("GET", f"/api/v1/runs/{run_id}/steps/numbers/logs").json()
    assert logs["status"] == "CANCELED" and logs["step_key"] == "numbers"
    missing = api.call("GET", f"/api/v1/runs/{run_id}/steps/nope/logs")
    assert missing.status_code == 404 and "nope" in missing.json()["message"]
    assert api.call("GET", "/api/v1/runs/no-such-run").json() == {
        "code": "run_not_found",
        "message": "run 'no-such-run': not found",
    }


def _auth(api: Api, role: Role = Role.VIEWER) -> dict[str, str]:
    return {"Authorization": f"Bearer {api.tokens[role]}"}


def test_reexecute_a_finished_run_only(api: Api) -> None:
    run_id = _launch(api)["run_id"]
    response = api.call("POST", f"/api/v1/runs/{run_id}/reexecute", json={"from_failure": False})
    assert response.status_code == 409 and "QUEUED" in response.json()["message"]
    api.call("POST", f"/api/v1/runs/{run_id}/cancel")
    child = api.call("POST", f"/api/v1/runs/{run_id}/reexecute", Role.LAUNCHER).json()
    assert child["parent_run_id"] == run_id and child["tags"]["tidegate/parent_run_id"] == run_id


# -- assets, automation, backfills, pools -------------------------------------------------------


def test_assets_report_an_external_materialization_and_partition_status(api: Api) -> None:
    reported = api.call("POST", "/api/v1/assets/external_feed/materializations", json={"metadata": {"rows": "9"}})
    assert reported.status_code == 201 and reported.json()["metadata"] == {"rows": "9"}
    listed = {a["asset_key"]: a for a in api.call("GET", "/api/v1/assets").json()}
    assert listed["external_feed"]["last_materialization"]["id"] == reported.json()["id"]
    assert listed["daily_sales"]["partitions"] == {"materialized": 0, "failed": 0, "missing": 5, "total": 5}
    page = api.call("GET", "/api/v1/assets/external_feed/materializations").json()
    assert [m["id"] for m in page["materializations"]] == [reported.json()["id"]]
    partitions = api.call("GET", "/api/v1/assets/daily_sales/partitions", params={"status": "MISSING"}).json()
    assert [p["partition_key"] for p in partitions][:2] == ["2024-01-01", "2024-01-02"]
    bad = api.call("POST", "/api/v1/assets/daily_sales/materializations", json={"partition": "2030-01-01"})
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_partition" and "2030-01-01" in bad.text
    assert api.call("GET", "/api/v1/assets/nope/materializations").status_code == 404


def test_an_assets_latest_automation_evaluation_explains_why_or_why_not(storage: Storage) -> None:
    from tidegate.scheduler.beat import Beat
    from tidegate.scheduler.clock import FakeClock

    defs = CodeLocation.parse(str(EXPLAIN_PROJECT)).load()
    beat = Beat(defs, storage, lambda refs: None, clock=FakeClock(datetime(2024, 3, 4, tzinfo=UTC)), holder="api")
    beat.tick()
    app = Api(storage, defs=defs)
    with app.client:
        response = app.call("GET", "/api/v1/assets/fresh_report/automation", Role.VIEWER)
        assert response.status_code == 200, response.text
        found = response.json()
        assert found["asset_key"] == "fresh_report" and found["condition"] == "keep fresh"
        assert found["sensor"] == "default_automation_condition_sensor" and found["requested"] == []
        assert found["explanation"][0].startswith("✗ ") and "[0/1]" in found["explanation"][0]
        assert len(found["explanation"]) > 1 and found["explanation"][1].startswith("  ")
        assert found["evaluation"]["root"]["label"] == "keep fresh"
        before = app.call("GET", f"/api/v1/assets/fresh_report/automation?tick={found['tick_id'] - 1}")
        assert before.status_code == 404 and "at or before tick" in before.json()["message"]
        never = app.call("GET", "/api/v1/assets/upstream_feed/automation")
        assert never.status_code == 404 and "upstream_feed" in never.json()["message"]


def test_schedules_and_sensors_start_stop_cursor_preview_and_lag(api: Api) -> None:
    assert api.call("POST", "/api/v1/schedules/morning/start").json()["status"] == "RUNNING"
    schedule = api.call("GET", "/api/v1/schedules/morning").json()
    assert schedule["next_tick_at"] is not None and schedule["cron_schedule"] == "0 6 * * *"
    preview = api.call("GET", "/api/v1/schedules/morning/preview", params={"ticks": 2}).json()
    assert len(preview) == 2 and preview[0]["run_requests"][0]["run_key"] is not None
    assert api.call("POST", "/api/v1/schedules/morning/stop").json()["status"] == "STOPPED"
    assert api.call("PUT", "/api/v1/sensors/every_call/cursor", json={"cursor": "41"}).json()["cursor"] == "41"
    sensor_preview = api.call("POST", "/api/v1/sensors/every_call/preview").json()
    assert sensor_preview["cursor"] == "42" and sensor_preview["run_requests"][0]["run_key"] == "call-42"
    assert api.call("GET", "/api/v1/sensors/every_call").json()["cursor"] == "41"  # a preview commits nothing
    assert api.call("DELETE", "/api/v1/sensors/every_call/cursor").json()["cursor"] is None
    bad = api.call("PUT", "/api/v1/sensors/on_feed/cursor", json={"cursor": "not-an-id"})
    assert bad.status_code == 400 and "not-an-id" in bad.json()["message"]
    api.call("POST", "/api/v1/assets/external_feed/materializations", json={})
    sensors = {s["name"]: s for s in api.call("GET", "/api/v1/sensors").json()}
    assert sensors["on_feed"]["lag"]["events_waiting"] >= 1
    assert api.call("GET", "/api/v1/sensors/every_call/ticks").json() == {"ticks": [], "next_cursor": None}
    assert api.call("POST", "/api/v1/sensors/nope/start").status_code == 404


def test_backfills_queue_pools_and_metrics(api: Api) -> None:
    created = api.call("POST", "/api/v1/backfills", json={"job": "daily_job", "from_key": "2024-01-02"})
    assert created.status_code == 201 and created.json()["partitions"] == 4
    backfill_id = created.json()["backfill_id"]
    assert api.call("GET", f"/api/v1/backfills/{backfill_id}").json()["status"] == "REQUESTED"
    assert api.call("POST", f"/api/v1/backfills/{backfill_id}/cancel").json()["status"] == "CANCELED"
    assert api.call("POST", f"/api/v1/backfills/{backfill_id}/cancel").status_code == 409
    both = api.call("POST", "/api/v1/backfills", json={"job": "daily_job", "all": True, "missing": True})
    assert both.status_code == 400 and "exactly one" in both.json()["message"]
    configured = {"job": "daily_job", "all": True, "run_config": {"ops": {"daily_sales": {"config": {"n": 1}}}}}
    refused = api.call("POST", "/api/v1/backfills", json=configured)
    assert refused.status_code == 400 and refused.json()["code"] == "invalid_run_config"
    assert "daily_sales" in refused.json()["message"]
    assert [b["backfill_id"] for b in api.call("GET", "/api/v1/backfills").json()] == [backfill_id]
    unknown = api.call("GET", "/api/v1/backfills/zzzz")
    assert unknown.status_code == 404 and unknown.json()["code"] == "backfill_not_found"
    run_id = _launch(api)["run_id"]
    queue = api.call("GET", "/api/v1/queue").json()
    assert [q["run_id"] for q in queue["queued"]] == [run_id]
    assert api.call("PUT", "/api/v1/pools/db", json={"slots": 3}).json()["slots"] == 3
    assert {"name": "db", "slots": 3, "active": 0, "waiting": 0} in api.call("GET", "/api/v1/pools").json()
    assert api.call("PUT", "/api/v1/pools/db", json={"slots": -1}).status_code == 400
    metrics = api.call("GET", "/metrics", Role.VIEWER)
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    lines = metrics.text.splitlines()
    assert 'tidegate_runs{status="QUEUED"} 1' in lines
    assert "tidegate_run_queue_depth 1" in lines
    assert any(line.startswith('tidegate_sensor_lag_events{sensor="on_feed"}') for line in lines)


# -- tokens and authentication ------------------------------------------------------------------


def test_failed_authentication_is_rate_limited_and_logged_without_the_token(
    storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    api = Api(storage, FailedAuthLimiter(max_failures=3, window_seconds=600))
    wrong = "tg_0123456789abcdef_" + "s" * 43
    with api.client, caplog.at_level(logging.WARNING, logger="tidegate.webserver.auth"):
        for _ in range(3):
            assert api.client.get("/api/v1/runs", headers={"Authorization": f"Bearer {wrong}"}).status_code == 401
        limited = api.call("GET", "/api/v1/runs", Role.VIEWER)  # even a good token, from that client
    assert limited.status_code == 429 and limited.json()["code"] == "too_many_failed_authentications"
    assert len([r for r in caplog.records if "failed authentication from testclient" in r.getMessage()]) == 3
    assert wrong not in caplog.text and "s" * 43 not in caplog.text


def test_revoked_and_expired_tokens_are_refused(api: Api) -> None:
    assert api.call("GET", "/api/v1/runs", Role.VIEWER).status_code == 200
    assert api.storage.revoke_token("t-viewer") is True
    assert api.call("GET", "/api/v1/runs", Role.VIEWER).status_code == 401
    created = api.storage.create_token("short", Role.ADMIN, expires_in=timedelta(days=1))
    headers = {"Authorization": f"Bearer {created.token}"}
    assert api.client.get("/api/v1/runs", headers=headers).status_code == 200
    with api.storage.engine.begin() as conn:
        conn.execute(
            update(api_tokens).where(api_tokens.c.name == "short").values(expires_at=created.record.created_at)
        )
    assert api.client.get("/api/v1/runs", headers=headers).status_code == 401
    listed = {t.name: t for t in api.storage.list_tokens()}
    assert listed["short"].last_used_at is not None and listed["t-viewer"].revoked_at is not None
    for record in listed.values():
        assert created.token not in repr(record)


def test_the_webserver_refuses_to_start_without_a_token_unless_insecure_on_loopback(storage: Storage) -> None:
    with pytest.raises(AuthenticationError, match="no active API token"):
        check_startup(storage, host="0.0.0.0", insecure=False)
    with pytest.raises(AuthenticationError, match="loopback"):
        check_startup(storage, host="0.0.0.0", insecure=True)
    check_startup(storage, host="127.0.0.1", insecure=True)
    check_startup(storage, host="::1", insecure=True)
    storage.create_token("admin", Role.ADMIN)
    check_startup(storage, host="0.0.0.0", insecure=False)
    insecure = TestClient(create_app(DEFS, storage, settings=Settings(), insecure=True))
    assert insecure.post("/api/v1/schedules/morning/start").json()["status"] == "RUNNING"


def test_token_commands_print_a_token_once_and_store_only_its_digest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from tidegate.cli import main

    url = f"sqlite:///{tmp_path / 'tokens.db'}"
    monkeypatch.setenv("TIDEGATE_DATABASE_URL", url)
    monkeypatch.setenv("TIDEGATE_HOME", str(tmp_path))
    runner = CliRunner()
    created = runner.invoke(main, ["token", "create", "ci", "--role", "launcher", "--expires", "30d"])
    assert created.exit_code == 0, created.output
    token = created.stdout.strip()
    assert token.startswith("tg_") and len(token) == 3 + 16 + 1 + 43
    assert "shown once" in created.stderr and "launcher" in created.stderr
    listed = runner.invoke(main, ["token", "list", "--json"])
    (row,) = json.loads(listed.stdout)
    assert row["name"] == "ci" and row["role"] == "launcher" and row["expires_at"] is not None
    storage = Storage.open(url)
    with storage.engine.connect() as conn:
        stored = " ".join(str(v) for r in conn.execute(api_tokens.select()) for v in r)
    # The secret is base64url and may itself hold "_", so it is cut by position, not by split.
    secret = token[len("tg_") + 16 + 1 :]
    assert len(secret) == 43 and token[len("tg_") + 16] == "_"
    assert token not in stored and secret not in stored and token not in listed.output
    assert storage.verify_token(token) is not None
    duplicate = runner.invoke(main, ["token", "create", "ci", "--role", "admin"])
    assert duplicate.exit_code == 2 and "token 'ci': a token with this name exists" in duplicate.stderr
    bad = runner.invoke(main, ["token", "create", "x", "--role", "admin", "--expires", "soon"])
    assert bad.exit_code == 2 and "'soon'" in bad.stderr
    assert runner.invoke(main, ["token", "revoke", "ci"]).stdout == "token 'ci' revoked\n"
    assert storage.verify_token(token) is None
    missing = runner.invoke(main, ["token", "revoke", "nope"])
    assert missing.exit_code == 2 and "token 'nope': not found" in missing.stderr
    storage.dispose()
