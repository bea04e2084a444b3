"""Declarative automation: ``AutomationCondition`` trees, with Dagster's names and semantics.

A condition is a tree of operands (facts about one asset partition: ``missing()``,
``newly_updated()``, ``cron_tick_passed(...)``) joined by operators (``&``, ``|``, ``~``,
``A.since(B)``, ``newly_true()``, ``any_deps_match(c)``, ``all_deps_match(c)``). The composites
``eager()``, ``on_cron()`` and ``on_missing()`` are ordinary trees built from them, so
``.replace()``, ``.without()``, ``.allow()`` and ``.ignore()`` reach inside them.

This module only describes conditions (and validates them at once: a bad cron or timezone
fails at import); ``automation_evaluator`` evaluates them against a snapshot of the event log.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from tidegate.definitions.cron import validate_cron, validate_timezone
from tidegate.definitions.selection import AssetSelection
from tidegate.errors import InvalidDefinitionError

if TYPE_CHECKING:
    from tidegate.definitions.asset import AssetsDefinition

C = TypeVar("C", bound="AutomationCondition")


class AutomationCondition:
    """Base of every condition node (Dagster's ``AutomationCondition``).

    Nodes are frozen dataclasses: equal trees compare equal, so ``replace(old, new)`` finds
    ``old`` by value or by label.
    """

    label: str | None

    # -- what the evaluator and explain output read -----------------------------------------

    name: ClassVar[str] = ""  # the node's short name, e.g. ``missing`` or ``AND``
    _description: ClassVar[str] = ""

    @property
    def description(self) -> str:
        return self._description

    @property
    def children(self) -> tuple[AutomationCondition, ...]:
        return ()

    def display(self) -> str:
        """The label if one was given, else a readable expression of the tree."""
        return self._display

    @cached_property
    def _display(self) -> str:
        return self.label or self._expression()

    def _expression(self) -> str:
        return self.name

    def get_label(self) -> str | None:
        return self.label

    def with_label(self: C, label: str | None) -> C:
        """A copy carrying a human-readable label (shown by explain, matched by replace)."""
        return dataclasses.replace(self, label=label)  # type: ignore[type-var]

    def _with_children(self: C, children: Sequence[AutomationCondition]) -> C:
        return self

    def walk(self) -> Iterator[AutomationCondition]:
        yield self
        for child in self.children:
            yield from child.walk()

    def fingerprint(self) -> str:
        """A stable hash of the tree: a changed condition starts from a fresh cursor."""
        return self._fingerprint

    @cached_property
    def _fingerprint(self) -> str:
        return hashlib.sha256(repr(self).encode()).hexdigest()[:16]

    def template(self) -> str:
        """The tree as compact JSON, what an evaluation record needs to render it again
        (names, labels, cron and lookback parameters; not the allow/ignore selections, which
        no explanation shows); computed once. ``from_template`` reads it back."""
        return self._template

    @cached_property
    def _template(self) -> str:
        return json.dumps(self._template_value(), separators=(",", ":"))

    def template_digest(self) -> str:
        """A hash of ``template()`` (128 bits, hex), which a stored evaluation record names in
        place of the template itself (stored once, see ``Storage.automation_evaluations``)."""
        return self._template_digest

    @cached_property
    def _template_digest(self) -> str:
        return hashlib.sha256(self._template.encode()).hexdigest()[:32]

    def _template_value(self) -> list[Any]:
        value: list[Any] = [self.name, self.label, self._template_args()]
        value.extend(c._template_value() for c in self.children)
        return value

    def _template_args(self) -> list[Any]:
        return []

    @cached_property
    def is_stateful(self) -> bool:
        """Whether the tree keeps state between evaluations (SINCE, NEWLY_TRUE), so it must be
        evaluated even on no candidates."""
        return any(isinstance(n, SinceCondition | NewlyTrueCondition) for n in self.walk())

    @cached_property
    def reads_evaluation_state(self) -> bool:
        """Whether the tree reads the evaluated asset's own history (``initial_evaluation``,
        ``cron_tick_passed``): its result on a dependency then depends on who asks."""
        return any(isinstance(n, InitialEvaluationCondition | CronTickPassedCondition) for n in self.walk())

    @cached_property
    def cron_nodes(self) -> tuple[CronTickPassedCondition, ...]:
        return tuple(n for n in self.walk() if isinstance(n, CronTickPassedCondition))

    @cached_property
    def reads_beyond_deps(self) -> bool:
        """Whether a dependency condition nests another one (it reads dependencies' dependencies)."""
        return any(
            isinstance(n, DepsAutomationCondition)
            and any(isinstance(m, DepsAutomationCondition) for m in n.operand.walk())
            for n in self.walk()
        )

    # -- operators --------------------------------------------------------------------------

    def __and__(self, other: AutomationCondition) -> AndAutomationCondition:
        _check_operand("&", other)
        left = self.operands if isinstance(self, AndAutomationCondition) and self.label is None else (self,)
        right = other.operands if isinstance(other, AndAutomationCondition) and other.label is None else (other,)
        return AndAutomationCondition(operands=(*left, *right))

    def __or__(self, other: AutomationCondition) -> OrAutomationCondition:
        _check_operand("|", other)
        left = self.operands if isinstance(self, OrAutomationCondition) and self.label is None else (self,)
        right = other.operands if isinstance(other, OrAutomationCondition) and other.label is None else (other,)
        return OrAutomationCondition(operands=(*left, *right))

    def __invert__(self) -> NotAutomationCondition:
        return NotAutomationCondition(operand=self)

    def since(self, reset_condition: AutomationCondition) -> SinceCondition:
        """True once this condition has been true since ``reset_condition`` last became true."""
        _check_operand("since", reset_condition)
        return SinceCondition(trigger_condition=self, reset_condition=reset_condition)

    def newly_true(self) -> NewlyTrueCondition:
        """True only on the evaluation where this condition goes from false to true."""
        return NewlyTrueCondition(operand=self)

    def since_last_handled(self) -> SinceCondition:
        """True if this condition became true since the target was last requested or updated
        (or since this condition was first evaluated)."""
        handled = (
            AutomationCondition.newly_requested()
            | AutomationCondition.newly_updated()
            | AutomationCondition.initial_evaluation()
        ).with_label("handled")
        return self.since(handled)

    def replace(self, old: AutomationCondition | str, new: AutomationCondition) -> AutomationCondition:
        """Every sub-condition equal to ``old`` (or labelled ``old``) replaced by ``new``."""
        _check_operand("replace", new)
        if old == self or (isinstance(old, str) and old == self.label):
            return new
        if not self.children:
            return self
        return self._with_children([c.replace(old, new) for c in self.children])

    def allow(self, selection: AssetSelection) -> AutomationCondition:
        """Dependency conditions anywhere in this tree consider only dependencies in ``selection``."""
        return self._map_deps(lambda d: d._restricted(allow=_check_selection("allow", selection)))

    def ignore(self, selection: AssetSelection) -> AutomationCondition:
        """Dependency conditions anywhere in this tree leave out dependencies in ``selection``."""
        return self._map_deps(lambda d: d._restricted(ignore=_check_selection("ignore", selection)))

    def _map_deps(self, change: Callable[[DepsAutomationCondition], AutomationCondition]) -> AutomationCondition:
        node = self._with_children([c._map_deps(change) for c in self.children]) if self.children else self
        return change(node) if isinstance(node, DepsAutomationCondition) else node

    # -- operands (Dagster's static constructors) ----------------------------------------------

    @staticmethod
    def missing() -> AutomationCondition:
        return MissingCondition()

    @staticmethod
    def newly_missing() -> AutomationCondition:
        return AutomationCondition.missing().newly_true().with_label("newly_missing")

    @staticmethod
    def run_in_progress() -> AutomationCondition:
        return RunInProgressCondition()

    @staticmethod
    def backfill_in_progress() -> AutomationCondition:
        return BackfillInProgressCondition()

    @staticmethod
    def in_progress() -> AutomationCondition:
        return (AutomationCondition.run_in_progress() | AutomationCondition.backfill_in_progress()).with_label(
            "in_progress"
        )

    @staticmethod
    def execution_failed() -> AutomationCondition:
        return ExecutionFailedCondition()

    @staticmethod
    def newly_updated() -> AutomationCondition:
        return NewlyUpdatedCondition()

    @staticmethod
    def newly_requested() -> AutomationCondition:
        return NewlyRequestedCondition()

    @staticmethod
    def will_be_requested() -> AutomationCondition:
        return WillBeRequestedCondition()

    @staticmethod
    def initial_evaluation() -> AutomationCondition:
        return InitialEvaluationCondition()

    @staticmethod
    def cron_tick_passed(cron_schedule: str, cron_timezone: str = "UTC") -> AutomationCondition:
        return CronTickPassedCondition(cron_schedule=cron_schedule, cron_timezone=cron_timezone)

    @staticmethod
    def in_latest_time_window(lookback_delta: datetime.timedelta | None = None) -> AutomationCondition:
        return InLatestTimeWindowCondition(lookback_delta=lookback_delta)

    @staticmethod
    def any_deps_match(condition: AutomationCondition) -> DepsAutomationCondition:
        """True if ``condition`` holds for at least one partition of any dependency."""
        _check_operand("any_deps_match", condition)
        return AnyDepsCondition(operand=condition)

    @staticmethod
    def all_deps_match(condition: AutomationCondition) -> DepsAutomationCondition:
        """True if ``condition`` holds for at least one partition of every dependency."""
        _check_operand("all_deps_match", condition)
        return AllDepsCondition(operand=condition)

    @staticmethod
    def any_deps_updated() -> DepsAutomationCondition:
        return AutomationCondition.any_deps_match(
            AutomationCondition.newly_updated() | AutomationCondition.will_be_requested()
        ).with_label("any_deps_updated")

    @staticmethod
    def any_deps_missing() -> DepsAutomationCondition:
        return AutomationCondition.any_deps_match(
            AutomationCondition.missing() & ~AutomationCondition.will_be_requested()
        ).with_label("any_deps_missing")

    @staticmethod
    def any_deps_in_progress() -> DepsAutomationCondition:
        return AutomationCondition.any_deps_match(AutomationCondition.in_progress()).with_label("any_deps_in_progress")

    @staticmethod
    def all_deps_updated_since_cron(cron_schedule: str, cron_timezone: str = "UTC") -> DepsAutomationCondition:
        return AutomationCondition.all_deps_match(
            AutomationCondition.newly_updated().since(
                AutomationCondition.cron_tick_passed(cron_schedule, cron_timezone)
            )
            | AutomationCondition.will_be_requested()
        ).with_label(f"all_deps_updated_since_cron({cron_schedule}, {cron_timezone})")

    # -- composites ------------------------------------------------------------------------

    @staticmethod
    def eager() -> AndAutomationCondition:
        """Request the target when any dependency updates, or when it becomes missing after
        the condition was applied; never while a dependency is missing or in progress, or
        the target itself is in progress. Time-partitioned: only the latest partition."""
        return (
            AutomationCondition.in_latest_time_window()
            & (AutomationCondition.newly_missing() | AutomationCondition.any_deps_updated()).since_last_handled()
            & ~AutomationCondition.any_deps_missing()
            & ~AutomationCondition.any_deps_in_progress()
            & ~AutomationCondition.in_progress()
        ).with_label("eager")

    @staticmethod
    def on_cron(cron_schedule: str, cron_timezone: str = "UTC") -> AndAutomationCondition:
        """Request the target once per cron tick, as soon as every dependency has updated
        since that tick. Time-partitioned: only the latest partition."""
        return (
            AutomationCondition.in_latest_time_window()
            & AutomationCondition.cron_tick_passed(cron_schedule, cron_timezone).since_last_handled()
            & AutomationCondition.all_deps_updated_since_cron(cron_schedule, cron_timezone)
        ).with_label(f"on_cron({cron_schedule}, {cron_timezone})")

    @staticmethod
    def on_missing() -> AndAutomationCondition:
        """Request partitions that become missing after the condition was applied (new time
        partitions, for instance) once no dependency is missing."""
        return (
            AutomationCondition.in_latest_time_window()
            & AutomationCondition.missing().newly_true().since_last_handled().with_label("missing_since_last_handled")
            & ~AutomationCondition.any_deps_missing()
        ).with_label("on_missing")


def _check_operand(where: str, value: object) -> None:
    if not isinstance(value, AutomationCondition):
        raise InvalidDefinitionError(f"AutomationCondition {where}: expected an AutomationCondition, got {value!r}")


def _check_selection(where: str, value: object) -> AssetSelection:
    if not isinstance(value, AssetSelection):
        raise InvalidDefinitionError(f"AutomationCondition.{where}: expected an AssetSelection, got {value!r}")
    return value


# -- operands ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MissingCondition(AutomationCondition):
    label: str | None = None
    name = "missing"
    _description = "Target has not been materialized"


@dataclass(frozen=True)
class RunInProgressCondition(AutomationCondition):
    label: str | None = None
    name = "run_in_progress"
    _description = "Target is part of an in-progress run"


@dataclass(frozen=True)
class BackfillInProgressCondition(AutomationCondition):
    label: str | None = None
    name = "backfill_in_progress"
    _description = "Target is part of an in-progress backfill"


@dataclass(frozen=True)
class ExecutionFailedCondition(AutomationCondition):
    label: str | None = None
    name = "execution_failed"
    _description = "Latest execution of the target failed"


@dataclass(frozen=True)
class NewlyUpdatedCondition(AutomationCondition):
    label: str | None = None
    name = "newly_updated"
    _description = "Target was materialized since the previous evaluation"


@dataclass(frozen=True)
class NewlyRequestedCondition(AutomationCondition):
    label: str | None = None
    name = "newly_requested"
    _description = "Target was requested on the previous evaluation"


@dataclass(frozen=True)
class WillBeRequestedCondition(AutomationCondition):
    label: str | None = None
    name = "will_be_requested"
    _description = "Target will be requested in this evaluation, in a run the dependent can join"


@dataclass(frozen=True)
class InitialEvaluationCondition(AutomationCondition):
    label: str | None = None
    name = "initial_evaluation"
    _description = "This is the first evaluation of this condition"


@dataclass(frozen=True)
class CronTickPassedCondition(AutomationCondition):
    cron_schedule: str
    cron_timezone: str = "UTC"
    label: str | None = None

    def __post_init__(self) -> None:
        label = f"AutomationCondition.cron_tick_passed({self.cron_schedule!r}, {self.cron_timezone!r})"
        validate_cron(label, self.cron_schedule)
        validate_timezone(label, self.cron_timezone)

    name = "cron_tick_passed"

    @property
    def description(self) -> str:
        return f"A tick of '{self.cron_schedule}' ({self.cron_timezone}) passed since the previous evaluation"

    def _expression(self) -> str:
        return f"cron_tick_passed({self.cron_schedule}, {self.cron_timezone})"

    def _template_args(self) -> list[Any]:
        return [self.cron_schedule, self.cron_timezone]


@dataclass(frozen=True)
class InLatestTimeWindowCondition(AutomationCondition):
    lookback_delta: datetime.timedelta | None = None
    label: str | None = None

    def __post_init__(self) -> None:
        delta = self.lookback_delta
        if delta is not None and (not isinstance(delta, datetime.timedelta) or delta <= datetime.timedelta(0)):
            raise InvalidDefinitionError(
                f"AutomationCondition.in_latest_time_window: lookback_delta must be a positive timedelta, got {delta!r}"
            )

    name = "in_latest_time_window"

    @property
    def description(self) -> str:
        if self.lookback_delta is None:
            return "Within the latest time window"
        return f"Within {self.lookback_delta} of the end of the latest time window"

    def _template_args(self) -> list[Any]:
        return [] if self.lookback_delta is None else [self.lookback_delta.total_seconds()]


# -- operators -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AndAutomationCondition(AutomationCondition):
    operands: tuple[AutomationCondition, ...]
    label: str | None = None
    name = "AND"
    _description = "All of"

    @property
    def children(self) -> tuple[AutomationCondition, ...]:
        return self.operands

    def _with_children(self, children: Sequence[AutomationCondition]) -> AndAutomationCondition:
        return dataclasses.replace(self, operands=tuple(children))

    def _expression(self) -> str:
        return " & ".join(f"({c.display()})" for c in self.operands)

    def without(self, condition: AutomationCondition | str) -> AndAutomationCondition:
        """A copy without the operand equal to ``condition`` (or labelled ``condition``)."""
        kept = tuple(
            c for c in self.operands if not (c == condition or (isinstance(condition, str) and c.label == condition))
        )
        if len(kept) == len(self.operands):
            shown = condition if isinstance(condition, str) else condition.display()
            raise InvalidDefinitionError(
                f"AutomationCondition '{self.display()}'.without: no operand {shown!r} "
                f"(operands: {', '.join(repr(c.display()) for c in self.operands)})"
            )
        if len(kept) < 2:
            raise InvalidDefinitionError(
                f"AutomationCondition '{self.display()}'.without: an AND keeps at least 2 operands"
            )
        return dataclasses.replace(self, operands=kept)


@dataclass(frozen=True)
class OrAutomationCondition(AutomationCondition):
    operands: tuple[AutomationCondition, ...]
    label: str | None = None
    name = "OR"
    _description = "Any of"

    @property
    def children(self) -> tuple[AutomationCondition, ...]:
        return self.operands

    def _with_children(self, children: Sequence[AutomationCondition]) -> OrAutomationCondition:
        return dataclasses.replace(self, operands=tuple(children))

    def _expression(self) -> str:
        return " | ".join(f"({c.display()})" for c in self.operands)


@dataclass(frozen=True)
class NotAutomationCondition(AutomationCondition):
    operand: AutomationCondition
    label: str | None = None
    name = "NOT"
    _description = "Not"

    @property
    def children(self) -> tuple[AutomationCondition, ...]:
        return (self.operand,)

    def _with_children(self, children: Sequence[AutomationCondition]) -> NotAutomationCondition:
        return dataclasses.replace(self, operand=children[0])

    def _expression(self) -> str:
        return f"~{self.operand.display()}"


@dataclass(frozen=True)
class SinceCondition(AutomationCondition):
    trigger_condition: AutomationCondition
    reset_condition: AutomationCondition
    label: str | None = None
    name = "SINCE"
    _description = "Trigger condition has become true since the last time the reset condition became true"

    @property
    def children(self) -> tuple[AutomationCondition, ...]:
        return (self.trigger_condition, self.reset_condition)

    def _with_children(self, children: Sequence[AutomationCondition]) -> SinceCondition:
        return dataclasses.replace(self, trigger_condition=children[0], reset_condition=children[1])

    def _expression(self) -> str:
        return f"({self.trigger_condition.display()}) SINCE ({self.reset_condition.display()})"


@dataclass(frozen=True)
class NewlyTrueCondition(AutomationCondition):
    operand: AutomationCondition
    label: str | None = None
    name = "NEWLY_TRUE"
    _description = "Operand became true on this evaluation"

    @property
    def children(self) -> tuple[AutomationCondition, ...]:
        return (self.operand,)

    def _with_children(self, children: Sequence[AutomationCondition]) -> NewlyTrueCondition:
        return dataclasses.replace(self, operand=children[0])

    def _expression(self) -> str:
        return f"newly_true({self.operand.display()})"


@dataclass(frozen=True)
class DepsAutomationCondition(AutomationCondition):
    """Evaluates ``operand`` on the target's dependencies (each with its own partitions) and
    maps the result back to the target's partitions through the partition mapping."""

    operand: AutomationCondition
    allow_selection: AssetSelection | None = None
    ignore_selection: AssetSelection | None = None
    label: str | None = None

    @property
    def children(self) -> tuple[AutomationCondition, ...]:
        return (self.operand,)

    def _with_children(self: C, children: Sequence[AutomationCondition]) -> C:
        return dataclasses.replace(self, operand=children[0])  # type: ignore[type-var]

    def _restricted(
        self, allow: AssetSelection | None = None, ignore: AssetSelection | None = None
    ) -> DepsAutomationCondition:
        if allow is not None:
            merged = allow if self.allow_selection is None else self.allow_selection & allow
            return dataclasses.replace(self, allow_selection=merged)
        if ignore is not None:
            merged = ignore if self.ignore_selection is None else self.ignore_selection | ignore
            return dataclasses.replace(self, ignore_selection=merged)
        return self

    def _expression(self) -> str:
        return f"{self.name}({self.operand.display()})"


@dataclass(frozen=True)
class AnyDepsCondition(DepsAutomationCondition):
    name = "ANY_DEPS_MATCH"
    _description = "Any dependency matches"


@dataclass(frozen=True)
class AllDepsCondition(DepsAutomationCondition):
    name = "ALL_DEPS_MATCH"
    _description = "All dependencies match"


# -- templates: a tree read back from an evaluation record ------------------------------------------

# The operands: conditions on the asset's own state or on this evaluation, without children.
OPERAND_KINDS: tuple[type[AutomationCondition], ...] = (
    MissingCondition,
    RunInProgressCondition,
    BackfillInProgressCondition,
    ExecutionFailedCondition,
    NewlyUpdatedCondition,
    NewlyRequestedCondition,
    WillBeRequestedCondition,
    InitialEvaluationCondition,
    CronTickPassedCondition,
    InLatestTimeWindowCondition,
)

_KINDS: dict[str, type[AutomationCondition]] = {
    kind.name: kind
    for kinds in (
        OPERAND_KINDS,
        (
            AndAutomationCondition,
            OrAutomationCondition,
            NotAutomationCondition,
            SinceCondition,
            NewlyTrueCondition,
            AnyDepsCondition,
            AllDepsCondition,
        ),
    )
    for kind in kinds
}


def from_template(value: str | Sequence[Any]) -> AutomationCondition:
    """The tree ``AutomationCondition.template()`` describes (dependency conditions without
    their allow/ignore selections: it is read to explain an evaluation, not to evaluate)."""
    data: Sequence[Any] = json.loads(value) if isinstance(value, str) else value
    name, label, args, *raw = data
    kind = _KINDS.get(name)
    if kind is None:
        raise InvalidDefinitionError(f"AutomationCondition template: unknown node {name!r}")
    children = [from_template(c) for c in raw]
    node: AutomationCondition
    if kind is AndAutomationCondition or kind is OrAutomationCondition:
        node = kind(operands=tuple(children), label=label)  # type: ignore[call-arg]
    elif kind is SinceCondition:
        node = SinceCondition(trigger_condition=children[0], reset_condition=children[1], label=label)
    elif children:
        node = kind(operand=children[0], label=label)  # type: ignore[call-arg]
    elif kind is CronTickPassedCondition:
        node = CronTickPassedCondition(cron_schedule=args[0], cron_timezone=args[1], label=label)
    elif kind is InLatestTimeWindowCondition:
        delta = datetime.timedelta(seconds=float(args[0])) if args else None
        node = InLatestTimeWindowCondition(lookback_delta=delta, label=label)
    else:
        node = kind(label=label)  # type: ignore[call-arg]
    return node


# -- load-time checks ----------------------------------------------------------------------------


def check_automation_condition(label: str, condition: object) -> AutomationCondition | None:
    """``condition`` if it is an AutomationCondition (or None), else an error naming ``label``."""
    if condition is None or isinstance(condition, AutomationCondition):
        return condition
    raise InvalidDefinitionError(
        f"{label}: automation_condition must be an AutomationCondition (e.g. AutomationCondition.eager()), "
        f"got {condition!r}"
    )


def check_condition_executable(asset: AssetsDefinition) -> None:
    """An external asset cannot carry a condition: tidegate never materializes it."""
    if asset.is_external and asset.automation_condition is not None:
        raise InvalidDefinitionError(
            f"asset '{asset.key}': has an automation_condition but is external (declared by AssetSpec, "
            f"produced outside tidegate), so it cannot be materialized; put the condition on an @asset instead"
        )


def has_condition(asset: Any) -> bool:
    return getattr(asset, "automation_condition", None) is not None
