"""Run configuration, as Dagster's: ``Config`` models, ``RunConfig``, ``EnvVar``.

A run's configuration has one stored form, plain JSON in the run's row::

    {"ops": {"<node>": {"config": {...}}}, "resources": {"<key>": {"config": {...}}}}

where ``<node>`` is an op's name or an asset's key joined by ``__`` (a nested graph's ops sit
under ``{"<graph>": {"ops": {...}}}``). An ``EnvVar`` is stored as the marker
``{"env": "NAME"}``, Dagster's own run-config spelling: the variable is read on the worker
when the step runs, so its value is never in the database, a log or the CLI's output.

Launching checks the config against the job (``check_run_config``) before any run exists;
the worker builds each node's ``config`` argument with ``node_config`` and the run's
resources with ``run_resources``.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pydantic
import pydantic_core

from tidegate.definitions.limits import check_run_config_size
from tidegate.definitions.resource import ConfigurableResource
from tidegate.errors import ConfigProblem, RunConfigError

ENV_KEY = "env"  # {"env": "NAME"}: an environment variable, read on the worker
REDACTED = "<redacted>"
_TOP_LEVEL = ("ops", "resources")
_NODE_KEYS = ("config", "ops")


class EnvVar(str):
    """The name of an environment variable whose value a field takes when the step runs::

        Warehouse(password=tg.EnvVar("WAREHOUSE_PASSWORD"))

    Read on the worker (never at launch), so the value is never stored or shown; a run's
    stored config keeps ``{"env": "WAREHOUSE_PASSWORD"}``.
    """

    def __new__(cls, name: str) -> EnvVar:
        if not isinstance(name, str) or not name or "=" in name or "\0" in name:
            raise RunConfigError(f"EnvVar: invalid environment variable name {name!r}")
        return super().__new__(cls, name)

    @property
    def env_var_name(self) -> str:
        return str.__str__(self)

    def get_value(self, default: str | None = None) -> str | None:
        """The variable's value in this process, ``default`` if unset."""
        return os.environ.get(self.env_var_name, default)

    def __repr__(self) -> str:
        return f"EnvVar({self.env_var_name!r})"


class Config(pydantic.BaseModel):
    """Base of typed config, a pydantic model as Dagster's::

        class MyAssetConfig(tg.Config):
            person_name: str

        @tg.asset
        def greeting(config: MyAssetConfig) -> str:
            return f"hello {config.person_name}"

    Unknown fields are refused; instances are frozen. A field may be given an ``EnvVar``
    when the config is built for a launch (``RunConfig``); the asset sees the variable's value.
    """

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)
    _env_vars: dict[str, EnvVar] = pydantic.PrivateAttr(default_factory=dict)

    @pydantic.model_validator(mode="wrap")
    @classmethod
    def _keep_env_vars(cls, data: Any, handler: Callable[[Any], Config]) -> Config:
        env = {k: v for k, v in data.items() if isinstance(v, EnvVar)} if isinstance(data, Mapping) else {}
        try:
            model = handler(data)
        except pydantic.ValidationError as exc:
            # An EnvVar stands for a value read later: only its type cannot be checked now.
            if not env or any(not isinstance(e.get("input"), EnvVar) for e in exc.errors()):
                raise
            model = cls.model_construct(**dict(data))
        model._env_vars.update(env)
        return model

    def __eq__(self, other: object) -> bool:
        # By value: which fields came from an EnvVar is not part of it.
        if not isinstance(other, Config):
            return NotImplemented
        return type(self) is type(other) and self.__dict__ == other.__dict__

    def __hash__(self) -> int:
        return hash((type(self), *self.__dict__.values()))

    def __repr_args__(self) -> Any:
        # A field given by an EnvVar may hold a secret (once read on the worker): never shown.
        for name, value in super().__repr_args__():
            yield name, (REDACTED if name in self._env_vars else value)


@dataclass(frozen=True)
class RunConfig:
    """A run's configuration as objects: ``ops`` maps node names (an op's name, an asset's
    name) to a ``Config`` instance or a ``{"config": {...}}`` dict; ``resources`` maps resource
    keys to a ``ConfigurableResource`` instance or a ``{"config": {...}}`` dict of the fields
    to set for this run."""

    ops: Mapping[str, Any] | None = None
    resources: Mapping[str, Any] | None = None

    def to_config_dict(self) -> dict[str, Any]:
        """The plain dict form, an ``EnvVar`` as ``{"env": NAME}``."""
        return run_config_dict("RunConfig", self)


