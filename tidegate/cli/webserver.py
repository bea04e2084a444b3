"""``tidegate webserver`` (the REST API) and ``tidegate token`` (its API tokens)."""

from __future__ import annotations

import os
from datetime import datetime

import click

from tidegate.cli.common import code_location_options, handle_errors, open_storage, resolve_location
from tidegate.cli.output import Column, json_option, print_json, print_table
from tidegate.names import Role


@click.command()
@code_location_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=3000, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Server processes.")
@click.option("--insecure", is_flag=True, help="No authentication (every request is an admin); loopback only.")
@click.option("--log-level", default="warning", show_default=True, help="uvicorn's log level.")
@handle_errors
def webserver(
    module: str | None, file_: str | None, host: str, port: int, workers: int, insecure: bool, log_level: str
) -> None:
    """Serve the REST API (/api/v1, its OpenAPI document at /api/v1/openapi.json), /metrics,
    /healthz and /readyz. Refuses to start without an active API token unless --insecure on a
    loopback address."""
    import uvicorn

    from tidegate.webserver.app import INSECURE_ENV
    from tidegate.webserver.auth import check_startup

    location = resolve_location(module, file_)  # exported: each server process loads the same code
    location.load()  # fail fast on broken definitions
    check_startup(open_storage(), host=host, insecure=insecure)
    os.environ[INSECURE_ENV] = "1" if insecure else "0"
    mode = "WITHOUT AUTHENTICATION (--insecure)" if insecure else "API tokens required"
    click.echo(f"tidegate webserver: {location} on http://{host}:{port} ({mode})", err=True)
    uvicorn.run(
        "tidegate.webserver.app:create_app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        access_log=False,
    )


@click.group()
def token() -> None:
    """API tokens of the webserver: create (shown once), list, revoke."""


@token.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice([r.value for r in Role]), required=True, help="What the token may do.")
@click.option("--expires", default=None, metavar="DURATION", help="e.g. 30d, 12h, 2w (default: never).")
@handle_errors
def token_create(name: str, role: str, expires: str | None) -> None:
    """Create token NAME and print it once: only its SHA-256 digest is stored."""
    from tidegate.storage.tokens import parse_expiry

    created = open_storage().create_token(name, role, expires_in=parse_expiry(expires) if expires else None)
    until = created.record.expires_at.isoformat(timespec="seconds") if created.record.expires_at else "never"
    click.echo(f"token '{name}' ({created.record.role}, expires {until}); shown once, keep it:", err=True)
    click.echo(created.token)


@token.command("list")
@json_option
@handle_errors
def token_list(as_json: bool) -> None:
    """Every token with its role, expiry and last use (never the token)."""
    records = open_storage().list_tokens()
    if as_json:
        print_json(
            [
                {
                    "name": t.name,
                    "role": t.role,
                    "created_at": t.created_at,
                    "expires_at": t.expires_at,
                    "revoked_at": t.revoked_at,
                    "last_used_at": t.last_used_at,
                }
                for t in records
            ]
        )
        return
    if not records:
        click.echo("no tokens")
        return

    def when(value: datetime | None) -> str:
        return value.isoformat(timespec="seconds") if value is not None else "-"

    print_table(
        [Column("NAME"), Column("ROLE"), Column("CREATED"), Column("EXPIRES"), Column("REVOKED"), Column("LAST USED")],
        (
            [t.name, t.role, when(t.created_at), when(t.expires_at), when(t.revoked_at), when(t.last_used_at)]
            for t in records
        ),
    )


@token.command("revoke")
@click.argument("name")
@handle_errors
def token_revoke(name: str) -> None:
    """Revoke token NAME: requests with it are refused from now on."""
    if open_storage().revoke_token(name):
        click.echo(f"token '{name}' revoked")
    else:
        click.echo(f"token '{name}' was revoked already")
