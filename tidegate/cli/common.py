"""Options and helpers shared by the CLI commands."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click
from sqlalchemy.exc import OperationalError

from tidegate.config import Settings
from tidegate.definitions.asset import DEFAULT_QUEUE
from tidegate.definitions.defs import Definitions
from tidegate.definitions.loading import ENV_VAR, CodeLocation
from tidegate.errors import TidegateError
from tidegate.storage.api import Storage

F = TypeVar("F", bound=Callable[..., Any])


def code_location_options(fn: F) -> F:
    """``-m package.module`` / ``-f path.py`` (else ``TIDEGATE_DEFINITIONS``)."""
    fn = click.option("-f", "--file", "file_", metavar="PATH", help="Python file holding Definitions.")(fn)
    fn = click.option("-m", "--module", metavar="MODULE", help="Module holding Definitions.")(fn)
    return fn


def resolve_location(module: str | None, file_: str | None) -> CodeLocation:
    if module and file_:
        raise click.UsageError("give -m or -f, not both")
    if module:
        location = CodeLocation.parse(module)
        location = CodeLocation(module=location.module or module, attribute=location.attribute)
    elif file_:
        location = CodeLocation.parse(file_)
        location = CodeLocation(file=location.file or file_, attribute=location.attribute)
    elif os.environ.get(ENV_VAR):
        location = CodeLocation.from_env()
    else:
        raise click.UsageError(f"no code location: pass -m MODULE or -f FILE, or set {ENV_VAR}")
    location.export()  # workers and children load the same code
    return location


def load(module: str | None, file_: str | None) -> Definitions:
    return resolve_location(module, file_).load()


def open_storage(upgrade: bool | None = None) -> Storage:
    return Storage.open(Settings.load().database_url, upgrade=upgrade)


def parse_tags(values: tuple[str, ...]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{value!r}: expected KEY=VALUE", param_hint="--tag")
        tags[key] = val
    return tags


def handle_errors(fn: F) -> F:
    """Show tidegate's typed errors, and a database that cannot be reached, as one clear line
    (never with a password) and exit 2, no traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TidegateError as exc:
            click.echo(f"error: {exc}", err=True)
            raise SystemExit(2) from None
        except OperationalError as exc:
            reason = (str(exc.orig) or type(exc.orig).__name__).strip().splitlines()[0]
            click.echo(f"error: database {Settings.load().safe_database_url}: {reason}", err=True)
            raise SystemExit(2) from None

    return wrapper  # type: ignore[return-value]


def is_embedded_broker() -> bool:
    return Settings.load().broker_url.startswith("memory://")


def all_queue_names(defs: Definitions) -> list[str]:
    """The default queue and every queue an asset names (what ``tidegate dev`` consumes)."""
    return sorted({DEFAULT_QUEUE, *(a.queue for a in defs.assets.values())})


@contextmanager
def embedded_worker(defs: Definitions, concurrency: int = 4) -> Iterator[None]:
    """Run a Celery worker in a thread of this process (the in-memory broker's only peer)."""
    from celery.contrib.testing.worker import start_worker

    from tidegate.workers.app import app

    queues = all_queue_names(defs)
    with start_worker(
        app,
        pool="threads",
        concurrency=concurrency,
        perform_ping_check=False,
        queues=queues,
        loglevel="WARNING",
        shutdown_timeout=30.0,
        hostname="embedded@tidegate",
    ):
        yield
