"""``s3_sensor``: one run per new S3 object, at any bucket size.

Every object found is requested as ``RunRequest(run_key=f"{key}@{etag}")`` with the tags
``tidegate/s3_bucket``, ``tidegate/s3_key``, ``tidegate/s3_etag`` and ``tidegate/s3_size``; a
re-written object (new ETag) is therefore a new arrival, and an object found twice is dropped
by the beat, which never reuses a sensor's run key. The cursor is committed with the runs in
one transaction, so a beat killed mid-tick loses and duplicates nothing. Three modes:

``ordered``
    Keys arrive in increasing lexicographic order (timestamps or sequence numbers in the
    name). The cursor is the last key; a tick lists with ``StartAfter=cursor``: one LIST
    request per 1,000 new keys (one when there is none), whatever the bucket holds.
``any`` (default)
    Any naming. A tick lists the whole prefix (``ceil(N / 1000)`` LIST requests for N
    objects) and requests every object not seen before. The cursor holds a watermark (S3's
    own clock, from the listing's ``Date`` header, minus ``lag_seconds``) and 64-bit hashes of
    the (key, ETag) pairs already requested whose LastModified is above the watermark: its
    size is bounded by the number of objects written within ``lag_seconds``, not the bucket.
    An object is new when its LastModified is above the watermark and its hash is not in the
    cursor. ``lag_seconds`` must exceed the longest upload: S3 stamps an object with the time
    its upload *started* (multipart: when it was initiated).
``events``
    S3 event notifications delivered to an SQS queue (``queue_url``): cost grows with the
    number of events, not the bucket. Messages are deleted only after the tick's runs are
    committed (``SensorResult.on_commit``); a tick that does not commit leaves them to
    reappear after ``visibility_timeout_seconds``.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import heapq
import inspect
import json
import logging
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

from tidegate.definitions.instigator import DefaultSensorStatus
from tidegate.definitions.partitions import DynamicPartitionsDefinition
from tidegate.definitions.run_request import MAX_RUN_KEY_LENGTH, RunRequest, SensorResult, SkipReason
from tidegate.definitions.sensor import (
    DEFAULT_MINIMUM_INTERVAL,
    DEFAULT_TIME_LIMIT,
    SensorDefinition,
    SensorEvaluationContext,
    make_sensor,
)
from tidegate.errors import InstigatorEvaluationError, InvalidDefinitionError
from tidegate.names import S3_BUCKET_TAG as BUCKET_TAG
from tidegate.names import S3_ETAG_TAG as ETAG_TAG
from tidegate.names import S3_KEY_TAG as KEY_TAG
from tidegate.names import S3_SIZE_TAG as SIZE_TAG
from tidegate.s3.resource import S3Resource

MODES = ("ordered", "any", "events")
LIST_PAGE = 1000  # the most keys one ListObjectsV2 request returns
SQS_BATCH = 10  # the most messages one ReceiveMessage / DeleteMessageBatch handles
MAX_PARTITION_KEY_LENGTH = 255  # dynamic_partitions.partition_key is VARCHAR(255)
DEFAULT_MAX_RUNS_PER_TICK = 1000
DEFAULT_LAG_SECONDS = 900.0
_PARTITION_KEY_UNSAFE = set("%/\\,[]")

log = logging.getLogger("tidegate.s3")


@dataclass(frozen=True)
class S3Object:
    """One object as a listing or an event notification describes it."""

    key: str
    etag: str
    size: int
    last_modified_ms: int = 0  # milliseconds since the epoch (0: unknown, from an event)


def s3_sensor(
    name: str,
    bucket: str,
    prefix: str = "",
    pattern: str | None = None,
    *,
    target: Any = None,
    mode: str = "any",
    queue_url: str | None = None,
    partitions_def: DynamicPartitionsDefinition | None = None,
    partition_key_fn: Callable[[str], str] | None = None,
    max_runs_per_tick: int = DEFAULT_MAX_RUNS_PER_TICK,
    minimum_interval_seconds: float = DEFAULT_MINIMUM_INTERVAL,
    time_limit_seconds: float = DEFAULT_TIME_LIMIT,
    default_status: DefaultSensorStatus = DefaultSensorStatus.STOPPED,
    resource_key: str = "s3",
    lag_seconds: float = DEFAULT_LAG_SECONDS,
    visibility_timeout_seconds: int = 120,
    wait_time_seconds: int = 1,
) -> SensorDefinition:
    """One run per new object under ``s3://bucket/prefix`` whose key after the prefix matches
    the glob ``pattern`` (``*`` also matches ``/``; None: every key). The S3 client comes from
    the ``S3Resource`` named ``resource_key``. See the module docstring for the modes."""
    label = f"sensor {name!r}"
    _check_definition(
        label, bucket, prefix, pattern, mode, queue_url, partitions_def, partition_key_fn, max_runs_per_tick
    )
    if not isinstance(resource_key, str) or not resource_key.isidentifier():
        raise InvalidDefinitionError(f"{label}: resource_key must be an identifier, got {resource_key!r}")
    if not isinstance(lag_seconds, int | float) or lag_seconds < 0:
        raise InvalidDefinitionError(f"{label}: lag_seconds must be >= 0, got {lag_seconds!r}")
    if not isinstance(visibility_timeout_seconds, int) or not 0 < visibility_timeout_seconds <= 43_200:
        raise InvalidDefinitionError(
            f"{label}: visibility_timeout_seconds must be an int in 1..43200, got {visibility_timeout_seconds!r}"
        )
    if not isinstance(wait_time_seconds, int) or not 0 <= wait_time_seconds <= 20:
        raise InvalidDefinitionError(f"{label}: wait_time_seconds must be an int in 0..20, got {wait_time_seconds!r}")
    watch = _Watch(
        name=name,
        bucket=bucket,
        prefix=prefix,
        pattern=pattern,
        partitions_def=partitions_def,
        partition_key_fn=partition_key_fn or default_partition_key,
        cap=max_runs_per_tick,
    )

    def evaluate(context: SensorEvaluationContext, **resources: Any) -> SensorResult:
        resource = resources[resource_key]
        if not isinstance(resource, S3Resource):
            raise InstigatorEvaluationError(
                f"{label}: resource {resource_key!r} is a {type(resource).__name__}, not an S3Resource"
            )
        cursor = _load_cursor(label, mode, context.cursor)
        if mode == "ordered":
            result = watch.ordered(resource.get_client(), cursor)
        elif mode == "any":
            result = watch.any(resource.get_client(), cursor, lag_ms=int(lag_seconds * 1000))
        else:
            assert queue_url is not None
            return watch.events(resource.get_sqs_client(), queue_url, visibility_timeout_seconds, wait_time_seconds)
        if result.cursor == context.cursor:  # unchanged: the tick leaves the stored cursor alone
            result = replace(result, cursor=None)
        return result

    # The beat passes resources by parameter name: expose exactly (context, <resource_key>).
    evaluate.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter("context", inspect.Parameter.POSITIONAL_OR_KEYWORD),
            inspect.Parameter(resource_key, inspect.Parameter.KEYWORD_ONLY, annotation=S3Resource),
        ]
    )
    evaluate.__name__ = name
    where = f"s3://{bucket}/{prefix}"
    return make_sensor(
        evaluate,
        name=name,
        job=None,
        target=target,
        minimum_interval_seconds=minimum_interval_seconds,
        time_limit_seconds=time_limit_seconds,
        default_status=default_status,
        description=f"One run per new object{f' matching {pattern!r}' if pattern else ''} in {where} ({mode})",
    )


def _check_definition(
    label: str,
    bucket: Any,
    prefix: Any,
    pattern: Any,
    mode: Any,
    queue_url: Any,
    partitions_def: Any,
    partition_key_fn: Any,
    max_runs_per_tick: Any,
) -> None:
    if not isinstance(bucket, str) or not bucket or "/" in bucket:
        raise InvalidDefinitionError(f"{label}: bucket must be a bucket name (no 's3://', no '/'), got {bucket!r}")
    if not isinstance(prefix, str):
        raise InvalidDefinitionError(f"{label}: prefix must be a string, got {prefix!r}")
    if pattern is not None and (not isinstance(pattern, str) or not pattern):
        raise InvalidDefinitionError(f"{label}: pattern must be a non-empty glob or None, got {pattern!r}")
    if mode not in MODES:
        raise InvalidDefinitionError(f"{label}: mode must be one of {', '.join(MODES)}; got {mode!r}")
    if mode == "events" and not (isinstance(queue_url, str) and queue_url):
        raise InvalidDefinitionError(f"{label}: mode='events' needs queue_url (the SQS queue S3 notifies)")
    if mode != "events" and queue_url is not None:
        raise InvalidDefinitionError(f"{label}: queue_url is only used with mode='events' (mode is {mode!r})")
    if partitions_def is not None and not isinstance(partitions_def, DynamicPartitionsDefinition):
        raise InvalidDefinitionError(
            f"{label}: partitions_def must be a DynamicPartitionsDefinition (one partition per object), "
            f"got {type(partitions_def).__name__}"
        )
    if partition_key_fn is not None and (partitions_def is None or not callable(partition_key_fn)):
        raise InvalidDefinitionError(f"{label}: partition_key_fn needs partitions_def and must be callable")
    if not isinstance(max_runs_per_tick, int) or isinstance(max_runs_per_tick, bool) or max_runs_per_tick < 1:
        raise InvalidDefinitionError(f"{label}: max_runs_per_tick must be an int >= 1, got {max_runs_per_tick!r}")


# -- keys --------------------------------------------------------------------------------------


def default_partition_key(key: str) -> str:
    """The object key as a partition key: ``%``, ``/``, ``\\``, ``,``, ``[``, ``]`` and control
    characters percent-encoded (partition keys may not hold them; a key ``.`` or ``..`` becomes
    ``%2E`` or ``%2E%2E``), so ``in/2024/a,b.csv``
    becomes ``in%2F2024%2Fa%2Cb.csv``; ``urllib.parse.unquote`` gives the key back. A key
    longer than 255 characters once encoded keeps its first 238 and a hash of the whole."""
    encoded = "".join(
        urllib.parse.quote(c, safe="") if c in _PARTITION_KEY_UNSAFE or _is_control(c) else c for c in key
    )
    if encoded in (".", ".."):  # a key may not name its folder or the one above it
        encoded = encoded.replace(".", "%2E")
    if len(encoded) > MAX_PARTITION_KEY_LENGTH:
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        encoded = encoded[: MAX_PARTITION_KEY_LENGTH - 17].rstrip("%0123456789ABCDEF") + "~" + digest
    return encoded


def _is_control(c: str) -> bool:
    """C0, DEL, C1 and the line and paragraph separators: no partition key may hold them."""
    return ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F or c in "\u2028\u2029"


def run_key_for(obj: S3Object) -> str:
    """``key@etag``; a key too long for a run key is replaced by its SHA-256 (the tag keeps it)."""
    run_key = f"{obj.key}@{obj.etag}"
    if len(run_key) > MAX_RUN_KEY_LENGTH:
        run_key = f"sha256:{hashlib.sha256(obj.key.encode()).hexdigest()}@{obj.etag}"
    return run_key


def _seen_hash(key: str, etag: str) -> str:
    digest = hashlib.blake2b(f"{key}\x00{etag}".encode(), digest_size=8).digest()
    return base64.b64encode(digest).decode().rstrip("=")


# -- cursors -----------------------------------------------------------------------------------


def _load_cursor(label: str, mode: str, raw: str | None) -> dict[str, Any]:
    if mode == "events" or not raw:
        return {}
    try:
        cursor = json.loads(raw)
    except ValueError:
        cursor = None
    if not isinstance(cursor, dict) or cursor.get("mode") != mode:
        raise InstigatorEvaluationError(
            f"{label}: cursor {raw[:80]!r} was not written by mode {mode!r}; "
            f"reset it with `tidegate sensor cursor <name> --reset`"
        )
    return cursor


def _dump_cursor(mode: str, **values: Any) -> str:
    return json.dumps({"mode": mode, **values}, separators=(",", ":"), ensure_ascii=False)


# -- the modes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Watch:
    name: str
    bucket: str
    prefix: str
    pattern: str | None
    partitions_def: DynamicPartitionsDefinition | None
    partition_key_fn: Callable[[str], str]
    cap: int

    def matches(self, key: str) -> bool:
        if not key.startswith(self.prefix) or key.endswith("/"):  # "folder/" placeholder objects
            return False
        return self.pattern is None or fnmatch.fnmatchcase(key[len(self.prefix) :], self.pattern)

    def ordered(self, client: Any, cursor: dict[str, Any]) -> SensorResult:
        after: str | None = cursor.get("after")
        chosen: list[S3Object] = []
        last = after
        token: str | None = None
        while len(chosen) < self.cap:
            # Without a pattern every listed key is requested: ask for no more than the cap allows.
            page_size = LIST_PAGE if self.pattern else min(LIST_PAGE, self.cap - len(chosen))
            args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix, "MaxKeys": page_size}
            if token:
                args["ContinuationToken"] = token
            elif after is not None:
                args["StartAfter"] = after
            page = client.list_objects_v2(**args)
            for item in page.get("Contents", ()):
                if len(chosen) == self.cap:
                    break
                last = item["Key"]
                if self.matches(item["Key"]):
                    chosen.append(_listed(item))
            else:
                if page.get("IsTruncated"):
                    token = page["NextContinuationToken"]
                    continue
            break
        new_cursor = _dump_cursor("ordered", after=last) if last is not None else None
        return self.result(chosen, new_cursor, f"no key after {after!r}" if after else "no key")

    def any(self, client: Any, cursor: dict[str, Any], lag_ms: int) -> SensorResult:
        watermark: int | None = cursor.get("watermark_ms")
        seen = set(cursor.get("seen", ()))
        listed_at_ms: int | None = None
        above: list[tuple[int, str]] = []  # (last_modified_ms, hash) of objects already requested
        # The cap's oldest objects, kept in a bounded max-heap: (-last_modified, key), object.
        heap: list[tuple[tuple[int, _Reversed], S3Object]] = []
        oldest_left_ms: int | None = None  # the oldest new object that did not fit under the cap
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix, PaginationConfig={"PageSize": LIST_PAGE}
        ):
            if listed_at_ms is None:
                listed_at_ms = _server_time_ms(page)
            for item in page.get("Contents", ()):
                obj = _listed(item)
                if watermark is not None and obj.last_modified_ms <= watermark:
                    continue
                if not self.matches(obj.key):
                    continue
                digest = _seen_hash(obj.key, obj.etag)
                if digest in seen:
                    above.append((obj.last_modified_ms, digest))
                    continue
                entry = ((-obj.last_modified_ms, _Reversed(obj.key)), obj)
                if len(heap) < self.cap:
                    heapq.heappush(heap, entry)
                    continue
                dropped = heapq.heappushpop(heap, entry)[1]  # the newest of the cap + 1
                if oldest_left_ms is None or dropped.last_modified_ms < oldest_left_ms:
                    oldest_left_ms = dropped.last_modified_ms
        chosen = sorted((obj for _, obj in heap), key=lambda o: (o.last_modified_ms, o.key))
        assert listed_at_ms is not None
        new_watermark = listed_at_ms - lag_ms
        if oldest_left_ms is not None:  # never pass an object the cap left for the next tick
            new_watermark = min(new_watermark, oldest_left_ms - 1)
        if watermark is not None:
            new_watermark = max(new_watermark, watermark)
        above.extend((obj.last_modified_ms, _seen_hash(obj.key, obj.etag)) for obj in chosen)
        kept_seen = {digest for modified, digest in above if modified > new_watermark}
        new_cursor = _dump_cursor("any", watermark_ms=new_watermark, seen=sorted(kept_seen))
        return self.result(chosen, new_cursor, "no new object")

    def events(self, sqs: Any, queue_url: str, visibility_timeout: int, wait_time: int) -> SensorResult:
        found: dict[str, S3Object] = {}
        handles: list[dict[str, str]] = []
        while len(found) < self.cap:
            asked = min(SQS_BATCH, self.cap - len(found))
            reply = sqs.receive_message(
                QueueUrl=queue_url,
                MaxNumberOfMessages=asked,
                VisibilityTimeout=visibility_timeout,
                WaitTimeSeconds=wait_time,
            )
            messages = reply.get("Messages", ())
            for message in messages:
                try:
                    objects = list(self._objects_in(message.get("Body", "")))
                except ValueError as exc:  # not an S3 notification: leave it (a redrive policy moves it)
                    log.warning("sensor %r: message %s ignored: %s", self.name, message.get("MessageId"), exc)
                    continue
                handles.append({"Id": str(len(handles)), "ReceiptHandle": message["ReceiptHandle"]})
                for obj in objects:
                    found.setdefault(run_key_for(obj), obj)
            if len(messages) < asked:  # drained, as far as SQS can tell: the rest waits a tick
                break

        def delete_messages() -> None:
            for start in range(0, len(handles), SQS_BATCH):
                reply = sqs.delete_message_batch(QueueUrl=queue_url, Entries=handles[start : start + SQS_BATCH])
                for failed in reply.get("Failed", ()):
                    log.warning("sensor %r: message not deleted (%s); it will be redelivered", self.name, failed)

        result = self.result(list(found.values()), None, "no new event")
        return replace(result, on_commit=delete_messages if handles else None)

    def _objects_in(self, body: str) -> Iterator[S3Object]:
        """The created objects of this sensor's bucket and prefix in one SQS message body (an S3
        notification, or one wrapped by SNS). Test events and other event types yield nothing."""
        try:
            document = json.loads(body)
        except ValueError as exc:
            raise ValueError(f"not JSON ({exc})") from None
        if isinstance(document, dict) and document.get("Type") == "Notification" and "Message" in document:
            yield from self._objects_in(document["Message"])  # delivered through an SNS topic
            return
        if not isinstance(document, dict):
            raise ValueError("not an S3 event notification")
        if document.get("Event") == "s3:TestEvent":
            return
        records = document.get("Records")
        if not isinstance(records, list):
            raise ValueError("not an S3 event notification (no Records)")
        for record in records:
            event = str(record.get("eventName", ""))
            if not event.startswith("ObjectCreated:"):
                continue  # ObjectRemoved, restores, replication...: nothing arrived
            s3 = record.get("s3") or {}
            if (s3.get("bucket") or {}).get("name") != self.bucket:
                continue
            item = s3.get("object") or {}
            key = urllib.parse.unquote_plus(str(item.get("key", "")))
            if not key or not self.matches(key):
                continue
            etag = str(item.get("eTag") or item.get("sequencer") or "").strip('"')
            yield S3Object(key=key, etag=etag, size=int(item.get("size") or 0))

    def result(self, chosen: list[S3Object], cursor: str | None, idle: str) -> SensorResult:
        requests = []
        partition_keys: list[str] = []
        for obj in chosen:
            partition_key = None
            if self.partitions_def is not None:
                partition_key = self.partition_key_fn(obj.key)
                if not isinstance(partition_key, str):
                    raise InstigatorEvaluationError(
                        f"sensor {self.name!r}: partition_key_fn returned {partition_key!r} for key {obj.key!r}"
                    )
                partition_keys.append(partition_key)
            tags = {BUCKET_TAG: self.bucket, KEY_TAG: obj.key, ETAG_TAG: obj.etag, SIZE_TAG: str(obj.size)}
            requests.append(RunRequest(run_key=run_key_for(obj), tags=tags, partition_key=partition_key))
        dynamic = []
        if self.partitions_def is not None and partition_keys:
            dynamic = [self.partitions_def.build_add_request(list(dict.fromkeys(partition_keys)))]
        where = f"s3://{self.bucket}/{self.prefix}"
        return SensorResult(
            run_requests=requests,
            cursor=cursor,
            skip_reason=None if requests else SkipReason(f"{idle} in {where}"),
            dynamic_partitions_requests=dynamic,
        )


class _Reversed:
    """Orders strings backwards, so a min-heap on (-time, _Reversed(key)) pops the newest."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __lt__(self, other: _Reversed) -> bool:
        return self.value > other.value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Reversed) and self.value == other.value

    def __hash__(self) -> int:
        return hash(self.value)


def _listed(item: dict[str, Any]) -> S3Object:
    modified: datetime = item["LastModified"]
    return S3Object(
        key=item["Key"],
        etag=str(item.get("ETag", "")).strip('"'),
        size=int(item.get("Size", 0)),
        last_modified_ms=int(modified.timestamp() * 1000),
    )


def _server_time_ms(page: dict[str, Any]) -> int:
    """When S3 answered (its ``Date`` header, whole seconds rounded down), else this clock."""
    header = page.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    if header:
        try:
            return int(parsedate_to_datetime(header).timestamp() * 1000)
        except (TypeError, ValueError):
            pass
    return int(time.time() * 1000)
