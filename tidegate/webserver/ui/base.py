"""What every UI page shares: the router's error handling (HTML, not JSON), the request
dependencies (who is asking; for forms also the CSRF check and the role) and rendering."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import Depends
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from tidegate.errors import TidegateError
from tidegate.names import Role
from tidegate.webserver.app import WebContext, web_context
from tidegate.webserver.auth import Principal
from tidegate.webserver.errors import status_and_code
from tidegate.webserver.ui.session import LoginRequired, Session, session_principal

log = logging.getLogger("tidegate.webserver.ui")

UI_PREFIX = "/ui"
FLOWER_URL_ENV = "TIDEGATE_FLOWER_URL"  # where Flower is served, for links to step tasks
HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))


def _when(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes} min {rest} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


templates.env.filters["when"] = _when
templates.env.filters["duration"] = _duration
templates.env.filters["last_line"] = lambda text: next(
    (line.strip() for line in reversed(str(text).splitlines()) if line.strip()), ""
)
templates.env.filters["q"] = lambda value: quote(str(value), safe="")
templates.env.globals["prefix"] = UI_PREFIX


@dataclass
class UIRequest:
    """One request to a UI page: the request, its caller and the web context."""

    request: Request
    principal: Principal
    session: Session
    context: WebContext
    form: FormData | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def can(self, role: Role) -> bool:
        return self.principal.role.includes(role)

    def render(self, template: str, status_code: int = 200, **values: Any) -> Response:
        values.setdefault("notice", self.request.query_params.get("notice"))
        values.setdefault("problem", self.request.query_params.get("problem"))
        response = templates.TemplateResponse(
            self.request,
            template,
            {
                "principal": self.principal,
                "csrf": self.session.csrf,
                "can_launch": self.can(Role.LAUNCHER),
                "can_admin": self.can(Role.ADMIN),
                "flower_url": os.environ.get(FLOWER_URL_ENV, "").rstrip("/") or None,
                **values,
            },
            status_code=status_code,
        )
        self.session.write(self.request, response)
        response.headers["Cache-Control"] = "no-store"
        return response


def redirect(path: str, **params: str) -> RedirectResponse:
    query = urlencode({k: v for k, v in params.items() if v})
    return RedirectResponse(f"{UI_PREFIX}{path}" + (f"?{query}" if query else ""), status_code=303)


def page(request: Request) -> UIRequest:
    """A FastAPI dependency: the caller of a page (LoginRequired without a valid session)."""
    principal, session = session_principal(request)
    return UIRequest(request, principal, session, web_context(request))


def action(role: Role) -> Callable[[Request], Coroutine[Any, Any, UIRequest]]:
    """A FastAPI dependency for a form POST: a valid session, the form's CSRF token, and
    ``role`` (a viewer's forged POST is refused here, whatever the page showed)."""

    async def dependency(request: Request) -> UIRequest:
        principal, session = session_principal(request)
        form = await request.form()
        session.check_csrf(form.get("csrf"))
        principal.require(role)
        return UIRequest(request, principal, session, web_context(request), form)

    dependency.__name__ = f"ui_{role.value}_action"
    return dependency


PageRequest = Depends(page)


class UIRoute(APIRoute):
    """Errors of UI routes answer an HTML page (or the login page), not the API's JSON."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except LoginRequired:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                if request.method != "GET" or request.headers.get("x-tidegate-fragment"):
                    return Response("log in again", status_code=401, headers={"X-Tidegate-Login": "1"})
                return RedirectResponse(f"{UI_PREFIX}/login?{urlencode({'next': target})}", status_code=303)
            except TidegateError as exc:
                status, _ = status_and_code(exc)
                log.info("UI %s %s: %s", request.method, request.url.path, exc)
                return error_page(request, status, str(exc))

        return route


def error_page(request: Request, status: int, message: str) -> Response:
    try:
        principal, session = session_principal(request)
    except LoginRequired:
        principal, session = None, Session.new()
    response = templates.TemplateResponse(
        request,
        "error.html",
        {"status": status, "message": message, "principal": principal, "csrf": session.csrf},
        status_code=status,
    )
    return response
