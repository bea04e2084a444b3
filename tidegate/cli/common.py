"""Options and helpers shared by the CLI commands."""

from __future__ import annotations

import errno
import functools
import json
import os
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import DataError, DBAPIError

from tidegate.config import Settings
from tidegate.definitions.asset import DEFAULT_QUEUE
from tidegate.definitions.defs import Definitions
from tidegate.definitions.loading import ENV_VAR, CodeLocation
from tidegate.errors import RunConfigError, TidegateError
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


def run_config_options(fn: F) -> F:
    """``--config FILE`` (YAML or JSON) and ``--config-json TEXT``: the run config, in its dict
    form (``{"ops": {...}, "resources": {...}}``)."""
    fn = click.option(
        "--config-json", "config_json", default=None, metavar="JSON", help="Run config as a JSON object."
    )(fn)
    return click.option(
        "--config",
        "config_file",
        type=click.Path(exists=True, dir_okay=False),
        default=None,
        help="Run config from a YAML or JSON file.",
    )(fn)


def read_run_config(config_file: str | None, config_json: str | None) -> Any:
    """The run config given by ``--config``/``--config-json`` (None if neither); malformed
    text raises RunConfigError (exit 2) naming the option, never echoing the text."""
    if config_file is not None and config_json is not None:
        raise click.UsageError("give --config or --config-json, not both")
    if config_json is not None:
        try:
            value = json.loads(config_json)
        except json.JSONDecodeError as exc:
            raise RunConfigError(
                f"--config-json: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
            ) from None
        return _config_mapping("--config-json", value)
    if config_file is None:
        return None
    import yaml  # a YAML file also reads JSON

    try:
        with open(config_file, encoding="utf-8") as handle:
            value = yaml.safe_load(handle)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1} column {where.column + 1}" if where is not None else ""
        raise RunConfigError(f"--config {config_file}: not valid YAML{at}") from None
    return _config_mapping(f"--config {config_file}", value)


def _config_mapping(label: str, value: Any) -> Any:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RunConfigError(f"{label}: run config must be an object with 'ops' and/or 'resources'")
    return value


def parse_tags(values: tuple[str, ...]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{value!r}: expected KEY=VALUE", param_hint="--tag")
        tags[key] = val
    return tags


EXIT_BAD_INPUT = 2  # a typed error: an unknown name, a malformed value (click's own code too)
EXIT_INFRASTRUCTURE = 1  # the database, the broker or the disk failed: try again later
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO}


def handle_errors(fn: F) -> F:
    """Turn errors into one clear line on stderr, never with a password, without traceback
    (``tidegate -v`` prints it first):

    - tidegate's typed errors (bad input) and a value the database refuses: exit 2;
    - infrastructure errors, naming the component and its safe URL: the database unreachable,
      refusing the password or out of disk (``database postgresql://u:***@host/db: ...``), the
      broker unreachable (``broker redis://...: ...``), a full or failing disk: exit 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TidegateError as exc:
            _fail(EXIT_BAD_INPUT, str(exc))
        except DataError as exc:
            _fail(
                EXIT_BAD_INPUT,
                f"database {Settings.load().safe_database_url} refused a value: {_reason(exc.orig or exc)}",
            )
        except DBAPIError as exc:
            _fail(EXIT_INFRASTRUCTURE, f"database {Settings.load().safe_database_url}: {_reason(exc.orig or exc)}")
        except BrokerError as exc:
            _fail(EXIT_INFRASTRUCTURE, f"broker {Settings.load().safe_broker_url}: {_reason(exc)}")
        except OSError as exc:
            if exc.errno not in _DISK_ERRNOS:
                raise
            where = f" {exc.filename}" if exc.filename else ""
            _fail(EXIT_INFRASTRUCTURE, f"disk{where}: {exc.strerror or exc}")

    return wrapper  # type: ignore[return-value]


def _reason(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0].strip() if lines else type(exc).__name__


def _fail(code: int, message: str) -> None:
    context = click.get_current_context(silent=True)
    if context is not None and context.find_root().params.get("verbose"):
        click.echo(traceback.format_exc().rstrip(), err=True)
    click.echo(f"error: {message}", err=True)
    raise SystemExit(code) from None


def is_embedded_broker() -> bool:
    return Settings.load().broker_url.startswith("memory://")


def all_queue_names(defs: Definitions) -> list[str]:
    """The default queue and every queue an asset or op names (what ``tidegate dev`` consumes)."""
    ops = [n.op for j in defs.jobs.values() if j.op_graph is not None for n in j.op_graph.nodes.values()]
    return sorted({DEFAULT_QUEUE, *(a.queue for a in defs.assets.values()), *(o.queue for o in ops)})


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
