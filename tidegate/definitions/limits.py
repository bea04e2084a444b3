"""How long each value may be and which characters it may hold, so that what the storage
columns accept is checked where a value comes in, identically on SQLite (which stores any
length) and PostgreSQL (which refuses a value longer than its ``VARCHAR`` and any NUL).

The column sizes are here, and :mod:`tidegate.storage.schema` takes them from here; each limit
is at most its column (minus what tidegate adds, such as a schedule's tick time before a run
key). docs/limits.md lists them all. A value over a limit, or holding a character it may not,
raises :class:`~tidegate.errors.InputLimitError` naming where it came from, the value (cut to
:data:`SHOWN_CHARACTERS`) and the limit.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from tidegate.errors import InputLimitError

# -- column sizes (tidegate/storage/schema.py); changing one needs a migration -----------------

NAME_COLUMN = 255  # job, schedule, sensor, queue, pool, lease, origin, partitions names
RUN_KEY_COLUMN = 1024  # runs.run_key, instigators.last_run_key
CRON_COLUMN = 255  # instigators.cron: the cron a schedule's last tick used
ASSET_KEY_COLUMN = 512  # asset_key, step_key, display_name
PARTITION_KEY_COLUMN = 255  # partition_key columns

# -- the limits ---------------------------------------------------------------------------------

# Job, schedule, sensor, queue and pool names. A run's origin is "schedule:<name>" or
# "sensor:<name>" in a NAME_COLUMN column: 200 leaves room for any prefix tidegate adds.
MAX_NAME_LENGTH = 200
# An asset key as "a/b/c". A step's display name is "<key>[<partition key>]": 255 + 2 + 255
# characters fit the ASSET_KEY_COLUMN.
MAX_ASSET_KEY_LENGTH = 255
MAX_PARTITION_KEY_LENGTH = PARTITION_KEY_COLUMN
MAX_CRON_LENGTH = CRON_COLUMN  # a valid cron can be longer: "0,1,2,...,59 ..." lists
# A schedule's run is keyed "<tick time>:<run key>" (the tick time takes up to 33 characters).
MAX_RUN_KEY_LENGTH = 960
# Run tags are one JSON column: no size is imposed by the databases, these keep a run's row
# (read by every run list and by the run queue) small.
MAX_TAGS = 100  # given per run (tidegate adds its own few)
MAX_TAG_KEY_LENGTH = 255
MAX_TAG_VALUE_LENGTH = 4096
# Metadata (definitions and `tidegate assets report`): keys as tag keys; the whole, as JSON.
MAX_METADATA_KEY_LENGTH = 255
MAX_METADATA_BYTES = 1024 * 1024
# A run's config (runs.run_config, a JSON column read with the run), as JSON.
MAX_RUN_CONFIG_BYTES = 1024 * 1024
# A sensor's cursor (a TEXT column), in bytes of UTF-8: one is read and written every tick.
MAX_CURSOR_BYTES = 1024 * 1024

SHOWN_CHARACTERS = 60  # how much of an offending value a message shows

# Control characters (C0, DEL, C1), line and paragraph separators, and lone surrogates (no
# UTF-8 encodes them: both databases refuse them): never in a key, a name or a tag.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
# What no TEXT column can hold: NUL (PostgreSQL) and lone surrogates (UTF-8). A cursor or a
# skip message may hold newlines and tabs.
_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")


def shown(value: str) -> str:
    """``value`` as a message shows it: quoted and escaped (one line), and cut after
    :data:`SHOWN_CHARACTERS` characters (then ``...``)."""
    if len(value) <= SHOWN_CHARACTERS:
        return repr(value)
    return f"{value[:SHOWN_CHARACTERS]!r}..."


def check_text(label: str, what: str, value: str, max_length: int, *, allow_empty: bool = True, hint: str = "") -> str:
    """``value`` if it has at most ``max_length`` characters and no control character; else
    InputLimitError ``<label>: <what> <value> ...`` (then ``hint``, the fix, if given)."""
    if not value and not allow_empty:
        raise InputLimitError(f"{label}: {what} is empty")
    if len(value) > max_length:
        raise InputLimitError(
            f"{label}: {what} {shown(value)} is {len(value)} characters long; at most {max_length}{hint}"
        )
    bad = _CONTROL.search(value)
    if bad is not None:
        raise InputLimitError(
            f"{label}: {what} {shown(value)} holds the control character {bad.group()!r} "
            f"(U+{ord(bad.group()):04X}): none may be in keys, names or tags"
        )
    return value


def check_name(label: str, what: str, name: str) -> str:
    """A job, schedule, sensor, queue or pool name: at most :data:`MAX_NAME_LENGTH` characters,
    no control character (which other characters a name may hold is its definition's to say)."""
    return check_text(label, what, name, MAX_NAME_LENGTH)


def check_asset_key(label: str, key: str) -> str:
    """An asset key in its ``a/b`` form: at most :data:`MAX_ASSET_KEY_LENGTH` characters (what
    its parts may hold is AssetKey's to say)."""
    return check_text(label, "asset key", key, MAX_ASSET_KEY_LENGTH)


def check_cron(label: str, cron: str) -> str:
    """A cron string: at most :data:`MAX_CRON_LENGTH` characters (its syntax is cron.py's)."""
    if len(cron) > MAX_CRON_LENGTH:
        raise InputLimitError(
            f"{label}: cron {shown(cron)} is {len(cron)} characters long; at most {MAX_CRON_LENGTH} "
            "(use ranges such as 0-59/5 instead of lists)"
        )
    return cron


def check_run_key(label: str, run_key: str | None, what: str = "run key") -> str | None:
    """A run key: at most :data:`MAX_RUN_KEY_LENGTH` characters, no control character."""
    if run_key is None:
        return None
    return check_text(label, what, run_key, MAX_RUN_KEY_LENGTH, hint=" (hash a longer key)")


def check_tags(label: str, tags: Mapping[str, str]) -> Mapping[str, str]:
    """String tags (the caller checked the types): at most :data:`MAX_TAGS`, each key 1 to
    :data:`MAX_TAG_KEY_LENGTH` characters, each value at most :data:`MAX_TAG_VALUE_LENGTH`,
    no control character in either."""
    if len(tags) > MAX_TAGS:
        raise InputLimitError(f"{label}: {len(tags)} tags, at most {MAX_TAGS}")
    for key, value in tags.items():
        check_text(label, "tag key", key, MAX_TAG_KEY_LENGTH, allow_empty=False)
        check_text(label, f"tag {shown(key)}: value", value, MAX_TAG_VALUE_LENGTH)
    return tags


def check_metadata(label: str, metadata: Mapping[str, Any], *, stored: bool = False) -> Mapping[str, Any]:
    """Metadata keys as tag keys (1 to :data:`MAX_METADATA_KEY_LENGTH` characters, no control
    character). With ``stored``, also the size of the whole as JSON (:data:`MAX_METADATA_BYTES`);
    values that are not JSON are left to the caller (MetadataValue objects, for one)."""
    for key in metadata:
        if not isinstance(key, str):
            raise InputLimitError(f"{label}: metadata keys must be strings, got {key!r}")
        check_text(label, "metadata key", key, MAX_METADATA_KEY_LENGTH, allow_empty=False)
    if stored:
        size = len(json.dumps(metadata, default=str).encode())
        if size > MAX_METADATA_BYTES:
            raise InputLimitError(f"{label}: metadata is {size} bytes as JSON, at most {MAX_METADATA_BYTES}")
    return metadata


def check_run_config_size(label: str, run_config: Mapping[str, Any]) -> None:
    """A run's config, as stored: at most :data:`MAX_RUN_CONFIG_BYTES` bytes as JSON."""
    size = len(json.dumps(run_config).encode())
    if size > MAX_RUN_CONFIG_BYTES:
        raise InputLimitError(f"{label}: run config is {size} bytes as JSON, at most {MAX_RUN_CONFIG_BYTES}")


def check_stored_text(label: str, what: str, value: str, max_bytes: int | None = None) -> str:
    """Free text for a TEXT column (a cursor, a skip message): no NUL, no lone surrogate, and
    at most ``max_bytes`` bytes of UTF-8 if given."""
    bad = _UNSTORABLE.search(value)
    if bad is not None:
        raise InputLimitError(f"{label}: {what} {shown(value)} holds {bad.group()!r}, which the database cannot store")
    if max_bytes is not None:
        size = len(value.encode())
        if size > max_bytes:
            raise InputLimitError(f"{label}: {what} {shown(value)} is {size} bytes, at most {max_bytes}")
    return value


def check_cursor(label: str, cursor: str | None) -> str | None:
    """A sensor cursor to store: at most :data:`MAX_CURSOR_BYTES` bytes of UTF-8, no NUL and no
    lone surrogate (newlines are fine). ``label`` names the sensor. What the beat, the CLI and
    anything else storing a cursor calls."""
    if cursor is None:
        return None
    return check_stored_text(label, "cursor", cursor, MAX_CURSOR_BYTES)


def check_launch(label: str, *, run_key: str | None = None, tags: Mapping[str, str]) -> dict[str, str]:
    """What a launch brings (``tidegate job launch``, ``tidegate materialize``, the Flower
    task): its run key and string tags, checked; the tags back as a dict."""
    check_run_key(label, run_key)
    return dict(check_tags(label, tags))
