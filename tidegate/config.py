"""tidegate's settings: one model, read from the environment and from ``tidegate.toml``.

Process settings come from the environment:

=============================  ======================================================================
TIDEGATE_HOME                  where embedded state lives (default ``./.tidegate``)
TIDEGATE_DATABASE_URL          SQLAlchemy URL (default SQLite at ``$TIDEGATE_HOME/tidegate.db``)
TIDEGATE_BROKER_URL            Celery broker (default ``redis://localhost:6379/0``)
TIDEGATE_IO_BASE_DIR           the filesystem IO manager's root (``$TIDEGATE_HOME/storage``)
TIDEGATE_VISIBILITY_TIMEOUT    seconds Redis waits before redelivering an unacked step (21600, > 0)
TIDEGATE_HEARTBEAT_SECONDS     how often a running step writes its heartbeat (10, > 0)
TIDEGATE_CONTINUATION          a worker runs a child its step readies next, in-process (true)
TIDEGATE_FLOWER_BASIC_AUTH     ``user:password[,user:password]`` for ``tidegate flower``
TIDEGATE_CONFIG                the settings file (else ``./tidegate.toml``, else
                               ``$TIDEGATE_HOME/tidegate.toml``; the first that exists is used)
TIDEGATE_MAX_CONCURRENT_RUNS   overrides ``[run_queue] max_concurrent_runs`` of the file
=============================  ======================================================================

Operator settings (the run queue's limits and the run monitor) come from the file::

    [run_queue]
    max_concurrent_runs = 10
    tag_concurrency_limits = [
        { key = "team", value = "finance", limit = 2 },
        { key = "customer", limit = 1, per_value = true },
    ]

    [run_monitor]
    heartbeat_timeout_seconds = 60    # a RUNNING step silent this long lost its worker
    worker_lost_retries = 2           # re-runs of a lost step that has no RetryPolicy
    enqueued_timeout_seconds = 600    # re-send a step the broker has held this long
    timeout_grace_seconds = 30        # after @asset(timeout=), before the monitor steps in

Every invalid value raises :class:`~tidegate.errors.ConfigError` naming the variable (with its
value) or the file and key. Passwords in URLs and the Flower credentials never appear in a
repr or an error message.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    StrictBool,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.dataclasses import dataclass
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from tidegate.errors import ConfigError

ENV_PREFIX = "TIDEGATE_"
CONFIG_ENV = "TIDEGATE_CONFIG"
MAX_CONCURRENT_RUNS_ENV = "TIDEGATE_MAX_CONCURRENT_RUNS"
DEFAULT_BROKER_URL = "redis://localhost:6379/0"

_FILE_SECTIONS = ("run_queue", "run_monitor", "beat")
_NOT_FROM_ENV = frozenset({*_FILE_SECTIONS, "source"})
_SECRET_VARIABLES = frozenset({"TIDEGATE_DATABASE_URL", "TIDEGATE_BROKER_URL", "TIDEGATE_FLOWER_BASIC_AUTH"})

Count = Annotated[int, Field(ge=0, strict=True)]
Seconds = Annotated[float, Field(gt=0, strict=True)]
PositiveCount = Annotated[int, Field(gt=0, strict=True)]
_SECTION = ConfigDict(extra="forbid")


def safe_url(url: str) -> str:
    """``url`` with its password replaced by ``***``: the form to print or put in a message."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparseable URL>" if "@" in url else url
    if password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


# -- the file's sections -------------------------------------------------------------------


@dataclass(frozen=True, config=_SECTION)
class TagLimit:
    """At most ``limit`` runs in progress with tag ``key`` (= ``value``, or per distinct value)."""

    key: StrictStr
    limit: Count
    value: str | None = None
    per_value: StrictBool = False

    @field_validator("value", mode="before")
    @classmethod
    def _value_as_text(cls, value: Any) -> Any:
        if isinstance(value, bool) or (value is not None and not isinstance(value, str | int | float)):
            raise ValueError(f"must be a string, got {value!r}")
        return None if value is None else str(value)  # value = 2024 matches the tag "2024"

    @model_validator(mode="after")
    def _one_kind(self) -> TagLimit:
        if self.per_value and self.value is not None:
            raise ValueError("give value or per_value = true, not both")
        return self

    def matches(self, tags: Mapping[str, str]) -> bool:
        if self.key not in tags:
            return False
        return self.per_value or self.value is None or tags[self.key] == self.value

    def bucket(self, tags: Mapping[str, str]) -> str:
        """Which counter a run with ``tags`` counts against; each kind of limit has its own
        counters, so a value limit and a per-value limit on one key never share one."""
        if self.per_value:
            return f"per-value {self.key}={tags[self.key]}"
        return f"value {self.key}={self.value}" if self.value is not None else f"key {self.key}"

    def describe_for(self, tags: Mapping[str, str]) -> str:
        return f"{self.key}={tags[self.key]}" if self.per_value or self.value is not None else self.describe

    @property
    def describe(self) -> str:
        if self.per_value:
            return f"{self.key}=* (per value)"
        return f"{self.key}={self.value}" if self.value is not None else f"{self.key} (any value)"


