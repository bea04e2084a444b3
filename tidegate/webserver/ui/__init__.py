"""The web UI under /ui: server-rendered pages (Jinja2 templates) with one small script,
every file served from the installed package (no CDN, no front-end build).

``mount_ui(app)`` adds it to the webserver's app. Pages read the same storage as the REST API
and change things through the API's own handlers, so the roles, errors and launch path are
the API's. See docs/ui.md."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, FastAPI, Form
from fastapi.staticfiles import StaticFiles
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tidegate.errors import AuthenticationError, AuthRateLimitError
from tidegate.webserver.ui.base import HERE, UI_PREFIX, UIRoute, templates
from tidegate.webserver.ui.session import LoginRequired, Session, is_insecure, log_in, session_principal

# What a UI page may load: only this server's own files, no inline script, no framing.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def _safe_next(target: str) -> str:
    """Only a path of this UI (no open redirect to another site)."""
    if target.startswith(UI_PREFIX + "/") and not target.startswith("//") and "\\" not in target:
        return target
    return UI_PREFIX + "/"


def _login_router() -> APIRouter:
    router = APIRouter(route_class=UIRoute)

    @router.get("/login")
    def login_page(request: Request, next: str = UI_PREFIX + "/", problem: str = "") -> Response:
        if is_insecure(request):
            return RedirectResponse(_safe_next(next), status_code=303)
        session = Session.read(request) or Session.new()
        response = templates.TemplateResponse(
            request,
            "login.html",
            {"next": _safe_next(next), "csrf": session.csrf, "problem": problem, "principal": None},
            status_code=401 if problem else 200,
        )
        session.write(request, response)
        return response

    @router.post("/login")
    def login(
        request: Request,
        token: Annotated[str, Form()],
        csrf: Annotated[str, Form()] = "",
        next: Annotated[str, Form()] = UI_PREFIX + "/",
    ) -> Response:
        session = Session.read(request)
        if session is None:
            return login_page(request, next, "your session expired: try again")
        session.check_csrf(csrf)
        try:
            log_in(request, token)
        except (AuthenticationError, AuthRateLimitError) as exc:
            return login_page(request, next, str(exc))
        response = RedirectResponse(_safe_next(next), status_code=303)
        Session.new(token.strip()).write(request, response)  # a fresh CSRF token after login
        return response

    @router.post("/logout")
    def logout(request: Request, csrf: Annotated[str, Form()] = "") -> Response:
        try:
            _, session = session_principal(request)
            session.check_csrf(csrf)
        except LoginRequired:
            pass
        response = RedirectResponse(f"{UI_PREFIX}/login", status_code=303)
        response.delete_cookie("tidegate_session", path="/")
        return response

    return router


class SecurityHeaders:
    """Adds the UI's Content-Security-Policy and framing headers to its responses."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith(UI_PREFIX):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"content-security-policy", CONTENT_SECURITY_POLICY.encode()))
                headers.append((b"x-content-type-options", b"nosniff"))
                headers.append((b"referrer-policy", b"same-origin"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def ui_router() -> APIRouter:
    from tidegate.webserver.ui import assets, automation, jobs, overview, runs

    router = APIRouter(prefix=UI_PREFIX, include_in_schema=False)
    for module_router in (_login_router(), overview.router, runs.router, jobs.router, assets.router, automation.router):
        router.include_router(module_router)
    return router


def mount_ui(app: FastAPI) -> FastAPI:
    """Serve the UI from ``app``: its pages under /ui, its files under /ui/static, / → /ui/."""
    app.include_router(ui_router())
    app.mount(f"{UI_PREFIX}/static", StaticFiles(directory=str(HERE / "static")), name="ui-static")
    app.add_middleware(SecurityHeaders)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse(f"{UI_PREFIX}/", status_code=307)

    return app


__all__ = ["mount_ui", "ui_router"]
