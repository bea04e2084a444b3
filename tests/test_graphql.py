"""/graphql in-process (FastAPI's test client) on real SQLite and PostgreSQL storage: Dagster's
client's own queries validate against the schema and get the typenames it switches on; bad
selectors and config get typed results and create no run; every mutation's auth; schedules,
sensors, cursors, backfills and reloading the code location. tests/test_graphql_processes.py
runs Dagster's DagsterGraphQLClient against a real webserver process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLObjectType,
    GraphQLUnionType,
    parse,
    validate,
)
from sqlalchemy.exc import OperationalError

from tests.support import ROOT
from tidegate.config import Settings
from tidegate.definitions.defs import Definitions
from tidegate.definitions.loading import ENV_VAR, CodeLocation
from tidegate.names import InstigatorStatus, Role, RunStatus
from tidegate.storage.api import Storage
from tidegate.storage.run_search import RunFilter
from tidegate.webserver import create_app
from tidegate.webserver.auth import FailedAuthLimiter
from tidegate.webserver.graphql import schema
from tidegate.webserver.graphql.context import REPOSITORY_NAME

PROJECT = ROOT / "tests" / "projects" / "graphql_project.py"
DEFS = CodeLocation.parse(str(PROJECT)).load()
LOCATION = "graphql_project.py"

try:
    from dagster_graphql.client import client_queries as CLIENT
except ImportError:  # the dev extra installs it; CI must have it
    CLIENT = None


def client_queries() -> Any:
    if CLIENT is None:
        from tests.support import require_service

        require_service("dagster-graphql", "not installed (pip install -e '.[dev]')")
    return CLIENT


class GraphQL:
    """A test client of /graphql plus one token per role."""

    def __init__(self, storage: Storage, defs: Definitions = DEFS, prefix: str = "gql") -> None:
        self.storage = storage
        app = create_app(defs, storage, settings=Settings(), limiter=FailedAuthLimiter(10_000))
        self.client = TestClient(app)
        self.tokens = {role: storage.create_token(f"{prefix}-{role.value}", role).token for role in Role}

    def post(self, query: str, variables: dict[str, Any] | None = None, role: Role | None = Role.ADMIN) -> Any:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"} if role is not None else {}
        return self.client.post("/graphql", json={"query": query, "variables": variables}, headers=headers)

    def __call__(self, query: str, variables: dict[str, Any] | None = None, role: Role = Role.ADMIN) -> Any:
        response = self.post(query, variables, role)
        assert response.status_code == 200, response.text
        body = response.json()
        assert "errors" not in body, body
        return body["data"]


@pytest.fixture
def gql(storage: Storage) -> Iterator[GraphQL]:
    found = GraphQL(storage)
    with found.client:
        yield found


def execution_params(job: str = "orders_job", **overrides: Any) -> dict[str, Any]:
    """``executionParams`` as DagsterGraphQLClient.submit_job_execution builds them."""
    params: dict[str, Any] = {
        "selector": {
            "repositoryLocationName": LOCATION,
            "repositoryName": REPOSITORY_NAME,
            "pipelineName": job,
            "solidSelection": None,
            "assetSelection": None,
        },
        "runConfigData": {},
        "mode": "default",
        "executionMetadata": {},
    }
    for key, value in overrides.items():
        if key in params["selector"]:
            params["selector"][key] = value
        else:
            params[key] = value
    return {"executionParams": params}


def launch(gql: GraphQL, role: Role = Role.LAUNCHER, **overrides: Any) -> dict[str, Any]:
    data = gql(client_queries().CLIENT_SUBMIT_PIPELINE_RUN_MUTATION, execution_params(**overrides), role)
    result: dict[str, Any] = data["launchPipelineExecution"]
    return result


def run_count(storage: Storage) -> int:
    return len(storage.search_runs(RunFilter(), limit=1000))


# -- Dagster's client's queries ------------------------------------------------------------------


def test_every_query_of_dagster_client_validates_against_the_schema() -> None:
    queries = client_queries()
    names = [n for n in dir(queries) if n.isupper() and isinstance(getattr(queries, n), str)]
    assert len(names) >= 6
    for name in names:
        errors = validate(schema._schema, parse(getattr(queries, name)))
        assert not errors, f"{name}: {[e.message for e in errors]}"


def test_checked_in_schema_is_the_served_one() -> None:
    checked_in = (ROOT / "docs" / "graphql.graphql").read_text()
    assert checked_in == schema.as_str() + "\n", (
        "regenerate: python -m tidegate.webserver.graphql > docs/graphql.graphql"
    )


@pytest.mark.slow  # builds Dagster's whole schema (imports dagster): several seconds
def test_every_type_field_and_argument_is_named_and_typed_as_in_dagster() -> None:
    """Each type of ours exists in Dagster's schema with the same kind; each field and argument
    with the same type; each union and enum holds no member Dagster's lacks."""
    client_queries()
    from dagster_graphql.schema import create_schema

    theirs = create_schema().graphql_schema
    problems = []
    for name, ours in schema._schema.type_map.items():
        if name.startswith("__") or name in ("String", "Int", "Float", "Boolean", "ID"):
            continue
        same = theirs.type_map.get(name)
        if same is None:
            problems.append(f"type {name}: not in Dagster's schema")
            continue
        kinds = (GraphQLObjectType, GraphQLInterfaceType, GraphQLInputObjectType, GraphQLUnionType, GraphQLEnumType)
        if [isinstance(ours, k) for k in kinds] != [isinstance(same, k) for k in kinds]:
            problems.append(f"type {name}: another kind of type in Dagster's schema")
        if isinstance(ours, GraphQLObjectType | GraphQLInterfaceType | GraphQLInputObjectType):
            assert isinstance(same, GraphQLObjectType | GraphQLInterfaceType | GraphQLInputObjectType)
            for field_name, field in ours.fields.items():
                theirs_field = same.fields.get(field_name)
                if theirs_field is None or str(field.type) != str(theirs_field.type):
                    problems.append(
                        f"{name}.{field_name}: {field.type} (Dagster: {theirs_field and theirs_field.type})"
                    )
                    continue
                for arg, value in getattr(field, "args", {}).items():
                    theirs_arg = theirs_field.args.get(arg)  # type: ignore[union-attr]
                    if theirs_arg is None or str(value.type) != str(theirs_arg.type):
                        problems.append(f"{name}.{field_name}({arg}): {value.type}")
        if isinstance(ours, GraphQLUnionType) and isinstance(same, GraphQLUnionType):
            extra = {t.name for t in ours.types} - {t.name for t in same.types}
            problems += [f"union {name}: {t} is not a member in Dagster's" for t in sorted(extra)]
        if isinstance(ours, GraphQLEnumType) and isinstance(same, GraphQLEnumType):
            problems += [f"enum {name}: {v} not in Dagster's" for v in sorted(set(ours.values) - set(same.values))]
    assert not problems, "\n".join(problems)


