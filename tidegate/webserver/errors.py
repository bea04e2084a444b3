"""How errors become HTTP responses: one table from tidegate's typed errors to a status and a
stable ``code``; the body is always ``{"code": ..., "message": ...}``.

Messages come from tidegate's errors, which name the offending value and never hold a secret;
database and broker failures answer 503 without their URL or driver message."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DataError, DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from tidegate import errors as e

log = logging.getLogger("tidegate.webserver")

# (error class, HTTP status, code): the first row that matches wins, so subclasses come first.
ERROR_TABLE: tuple[tuple[type[Exception], int, str], ...] = (
    (e.AuthRateLimitError, 429, "too_many_failed_authentications"),
    (e.AuthenticationError, 401, "unauthenticated"),
    (e.PermissionDeniedError, 403, "forbidden"),
    (e.RunNotFoundError, 404, "run_not_found"),
    (e.BackfillNotFoundError, 404, "backfill_not_found"),
    (e.NotFoundError, 404, "not_found"),
    (e.DuplicateRunKeyError, 409, "duplicate_run_key"),
    (e.ConflictError, 409, "conflict"),
    (e.UnknownJobError, 400, "unknown_job"),
    (e.PartitionKeyError, 400, "invalid_partition"),
    (e.InputLimitError, 400, "input_limit"),
    (e.RunConfigError, 400, "invalid_run_config"),
    (e.LaunchRequestError, 400, "invalid_launch"),
    (e.InvalidSelectionError, 400, "invalid_selection"),
    (e.EmptySelectionError, 400, "invalid_selection"),
    (e.DefinitionError, 400, "invalid_definition"),
    (e.TokenError, 400, "invalid_token_request"),
    (e.TidegateError, 400, "invalid_request"),
)


class ErrorBody(BaseModel):
    """Every error response."""

    code: str
    message: str


def status_and_code(exc: Exception) -> tuple[int, str]:
    for cls, status, code in ERROR_TABLE:
        if isinstance(exc, cls):
            return status, code
    return 500, "internal_error"


def error_response(status: int, code: str, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"code": code, "message": message}, status_code=status, headers=headers)


async def _tidegate_error(request: Request, exc: Exception) -> JSONResponse:
    status, code = status_and_code(exc)
    return error_response(status, code, str(exc))


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "request"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return error_response(400, "invalid_request", "; ".join(parts) or "invalid request")


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    return error_response(exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail))


async def _data_error(request: Request, exc: Exception) -> JSONResponse:
    return error_response(400, "invalid_value", "the database refused a value of the request")


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    log.warning("database error on %s %s: %s", request.method, request.url.path, type(exc).__name__)
    return error_response(503, "database_unavailable", "the database is unavailable; try again later")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(e.TidegateError, _tidegate_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(DataError, _data_error)
    app.add_exception_handler(DBAPIError, _database_error)


# The error responses each route may give, for the OpenAPI document.
def error_responses(*statuses: int) -> dict[int | str, dict[str, object]]:
    described = {
        400: "Invalid input",
        401: "No valid API token",
        403: "The token's role is too low",
        404: "Not found",
        409: "Conflict",
        429: "Too many failed authentications",
    }
    return {s: {"model": ErrorBody, "description": described[s]} for s in sorted({400, 401, 403, 429, *statuses})}


PUBLIC_PATHS = ("/healthz", "/readyz")


def finish_document(document: dict[str, Any]) -> dict[str, Any]:
    """FastAPI documents a 422 for invalid parameters; this API answers 400 with an ErrorBody
    (see install_error_handlers), which every operation documents instead. Every operation but
    the health checks requires the Bearer token."""
    for path, operations in document.get("paths", {}).items():
        for operation in operations.values():
            operation.get("responses", {}).pop("422", None)
            if path not in PUBLIC_PATHS:
                operation["security"] = [{"bearerAuth": []}]
    components = document.setdefault("components", {})
    components["securitySchemes"] = {
        "bearerAuth": {"type": "http", "scheme": "bearer", "description": "An API token: tidegate token create"}
    }
    schemas = document.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    return document
