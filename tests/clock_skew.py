"""Run tidegate code as if on a host whose clock is off by some seconds.

``host_clock(offset)`` shifts ``datetime.now`` as seen by every loaded ``tidegate`` module
(the storage, the monitor, the beat's SystemClock): what a process on a drifting host would
compute. The database's clock is not touched, which is the point of the tests using it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, tzinfo

_REAL = datetime


class _LikeDatetime(type):
    """Keeps ``isinstance(value, datetime)`` true for real datetimes inside patched modules."""

    def __instancecheck__(cls, instance: object) -> bool:
        return isinstance(instance, _REAL)

    def __subclasscheck__(cls, subclass: type) -> bool:
        return issubclass(subclass, _REAL)


def _skewed(offset: timedelta) -> type[datetime]:
    class SkewedDatetime(_REAL, metaclass=_LikeDatetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> datetime:
            return _REAL.now(tz) + offset

    return SkewedDatetime


@contextmanager
def host_clock(offset_seconds: float) -> Iterator[None]:
    skewed = _skewed(timedelta(seconds=offset_seconds))
    patched = [
        module
        for name, module in list(sys.modules.items())
        if (name == "tidegate" or name.startswith("tidegate.")) and getattr(module, "datetime", None) is _REAL
    ]
    for module in patched:
        module.datetime = skewed  # type: ignore[attr-defined]
    try:
        yield
    finally:
        for module in patched:
            module.datetime = _REAL  # type: ignore[attr-defined]
