"""`tidegate sensor list|cursor|start --from-beginning` for asset and run-status sensors, and
`tidegate assets report` feeding an asset sensor, as real processes on SQLite."""

from __future__ import annotations

import re
from pathlib import Path

from tests.test_automation_cli import _line, _ok, _storage, _tidegate

DEFINITIONS = """
import tidegate as tg

orders = tg.AssetSpec("orders", partitions_def=tg.StaticPartitionsDefinition(["a", "b", "c"]))


@tg.asset
def report() -> int:
    return 1


report_job = tg.define_asset_job("report_job", [report])


@tg.asset_sensor(asset_key="orders", job=report_job)
def on_orders(context, asset_event):
    return tg.RunRequest(run_key=asset_event.dagster_event.partition)


@tg.run_failure_sensor(request_job=report_job)
def on_failure(context):
    return tg.RunRequest()


defs = tg.Definitions(assets=[orders, report], jobs=[report_job], sensors=[on_orders, on_failure])
"""


def test_lag_cursor_and_from_beginning(tmp_path: Path) -> None:
    project = tmp_path / "event_defs.py"
    project.write_text(DEFINITIONS)
    f = ("-f", str(project))
    for key in ("a", "b"):
        out = _ok(_tidegate(tmp_path, "assets", "report", "orders", "--partition", key, *f))
        assert out.startswith("recorded materialization")
    listed = _ok(_tidegate(tmp_path, "sensor", "list", *f))
    assert re.search(r"\s2, oldest \d+s\s", _line(listed, "on_orders")), listed  # two waiting after no cursor
    assert re.search(r"STOPPED \(default\)\s+-\s+-\s+0\s+job report_job", _line(listed, "on_failure")), listed

    out = _ok(_tidegate(tmp_path, "sensor", "cursor", "on_orders", "--set", "1", *f))
    assert out.splitlines() == [
        "on_orders: cursor 1",
        "on_orders: lag 1, oldest " + out.split("oldest ")[1].splitlines()[0],
    ]
    out = _ok(_tidegate(tmp_path, "sensor", "cursor", "on_orders", "--set", "2", *f))
    assert out.splitlines() == ["on_orders: cursor 2", "on_orders: lag 0 (events waiting after the cursor)"]
    refused = _tidegate(tmp_path, "sensor", "cursor", "on_orders", "--set", "yesterday", *f)
    assert refused.returncode != 0 and "sensor 'on_orders': cursor 'yesterday' is not a storage id" in refused.stderr
    out = _ok(_tidegate(tmp_path, "sensor", "cursor", "on_orders", "--reset", *f))
    assert out.splitlines()[0] == "on_orders: cursor (none)"

    out = _ok(_tidegate(tmp_path, "sensor", "start", "on_failure", "--from-beginning", *f))
    assert out.strip() == "sensor on_failure: RUNNING from the beginning"
    storage = _storage(tmp_path)
    assert storage.get_instigator("on_failure").cursor == "0"
    storage.dispose()
    refused = _tidegate(tmp_path, "sensor", "start", "nope", "--from-beginning", *f)
    assert refused.returncode != 0 and "sensor 'nope': not defined" in refused.stderr + refused.stdout