@dataclass(frozen=True, config=_SECTION)
class RunQueueConfig:
    """``[run_queue]``: how many runs may be in progress at once, overall and per tag."""

    max_concurrent_runs: Count | None = None
    tag_concurrency_limits: tuple[TagLimit, ...] = ()


@dataclass(frozen=True, config=_SECTION)
class MonitorConfig:
    """``[run_monitor]``: when a step counts as lost and how often it is run again."""

    heartbeat_timeout_seconds: Seconds = 60.0
    worker_lost_retries: Count = 2
    enqueued_timeout_seconds: Seconds = 600.0
    timeout_grace_seconds: Seconds = 30.0


@dataclass(frozen=True, config=_SECTION)
class BeatConfig:
    """``[beat]``: how many sensor evaluations run at once, how large a tick's commits are, and
    how long automation evaluation records are kept (each asset's newest is always kept).

    ``synchronous_sensors`` makes each beat round wait for its sensors' evaluations (up to
    their time limits) before going on: the earlier behaviour, kept as a baseline to measure against."""

    max_concurrent_evaluations: PositiveCount = 8
    tick_batch_size: PositiveCount = 200
    synchronous_sensors: bool = False
    automation_evaluation_retention_days: PositiveCount = 30


# -- the model -----------------------------------------------------------------------------


