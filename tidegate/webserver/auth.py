"""Authentication and authorization of the webserver: API tokens sent as ``Authorization:
Bearer <token>``, roles viewer < launcher < admin.

``authenticate(request)`` returns the caller's :class:`Principal` or raises
AuthenticationError (401); ``require_role(role)`` is a FastAPI dependency (usable by any router
or mounted app's own checks) that also raises PermissionDeniedError (403) for a lower role.
Failed authentications are counted per client address: past ``max_failures`` within
``window_seconds`` the client gets 429 until the window has passed. Every failure is logged
with the client address and the reason, never with the token."""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import HTTPConnection

from tidegate.errors import AuthenticationError, AuthRateLimitError, PermissionDeniedError
from tidegate.names import Role
from tidegate.storage.api import Storage

log = logging.getLogger("tidegate.webserver.auth")

INSECURE_PRINCIPAL_NAME = "insecure"


@dataclass(frozen=True)
class Principal:
    """Who made a request: the token's name and role (``insecure`` admin without auth)."""

    name: str
    role: Role
    token_id: str | None = None

    def require(self, role: Role) -> None:
        if not self.role.includes(role):
            raise PermissionDeniedError(f"token '{self.name}' has role {self.role.value}; this needs {role.value}")


class FailedAuthLimiter:
    """Counts failed authentications per client address in a sliding window (per process)."""

    def __init__(self, max_failures: int = 20, window_seconds: float = 60.0) -> None:
        self.max_failures = max_failures
        self.window_seconds = window_seconds
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> deque[float]:
        failures = self._failures.setdefault(client, deque())
        while failures and failures[0] <= now - self.window_seconds:
            failures.popleft()
        return failures

    def check(self, client: str) -> None:
        with self._lock:
            now = time.monotonic()
            failures = self._recent(client, now)
            if len(failures) >= self.max_failures:
                wait = int(failures[0] + self.window_seconds - now) + 1
                raise AuthRateLimitError(
                    f"too many failed authentications from {client}: try again in {wait}s",
                )
            if not failures:
                self._failures.pop(client, None)

    def failed(self, client: str) -> None:
        with self._lock:
            now = time.monotonic()
            if len(self._failures) > 10_000:  # forget addresses whose failures have all expired
                for address in [a for a, f in self._failures.items() if not f or f[-1] <= now - self.window_seconds]:
                    del self._failures[address]
            self._recent(client, now).append(now)


@dataclass
class AuthSettings:
    """How a webserver authenticates: ``insecure`` lets every request in as admin (only
    allowed on a loopback address, see :func:`check_startup`)."""

    storage: Storage
    insecure: bool = False
    limiter: FailedAuthLimiter | None = None

    def __post_init__(self) -> None:
        if self.limiter is None:
            self.limiter = FailedAuthLimiter()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_startup(storage: Storage, *, host: str, insecure: bool) -> None:
    """Refuse to serve without any active token, unless ``insecure`` on a loopback address."""
    if insecure:
        if not is_loopback(host):
            raise AuthenticationError(
                f"--insecure serves without authentication: only on a loopback address, not {host!r}"
            )
        return
    if storage.active_token_count() == 0:
        raise AuthenticationError(
            "no active API token: create one with `tidegate token create NAME --role admin` "
            "(or pass --insecure on a loopback address)"
        )


def _auth_settings(connection: HTTPConnection) -> AuthSettings:
    settings: AuthSettings = connection.app.state.auth
    return settings


def authenticate(connection: HTTPConnection) -> Principal:
    """The principal of a request (or websocket): its Bearer token's name and role.

    Raises AuthenticationError (401) for no token, a malformed header or an unknown, revoked
    or expired token, and AuthRateLimitError (429) after too many failures from the client.
    Blocking (reads the database): async callers run it in a thread."""
    settings = _auth_settings(connection)
    if settings.insecure:
        return Principal(INSECURE_PRINCIPAL_NAME, Role.ADMIN)
    assert settings.limiter is not None
    client = connection.client.host if connection.client else "unknown"
    settings.limiter.check(client)
    header = connection.headers.get("authorization")
    reason = None
    record = None
    if not header:
        reason = "no API token (send the header Authorization: Bearer <token>)"
    else:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            reason = "the Authorization header is not 'Bearer <token>'"
        else:
            record = settings.storage.verify_token(token.strip())
            if record is None:
                reason = "the API token is unknown, revoked or expired"
    if record is None:
        settings.limiter.failed(client)
        log.warning("failed authentication from %s %s: %s", client, connection.url.path, reason)
        raise AuthenticationError(str(reason))
    return Principal(record.name, Role(record.role), record.token_id)


def require_role(role: Role) -> Callable[[HTTPConnection], Principal]:
    """A FastAPI dependency: the request's principal, which must hold ``role`` or higher."""

    def dependency(connection: HTTPConnection) -> Principal:
        principal = authenticate(connection)
        principal.require(role)
        return principal

    dependency.__name__ = f"require_{role.value}"
    return dependency


__all__ = [
    "AuthSettings",
    "FailedAuthLimiter",
    "Principal",
    "authenticate",
    "check_startup",
    "require_role",
]
