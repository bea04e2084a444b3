"""Client CPU per step message of ``CeleryPublisher``: ``python bench/publish.py [--source DIR]``.

Sends ``BENCH_PUBLISH_STEPS`` (4,000) step messages to Redis as a step's success sends its
children: calls of ``BENCH_PUBLISH_FANOUT`` (400) steps each, one producer per call and
kombu's publish batches of ``PUBLISH_BATCH`` inside it, each message with its task-sent event.
One unmeasured call first (connection, declarations), then ``BENCH_PUBLISH_REPEATS`` (5)
measured passes; it prints the median and each pass's CPU time of this process per message
(``time.process_time``: what a worker's pool process spends publishing, without the broker's
side). Nothing consumes the messages: the queue is emptied after each pass and deleted at
the end; nothing else in the database is touched.

``--source DIR`` imports tidegate from ``DIR`` (a checkout's root, e.g. a ``git archive`` of
another commit) instead of the installed package: for A/B runs of two versions on one
virtualenv, interleaved (base, change, base, change), since other load on a small machine
moves the figures by 5-10 %.

Services: Redis, ``BENCH_PUBLISH_REDIS_URL`` (``redis://127.0.0.1:6379/15``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Sequence

import redis

REDIS_URL = os.environ.get("BENCH_PUBLISH_REDIS_URL", "redis://127.0.0.1:6379/15")
STEPS = int(os.environ.get("BENCH_PUBLISH_STEPS", "4000"))
FANOUT = int(os.environ.get("BENCH_PUBLISH_FANOUT", "400"))
REPEATS = int(os.environ.get("BENCH_PUBLISH_REPEATS", "5"))
QUEUE = "tidegate-bench-publish"


class _NoOutbox:
    """The publisher's storage: the bench measures the broker side, not SQL's."""

    def mark_enqueued(self, refs: Sequence[object]) -> None:
        pass


def _import_from(source: str) -> None:
    """Import tidegate from ``source`` rather than the (editable) install, whose finder comes
    before ``sys.path``."""
    sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
    sys.path.insert(0, os.path.abspath(source))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", help="import tidegate from this checkout's root")
    args = parser.parse_args()
    if args.source:
        _import_from(args.source)
    import tidegate.broker
    from tidegate.storage.records import StepRef

    if args.source and not tidegate.broker.__file__.startswith(os.path.abspath(args.source)):
        raise SystemExit(f"tidegate was imported from {tidegate.broker.__file__}, not {args.source}")
    app = tidegate.broker.make_celery_app(REDIS_URL)
    publisher = tidegate.broker.CeleryPublisher(app, _NoOutbox())  # type: ignore[arg-type]
    client = redis.Redis.from_url(REDIS_URL)
    refs = [StepRef("run-bench-publish", f"asset_{i}", 1, QUEUE, f"asset_{i}", None) for i in range(STEPS)]
    try:
        publisher(refs[:FANOUT])  # unmeasured: the connection, the declarations
        client.delete(QUEUE)
        per_message = []
        for _ in range(REPEATS):
            start = time.process_time()
            for first in range(0, STEPS, FANOUT):
                publisher(refs[first : first + FANOUT])
            per_message.append((time.process_time() - start) / STEPS * 1e6)
            if client.llen(QUEUE) != STEPS:
                raise SystemExit(f"{client.llen(QUEUE)} messages in {QUEUE}, expected {STEPS}")
            client.delete(QUEUE)
    finally:
        client.delete(QUEUE, f"_kombu.binding.{QUEUE}", f"_kombu.binding_permanent.{QUEUE}")
        client.close()
        app.close()
    print(
        f"tidegate {tidegate.broker.__file__}: {STEPS} steps in calls of {FANOUT}, "
        f"load {os.getloadavg()[0]:.2f}: CPU per message median {statistics.median(per_message):.1f} us "
        f"({', '.join(f'{v:.1f}' for v in per_message)})"
    )


if __name__ == "__main__":
    main()
