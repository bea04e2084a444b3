"""Asset selections, as objects (``AssetSelection.groups("sales").downstream()``) or strings.

String form, one clause or several separated by commas (a union)::

    "*"                    every asset
    "raw_orders"           one asset (``a/b`` for a prefixed key)
    "raw_orders+"          it and its children; "raw_orders++" two levels; "raw_orders*" all
    "+daily_report"        it and its parents; "*daily_report" all ancestors
    "group:sales"          a group;  "tag:team=finance" or "tag:team" by tag
    "group:sales+"         a group and one level downstream of it
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

from tidegate.definitions.key import AssetKey, CoercibleToAssetKey
from tidegate.errors import ExternalAssetError, InvalidDefinitionError, InvalidSelectionError

if TYPE_CHECKING:
    from tidegate.definitions.asset import AssetsDefinition
    from tidegate.definitions.graph import AssetGraph


class AssetSelection:
    """A set of assets computed against an asset graph."""

    def resolve(self, graph: AssetGraph) -> set[AssetKey]:
        raise NotImplementedError

    # -- constructors (Dagster's names) --------------------------------------------------

    @staticmethod
    def all() -> AssetSelection:
        return _All()

    @staticmethod
    def assets(*assets: AssetsDefinition | CoercibleToAssetKey) -> AssetSelection:
        return _Keys(tuple(AssetKey.from_coercible(a) for a in assets))

    @staticmethod
    def keys(*keys: CoercibleToAssetKey) -> AssetSelection:
        return _Keys(tuple(AssetKey.from_coercible(k) for k in keys))

    @staticmethod
    def groups(*names: str) -> AssetSelection:
        return _Groups(tuple(names))

    @staticmethod
    def tag(key: str, value: str | None = None) -> AssetSelection:
        return _Tag(key, value)

    @staticmethod
    def from_string(text: str) -> AssetSelection:
        return parse_selection(text)

    # -- combinators -----------------------------------------------------------------------

    def upstream(self, depth: int | None = None, include_self: bool = True) -> AssetSelection:
        return _Traverse(self, "up", depth, include_self)

    def downstream(self, depth: int | None = None, include_self: bool = True) -> AssetSelection:
        return _Traverse(self, "down", depth, include_self)

    def __or__(self, other: AssetSelection) -> AssetSelection:
        return _Combine(self, other, "|")

    def __and__(self, other: AssetSelection) -> AssetSelection:
        return _Combine(self, other, "&")

    def __sub__(self, other: AssetSelection) -> AssetSelection:
        return _Combine(self, other, "-")


CoercibleToAssetSelection = Union[str, AssetSelection, Iterable[Union[str, "AssetsDefinition", AssetKey]]]


@dataclass(frozen=True)
class _All(AssetSelection):
    def resolve(self, graph: AssetGraph) -> set[AssetKey]:
        return set(graph.assets)


@dataclass(frozen=True)
class _Keys(AssetSelection):
    selected: tuple[AssetKey, ...]

    def resolve(self, graph: AssetGraph) -> set[AssetKey]:
        missing = [str(k) for k in self.selected if k not in graph.assets]
        if missing:
            raise InvalidSelectionError(f"selection names unknown asset(s): {', '.join(missing)}")
        return set(self.selected)


@dataclass(frozen=True)
class _Groups(AssetSelection):
    names: tuple[str, ...]

    def resolve(self, graph: AssetGraph) -> set[AssetKey]:
        return {k for k, a in graph.assets.items() if a.group_name in self.names}


@dataclass(frozen=True)
class _Tag(AssetSelection):
    key: str
    value: str | None

    def resolve(self, graph: AssetGraph) -> set[AssetKey]:
        return {
            k
            for k, a in graph.assets.items()
            if self.key in a.tags and (self.value is None or a.tags[self.key] == self.value)
        }


@dataclass(frozen=True)
class _Traverse(AssetSelection):
    inner: AssetSelection
    direction: str
    depth: int | None
    include_self: bool

    def resolve(self, graph: AssetGraph) -> set[AssetKey]:
        base = self.inner.resolve(graph)
        walk = graph.ancestors if self.direction == "up" else graph.descendants
        found = walk(base, self.depth)
        return found | base if self.include_self else found - base


@dataclass(frozen=True)
class _Combine(AssetSelection):
    left: AssetSelection
    right: AssetSelection
    op: str

    def resolve(self, graph: AssetGraph) -> set[AssetKey]:
        a, b = self.left.resolve(graph), self.right.resolve(graph)
        return a | b if self.op == "|" else a & b if self.op == "&" else a - b


_CLAUSE = re.compile(r"^(?P<up>\*|\++)?(?P<core>[^*+]+|\*)(?P<down>\*|\++)?$")


def parse_selection(text: str) -> AssetSelection:
    """Parse the string form; raise InvalidSelectionError naming the bad clause."""
    clauses = [c.strip() for c in text.split(",")]
    if not text.strip() or any(not c for c in clauses):
        raise InvalidSelectionError(f"selection {text!r}: empty clause")
    result: AssetSelection | None = None
    for clause in clauses:
        selection = _parse_clause(clause, text)
        result = selection if result is None else result | selection
    assert result is not None
    return result


def _parse_clause(clause: str, text: str) -> AssetSelection:
    if clause == "*":
        return _All()
    match = _CLAUSE.match(clause)
    if not match:
        raise InvalidSelectionError(f"selection {text!r}: cannot parse clause {clause!r}")
    core = match["core"].strip()
    base: AssetSelection
    if core.startswith("group:"):
        group = core[len("group:") :].strip()
        if not group:
            raise InvalidSelectionError(f"selection {text!r}: clause {clause!r} names no group")
        base = _Groups((group,))
    elif core.startswith("tag:"):
        tag_key, _, tag_value = core[len("tag:") :].partition("=")
        if not tag_key.strip():
            raise InvalidSelectionError(f"selection {text!r}: clause {clause!r} names no tag key")
        base = _Tag(tag_key.strip(), tag_value.strip() if "=" in core else None)
    else:
        name = core[len("key:") :] if core.startswith("key:") else core
        try:
            base = _Keys((AssetKey.from_user_string(name),))
        except InvalidDefinitionError as exc:
            raise InvalidSelectionError(f"selection {text!r}: {exc}") from None
    up, down = match["up"], match["down"]
    # Both sides start from the clause's own assets, as in Dagster: "+a+" is a, its parents
    # and its children, not the children of a's parents too.
    result: AssetSelection = base
    if up:
        result = base.upstream(None if up == "*" else len(up))
    if down:
        downstream = base.downstream(None if down == "*" else len(down))
        result = result | downstream if up else downstream
    return result


def executable_keys(selection: AssetSelection, graph: AssetGraph, label: str) -> set[AssetKey]:
    """The assets of ``selection`` that tidegate materializes.

    External assets are left out when a group, tag, traversal or ``*`` reaches them (as
    Dagster leaves unexecutable assets out of jobs); naming one directly raises
    ExternalAssetError, since the caller asked to materialize exactly that asset.
    """
    keys = selection.resolve(graph)
    external = {k for k in keys if graph.assets[k].is_external}
    named = sorted(external & _named_keys(selection))
    if named:
        names = ", ".join(f"'{k}'" for k in named)
        raise ExternalAssetError(
            f"{label}: asset {names} is external (declared by AssetSpec or deps=, produced outside tidegate), "
            f"so it cannot be materialized; record its materializations with `tidegate assets report {named[0]}`"
        )
    return keys - external


def selects_everything(selection: AssetSelection) -> bool:
    """True for ``*`` / ``AssetSelection.all()``: such a job may be empty while no asset exists."""
    return isinstance(selection, _All)


def _named_keys(selection: AssetSelection) -> set[AssetKey]:
    """Keys a selection names as themselves: plain keys and unions of them, not traversals."""
    if isinstance(selection, _Keys):
        return set(selection.selected)
    if isinstance(selection, _Combine) and selection.op == "|":
        return _named_keys(selection.left) | _named_keys(selection.right)
    return set()


def coerce_selection(value: CoercibleToAssetSelection | None) -> AssetSelection:
    if value is None:
        return _All()
    if isinstance(value, AssetSelection):
        return value
    if isinstance(value, str):
        return parse_selection(value)
    result: AssetSelection | None = None
    for item in value:
        part = parse_selection(item) if isinstance(item, str) else AssetSelection.assets(item)
        result = part if result is None else result | part
    if result is None:
        raise InvalidSelectionError("selection is an empty list")
    return result