def test_launch_read_status_and_filter_runs(gql: GraphQL) -> None:
    queries = client_queries()
    jobs = gql(queries.CLIENT_GET_REPO_LOCATIONS_NAMES_AND_PIPELINES_QUERY)["repositoriesOrError"]
    assert jobs["__typename"] == "RepositoryConnection"
    (repository,) = jobs["nodes"]
    assert repository["name"] == REPOSITORY_NAME and repository["location"]["name"] == LOCATION
    assert {"orders_job", "regional_job"} <= {p["name"] for p in repository["pipelines"]}

    tags = {"executionMetadata": {"tags": [{"key": "team", "value": "sales"}]}}
    first = launch(gql, **tags)
    assert first["__typename"] == "LaunchRunSuccess"
    run_id = first["run"]["runId"]
    record = gql.storage.get_run(run_id)
    assert record.job_name == "orders_job" and record.status == RunStatus.QUEUED
    assert record.tags["team"] == "sales" and record.tags["tidegate/launched_by"] == "gql-launcher"
    status = gql(queries.GET_PIPELINE_RUN_STATUS_QUERY, {"runId": run_id}, Role.VIEWER)["pipelineRunOrError"]
    assert status == {"__typename": "Run", "status": "QUEUED"}

    partitioned = launch(
        gql, job="regional_job", executionMetadata={"tags": [{"key": "dagster/partition", "value": "eu"}]}
    )
    assert partitioned["__typename"] == "LaunchRunSuccess"
    assert gql.storage.get_run(partitioned["run"]["runId"]).tags.get("tidegate/partition") == "eu"

    query = """query($filter: RunsFilter, $cursor: String, $limit: Int) {
      runsOrError(filter: $filter, cursor: $cursor, limit: $limit) {
        __typename ... on Runs { results { runId jobName status tags { key value } stepStats { stepKey status } } }
      }
    }"""
    by_tag = gql(query, {"filter": {"tags": [{"key": "team", "value": "sales"}]}}, Role.VIEWER)
    (only,) = by_tag["runsOrError"]["results"]
    assert only["runId"] == run_id and [s["stepKey"] for s in only["stepStats"]] == ["orders", "order_total"]
    by_job = gql(query, {"filter": {"pipelineName": "regional_job", "statuses": ["QUEUED"]}}, Role.VIEWER)
    assert [r["runId"] for r in by_job["runsOrError"]["results"]] == [partitioned["run"]["runId"]]
    page_one = gql(query, {"limit": 1}, Role.VIEWER)["runsOrError"]["results"]
    page_two = gql(query, {"limit": 1, "cursor": page_one[0]["runId"]}, Role.VIEWER)["runsOrError"]["results"]
    assert {page_one[0]["runId"], page_two[0]["runId"]} == {run_id, partitioned["run"]["runId"]}
    unknown = gql(queries.GET_PIPELINE_RUN_STATUS_QUERY, {"runId": "no-such-run"}, Role.VIEWER)
    assert unknown["pipelineRunOrError"]["__typename"] == "RunNotFoundError"


