"""Typed metadata values (Dagster's ``MetadataValue.*``) and how they are stored as JSON.

A plain value (``{"rows": 3}``) is stored as it is. A ``MetadataValue`` is stored as a tagged
JSON object, ``{"__metadata__": "url", "value": "https://..."}``, so its type survives the
event log: :func:`load_metadata` turns stored metadata back into ``MetadataValue`` objects.
"""

from __future__ import annotations

import builtins
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from tidegate.definitions.key import AssetKey
from tidegate.errors import InvalidDefinitionError

TYPE_FIELD = "__metadata__"


@dataclass(frozen=True)
class MetadataValue:
    """A metadata value with a type a UI can render; build one with the static constructors."""

    value: Any
    type_name: ClassVar[str] = ""

    def to_json(self) -> dict[str, Any]:
        return {TYPE_FIELD: self.type_name, "value": self.value}

    # -- Dagster's constructors -------------------------------------------------------------

    @staticmethod
    def text(text: str) -> TextMetadataValue:
        return TextMetadataValue(_checked(text, str, "text"))

    @staticmethod
    def url(url: str) -> UrlMetadataValue:
        return UrlMetadataValue(_checked(url, str, "url"))

    @staticmethod
    def path(path: str | os.PathLike[str]) -> PathMetadataValue:
        return PathMetadataValue(os.fspath(path))

    @staticmethod
    def notebook(path: str | os.PathLike[str]) -> NotebookMetadataValue:
        return NotebookMetadataValue(os.fspath(path))

    @staticmethod
    def json(data: Sequence[Any] | Mapping[str, Any]) -> JsonMetadataValue:
        if not isinstance(data, Sequence | Mapping) or isinstance(data, str):
            raise InvalidDefinitionError(f"MetadataValue.json: expected a list or a dict, got {data!r}")
        try:
            json.dumps(data)
        except (TypeError, ValueError):
            raise InvalidDefinitionError(f"MetadataValue.json: not JSON-serializable: {data!r}") from None
        return JsonMetadataValue(data)

    @staticmethod
    def md(data: str) -> MarkdownMetadataValue:
        return MarkdownMetadataValue(_checked(data, str, "md"))

    @staticmethod
    def python_artifact(python_artifact: Callable[..., Any]) -> PythonArtifactMetadataValue:
        module, name = python_artifact.__module__, python_artifact.__name__
        return PythonArtifactMetadataValue(f"{module}.{name}")

    @staticmethod
    def float(value: builtins.float) -> FloatMetadataValue:
        if isinstance(value, bool) or not isinstance(value, int | builtins.float):
            raise InvalidDefinitionError(f"MetadataValue.float: expected a number, got {value!r}")
        return FloatMetadataValue(builtins.float(value))

    @staticmethod
    def int(value: builtins.int) -> IntMetadataValue:
        return IntMetadataValue(_checked(value, builtins.int, "int"))

    @staticmethod
    def bool(value: builtins.bool) -> BoolMetadataValue:
        return BoolMetadataValue(_checked(value, builtins.bool, "bool"))

    @staticmethod
    def timestamp(value: builtins.float | datetime) -> TimestampMetadataValue:
        """A UNIX timestamp; a datetime must carry its timezone (as in Dagster)."""
        if isinstance(value, datetime):
            if value.tzinfo is None:
                raise InvalidDefinitionError(f"MetadataValue.timestamp: {value.isoformat()} has no timezone")
            return TimestampMetadataValue(value.timestamp())
        if isinstance(value, bool) or not isinstance(value, int | builtins.float):
            raise InvalidDefinitionError(f"MetadataValue.timestamp: expected a float or a datetime, got {value!r}")
        return TimestampMetadataValue(builtins.float(value))

    @staticmethod
    def null() -> NullMetadataValue:
        return NullMetadataValue(None)

    @staticmethod
    def asset(asset_key: AssetKey) -> AssetMetadataValue:
        return AssetMetadataValue(AssetKey.from_coercible(asset_key).to_user_string())

    @staticmethod
    def dagster_run(run_id: str) -> RunMetadataValue:
        return RunMetadataValue(_checked(run_id, str, "dagster_run"))


def _checked(value: Any, kind: type, name: str) -> Any:
    if not isinstance(value, kind) or (kind is builtins.int and isinstance(value, bool)):
        raise InvalidDefinitionError(f"MetadataValue.{name}: expected {kind.__name__}, got {value!r}")
    return value


class TextMetadataValue(MetadataValue):
    type_name = "text"


class UrlMetadataValue(MetadataValue):
    type_name = "url"


class PathMetadataValue(MetadataValue):
    type_name = "path"


class NotebookMetadataValue(MetadataValue):
    type_name = "notebook"


class JsonMetadataValue(MetadataValue):
    type_name = "json"


class MarkdownMetadataValue(MetadataValue):
    type_name = "md"


class PythonArtifactMetadataValue(MetadataValue):
    type_name = "python_artifact"


class FloatMetadataValue(MetadataValue):
    type_name = "float"


class IntMetadataValue(MetadataValue):
    type_name = "int"


class BoolMetadataValue(MetadataValue):
    type_name = "bool"


class TimestampMetadataValue(MetadataValue):
    type_name = "timestamp"


class NullMetadataValue(MetadataValue):
    type_name = "null"


class AssetMetadataValue(MetadataValue):
    """An asset key, stored as its ``a/b`` string."""

    type_name = "asset"


class RunMetadataValue(MetadataValue):
    type_name = "dagster_run"


_BY_TYPE: dict[str, type[MetadataValue]] = {
    cls.type_name: cls
    for cls in (
        TextMetadataValue,
        UrlMetadataValue,
        PathMetadataValue,
        NotebookMetadataValue,
        JsonMetadataValue,
        MarkdownMetadataValue,
        PythonArtifactMetadataValue,
        FloatMetadataValue,
        IntMetadataValue,
        BoolMetadataValue,
        TimestampMetadataValue,
        NullMetadataValue,
        AssetMetadataValue,
        RunMetadataValue,
    )
}


def metadata_json_default(value: Any) -> Any:
    """``json.dumps(default=...)``: a MetadataValue as its tagged object, anything else as str()."""
    if isinstance(value, MetadataValue):
        return value.to_json()
    return str(value)


def load_metadata(stored: Mapping[str, Any]) -> dict[str, Any]:
    """Stored (JSON) metadata with every tagged entry turned back into its MetadataValue."""
    return {key: _load_value(value) for key, value in stored.items()}


def _load_value(value: Any) -> Any:
    if isinstance(value, Mapping) and set(value) == {TYPE_FIELD, "value"}:
        cls = _BY_TYPE.get(str(value[TYPE_FIELD]))
        if cls is not None:
            return cls(value["value"])
    return value
