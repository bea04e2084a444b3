"""Operator settings from ``tidegate.toml``: the run queue's limits and the run monitor.

Looked up at ``$TIDEGATE_CONFIG``, else ``./tidegate.toml``, else ``$TIDEGATE_HOME/tidegate.toml``;
``TIDEGATE_MAX_CONCURRENT_RUNS`` overrides the file. Example::

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
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tidegate.errors import ConfigError


@dataclass(frozen=True)
class TagLimit:
    key: str
    limit: int
    value: str | None = None
    per_value: bool = False

    def matches(self, tags: dict[str, str] | Any) -> bool:
        if self.key not in tags:
            return False
        return self.per_value or self.value is None or tags[self.key] == self.value

    def bucket(self, tags: dict[str, str] | Any) -> str:
        """Which counter a run with ``tags`` counts against; each kind of limit has its own
        counters, so a value limit and a per-value limit on one key never share one."""
        if self.per_value:
            return f"per-value {self.key}={tags[self.key]}"
        return f"value {self.key}={self.value}" if self.value is not None else f"key {self.key}"

    def describe_for(self, tags: dict[str, str] | Any) -> str:
        return f"{self.key}={tags[self.key]}" if self.per_value or self.value is not None else self.describe

    @property
    def describe(self) -> str:
        if self.per_value:
            return f"{self.key}=* (per value)"
        return f"{self.key}={self.value}" if self.value is not None else f"{self.key} (any value)"


@dataclass(frozen=True)
class RunQueueConfig:
    max_concurrent_runs: int | None = None
    tag_concurrency_limits: tuple[TagLimit, ...] = ()


@dataclass(frozen=True)
class MonitorConfig:
    heartbeat_timeout_seconds: float = 60.0
    worker_lost_retries: int = 2
    enqueued_timeout_seconds: float = 600.0
    timeout_grace_seconds: float = 30.0


@dataclass(frozen=True)
class InstanceConfig:
    run_queue: RunQueueConfig = field(default_factory=RunQueueConfig)
    run_monitor: MonitorConfig = field(default_factory=MonitorConfig)
    source: str = "defaults"

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> InstanceConfig:
        found = Path(path) if path else _find()
        data: dict[str, Any] = {}
        if found is not None:
            try:
                data = tomllib.loads(found.read_text())
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ConfigError(f"{found}: {exc}") from None
        return cls.from_dict(data, str(found) if found else "defaults")

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "dict") -> InstanceConfig:
        unknown = set(data) - {"run_queue", "run_monitor"}
        if unknown:
            raise ConfigError(f"{source}: unknown section(s) {sorted(unknown)}")
        queue = data.get("run_queue", {})
        monitor = data.get("run_monitor", {})
        _only(source, "run_queue", queue, {"max_concurrent_runs", "tag_concurrency_limits"})
        _only(source, "run_monitor", monitor, set(MonitorConfig.__dataclass_fields__))
        env_max = os.environ.get("TIDEGATE_MAX_CONCURRENT_RUNS")
        if env_max:
            try:
                max_runs: int | None = _whole(f"TIDEGATE_MAX_CONCURRENT_RUNS={env_max!r}", "value", int(env_max))
            except ValueError:
                raise ConfigError(f"TIDEGATE_MAX_CONCURRENT_RUNS={env_max!r}: must be an integer >= 0") from None
        else:
            max_runs = _positive(source, "run_queue.max_concurrent_runs", queue.get("max_concurrent_runs"))
        limits = tuple(_tag_limit(source, i, item) for i, item in enumerate(queue.get("tag_concurrency_limits", [])))
        defaults = MonitorConfig()
        values: dict[str, Any] = {}
        for key, value in monitor.items():
            name = f"run_monitor.{key}"
            if isinstance(getattr(defaults, key), int):
                values[key] = _positive(source, name, value)
            elif isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"{source}: {name} must be a number of seconds > 0, got {value!r}")
            else:
                values[key] = float(value)
        return cls(RunQueueConfig(max_runs, limits), MonitorConfig(**values), source)


def _find() -> Path | None:
    candidates = [os.environ.get("TIDEGATE_CONFIG"), "tidegate.toml"]
    candidates.append(str(Path(os.environ.get("TIDEGATE_HOME", ".tidegate")) / "tidegate.toml"))
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    if os.environ.get("TIDEGATE_CONFIG"):
        raise ConfigError(f"TIDEGATE_CONFIG={os.environ['TIDEGATE_CONFIG']}: no such file")
    return None


def _only(source: str, section: str, values: Any, allowed: set[str]) -> None:
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: [{section}] must be a table")
    unknown = set(values) - allowed
    if unknown:
        raise ConfigError(f"{source}: [{section}] unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")


def _positive(source: str, name: str, value: Any) -> int | None:
    if value is None:
        return None
    return _whole(source, name, value)


def _whole(source: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{source}: {name} must be an integer, got {value!r}")
    if value < 0:
        raise ConfigError(f"{source}: {name} must be >= 0, got {value}")
    return value


def _tag_limit(source: str, index: int, item: Any) -> TagLimit:
    where = f"{source}: run_queue.tag_concurrency_limits[{index}]"
    if not isinstance(item, dict) or "key" not in item or "limit" not in item:
        raise ConfigError(f"{where}: expected {{key = ..., limit = ...}} (optionally value or per_value = true)")
    unknown = set(item) - {"key", "value", "limit", "per_value"}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}")
    if item.get("per_value") and "value" in item:
        raise ConfigError(f"{where}: give value or per_value = true, not both")
    limit = _positive(source, f"tag_concurrency_limits[{index}].limit", item["limit"])
    assert limit is not None
    value = item.get("value")
    if (value is not None and not isinstance(value, str | int | float)) or isinstance(value, bool):
        raise ConfigError(f"{where}: value must be a string, got {value!r}")
    return TagLimit(
        str(item["key"]), limit, str(value) if value is not None else None, bool(item.get("per_value", False))
    )