def test_bad_selector_config_or_partition_is_a_typed_result_and_creates_no_run(gql: GraphQL) -> None:
    unknown_job = launch(gql, pipelineName="no_such_job")
    assert unknown_job["__typename"] == "PipelineNotFoundError"
    assert "no_such_job" in unknown_job["message"]
    elsewhere = launch(gql, repositoryLocationName="other_location.py")
    assert elsewhere["__typename"] == "PipelineNotFoundError" and "other_location.py" in elsewhere["message"]
    config = launch(gql, runConfigData={"ops": {"orders": {"config": {"limit": 3}}}})
    assert config["__typename"] == "RunConfigValidationInvalid"
    (error,) = config["errors"]
    assert error["reason"] == "FIELD_NOT_DEFINED" and error["path"] == ["ops", "orders"]
    assert "'orders'" in error["message"] and "takes no config" in error["message"]
    for run_config, reason, path in [
        ({"ops": {"discount": {"config": {"label": "x"}}}}, "MISSING_REQUIRED_FIELD", ["rate"]),
        ({"ops": {"discount": {"config": {"rate": "lots"}}}}, "RUNTIME_TYPE_MISMATCH", ["rate"]),
        ({"ops": {"discount": {"config": {"rate": 1, "colour": "red"}}}}, "FIELD_NOT_DEFINED", ["colour"]),
    ]:
        invalid = launch(gql, job="discount_job", runConfigData=run_config)
        assert invalid["__typename"] == "RunConfigValidationInvalid", invalid
        (error,) = invalid["errors"]
        assert error["reason"] == reason and error["path"] == ["ops", "discount", "config", *path], error
        assert f"'{path[0]}'" in error["message"] and "asset 'discount'" in error["message"]
    partition = launch(
        gql, job="regional_job", executionMetadata={"tags": [{"key": "dagster/partition", "value": "mars"}]}
    )
    assert partition["__typename"] == "PythonError" and "mars" in partition["message"]
    subset = launch(gql, assetSelection=[{"path": ["regional_sales"]}])
    assert subset["__typename"] == "InvalidSubsetError"
    assert run_count(gql.storage) == 0


