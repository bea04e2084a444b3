"""The REST API's routers, mounted under /api/v1 by create_app."""

from __future__ import annotations

from fastapi import APIRouter


def api_routers() -> list[APIRouter]:
    from tidegate.webserver.api import assets, automation, operations, runs

    return [runs.router, assets.router, automation.router, operations.router]
