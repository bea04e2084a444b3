"""``/graphql`` over HTTP: POST a JSON body ``{"query", "variables", "operationName"}`` (what
Dagster's client sends), or GET with those as query parameters (queries only, never mutations).

Every request is authenticated first (``Authorization: Bearer <token>``; 401 without a valid
one, as on the REST API); the caller's role then decides which mutations it may run. The schema
runs in FastAPI's thread pool (resolvers read the database). An exception that is not one of
tidegate's typed errors is masked: the response says "Unexpected error." and the server logs it.
"""

from __future__ import annotations

import json
import os
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.requests import HTTPConnection
from strawberry.schema.exceptions import InvalidOperationTypeError
from strawberry.types.graphql import OperationType

from tidegate.definitions.defs import Definitions
from tidegate.definitions.loading import ENV_VAR, CodeLocation
from tidegate.webserver.app import web_context
from tidegate.webserver.auth import authenticate
from tidegate.webserver.graphql.context import GraphQLContext, Workspace
from tidegate.webserver.graphql.schema import schema

GRAPHQL_PATH = "/graphql"


def workspace_of(connection: HTTPConnection) -> Workspace:
    """The app's one Workspace, made on first use. Reloadable when the webserver loaded its code
    from a location (``tidegate webserver -m``); a reload also updates what the REST API serves."""
    state = connection.app.state
    workspace: Workspace | None = getattr(state, "graphql_workspace", None)
    if workspace is None:
        context = web_context(connection)
        location = CodeLocation.from_env() if os.environ.get(ENV_VAR) else None
        if location is not None and location.name != context.defs.code_location:
            location = None  # the app was given other Definitions than the environment names

        def served(defs: Definitions) -> None:
            context.defs = defs

        workspace = Workspace(context.defs, location, on_reload=served)
        state.graphql_workspace = workspace
    return workspace


def _execute(connection: HTTPConnection, body: dict[str, Any], *, queries_only: bool) -> JSONResponse:
    principal = authenticate(connection)
    query = body.get("query")
    variables = body.get("variables")
    if not isinstance(query, str) or not query.strip():
        return JSONResponse({"errors": [{"message": "the request has no GraphQL query"}]}, status_code=400)
    if variables is not None and not isinstance(variables, dict):
        return JSONResponse({"errors": [{"message": "variables must be a JSON object"}]}, status_code=400)
    context = GraphQLContext(
        storage=web_context(connection).storage,
        workspace=workspace_of(connection),
        role=principal.role,
        caller=principal.name,
    )
    allowed = (OperationType.QUERY,) if queries_only else (OperationType.QUERY, OperationType.MUTATION)
    try:
        result = schema.execute_sync(
            query,
            variable_values=variables,
            context_value=context,
            operation_name=body.get("operationName"),
            allowed_operation_types=allowed,
        )
    except InvalidOperationTypeError as exc:
        message = f"{exc.operation_type.value} operations are not allowed over GET: POST them"
        return JSONResponse({"errors": [{"message": message}]}, status_code=400)
    payload: dict[str, Any] = {"data": result.data}
    if result.errors:
        payload["errors"] = [error.formatted for error in result.errors]
    return JSONResponse(payload, status_code=200 if result.data is not None or not result.errors else 400)


def graphql_router() -> APIRouter:
    router = APIRouter(tags=["graphql"])

    @router.post(GRAPHQL_PATH, include_in_schema=False)
    def graphql_post(request: Request, body: dict[str, Any]) -> JSONResponse:
        return _execute(request, body, queries_only=False)

    @router.get(GRAPHQL_PATH, include_in_schema=False)
    def graphql_get(
        request: Request, query: str = "", variables: str | None = None, operationName: str | None = None
    ) -> JSONResponse:
        try:
            parsed = json.loads(variables) if variables else None
        except ValueError:
            return JSONResponse({"errors": [{"message": "variables: not valid JSON"}]}, status_code=400)
        return _execute(
            request, {"query": query, "variables": parsed, "operationName": operationName}, queries_only=True
        )

    return router
