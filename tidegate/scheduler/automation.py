"""The beat's side of declarative automation: one tick of an automation condition sensor.

A tick reads the event log in a fixed number of queries (``Storage.automation_changes``: the
steps in progress, the log's upper ids, the materializations and step failures after the
cursor up to them), applies them to the state it keeps in memory (per asset: the partitions
materialized, those whose latest execution failed, those in progress), hands the evaluator
(:func:`tidegate.definitions.automation_evaluator.evaluate_automation`) the assets that changed,
groups what it requests into runs (and backfills for many partitions of one asset), and
returns a :class:`TickOutcome` that the beat commits in ONE transaction: the cursor, the tick,
the runs, the backfills and the evaluation records.

The in-memory state belongs to the cursor it was computed for (the event ids in it): it is
replaced only once the tick that produced it has committed, and thrown away (read again from
the history, two queries) when the stored cursor is not the one it belongs to (this beat just
started, another beat ticked, an operator reset the cursor). So a beat killed at any point
leaves a cursor and a state that agree, and the next tick starts from them: no request is lost
or made twice.

The sensor's cursor is ``"<materialization id>:<event id>:<conditions head JSON>"``, the head
``{"v": 2, "seq": N, "evaluation_time": ..., "partitions": ...}``; each asset's state is a row
of ``automation_cursor_entries`` (written when the asset is evaluated, in the tick's
transaction, with the head's sequence number). A head of version 1 held every asset's state.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from tidegate.definitions.automation_evaluator import (
    AssetSlice,
    AutomationCursor,
    AutomationResult,
    evaluate_automation,
    group_requests,
)
from tidegate.definitions.automation_records import AssetCursor
from tidegate.definitions.automation_sensor import AutomationConditionSensorDefinition
from tidegate.definitions.defs import Definitions
from tidegate.definitions.job import IMPLICIT_ASSET_JOB
from tidegate.definitions.key import AssetKey
from tidegate.definitions.partitions import PartitionsDefinition
from tidegate.definitions.selection import AssetSelection
from tidegate.errors import InstigatorEvaluationError
from tidegate.names import (
    ASSET_SELECTION_TAG,
    AUTOMATION_TAG,
    BACKFILL_TAG,
    PARTITION_RANGE_END_TAG,
    PARTITION_RANGE_START_TAG,
    PARTITION_TAG,
    SENSOR_TAG,
    TickStatus,
)
from tidegate.storage.api import Storage
from tidegate.storage.automation import (
    ActiveStep,
    AutomationChanges,
    CursorEntriesWrite,
    EvaluationWrite,
    PartitionEvent,
    PendingBackfill,
)
from tidegate.storage.instigators import AutomationWrites, PlannedBackfill, PlannedRun, TickOutcome

log = logging.getLogger("tidegate.automation")
_CURSOR_VERSION = 2  # the conditions head without the assets (they are rows of automation_cursor_entries)

Partition = str | None
_EMPTY: frozenset[Partition] = frozenset()
_NEVER = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True)
class AssetState:
    """What the event log says of every asset, as of a cursor's event ids."""

    materializations: int  # the upper materialization id it reflects
    events: int  # the upper event id it reflects
    materialized: Mapping[AssetKey, frozenset[Partition]]
    failed: Mapping[AssetKey, frozenset[Partition]]
    run_in_progress: Mapping[AssetKey, frozenset[Partition]] = field(default_factory=dict)
    backfill_in_progress: Mapping[AssetKey, frozenset[Partition]] = field(default_factory=dict)


def parse_cursor(label: str, cursor: str | None) -> tuple[int, int, str] | None:
    """(materialization id, event id, conditions cursor JSON), or None for a first tick."""
    if not cursor:
        return None
    try:
        materialization, event, conditions = cursor.split(":", 2)
        return int(materialization), int(event), conditions
    except ValueError:
        raise InstigatorEvaluationError(
            f"{label}: cursor {cursor[:40]!r}... is not an automation cursor "
            "(reset it with `tidegate sensor cursor --reset`)"
        ) from None


