"""The webserver: REST API under /api/v1 (with its OpenAPI document), health, readiness and
Prometheus metrics, all behind API-token authentication (see docs/api.md)."""

from tidegate.webserver.app import API_PREFIX, WebContext, create_app, web_context
from tidegate.webserver.auth import Principal, authenticate, require_role

__all__ = ["API_PREFIX", "Principal", "WebContext", "authenticate", "create_app", "require_role", "web_context"]