def test_run_config_data_is_launched_with_and_a_string_form_too(gql: GraphQL) -> None:
    given = launch(gql, job="discount_job", runConfigData={"ops": {"discount": {"config": {"rate": 0.5}}}})
    assert given["__typename"] == "LaunchRunSuccess", given
    stored = gql.storage.get_run(given["run"]["runId"]).run_config
    assert stored == {"ops": {"discount": {"config": {"rate": 0.5}}}}
    as_text = launch(gql, job="discount_job", runConfigData='{"ops": {"discount": {"config": {"rate": 2}}}}')
    assert gql.storage.get_run(as_text["run"]["runId"]).run_config["ops"]["discount"]["config"]["rate"] == 2
    default = launch(gql, job="discount_job")  # {}: the job's default config
    assert gql.storage.get_run(default["run"]["runId"]).run_config["ops"]["discount"]["config"]["rate"] == 0.1


# -- auth ------------------------------------------------------------------------------------------

SENSOR = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY_NAME, "sensorName": "orders_sensor"}
SCHEDULE = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY_NAME, "scheduleName": "nightly"}
BACKFILL = {
    "selector": {
        "partitionSetName": "regional_job_partition_set",
        "repositorySelector": {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY_NAME},
    },
    "partitionNames": ["eu"],
}


def mutations(gql: GraphQL) -> list[tuple[str, Role, str, Any, str]]:
    """(field, lowest role allowed, mutation, variables (or a function making them), the
    typename of its success)."""

    def fresh_run() -> dict[str, Any]:
        return {"runId": launch(gql)["run"]["runId"]}

    queries = client_queries()
    sensor_id = gql(
        "query($s: SensorSelector!) { sensorOrError(sensorSelector: $s) { ... on Sensor { id } } }", {"s": SENSOR}
    )
    schedule_id = gql(
        "query($s: ScheduleSelector!) { scheduleOrError(scheduleSelector: $s) { ... on Schedule { id } } }",
        {"s": SCHEDULE},
    )
    launch_run = "mutation($p: ExecutionParams!) { launchRun(executionParams: $p) { __typename } }"
    return [
        ("launchRun", Role.LAUNCHER, launch_run, {"p": execution_params()["executionParams"]}, "LaunchRunSuccess"),
        (
            "launchPipelineExecution",
            Role.LAUNCHER,
            queries.CLIENT_SUBMIT_PIPELINE_RUN_MUTATION,
            execution_params(),
            "LaunchRunSuccess",
        ),
        (
            "launchPartitionBackfill",
            Role.LAUNCHER,
            "mutation($p: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $p) { __typename } }",
            {"p": BACKFILL},
            "LaunchBackfillSuccess",
        ),
        ("terminateRun", Role.LAUNCHER, queries.TERMINATE_RUN_JOB_MUTATION, fresh_run, "TerminateRunSuccess"),
        (
            "startSensor",
            Role.ADMIN,
            "mutation($s: SensorSelector!) { startSensor(sensorSelector: $s) { __typename } }",
            {"s": SENSOR},
            "Sensor",
        ),
        (
            "setSensorCursor",
            Role.ADMIN,
            'mutation($s: SensorSelector!) { setSensorCursor(sensorSelector: $s, cursor: "7") { __typename } }',
            {"s": SENSOR},
            "Sensor",
        ),
        (
            "stopSensor",
            Role.ADMIN,
            "mutation($id: String) { stopSensor(id: $id) { __typename } }",
            {"id": sensor_id["sensorOrError"]["id"]},
            "StopSensorMutationResult",
        ),
        (
            "startSchedule",
            Role.ADMIN,
            "mutation($s: ScheduleSelector!) { startSchedule(scheduleSelector: $s) { __typename } }",
            {"s": SCHEDULE},
            "ScheduleStateResult",
        ),
        (
            "stopRunningSchedule",
            Role.ADMIN,
            "mutation($id: String) { stopRunningSchedule(id: $id) { __typename } }",
            {"id": schedule_id["scheduleOrError"]["id"]},
            "ScheduleStateResult",
        ),
        (
            "reloadRepositoryLocation",
            Role.ADMIN,
            queries.RELOAD_REPOSITORY_LOCATION_MUTATION,
            {"repositoryLocationName": LOCATION},
            "ReloadNotSupported",
        ),
        (
            "shutdownRepositoryLocation",
            Role.ADMIN,
            queries.SHUTDOWN_REPOSITORY_LOCATION_MUTATION,
            {"repositoryLocationName": LOCATION},
            "PythonError",
        ),
    ]