class _Inputs:
    """``AutomationInputs`` over one tick's state: slices built on demand, partition keys
    computed once per partitions definition."""

    def __init__(
        self,
        defs: Definitions,
        state: AssetState,
        updated: Mapping[AssetKey, frozenset[Partition]],
        partitions: Callable[[PartitionsDefinition], list[str]],
    ) -> None:
        self.defs, self.state, self.updated, self._partitions = defs, state, updated, partitions

    def slice(self, key: AssetKey) -> AssetSlice:
        s = self.state
        return AssetSlice(
            materialized=s.materialized.get(key, _EMPTY),
            updated=self.updated.get(key, _EMPTY),
            failed=s.failed.get(key, _EMPTY),
            run_in_progress=s.run_in_progress.get(key, _EMPTY),
            backfill_in_progress=s.backfill_in_progress.get(key, _EMPTY),
        )

    def partition_keys(self, key: AssetKey) -> Sequence[Partition]:
        partitions_def = self.defs.graph.assets[key].partitions_def
        return [None] if partitions_def is None else self._partitions(partitions_def)


@dataclass
class AutomationTick:
    """One evaluation, ready to commit; ``install`` keeps its state once committed."""

    outcome: TickOutcome
    install: Callable[[], None]
    result: AutomationResult | None = None
    evaluated: int = 0  # assets evaluated (the records are dropped before the commit)


