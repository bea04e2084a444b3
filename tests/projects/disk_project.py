"""One asset that fills the disk holding the database (``$DISK_FILLER`` names the file it grows
until the disk is full), for tests/test_cli_infrastructure.py: the step's outcome, the run's
end and the CLI's own writes then all meet a full disk."""

from __future__ import annotations

import os

import tidegate as tg


@tg.asset
def fill_disk() -> None:
    chunk = b"\0" * 65536
    with open(os.environ["DISK_FILLER"], "ab") as filler:
        try:
            while True:
                filler.write(chunk)
                filler.flush()
        except OSError:
            pass  # the disk is full: that was the point


defs = tg.Definitions(assets=[fill_disk])
