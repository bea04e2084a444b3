"""Asset keys: a path of names, written ``a/b`` on the command line and in storage."""

from __future__ import annotations

import re
import threading
import weakref
from collections.abc import Sequence
from functools import total_ordering
from typing import ClassVar, Union

from tidegate.definitions.limits import check_asset_key
from tidegate.errors import InvalidDefinitionError

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")  # fullmatch: "$" would admit a trailing newline


@total_ordering
class AssetKey:
    """The identity of an asset: ``AssetKey("orders")`` or ``AssetKey(["sales", "orders"])``."""

    # Keys are interned: equal keys are one object, so a key hashes by identity, in C. A
    # Python ``__hash__`` (even returning a cached value) cost ~80 ns more per dict or set
    # lookup than a C one, and an automation tick looks keys up ~750,000 times (the bench's
    # 1%-updated tick: ~60 ms of its ~300 ms of evaluation CPU).
    __slots__ = ("__weakref__", "path")

    path: tuple[str, ...]

    _interned: ClassVar[weakref.WeakValueDictionary[tuple[str, ...], AssetKey]] = weakref.WeakValueDictionary()
    _intern_lock: ClassVar[threading.Lock] = threading.Lock()  # two threads making one key must get one object

    def __new__(cls, path: str | Sequence[str]) -> AssetKey:
        parts = (path,) if isinstance(path, str) else tuple(path)
        try:
            found = cls._interned.get(parts)
        except TypeError:  # an unhashable part: refused below
            found = None
        if found is not None:
            return found
        if not parts:
            raise InvalidDefinitionError("AssetKey: the path is empty")
        if all(isinstance(part, str) for part in parts):
            check_asset_key("AssetKey", "/".join(parts))  # length first: a message shows it cut
        for part in parts:
            if not isinstance(part, str) or not _NAME.fullmatch(part):
                raise InvalidDefinitionError(
                    f"AssetKey {list(parts)!r}: invalid part {part!r} "
                    "(letters, digits, '_' and '-', not starting with a digit)"
                )
        with cls._intern_lock:
            found = cls._interned.get(parts)
            if found is None:
                found = super().__new__(cls)
                object.__setattr__(found, "path", parts)
                cls._interned[parts] = found
        return found

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("AssetKey is immutable")

    @classmethod
    def from_user_string(cls, text: str) -> AssetKey:
        """Parse the ``a/b`` form used on the command line and in storage."""
        return cls(text.strip().split("/"))

    @classmethod
    def from_coercible(cls, value: object) -> AssetKey:
        """An AssetKey from a key, its ``a/b`` string, a path, or an asset definition."""
        if isinstance(value, AssetKey):
            return value
        if isinstance(value, str):
            return cls.from_user_string(value)
        key = getattr(value, "key", None)  # an AssetsDefinition
        if isinstance(key, AssetKey):
            return key
        if isinstance(value, (list, tuple)):
            return cls(value)
        raise InvalidDefinitionError(f"cannot make an AssetKey of {value!r}")

    def to_user_string(self) -> str:
        return "/".join(self.path)

    def with_prefix(self, prefix: str | Sequence[str]) -> AssetKey:
        head = (prefix,) if isinstance(prefix, str) else tuple(prefix)
        return AssetKey(head + self.path)

    def __eq__(self, other: object) -> bool:
        return self is other or (isinstance(other, AssetKey) and other.path == self.path)

    __hash__ = object.__hash__  # interned: identity is equality (see above)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, AssetKey):
            return NotImplemented
        return self.path < other.path

    def __reduce__(self) -> tuple[type[AssetKey], tuple[tuple[str, ...]]]:
        # Rebuild through __init__: the default reduction sets ``path`` by setattr, which
        # __setattr__ refuses, so copy.copy, deepcopy and pickle would all fail.
        return (AssetKey, (self.path,))

    def __repr__(self) -> str:
        return f"AssetKey({list(self.path)!r})"

    def __str__(self) -> str:
        return self.to_user_string()


CoercibleToAssetKey = Union[AssetKey, str, Sequence[str]]