class AutomationTicks:
    """Evaluates automation condition sensors for one beat; keeps, per sensor, the state of the
    last cursor it committed (see the module docstring)."""

    def __init__(self, defs: Definitions, storage: Storage) -> None:
        self.defs = defs
        self.storage = storage
        self._state: dict[str, AssetState] = {}
        self._stored: dict[str, dict[AssetKey, str]] = {}  # per sensor: each asset's last stored record, digested
        # per sensor: the conditions cursor JSON it last committed and its parse (a tick whose
        # stored cursor is that text reuses it rather than parsing half a megabyte again)
        self._parsed: dict[str, tuple[str, AutomationCursor, int]] = {}  # (head text, cursor, sequence number)
        self._targets: dict[str, tuple[AutomationConditionSensorDefinition, list[AssetKey]]] = {}
        self._templates: set[str] = set()  # digests of the condition templates a committed tick stored

    def evaluate(
        self, sensor: AutomationConditionSensorDefinition, cursor: str | None, now: datetime
    ) -> AutomationTick:
        """Evaluate ``sensor`` at ``now`` from its stored ``cursor`` (see the module docstring)."""
        partition_cache: dict[PartitionsDefinition, list[str]] = {}

        def partition_keys(partitions_def: PartitionsDefinition) -> list[str]:
            if partitions_def not in partition_cache:
                partition_cache[partitions_def] = partitions_def.get_partition_keys(
                    now, self.storage.dynamic_partition_keys
                )
            return partition_cache[partitions_def]

        parsed = parse_cursor(sensor.label, cursor)
        if parsed is None:
            materialization, event = self.storage.event_log_horizons()
            conditions, seq, whole = AutomationCursor(), 0, True
        else:
            materialization, event, text = parsed
            known = self._parsed.get(sensor.name)
            if known is not None and known[0] == text:
                conditions, seq, whole = known[1], known[2], False
            else:
                conditions, seq, whole = self._read_conditions(sensor, text)
        state = self._state.get(sensor.name)
        if state is None or (state.materializations, state.events) != (materialization, event):
            state = self._load(materialization, event, partition_keys)
        changes = self.storage.automation_changes(materialization, event)
        fresh, updated, changed = _apply(self.defs, state, changes, partition_keys)
        graph = self.defs.graph
        known_targets = self._targets.get(sensor.name)
        if known_targets is None or known_targets[0] is not sensor:  # resolved once per sensor definition
            selected = sensor.selection.resolve(graph)
            known_targets = self._targets[sensor.name] = (
                sensor,
                [k for k in selected if graph.assets[k].automation_condition is not None],
            )
            graph.steps  # noqa: B018 - the layout runs are planned from, derived once per graph: on the first tick
        targets = known_targets[1]
        inputs = _Inputs(self.defs, fresh, updated, partition_keys)
        # The evaluation allocates tens of thousands of short-lived, acyclic objects per
        # thousand assets evaluated (the records' trees above all): the cyclic collector's
        # sweeps meanwhile are pure cost (reference counting frees them; a later collection
        # finds any cycle). Measured: on a tick evaluating 4,400 assets the collector took
        # about as long as the evaluation. So it is off until the records are serialized,
        # and the trees are dropped before the tick commits (the beat keeps it off until the
        # tick committed: see ``collector_paused``).
        with collector_paused():
            result = evaluate_automation(graph, targets, inputs, now, conditions, changed)
            stored = dict(self._stored.get(sensor.name, {}))
            outcome, conditions_text, next_seq = self._outcome(
                sensor,
                result,
                now,
                changes,
                stored,
                conditions,
                cursor,
                None if parsed is None else parsed[2],
                seq,
                whole,
            )
            evaluated = len(result.evaluations)
            result.evaluations.clear()  # serialized into the outcome's writes

        def install() -> None:
            self._templates.update(outcome.automation.templates if outcome.automation is not None else ())
            self._state[sensor.name] = fresh
            self._stored[sensor.name] = stored
            self._parsed[sensor.name] = (conditions_text, result.cursor, next_seq)

        return AutomationTick(outcome, install, result, evaluated)

    def conditions_cursor(self, sensor: AutomationConditionSensorDefinition, cursor: str | None) -> AutomationCursor:
        """The conditions cursor (every asset's state) that the sensor's stored ``cursor``
        stands for, as the next evaluation would start from it."""
        parsed = parse_cursor(sensor.label, cursor)
        if parsed is None:
            return AutomationCursor()
        known = self._parsed.get(sensor.name)
        if known is not None and known[0] == parsed[2]:
            return known[1]
        return self._read_conditions(sensor, parsed[2])[0]

    def _read_conditions(
        self, sensor: AutomationConditionSensorDefinition, text: str
    ) -> tuple[AutomationCursor, int, bool]:
        """The conditions cursor of a stored head (this beat did not commit it): its per-asset
        entries read from storage (one query), with the head's sequence number; a cursor of an
        earlier version (the entries inline, in the head) is parsed as it is and its entries
        are all written on the next commit (the third value)."""
        head = json.loads(text) if text else {}
        if not isinstance(head, dict) or head.get("v") != _CURSOR_VERSION:
            return AutomationCursor.from_json(text), 0, True
        seq = int(head["seq"])
        assets: dict[AssetKey, AssetCursor] = {}
        for name, written, entry in self.storage.automation_cursor_entries(sensor.name):
            if written > seq:
                raise InstigatorEvaluationError(
                    f"{sensor.label}: its cursor (sequence {seq}) is older than the per-asset state stored "
                    f"with it (sequence {written}); reset it with `tidegate sensor cursor --reset`"
                )
            assets[AssetKey.from_user_string(name)] = AssetCursor.from_dict(json.loads(entry))
        return AutomationCursor(head.get("evaluation_time"), assets, head.get("partitions", "")), seq, False

    def _load(
        self, materialization: int, event: int, partition_keys: Callable[[PartitionsDefinition], list[str]]
    ) -> AssetState:
        """The state as of ``materialization`` (an id), read from the history (two queries)."""
        materialized_rows, failed_rows = self.storage.automation_history(materialization)
        latest: dict[tuple[AssetKey, Partition], datetime] = {}
        materialized: dict[AssetKey, set[Partition]] = {}
        keys: dict[str, tuple[AssetKey, Mapping[str, str]]] = {}
        canonical = _Canonical(self.defs, partition_keys)
        for name, partition, when in materialized_rows:
            found = keys.get(name)
            if found is None:
                key = AssetKey.from_user_string(name)
                found = keys[name] = (key, canonical.of(key))
            key = found[0]
            if partition is not None:
                partition = found[1].get(partition, partition)
            materialized.setdefault(key, set()).add(partition)
            latest[key, partition] = when
        failed: dict[AssetKey, set[Partition]] = {}
        for row in failed_rows:
            key = AssetKey.from_user_string(row.asset_key)
            for partition in _partitions_of(self.defs, key, row.tags or {}, partition_keys):
                if row.timestamp > latest.get((key, partition), _NEVER):
                    failed.setdefault(key, set()).add(partition)
        state = AssetState(
            materialization,
            event,
            {k: frozenset(v) for k, v in materialized.items()},
            {k: frozenset(v) for k, v in failed.items()},
        )
        # Millions of partition keys live as long as the beat: keep them out of the cyclic
        # garbage collector's sweeps (each full collection would walk them all, seconds per tick;
        # they hold no cycles and are still freed by reference counting once replaced).
        gc.collect()
        gc.freeze()
        return state

    def _outcome(
        self,
        sensor: AutomationConditionSensorDefinition,
        result: AutomationResult,
        now: datetime,
        changes: AutomationChanges,
        stored: dict[AssetKey, str],
        previous: AutomationCursor,
        stored_cursor: str | None,
        previous_text: str | None,
        seq: int,
        whole: bool,
    ) -> tuple[TickOutcome, str, int]:
        """The tick to commit, its conditions head and sequence number; ``stored`` (each
        asset's last stored record digest) is updated with the records it writes. ``whole``:
        every cursor entry is written (a first tick, or a cursor of an earlier version)."""
        runs: list[PlannedRun] = []
        backfills: list[PlannedBackfill] = []
        runs_of: dict[AssetKey, list[int]] = {}
        backfills_of: dict[AssetKey, list[int]] = {}
        tags = {**sensor.run_tags, AUTOMATION_TAG: sensor.name, SENSOR_TAG: sensor.name}
        for group in group_requests(self.defs.graph, result.requested):
            names = [k.to_user_string() for k in group.asset_keys]
            if group.is_backfill:
                for key in group.asset_keys:
                    backfills_of.setdefault(key, []).append(len(backfills))
                backfills.append(
                    PlannedBackfill(
                        IMPLICIT_ASSET_JOB,
                        list(group.partition_keys),
                        {**tags, ASSET_SELECTION_TAG: json.dumps(names)},
                    )
                )
                continue
            plan = self.defs.plan(
                IMPLICIT_ASSET_JOB,
                AssetSelection.assets(*group.asset_keys),  # flat: a list of thousands would nest unions
                partition_key=group.partition_key,
                dynamic_keys=self.storage.dynamic_partition_keys,
                current_time=now,
            )
            for key in group.asset_keys:
                runs_of.setdefault(key, []).append(len(runs))
            runs.append(PlannedRun(plan, None, tags))
        writes = []
        templates: dict[str, str] = {}
        time_text = f'"evaluation_time":{json.dumps(now.isoformat())}'
        for name, key, record in sorted((k.to_user_string(), k, r) for k, r in result.evaluations.items()):
            data = record.to_stored_json()  # serialized once: the digest and the stored text
            digest = _digest(data, time_text if record.evaluation_time is now else None, record.evaluation_time)
            if record.requested_count or stored.get(key) != digest:  # else the stored one still says it all
                stored[key] = digest
                condition = record.condition
                if condition is not None and condition.template_digest() not in self._templates:
                    templates[condition.template_digest()] = condition.template()
                writes.append(
                    EvaluationWrite(
                        name,
                        record.requested_count,
                        data,
                        tuple(runs_of.get(key, ())),
                        tuple(backfills_of.get(key, ())),
                    )
                )
        requested = sum(len(v) for v in result.requested.values())
        # The cursor: a small head on the instigator row, each asset's entry in its own row,
        # written only for the assets evaluated (an entry's JSON is serialized once per
        # AssetCursor). Nothing evaluated, no partition gained: the head stands as it was
        # (only the evaluation time of the whole would differ, which nothing reads).
        assets = result.cursor.assets
        if whole:
            entries = {k.to_user_string(): c.json_fragment for k, c in assets.items()}
        else:
            entries = {k.to_user_string(): assets[k].json_fragment for k in result.evaluations}
        removed: tuple[str, ...] = ()
        domain = result.cursor.__dict__.get("_domain")
        if not whole and (domain is None or previous.__dict__.get("_domain") is not domain):
            removed = tuple(sorted(k.to_user_string() for k in previous.assets.keys() - assets.keys()))
        write = whole or bool(entries) or bool(removed)
        next_seq = seq + 1 if write else seq
        if (
            not write
            and previous_text is not None
            and result.cursor.partitions_fingerprint == previous.partitions_fingerprint
        ):
            conditions = previous_text
        else:
            conditions = json.dumps(
                {
                    "v": _CURSOR_VERSION,
                    "seq": next_seq,
                    "evaluation_time": result.cursor.evaluation_time,
                    "partitions": result.cursor.partitions_fingerprint,
                },
                separators=(",", ":"),
            )
        cursor = f"{changes.materializations_upper}:{changes.events_upper}:{conditions}"
        outcome = TickOutcome(
            TickStatus.SUCCESS if runs or backfills else TickStatus.SKIPPED,
            runs=runs,
            skip_reason=None if requested else "no asset's condition requested a run",
            cursor_set=cursor != stored_cursor,
            cursor=cursor,
            automation=AutomationWrites(
                sensor.name,
                now,
                backfills,
                writes,
                CursorEntriesWrite(next_seq, entries, removed, whole) if write else None,
                templates,
            ),
        )
        return outcome, conditions, next_seq