def test_each_mutation_needs_its_role(gql: GraphQL) -> None:
    for field, needed, mutation, variables, success in mutations(gql):
        for role in Role:
            result = gql(mutation, variables() if callable(variables) else variables, role)[field]
            if role.includes(needed):
                assert result["__typename"] == success, (field, role, result)
            else:
                assert result["__typename"] == "UnauthorizedError", (field, role, result)
    state = gql.storage.get_instigator("orders_sensor")
    assert state is not None and state.status == InstigatorStatus.STOPPED and state.cursor == "7"
    schedule_state = gql.storage.get_instigator("nightly")
    assert schedule_state is not None and schedule_state.status == InstigatorStatus.STOPPED


def test_no_or_wrong_token_is_refused_and_get_runs_no_mutation(gql: GraphQL) -> None:
    query = "{ runsOrError { __typename } }"
    assert gql.post(query, role=None).status_code == 401
    response = gql.client.post("/graphql", json={"query": query}, headers={"Authorization": "Bearer not-a-token"})
    assert response.status_code == 401 and "not-a-token" not in response.text
    assert response.json()["code"] == "unauthenticated"
    assert gql(query, role=Role.VIEWER)["runsOrError"]["__typename"] == "Runs"
    mutation = "mutation($id: String!) { terminateRun(runId: $id) { __typename } }"
    over_get = gql.client.get(
        "/graphql",
        params={"query": mutation, "variables": json.dumps({"id": "x"})},
        headers={"Authorization": f"Bearer {gql.tokens[Role.ADMIN]}"},
    )
    assert over_get.status_code == 400 and "mutation" in over_get.text.lower()


# -- schedules, sensors, backfills, the code location ------------------------------------------