class _Environment(EnvSettingsSource):
    """The process settings' variables, plus ``TIDEGATE_MAX_CONCURRENT_RUNS`` into the run
    queue section; the file's sections cannot be given as JSON in a variable."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        if field_name in _NOT_FROM_ENV:
            return None, field_name, False
        return super().get_field_value(field, field_name)

    def __call__(self) -> dict[str, Any]:
        values = super().__call__()
        raw = os.environ.get(MAX_CONCURRENT_RUNS_ENV, "")
        if raw:
            try:
                limit = int(raw)
            except ValueError:
                limit = -1
            if limit < 0:
                raise ConfigError(f"{MAX_CONCURRENT_RUNS_ENV}={raw!r}: must be an integer >= 0")
            values["run_queue"] = {"max_concurrent_runs": limit}
        return values


class Settings(BaseSettings):
    """Every setting of a tidegate process. Build it with :meth:`load` (environment and file),
    :meth:`from_dict` (environment and a dict shaped like the file) or :meth:`defaults`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_ignore_empty=True, frozen=True, extra="forbid", validate_default=True
    )

    # Each variable is spelled out (validation_alias) so that a grep finds where it is read.
    home: Path = Field(Path(".tidegate"), validation_alias="TIDEGATE_HOME")
    database_url: str = Field(
        default_factory=lambda data: f"sqlite:///{data['home'] / 'tidegate.db'}",
        validation_alias="TIDEGATE_DATABASE_URL",
    )
    broker_url: str = Field(DEFAULT_BROKER_URL, validation_alias="TIDEGATE_BROKER_URL")
    io_base_dir: Path = Field(
        default_factory=lambda data: data["home"] / "storage", validation_alias="TIDEGATE_IO_BASE_DIR"
    )
    visibility_timeout: PositiveInt = Field(21600, validation_alias="TIDEGATE_VISIBILITY_TIMEOUT")
    heartbeat_seconds: PositiveFloat = Field(10.0, validation_alias="TIDEGATE_HEARTBEAT_SECONDS")
    continuation: bool = Field(True, validation_alias="TIDEGATE_CONTINUATION")
    flower_basic_auth: SecretStr | None = Field(None, validation_alias="TIDEGATE_FLOWER_BASIC_AUTH")
    run_queue: RunQueueConfig = RunQueueConfig()
    run_monitor: MonitorConfig = MonitorConfig()
    beat: BeatConfig = BeatConfig()
    source: str = "defaults"  # the file the sections came from

    _sections: ClassVar[dict[str, type]] = {
        "run_queue": RunQueueConfig,
        "run_monitor": MonitorConfig,
        "beat": BeatConfig,
    }

    @field_validator("home", "io_base_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.resolve()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The keyword arguments are the file's contents (see load): the environment wins.
        return (_Environment(settings_cls), init_settings)

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> Settings:
        """The environment over the settings file (``path``, else the first of
        ``$TIDEGATE_CONFIG``, ``./tidegate.toml``, ``$TIDEGATE_HOME/tidegate.toml``)."""
        found = Path(path) if path else _find()
        if found is None:
            return cls.from_dict({}, "defaults")
        try:
            data = tomllib.loads(found.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{found}: {exc}") from None
        return cls.from_dict(data, str(found))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "dict") -> Settings:
        """The environment over ``data``, a dict shaped like the settings file."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: expected a table of sections {list(_FILE_SECTIONS)}")
        unknown = sorted(set(data) - set(_FILE_SECTIONS))
        if unknown:
            raise ConfigError(f"{source}: unknown section(s) {unknown}; allowed: {list(_FILE_SECTIONS)}")
        for section, values in data.items():
            if not isinstance(values, Mapping):
                raise ConfigError(f"{source}: [{section}] must be a table")
        try:
            return cls(**data, source=source)
        except ValidationError as exc:
            raise ConfigError("; ".join(_describe(error, source) for error in exc.errors())) from None
        except SettingsError as exc:
            raise ConfigError(f"environment: {exc}") from None

    @classmethod
    def defaults(cls) -> Settings:
        """tidegate's defaults, reading neither the environment nor a file."""
        return cls.model_construct(home=Path(".tidegate").resolve())

    @property
    def safe_database_url(self) -> str:
        return safe_url(self.database_url)

    @property
    def safe_broker_url(self) -> str:
        return safe_url(self.broker_url)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, safe_url(value) if name in ("database_url", "broker_url") else value


def _find() -> Path | None:
    explicit = os.environ.get(CONFIG_ENV)
    candidates = [explicit, "tidegate.toml", str(Path(os.environ.get("TIDEGATE_HOME", ".tidegate")) / "tidegate.toml")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    if explicit:
        raise ConfigError(f"{CONFIG_ENV}={explicit}: no such file")
    return None


# -- error messages ------------------------------------------------------------------------


def _describe(error: ErrorDetails, source: str) -> str:
    """One problem: ``file: section.key must be ...`` or ``TIDEGATE_X='value': must be ...``."""
    loc = error["loc"]
    field = str(loc[0]) if loc else ""
    if field in _FILE_SECTIONS:
        if error["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            return f"{source}: {_unknown_key(loc)}"
        sep = ": " if isinstance(loc[-1], int) else " "  # a whole tag limit, or one of its keys
        return f"{source}: {_path(loc)}{sep}{_problem(error, with_input=True)}"
    shown = "" if field in _SECRET_VARIABLES else f"={error['input']!r}"  # loc: the variable's name
    return f"{field}{shown}: {_problem(error, with_input=False)}"


def _path(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _unknown_key(loc: tuple[int | str, ...]) -> str:
    *parent, key = loc
    if len(parent) == 1:
        allowed = sorted(Settings._sections[str(parent[0])].__dataclass_fields__)  # type: ignore[attr-defined]
        return f"[{parent[0]}] unknown key {key!r}; allowed: {allowed}"
    return f"{_path(tuple(parent))}: unknown key {key!r}"


def _problem(error: ErrorDetails, *, with_input: bool) -> str:
    kind, ctx = error["type"], error.get("ctx", {})
    got = f", got {error['input']!r}" if with_input else ""
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"must be an integer{got}"
    if kind in ("float_type", "float_parsing"):
        return f"must be a number{got}"
    if kind in ("greater_than", "greater_than_equal"):
        bound = f"> {ctx['gt']}" if kind == "greater_than" else f">= {ctx['ge']}"
        return f"must be {bound}{', got ' + repr(error['input']) if with_input else ''}"
    if kind in ("bool_type", "bool_parsing"):
        return f"must be true or false{got}"
    if kind in ("string_type",):
        return f"must be a string{got}"
    if kind in ("dataclass_type", "dataclass_exact_type", "model_type", "dict_type"):
        return f"must be a table{got}"
    if kind in ("tuple_type", "list_type"):
        return f"must be a list{got}"
    if kind == "missing":
        return "is missing (tag limits look like {key = ..., limit = ...}, optionally value or per_value = true)"
    if kind == "value_error":
        return str(error["msg"]).removeprefix("Value error, ")
    return str(error["msg"])