def _digest(record: str, time_text: str | None, evaluation_time: datetime) -> str:
    """What a record (its JSON text) says, its evaluation time (``time_text``, its member in
    the text, when known) left out: equal digests, nothing new to store."""
    if time_text is None:
        time_text = f'"evaluation_time":{json.dumps(evaluation_time.isoformat())}'
    return hashlib.sha1(record.replace(time_text, "", 1).encode()).hexdigest()


def _partitions_of(
    defs: Definitions,
    key: AssetKey,
    tags: Mapping[str, str],
    partition_keys: Callable[[PartitionsDefinition], list[str]],
) -> Iterable[Partition]:
    """The partitions of ``key`` a run with ``tags`` executes: its partition, every partition
    of its range, or None for an unpartitioned asset."""
    asset = defs.graph.assets.get(key)
    if asset is None or asset.partitions_def is None:
        return [None]
    if PARTITION_TAG in tags:
        return [tags[PARTITION_TAG]]
    start, end = tags.get(PARTITION_RANGE_START_TAG), tags.get(PARTITION_RANGE_END_TAG)
    if start is None or end is None:
        return []
    keys = partition_keys(asset.partitions_def)
    try:
        return keys[keys.index(start) : keys.index(end) + 1]
    except ValueError:  # the range's keys no longer exist
        return []


