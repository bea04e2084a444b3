"""The UI's session: the API token a user logged in with, kept in an HTTP-only, signed cookie,
and the CSRF token every form carries.

The cookie holds ``{"token": ..., "csrf": ...}`` as base64 JSON with an HMAC-SHA256 signature
(key: ``TIDEGATE_UI_SECRET``, else a random key per process, so sessions then do not survive a
restart nor cross several webserver processes: set the variable for those). It is
``HttpOnly`` (no script reads the token), ``SameSite=Strict`` and ``Secure`` when the request
came over HTTPS. Every state-changing request must echo the session's CSRF token in the form
field ``csrf`` (compared in constant time); the token is checked again on each request, so a
revoked token logs the user out at once."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from tidegate.errors import AuthenticationError, PermissionDeniedError
from tidegate.names import Role
from tidegate.webserver.auth import INSECURE_PRINCIPAL_NAME, AuthSettings, Principal

log = logging.getLogger("tidegate.webserver.ui")

COOKIE = "tidegate_session"
SECRET_ENV = "TIDEGATE_UI_SECRET"
_PROCESS_KEY = secrets.token_bytes(32)


def _key() -> bytes:
    configured = os.environ.get(SECRET_ENV)
    return configured.encode() if configured else _PROCESS_KEY


def _sign(payload: bytes) -> str:
    return hmac.new(_key(), payload, hashlib.sha256).hexdigest()


@dataclass
class Session:
    """What the cookie holds: the API token (None before login) and the CSRF token."""

    csrf: str
    token: str | None = None

    @classmethod
    def read(cls, request: Request) -> Session | None:
        raw = request.cookies.get(COOKIE)
        if not raw or "." not in raw:
            return None
        body, _, signature = raw.rpartition(".")
        try:
            payload = base64.urlsafe_b64decode(body.encode())
        except ValueError:
            return None
        if not hmac.compare_digest(_sign(payload), signature):
            return None
        try:
            data = json.loads(payload)
        except ValueError:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("csrf"), str):
            return None
        token = data.get("token")
        return cls(data["csrf"], token if isinstance(token, str) else None)

    @classmethod
    def new(cls, token: str | None = None) -> Session:
        return cls(secrets.token_urlsafe(24), token)

    def write(self, request: Request, response: Response) -> None:
        payload = json.dumps({"csrf": self.csrf, "token": self.token}).encode()
        value = f"{base64.urlsafe_b64encode(payload).decode()}.{_sign(payload)}"
        response.set_cookie(
            COOKIE,
            value,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )

    def check_csrf(self, submitted: object) -> None:
        if not isinstance(submitted, str) or not hmac.compare_digest(submitted, self.csrf):
            raise PermissionDeniedError("the form's CSRF token is missing or wrong: reload the page and try again")


class LoginRequired(Exception):
    """No valid session: the UI redirects to its login page."""


def _auth_settings(request: Request) -> AuthSettings:
    settings: AuthSettings = request.app.state.auth
    return settings


def is_insecure(request: Request) -> bool:
    return _auth_settings(request).insecure


def session_principal(request: Request) -> tuple[Principal, Session]:
    """The caller of a UI request, from the session cookie's API token (an admin without
    authentication when the webserver runs ``--insecure``). Raises LoginRequired."""
    session = Session.read(request)
    if is_insecure(request):
        return Principal(INSECURE_PRINCIPAL_NAME, Role.ADMIN), session or Session.new()
    if session is None or session.token is None:
        raise LoginRequired
    record = _auth_settings(request).storage.verify_token(session.token)
    if record is None:
        raise LoginRequired
    return Principal(record.name, Role(record.role), record.token_id), session


def log_in(request: Request, token: str) -> Principal:
    """Check ``token`` as the API does (rate-limited per client, failures logged without it)."""
    settings = _auth_settings(request)
    client = request.client.host if request.client else "unknown"
    assert settings.limiter is not None
    settings.limiter.check(client)
    record = settings.storage.verify_token(token.strip()) if token.strip() else None
    if record is None:
        settings.limiter.failed(client)
        log.warning("failed UI login from %s: unknown, revoked or expired token", client)
        raise AuthenticationError("the API token is unknown, revoked or expired")
    return Principal(record.name, Role(record.role), record.token_id)