@dataclass(frozen=True)
class ConfigNode:
    """A node of a job that may take config: ``label`` names it in errors (``asset 'x'``,
    ``op 'y'``); ``config_type`` is the ``Config`` model of its ``config`` parameter, None
    when it takes no config."""

    label: str
    config_type: type[Config] | None
    any_config: bool = False  # an op with a config_schema but no Config model: any values pass


@dataclass(frozen=True)
class NodeConfig:
    """What one node receives when its step runs: ``config`` (the ``Config`` instance for its
    ``config`` parameter, None when it takes none) and ``op_config`` (the same as a dict, for
    ``context.op_config``), environment variables read."""

    config: Config | None
    op_config: dict[str, Any] | None


def run_config_dict(label: str, value: Any) -> dict[str, Any]:
    """Any accepted form of run config (None, ``RunConfig``, the plain dict) in the stored
    form: only JSON, an EnvVar as its marker. Raises RunConfigError naming ``label``."""
    if value is None:
        return {}
    if isinstance(value, RunConfig):
        value = {"ops": value.ops or {}, "resources": value.resources or {}}
    if not isinstance(value, Mapping):
        raise RunConfigError(f"{label}: run config must be a RunConfig or a dict, got {type(value).__name__}")
    unknown = [k for k in value if k not in _TOP_LEVEL]
    if unknown:
        raise RunConfigError(
            f"{label}: run config has unsupported section {unknown[0]!r} (tidegate takes 'ops' and 'resources')",
            (ConfigProblem((str(unknown[0]),), "not_defined"),),
        )
    result: dict[str, Any] = {}
    ops = _section(label, value, "ops")
    if ops:
        result["ops"] = {
            name: _node_entry(f"{label}: op '{name}'", entry, ("ops", name)) for name, entry in ops.items()
        }
    resources = _section(label, value, "resources")
    if resources:
        result["resources"] = {
            key: _resource_entry(f"{label}: resource '{key}'", entry, ("resources", key))
            for key, entry in resources.items()
        }
    return result