def test_sensor_cursor_schedule_and_backfill(gql: GraphQL) -> None:
    started = gql(
        "mutation($s: SensorSelector!) { startSensor(sensorSelector: $s) { ... on Sensor { name "
        "sensorState { status } } } }",
        {"s": SENSOR},
    )["startSensor"]
    assert started == {"name": "orders_sensor", "sensorState": {"status": "RUNNING"}}
    cursor = gql(
        'mutation($s: SensorSelector!) { setSensorCursor(sensorSelector: $s, cursor: "42") { ... on Sensor { '
        "sensorState { typeSpecificData { ... on SensorData { lastCursor } } } } } }",
        {"s": SENSOR},
    )["setSensorCursor"]
    assert cursor["sensorState"]["typeSpecificData"]["lastCursor"] == "42"
    assert gql.storage.get_instigator("orders_sensor").cursor == "42"  # type: ignore[union-attr]
    listed = gql(
        "{ repositoriesOrError { ... on RepositoryConnection { nodes { sensors { name sensorState { status } } "
        "schedules { name scheduleState { status } } } } } }",
        role=Role.VIEWER,
    )["repositoriesOrError"]["nodes"][0]
    assert listed["sensors"] == [{"name": "orders_sensor", "sensorState": {"status": "RUNNING"}}]
    assert listed["schedules"] == [{"name": "nightly", "scheduleState": {"status": "STOPPED"}}]  # its default
    missing = gql(
        "mutation($s: SensorSelector!) { startSensor(sensorSelector: $s) { __typename ... on SensorNotFoundError "
        "{ sensorName } } }",
        {"s": {**SENSOR, "sensorName": "no_sensor"}},
    )["startSensor"]
    assert missing == {"__typename": "SensorNotFoundError", "sensorName": "no_sensor"}

    backfill = (
        "mutation($p: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $p) { __typename "
        "... on LaunchBackfillSuccess { backfillId } ... on PartitionKeysNotFoundError { partitionKeys } } }"
    )
    unknown = gql(backfill, {"p": {**BACKFILL, "partitionNames": ["eu", "mars"]}}, Role.LAUNCHER)
    assert unknown["launchPartitionBackfill"] == {"__typename": "PartitionKeysNotFoundError", "partitionKeys": ["mars"]}
    configured = {**BACKFILL, "runConfigData": {"ops": {"regional_sales": {"config": {"n": 1}}}}}
    invalid = gql(backfill, {"p": configured}, Role.LAUNCHER)["launchPartitionBackfill"]
    assert invalid == {"__typename": "RunConfigValidationInvalid"}
    assert gql.storage.list_backfills() == []
    tagged = {**BACKFILL, "partitionNames": None, "allPartitions": True, "tags": [{"key": "team", "value": "sales"}]}
    created = gql(backfill, {"p": tagged}, Role.LAUNCHER)["launchPartitionBackfill"]
    record = gql.storage.get_backfill(created["backfillId"])
    assert record.job_name == "regional_job" and list(record.partition_keys) == ["eu", "us"]
    assert record.tags == {"team": "sales", "tidegate/launched_by": "gql-launcher"}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_reload_serves_the_changed_code(storage: Storage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "graphql_reload_project.py"
    project.write_text(PROJECT.read_text())
    monkeypatch.setenv(ENV_VAR, str(project))
    gql = GraphQL(storage, defs=CodeLocation.parse(str(project)).load(), prefix="reload")
    queries = client_queries()
    name = {"repositoryLocationName": project.name}

    def job_names() -> set[str]:
        found = gql(queries.CLIENT_GET_REPO_LOCATIONS_NAMES_AND_PIPELINES_QUERY)["repositoriesOrError"]["nodes"]
        return {p["name"] for p in found[0]["pipelines"]}

    assert "extra_job" not in job_names()
    project.write_text(
        PROJECT.read_text().replace(
            "jobs=[orders_job, regional_job, discount_job]",
            'jobs=[orders_job, regional_job, discount_job, tg.define_asset_job("extra_job", "orders")]',
        )
    )
    reloaded = gql(queries.RELOAD_REPOSITORY_LOCATION_MUTATION, name)["reloadRepositoryLocation"]
    assert reloaded["__typename"] == "WorkspaceLocationEntry"
    assert reloaded["locationOrLoadError"]["__typename"] == "RepositoryLocation"
    assert "extra_job" in job_names()
    project.write_text("raise RuntimeError('broken on purpose')\n")
    broken = gql(queries.RELOAD_REPOSITORY_LOCATION_MUTATION, name)["reloadRepositoryLocation"]
    assert broken["locationOrLoadError"]["__typename"] == "PythonError"
    assert "broken on purpose" in broken["locationOrLoadError"]["message"]
    assert "extra_job" in job_names()  # the last good code is still served


def test_an_unexpected_error_is_masked(
    gql: GraphQL, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """What a database error says (here its URL with a password) reaches neither the response
    nor the server's log; tidegate's typed errors are shown as they are."""
    run_id = launch(gql)["run"]["runId"]

    def broken(run_id: str) -> None:
        cause = Exception("connection to postgresql://tidegate:hunter2@db/tidegate failed")
        raise OperationalError("SELECT steps", {}, cause)

    monkeypatch.setattr(gql.storage, "get_steps", broken)
    query = "query($id: ID!) { runOrError(runId: $id) { ... on Run { stepStats { stepKey } } } }"
    response = gql.post(query, {"id": run_id})
    assert response.json()["errors"][0]["message"] == "Unexpected error."
    assert "hunter2" not in response.text and "hunter2" not in caplog.text
    assert "OperationalError" in caplog.text
