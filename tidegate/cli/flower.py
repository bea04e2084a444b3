"""``tidegate flower``: Flower on tidegate's Celery app, with authentication required."""

from __future__ import annotations

import importlib.util
import os

import click

from tidegate.cli.common import handle_errors
from tidegate.config import Settings
from tidegate.errors import ConfigError

BASIC_AUTH_ENV = "TIDEGATE_FLOWER_BASIC_AUTH"
_FLOWER_AUTH_ARGS = ("--basic_auth", "--basic-auth", "--auth", "--auth_provider", "--auth-provider")


def parse_basic_auth(value: str) -> list[str]:
    """``user:password[,user2:password2]`` -> its credentials; never echoes a password."""
    credentials = [item.strip() for item in value.split(",")]
    for position, item in enumerate(credentials, start=1):
        user, sep, password = item.partition(":")
        if not sep or not user or not password:
            raise ConfigError(
                f"{BASIC_AUTH_ENV} / --basic-auth: credential {position} is not user:password "
                "(expected user:password[,user2:password2])"
            )
    return credentials


def _flower_auth_given(flower_args: tuple[str, ...]) -> bool:
    """Authentication given to Flower directly, as its own option or environment variable."""
    if os.environ.get("FLOWER_BASIC_AUTH") or os.environ.get("FLOWER_AUTH"):
        return True
    return any(arg.split("=", 1)[0] in _FLOWER_AUTH_ARGS for arg in flower_args)


def flower_argv(address: str, port: int, persistent: bool, db: str | None, flower_args: tuple[str, ...]) -> list[str]:
    """The ``celery flower`` arguments; credentials are not among them (see ``flower``)."""
    argv = ["flower", f"--address={address}", f"--port={port}"]
    if persistent:
        argv.append("--persistent=True")
    if db:
        argv.append(f"--db={db}")
    return [*argv, *flower_args]


@click.command(context_settings={"ignore_unknown_options": True})
@click.option(
    "--address", envvar="TIDEGATE_FLOWER_ADDRESS", default="127.0.0.1", show_default=True, help="Address to bind."
)
@click.option(
    "--port", envvar="TIDEGATE_FLOWER_PORT", type=int, default=5555, show_default=True, help="Port (0: any free)."
)
@click.option(
    "--basic-auth",
    default=None,
    metavar="USER:PASS[,USER:PASS]",
    help=f"HTTP basic auth credentials; prefer {BASIC_AUTH_ENV}, which stays out of `ps`.",
)
@click.option("--insecure", is_flag=True, help="Serve Flower without authentication (refused otherwise).")
@click.option("--persistent", is_flag=True, help="Keep Flower's task/worker state across restarts (in --db).")
@click.option("--db", default=None, metavar="PATH", help="Flower's state file with --persistent (default: flower).")
@click.argument("flower_args", nargs=-1, type=click.UNPROCESSED)
@handle_errors
def flower(
    address: str,
    port: int,
    basic_auth: str | None,
    insecure: bool,
    persistent: bool,
    db: str | None,
    flower_args: tuple[str, ...],
) -> None:
    """Run Flower (Celery's web monitor) on tidegate's Celery app and broker.

    Workers, queues, every step task under a readable name (asset[partition] · run id), and
    jobs launched with POST /api/task/async-apply/tidegate.launch_job. Arguments after ``--``
    go to Flower as they are (e.g. ``-- --url_prefix=flower --max_tasks=20000``).
    """
    if importlib.util.find_spec("flower") is None:
        raise ConfigError("tidegate flower needs Flower: pip install 'tidegate[flower]'")
    if basic_auth is None:
        from_env = Settings.load().flower_basic_auth  # TIDEGATE_FLOWER_BASIC_AUTH
        basic_auth = from_env.get_secret_value() if from_env is not None else None
    if basic_auth:
        # Flower reads FLOWER_BASIC_AUTH itself: the credentials never appear in an argv.
        os.environ["FLOWER_BASIC_AUTH"] = ",".join(parse_basic_auth(basic_auth))
    elif not _flower_auth_given(flower_args):
        if not insecure:
            raise ConfigError(
                f"flower: no authentication configured; set {BASIC_AUTH_ENV}=user:password (or --basic-auth), "
                "or pass --insecure to serve Flower without it"
            )
        click.echo(f"warning: Flower on {address}:{port} without authentication (--insecure)", err=True)
    from tidegate.workers.app import app

    app.start(flower_argv(address, port, persistent, db, flower_args))