_PAUSE = threading.Lock()
_PAUSED = [0, False]  # holders of collector_paused, and whether the collector was on before the first


@contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off while this (or another thread's) block runs, on again
    after the last one if it was on before the first (sensor evaluations overlap in threads).

    An automation tick leaves ~50,000 tracked objects alive until it commits (the new cursor,
    the records' writes, a plan's thousands of steps): with the collector on, a young
    collection scans them all when the evaluation ends and a collection of the middle
    generation again during the commit (bench/automation.py's 1%-updated tick: ~20 + ~30 ms).
    The beat holds this from the evaluation through the commit, so the writes and plans are
    freed by reference counting before any scan, and the collection after the tick scans what
    stays (the cursor: ~12 ms). Reference counting still frees everything acyclic meanwhile;
    a cycle made meanwhile, by any thread, waits for that collection."""
    with _PAUSE:
        if _PAUSED[0] == 0:
            _PAUSED[1] = gc.isenabled()
            gc.disable()
        _PAUSED[0] += 1
    try:
        yield
    finally:
        with _PAUSE:
            _PAUSED[0] -= 1
            if _PAUSED[0] == 0 and _PAUSED[1]:
                gc.enable()


class _Canonical:
    """Each asset's partition keys as its partitions definition's own string objects (the
    ones ``partition_keys`` lists, tick after tick), for the keys read from the log.

    The evaluator compares an asset's materialized partitions with all of its partitions
    (``missing``): with equal strings that are other objects, scattered over the heap as the
    history's rows were read, each of the thousand lookups per asset compares the strings'
    contents, a cache miss each (measured: ~110 us per daily asset over 3 years, ~0.1 s of the
    bench's 1%-updated tick); with the same objects, a set lookup matches on identity."""

    def __init__(self, defs: Definitions, partition_keys: Callable[[PartitionsDefinition], list[str]]) -> None:
        self.defs, self.partition_keys = defs, partition_keys
        self._of: dict[PartitionsDefinition, Mapping[str, str]] = {}

    def of(self, key: AssetKey) -> Mapping[str, str]:
        """The canonical string of each partition key of ``key`` (nothing for an unknown or
        unpartitioned asset)."""
        asset = self.defs.graph.assets.get(key)
        if asset is None or asset.partitions_def is None:
            return {}
        found = self._of.get(asset.partitions_def)
        if found is None:
            found = self._of[asset.partitions_def] = {k: k for k in self.partition_keys(asset.partitions_def)}
        return found


def _apply(
    defs: Definitions,
    state: AssetState,
    changes: AutomationChanges,
    partition_keys: Callable[[PartitionsDefinition], list[str]],
) -> tuple[AssetState, dict[AssetKey, frozenset[Partition]], set[AssetKey]]:
    """``state`` moved on by ``changes`` (a new state; ``state`` is left as it was), the
    partitions updated per asset, and the assets whose facts changed."""
    events: list[tuple[datetime, int, AssetKey, Partition]] = []  # (time, 1 materialized / 0 failed, ...)
    canonical = _Canonical(defs, partition_keys)
    for row in changes.materialized:
        key = AssetKey.from_user_string(row.asset_key)
        partition = row.partition_key
        if partition is not None:
            partition = canonical.of(key).get(partition, partition)
        events.append((row.timestamp, 1, key, partition))
    for row in changes.failed:
        key = AssetKey.from_user_string(row.asset_key)
        events += [(row.timestamp, 0, key, p) for p in _partitions_of(defs, key, row.tags or {}, partition_keys)]
    events.sort(key=lambda e: (e[0], e[1]))
    materialized = dict(state.materialized)
    failed = dict(state.failed)
    updated: dict[AssetKey, set[Partition]] = {}
    for _, kind, key, partition in events:
        if kind:
            materialized[key] = materialized.get(key, _EMPTY) | {partition}
            failed[key] = failed.get(key, _EMPTY) - {partition}
            updated.setdefault(key, set()).add(partition)
        else:
            failed[key] = failed.get(key, _EMPTY) | {partition}
    running, backfilling = _in_progress(defs, changes.active, changes.backfills, changes.settling, partition_keys)
    changed = {key for _, _, key, _ in events}
    for before, after in ((state.run_in_progress, running), (state.backfill_in_progress, backfilling)):
        changed |= {k for k in before.keys() | after.keys() if before.get(k, _EMPTY) != after.get(k, _EMPTY)}
    fresh = AssetState(changes.materializations_upper, changes.events_upper, materialized, failed, running, backfilling)
    return fresh, {k: frozenset(v) for k, v in updated.items()}, changed


def _in_progress(
    defs: Definitions,
    active: Sequence[ActiveStep],
    backfills: Sequence[PendingBackfill],
    settling: Sequence[PartitionEvent],
    partition_keys: Callable[[PartitionsDefinition], list[str]],
) -> tuple[dict[AssetKey, frozenset[Partition]], dict[AssetKey, frozenset[Partition]]]:
    running: dict[AssetKey, set[Partition]] = {}
    backfilling: dict[AssetKey, set[Partition]] = {}
    for step in active:
        key = AssetKey.from_user_string(step.asset_key)
        into = backfilling if BACKFILL_TAG in step.tags else running
        into.setdefault(key, set()).update(_partitions_of(defs, key, step.tags, partition_keys))
    for outcome in settling:  # done, but above the snapshot's upper ids
        key = AssetKey.from_user_string(outcome.asset_key)
        partitions = (
            [outcome.partition_key] if outcome.tags is None else _partitions_of(defs, key, outcome.tags, partition_keys)
        )
        running.setdefault(key, set()).update(partitions)
    for backfill in backfills:  # requested, its runs not all submitted yet
        for name in backfill.asset_keys:
            backfilling.setdefault(AssetKey.from_user_string(name), set()).update(backfill.partition_keys)
    return {k: frozenset(v) for k, v in running.items()}, {k: frozenset(v) for k, v in backfilling.items()}


__all__ = ["AssetState", "AutomationTick", "AutomationTicks", "PartitionEvent", "collector_paused", "parse_cursor"]
