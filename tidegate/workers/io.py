"""IO managers: how a step's output is stored and how a downstream step loads it.

The protocol is Dagster's: ``handle_output(context, obj)`` and ``load_input(context)``.
An asset picks one with ``io_manager_key`` (default ``"io_manager"``); without such a
resource, outputs go to the filesystem default under ``TIDEGATE_IO_BASE_DIR``.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tidegate.definitions.key import AssetKey


@dataclass
class OutputContext:
    """One output being stored: an asset's (``asset_key``), or an op's (``asset_key`` None;
    named by ``run_id``, ``step_key``, ``name`` and, for a dynamic output, ``mapping_key``)."""

    asset_key: AssetKey | None
    run_id: str
    step_key: str
    partition_key: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    name: str = "result"
    mapping_key: str | None = None

    @property
    def has_asset_key(self) -> bool:
        return self.asset_key is not None

    def add_output_metadata(self, metadata: dict[str, Any]) -> None:
        self.metadata.update(metadata)

    def get_identifier(self) -> list[str]:
        """Dagster's identifier of this output: an asset's key path (and partition); an op
        output's run id, step key, output name (and mapping key)."""
        if self.asset_key is not None:
            return [*self.asset_key.path, *([self.partition_key] if self.partition_key is not None else [])]
        return [self.run_id, self.step_key, self.name, *([self.mapping_key] if self.mapping_key is not None else [])]


@dataclass
class InputContext:
    """One input being loaded: an upstream asset (``asset_key``), or an upstream op's output
    (``asset_key`` None, ``upstream_output`` naming it)."""

    asset_key: AssetKey | None  # the upstream asset being loaded
    run_id: str
    step_key: str  # the step that loads it
    partition_key: str | None = None
    upstream_output: OutputContext | None = None

    @property
    def has_asset_key(self) -> bool:
        return self.asset_key is not None

    def get_identifier(self) -> list[str]:
        if self.upstream_output is not None:
            return self.upstream_output.get_identifier()
        assert self.asset_key is not None
        return [*self.asset_key.path, *([self.partition_key] if self.partition_key is not None else [])]


class IOManager:
    """Base class: subclass and implement both methods."""

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        raise NotImplementedError

    def load_input(self, context: InputContext) -> Any:
        raise NotImplementedError


class FilesystemIOManager(IOManager):
    """Pickles each output to ``base_dir/<asset key path>[/<partition>]``.

    Writes go to a temporary file renamed into place, so a reader never sees half an
    output and a re-run replaces the previous value atomically. Workers share outputs when
    they share ``base_dir`` (one machine, or a shared volume).
    """

    def __init__(self, base_dir: str | os.PathLike[str] | None = None) -> None:
        if base_dir is None:
            from tidegate.config import Settings

            base_dir = Settings.load().io_base_dir
        self.base_dir = Path(base_dir)

    def path_for(self, asset_key: AssetKey, partition_key: str | None = None) -> Path:
        """``base_dir/<asset key path>``, and for a partition the file in that folder named by
        :func:`partition_file_name`: no key, whatever it holds, names a path outside it."""
        path = self.base_dir.joinpath(*asset_key.path)
        return path / partition_file_name(partition_key) if partition_key is not None else path

    def op_output_path(self, identifier: list[str]) -> Path:
        """``base_dir/.op_outputs/<run id>/<step key>/<output>[/<mapping key>]`` (each part a
        safe file name): op outputs live apart from the assets' folders."""
        return self.base_dir.joinpath(".op_outputs", *(partition_file_name(part) for part in identifier))

    def _path(self, context: OutputContext | InputContext) -> Path:
        if context.asset_key is None:
            return self.op_output_path(context.get_identifier())
        return self.path_for(context.asset_key, context.partition_key)

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        path = self._path(context)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as handle:
                pickle.dump(obj, handle, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        if obj is not None:  # a None is usually an asset that wrote its data elsewhere (as Dagster)
            context.add_output_metadata({"path": str(path)})

    def load_input(self, context: InputContext) -> Any:
        path = self._path(context)
        if not path.exists():
            what = f"asset '{context.asset_key}'" if context.asset_key is not None else "op output"
            raise FileNotFoundError(
                f"{what} has no stored output at {path}: materialize it first (or it returned None)"
            )
        with path.open("rb") as handle:
            return pickle.load(handle)

    def __repr__(self) -> str:
        return f"FilesystemIOManager(base_dir={str(self.base_dir)!r})"


_MAX_NAME_BYTES = 245  # NAME_MAX (255) less the ".<name>.XXXXXXXX" temporary name's 10 bytes
# What a file name may not hold as it is: '/', NUL and '\\' (path separators), control and
# separator characters, lone surrogates (no UTF-8 for them), ',' (it marks quoted names).
_UNSAFE_IN_NAME = re.compile(r"[/\\\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff,]")


def partition_file_name(partition_key: str) -> str:
    """The file name of one partition's output, inside its asset's folder.

    A key that can be a file name as it is (``2024-01-21``, ``2024-01-21-00:00``, ``in%2Fa.csv``)
    is one, as it always was. Any other key (``a/b``, ``..``, a control character, a name longer
    than 245 bytes) is percent-quoted, ``%`` included, behind a ``,`` that no plain name starts
    with: ``a/b`` -> ``,a%2Fb``, ``..`` -> ``,..``; one still too long keeps its first bytes
    and ends with ``%~`` and a SHA-256 of the key (``%~`` is in no other name). Distinct keys get
    distinct names, and none is empty, ``.`` or ``..``.
    """
    if (
        partition_key not in ("", ".", "..")
        and not _UNSAFE_IN_NAME.search(partition_key)
        and len(partition_key.encode()) <= _MAX_NAME_BYTES
    ):
        return partition_key
    name = "," + _UNSAFE_IN_NAME.sub(_percent, partition_key.replace("%", "%25"))
    if len(name.encode()) <= _MAX_NAME_BYTES:
        return name
    digest = hashlib.sha256(partition_key.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    head = name.encode()[: _MAX_NAME_BYTES - len(digest) - 2].decode("utf-8", "ignore")
    return f"{head}%~{digest}"


def _percent(match: re.Match[str]) -> str:
    return "".join(f"%{byte:02X}" for byte in match.group().encode("utf-8", "surrogatepass"))


class InMemoryIOManager(IOManager):
    """Keeps outputs in this process only: for ``tidegate.materialize`` and tests."""

    def __init__(self) -> None:
        self.values: dict[tuple[Any, ...], Any] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(context: OutputContext | InputContext) -> tuple[Any, ...]:
        if context.asset_key is None:
            return tuple(context.get_identifier())
        return (context.asset_key, context.partition_key)

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        with self._lock:
            self.values[self._key(context)] = obj

    def load_input(self, context: InputContext) -> Any:
        with self._lock:
            try:
                return self.values[self._key(context)]
            except KeyError:
                what = f"asset '{context.asset_key}'"
                if context.asset_key is None:
                    what = f"op output {'/'.join(context.get_identifier()[1:])} of run {context.run_id}"
                raise KeyError(f"{what} has no value in memory") from None