def _section(label: str, value: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    section = value.get(name)
    if section is None:
        return {}
    if not isinstance(section, Mapping) or not all(isinstance(k, str) for k in section):
        raise RunConfigError(f"{label}: run config '{name}' must map names to their config, got {section!r:.80}")
    return section


def _node_entry(label: str, entry: Any, at: tuple[str, ...]) -> dict[str, Any]:
    if isinstance(entry, Config):
        return {"config": to_plain(label, entry)}
    if not isinstance(entry, Mapping):
        raise RunConfigError(
            f"{label}: expected a Config or {{'config': {{...}}}}, got {entry!r:.80}",
            (ConfigProblem(at, "type_mismatch"),),
        )
    unknown = [k for k in entry if k not in _NODE_KEYS]
    if unknown:
        raise RunConfigError(
            f"{label}: unexpected key {unknown[0]!r} (expected 'config', or 'ops' for a graph)",
            (ConfigProblem((*at, str(unknown[0])), "not_defined"),),
        )
    result: dict[str, Any] = {}
    if "config" in entry:
        result["config"] = to_plain(f"{label} config", entry["config"])
    if "ops" in entry:
        inner = _section(label, entry, "ops")
        result["ops"] = {name: _node_entry(f"{label}: op '{name}'", e, (*at, "ops", name)) for name, e in inner.items()}
    return result


def _resource_entry(label: str, entry: Any, at: tuple[str, ...]) -> dict[str, Any]:
    if isinstance(entry, ConfigurableResource):
        return {"config": to_plain(label, entry)}
    if not isinstance(entry, Mapping) or set(entry) - {"config"}:
        raise RunConfigError(
            f"{label}: expected a ConfigurableResource or {{'config': {{...}}}}, got {entry!r:.80}",
            (ConfigProblem(at, "type_mismatch"),),
        )
    return {"config": to_plain(f"{label} config", entry.get("config") or {})}


def to_plain(label: str, value: Any) -> Any:
    """``value`` as JSON: a Config or ConfigurableResource as a dict of its fields, an
    EnvVar as ``{"env": NAME}``, an enum as its value."""
    if isinstance(value, EnvVar):
        return {ENV_KEY: value.env_var_name}
    if isinstance(value, Config):
        env = value._env_vars
        return {name: to_plain(label, env.get(name, getattr(value, name))) for name in type(value).model_fields}
    if isinstance(value, ConfigurableResource):
        return {f.name: to_plain(label, getattr(value, f.name)) for f in dataclasses.fields(value)}  # type: ignore[arg-type]
    if isinstance(value, Mapping):
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            raise RunConfigError(f"{label}: config keys must be strings, got {bad[0]!r}")
        return {k: to_plain(label, v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_plain(label, v) for v in value]
    if isinstance(value, enum.Enum):
        return to_plain(label, value.value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    try:
        return pydantic_core.to_jsonable_python(value)
    except pydantic_core.PydanticSerializationError:
        raise RunConfigError(f"{label}: a {type(value).__name__} cannot be stored as run config") from None


def redacted(value: Any) -> Any:
    """A stored run config for display: each EnvVar marker shown as ``<redacted>`` with its
    variable's name (its value is never stored anyway)."""
    if _env_name(value) is not None:
        return f"{REDACTED} (EnvVar {_env_name(value)})"
    if isinstance(value, Mapping):
        return {k: redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redacted(v) for v in value]
    return value


def _env_name(value: Any) -> str | None:
    if isinstance(value, Mapping) and len(value) == 1 and isinstance(value.get(ENV_KEY), str):
        return value[ENV_KEY]  # type: ignore[no-any-return]
    return None


# -- checking a run's config against a job, before the run exists -------------------------------


def check_run_config(
    label: str,
    run_config: Any,
    nodes: Mapping[str, ConfigNode],
    resources: Mapping[str, Any],
) -> dict[str, Any] | None:
    """Check ``run_config`` against the job's ``nodes`` (by name; a nested graph's op as
    ``graph.op``) and the code location's ``resources``; return its stored form (None when
    empty). Every node with a ``Config`` is checked, given config or not (a required field
    must be given). Raises RunConfigError naming ``label``, the node and the field."""
    stored = run_config_dict(label, run_config)
    given = _node_entries(stored.get("ops", {}))
    for handle in given:
        if handle not in nodes:
            known = ", ".join(sorted(nodes)) or "none"
            raise RunConfigError(
                f"{label}: run config names node '{handle}', which is not in this run ({known})",
                (ConfigProblem(_node_path(handle), "not_defined"),),
            )
    for handle, node in nodes.items():
        values = given.get(handle, {}).get("config")
        if node.config_type is None:
            if values not in (None, {}) and not node.any_config:
                raise RunConfigError(
                    f"{label}: {node.label} takes no config, but run config gives it {values!r:.80}",
                    (ConfigProblem(_node_path(handle), "not_defined"),),
                )
            continue
        _validate(f"{label}: {node.label}", node.config_type, _as_env_vars(values or {}), _node_path(handle))
    for key, entry in stored.get("resources", {}).items():
        _check_resource(f"{label}: resource '{key}'", key, resources, entry.get("config") or {})
    check_run_config_size(label, stored)
    return stored or None


def _node_entries(ops: Mapping[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for name, entry in ops.items():
        handle = f"{prefix}{name}"
        if "ops" in entry:
            found.update(_node_entries(entry["ops"], f"{handle}."))
        if "config" in entry or "ops" not in entry:
            found[handle] = entry
    return found


def _node_path(handle: str) -> tuple[str, ...]:
    """Where a node's entry sits in run config: ``ops.NAME``, a nested graph's op as
    ``ops.GRAPH.ops.OP``."""
    path: list[str] = []
    for name in handle.split("."):
        path += ["ops", name]
    return tuple(path)


def _validate(label: str, config_type: type[Config], values: Any, at: tuple[str, ...] = ()) -> Config:
    if not isinstance(values, Mapping):
        raise RunConfigError(
            f"{label}: config must be a dict of fields, got {type(values).__name__}",
            (ConfigProblem((*at, "config"), "type_mismatch"),),
        )
    try:
        return config_type.model_validate(values)
    except pydantic.ValidationError as exc:
        raise RunConfigError(f"{label}: {_describe(exc)}", _problems(exc, (*at, "config"))) from None


def _describe(exc: pydantic.ValidationError) -> str:
    """The errors by field, never with the value given (it may be a secret read from the
    environment)."""
    parts = []
    for error in exc.errors(include_input=False, include_url=False):
        where = ".".join(str(p) for p in error["loc"]) or "(the config)"
        parts.append(f"config field '{where}': {error['msg']}")
    return "; ".join(parts)


def _problems(exc: pydantic.ValidationError, at: tuple[str, ...]) -> tuple[ConfigProblem, ...]:
    """Each of pydantic's errors as a ConfigProblem under ``at`` (pydantic's error type says
    which kind: ``missing``, ``extra_forbidden``, or any other, a type mismatch)."""
    kinds: dict[str, Literal["missing", "not_defined"]] = {"missing": "missing", "extra_forbidden": "not_defined"}
    return tuple(
        ConfigProblem((*at, *(str(p) for p in error["loc"])), kinds.get(error["type"], "type_mismatch"))
        for error in exc.errors(include_input=False, include_url=False)
    )


def _as_env_vars(value: Any) -> Any:
    """The stored form with each marker back as an EnvVar (checked for its place, not read)."""
    name = _env_name(value)
    if name is not None:
        return EnvVar(name)
    if isinstance(value, Mapping):
        return {k: _as_env_vars(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_env_vars(v) for v in value]
    return value


def _check_resource(label: str, key: str, resources: Mapping[str, Any], values: Mapping[str, Any]) -> None:
    if key not in resources:
        known = ", ".join(sorted(resources)) or "none"
        raise RunConfigError(
            f"{label}: no such resource (Definitions(resources=...) has: {known})",
            (ConfigProblem(("resources", key), "not_defined"),),
        )
    resource = resources[key]
    if not isinstance(resource, ConfigurableResource):
        raise RunConfigError(
            f"{label}: a {type(resource).__name__} is not a ConfigurableResource; it takes no config",
            (ConfigProblem(("resources", key, "config"), "not_defined"),),
        )
    _field_values(label, resource, _as_env_vars(values), ("resources", key, "config"))


_ADAPTERS: dict[Any, pydantic.TypeAdapter[Any] | None] = {}


def _field_values(
    label: str, resource: ConfigurableResource, values: Mapping[str, Any], at: tuple[str, ...] = ()
) -> dict[str, Any]:
    """``values`` checked against the resource's fields (names, and types where pydantic can
    check them; an EnvVar is checked when read), converted as pydantic converts them."""
    fields = {f.name: f for f in dataclasses.fields(resource)}  # type: ignore[arg-type]
    try:
        hints = typing.get_type_hints(type(resource))
    except Exception:  # an annotation that cannot be evaluated: check names only
        hints = {}
    result: dict[str, Any] = {}
    for name, value in values.items():
        if name not in fields:
            raise RunConfigError(
                f"{label}: config field '{name}': not a field (fields: {', '.join(sorted(fields))})",
                (ConfigProblem((*at, name), "not_defined"),),
            )
        adapter = _adapter(hints.get(name))
        if adapter is None or isinstance(value, EnvVar):
            result[name] = value
            continue
        try:
            result[name] = adapter.validate_python(value)
        except pydantic.ValidationError as exc:
            reason = "; ".join(e["msg"] for e in exc.errors(include_input=False, include_url=False))
            raise RunConfigError(
                f"{label}: config field '{name}': {reason}", (ConfigProblem((*at, name), "type_mismatch"),)
            ) from None
    return result


def _adapter(hint: Any) -> pydantic.TypeAdapter[Any] | None:
    if hint is None:
        return None
    try:
        if hint not in _ADAPTERS:
            _ADAPTERS[hint] = pydantic.TypeAdapter(hint)
        return _ADAPTERS[hint]
    except Exception:  # a type pydantic cannot check (a client class): left to the resource
        return None


# -- on the worker: a node's config and the run's resources, environment variables read --------


def node_config(
    run_config: Mapping[str, Any] | None, node: str | Sequence[str], config_type: type[Config] | None
) -> NodeConfig:
    """The ``config`` argument and ``context.op_config`` of ``node`` (a name, or the path of
    names of an op inside nested graphs) in a run of stored config ``run_config``, each
    ``{"env": NAME}`` replaced by the variable's value in this process. Raises RunConfigError
    (naming the node and field, never a value) if the config no longer fits or a variable is
    unset."""
    path = [node] if isinstance(node, str) else list(node)
    label = f"node '{'.'.join(path)}'"
    entry: Mapping[str, Any] = {"ops": (run_config or {}).get("ops", {})}
    for name in path:
        entry = entry.get("ops", {}).get(name, {})
    values = read_env(label, entry.get("config"))
    if config_type is None:
        return NodeConfig(None, values)
    config = _validate(label, config_type, values or {})
    for name, raw in (entry.get("config") or {}).items():
        env_name = _env_name(raw)
        if env_name is not None:
            config._env_vars[name] = EnvVar(env_name)  # kept as a marker if stored again, redacted in repr
    return NodeConfig(config, config.model_dump())


def read_env(label: str, value: Any, where: str = "") -> Any:
    """``value`` with each ``{"env": NAME}`` replaced by that variable's value here."""
    name = _env_name(value)
    if name is None and isinstance(value, EnvVar):
        name = value.env_var_name
    if name is not None:
        found = os.environ.get(name)
        if found is None:
            field = f" field '{where}'" if where else ""
            raise RunConfigError(f"{label}:{field} environment variable {name!r} is not set")
        return found
    if isinstance(value, Mapping):
        return {k: read_env(label, v, f"{where}.{k}" if where else k) for k, v in value.items()}
    if isinstance(value, list):
        return [read_env(label, v, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def run_resources(resources: Mapping[str, Any], run_config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The resources a step of a run uses: each ConfigurableResource with the run's config
    for it applied and its EnvVar fields read from this process's environment (a new
    instance; the others, and resources needing neither, as they are)."""
    configured = (run_config or {}).get("resources", {})
    result = {}
    for key, resource in resources.items():
        values = (configured.get(key) or {}).get("config") or {}
        result[key] = _configured(f"resource '{key}'", resource, values)
    return result


def instigator_resources(resources: Mapping[str, Any]) -> dict[str, Any]:
    """The resources schedules and sensors receive (in the beat, or a preview): EnvVar fields
    read from this process's environment. A resource whose variable is unset becomes an
    ``UnavailableResource`` that raises the RunConfigError when used, so only the instigators
    using it fail their ticks."""
    result: dict[str, Any] = {}
    for key, resource in resources.items():
        try:
            result[key] = _configured(f"resource '{key}'", resource, {})
        except RunConfigError as exc:
            result[key] = UnavailableResource(exc)
    return result


class UnavailableResource:
    """Stands for a resource that could not be built (an environment variable unset): any use
    raises the error saying why."""

    def __init__(self, error: RunConfigError) -> None:
        self._error = error

    def __getattr__(self, name: str) -> Any:
        raise RunConfigError(str(self._error))

    def __repr__(self) -> str:
        return f"UnavailableResource({self._error})"


def _configured(label: str, resource: Any, values: Mapping[str, Any]) -> Any:
    if not isinstance(resource, ConfigurableResource):
        return resource
    changes = _field_values(label, resource, read_env(label, values)) if values else {}
    for f in dataclasses.fields(resource):  # type: ignore[arg-type]
        if f.name in changes:
            continue
        current = getattr(resource, f.name)
        if isinstance(current, EnvVar):
            changes[f.name] = read_env(label, current, f.name)
        elif isinstance(current, ConfigurableResource):
            nested = _configured(f"{label} field '{f.name}'", current, {})
            if nested is not current:
                changes[f.name] = nested
    return dataclasses.replace(resource, **changes) if changes else resource  # type: ignore[type-var]


def config_param_type(annotation: Any) -> type[Config] | None:
    """The Config model an annotation names, None when it names none."""
    if isinstance(annotation, type) and issubclass(annotation, Config):
        return annotation
    return None
