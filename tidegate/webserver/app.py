"""The webserver's ASGI application: ``create_app(defs, storage)``.

Stateless: everything it shows or changes is in the shared database, so several can run behind
a load balancer. Launches go through tidegate.submit, as the CLI's do; the beat starts them.

Extending it (how /graphql is mounted): pass ``routers=`` (FastAPI ``APIRouter`` objects, whose
routes protect themselves with ``Depends(require_role(Role.VIEWER))``) or ``mounts={"/path":
asgi_app}``; or call ``app.include_router`` / ``app.mount`` on the returned app. Inside any
route or mounted app, :func:`web_context` gives the loaded definitions, the storage and the
settings, and :func:`tidegate.webserver.auth.authenticate` the caller."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp

from tidegate.config import Settings
from tidegate.definitions.defs import Definitions
from tidegate.storage.api import Storage
from tidegate.webserver.auth import AuthSettings, FailedAuthLimiter
from tidegate.webserver.errors import finish_document, install_error_handlers

API_PREFIX = "/api/v1"
INSECURE_ENV = "TIDEGATE_WEBSERVER_INSECURE"  # set by `tidegate webserver --insecure` for its workers


@dataclass
class WebContext:
    """What every request handler works with."""

    defs: Definitions
    storage: Storage
    settings: Settings


def web_context(connection: HTTPConnection) -> WebContext:
    context: WebContext = connection.app.state.context
    return context


def _health_router() -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/healthz", summary="The process is up")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz", summary="The database is reachable", responses={503: {"description": "Not ready"}})
    def readyz(connection: HTTPConnection) -> JSONResponse:
        storage = web_context(connection).storage
        try:
            with storage.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except DBAPIError:
            return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)
        return JSONResponse({"status": "ok", "database": "reachable"})

    return router


def create_app(
    defs: Definitions,
    storage: Storage,
    *,
    settings: Settings | None = None,
    insecure: bool = False,
    limiter: FailedAuthLimiter | None = None,
    routers: Sequence[APIRouter] = (),
    mounts: Mapping[str, ASGIApp] | None = None,
) -> FastAPI:
    """The webserver's app over ``defs`` and ``storage``. ``insecure``: no authentication
    (every request is an admin); the CLI allows it on loopback addresses only."""
    from tidegate.webserver.api import api_routers
    from tidegate.webserver.graphql.endpoint import graphql_router
    from tidegate.webserver.metrics import metrics_router

    app = FastAPI(
        title="tidegate",
        version="1",
        summary="Launch and watch tidegate runs, assets, schedules, sensors and backfills.",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
    )
    _document_errors_as_400(app)
    app.state.context = WebContext(defs, storage, settings or Settings.load())
    app.state.auth = AuthSettings(storage, insecure=insecure, limiter=limiter)
    install_error_handlers(app)
    app.include_router(_health_router())
    app.include_router(metrics_router())
    for router in api_routers():
        app.include_router(router, prefix=API_PREFIX)
    app.include_router(graphql_router())  # /graphql, Dagster's client's subset (docs/graphql.md)
    for router in routers:
        app.include_router(router)
    for path, mounted in (mounts or {}).items():
        app.mount(path, mounted)
    return app


def _document_errors_as_400(app: FastAPI) -> None:
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            app.openapi_schema = finish_document(document)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app_from_env() -> FastAPI:
    """The app of one `tidegate webserver` worker process: the code location, database and
    settings from the environment the CLI prepared (uvicorn calls this in each worker)."""
    from tidegate.definitions.loading import CodeLocation

    settings = Settings.load()
    defs = CodeLocation.from_env().load()
    storage = Storage.open(settings.database_url)
    from tidegate.webserver.ui import mount_ui

    return mount_ui(create_app(defs, storage, settings=settings, insecure=os.environ.get(INSECURE_ENV) == "1"))


def openapi_document() -> dict[str, Any]:
    """The REST API's OpenAPI document (it does not depend on the loaded code or database)."""
    from tidegate.definitions.defs import Definitions

    app = create_app(Definitions(), Storage("sqlite://"), settings=Settings.load())
    return app.openapi()
