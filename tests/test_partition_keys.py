"""Which strings may be partition keys, refused at every way in (definitions, sensor results,
the storage of dynamic keys, the CLI, launches), and the filesystem IO manager's file names:
whatever a key holds, its output stays inside its asset's folder."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import insert

import tidegate as tg
from tests.support import ROOT, TIDEGATE
from tidegate.definitions.key import AssetKey
from tidegate.definitions.limits import shown
from tidegate.names import PARTITION_TAG, TickStatus
from tidegate.scheduler.beat import Beat
from tidegate.scheduler.clock import FakeClock
from tidegate.storage.api import Storage
from tidegate.storage.schema import dynamic_partitions
from tidegate.submit import prepare_job_run
from tidegate.workers.io import FilesystemIOManager, InputContext, OutputContext, partition_file_name

REFUSED = {
    "../../escaped": "names a path outside its folder",
    "..": "names a path outside its folder",
    ".": "names a path outside its folder",
    "/": "names a path outside its folder",
    "/etc/passwd": "names a path outside its folder",
    "a/../../b": "names a path outside its folder",
    "a//b": "names a path outside its folder",
    "a/": "names a path outside its folder",
    "": "it is empty",
    "x" * 256: "256 characters, at most 255",
    "a\x00b": "holds '\\x00'",
    "line\nbreak": "holds '\\n'",
    "tab\there": "holds '\\t'",
    "c1\x85": "holds '\\x85'",
    "sep\u2028": "holds '\\u2028'",
    "lone\ud800": "holds '\\ud800'",
    "a,b": "holds ','",
    "a[b]": "holds '['",
    "C:\\x": "holds '\\\\'",
}
# what Dagster users name partitions: dates, hours, file names, paths below a folder
ACCEPTED = ["2024-01-01", "2024-01-01-13:00", "a.csv", "in/2024/a.csv", "über", "south west", "50%", ".env", "a..b"]
ACCEPTED.append("y" * 255)


# -- the rule --------------------------------------------------------------------------------


@pytest.mark.parametrize("key", list(REFUSED))
def test_build_add_request_refuses_a_key_that_may_not_be_one(key: str) -> None:
    files = tg.DynamicPartitionsDefinition(name="files")
    with pytest.raises(tg.InvalidPartitionKeyError) as raised:
        files.build_add_request(["ok.csv", key])
    assert isinstance(raised.value, tg.PartitionKeyError)
    assert str(raised.value).startswith(f"dynamic partitions 'files': invalid partition key {shown(key)} (")
    assert REFUSED[key] in str(raised.value)


def test_build_add_request_keeps_the_keys_dagster_users_use() -> None:
    files = tg.DynamicPartitionsDefinition(name="files")
    assert files.build_add_request(ACCEPTED).partition_keys == tuple(ACCEPTED)
    with pytest.raises(tg.InvalidPartitionKeyError, match="must be a list of strings"):
        files.build_add_request("abc")  # one string is not three keys 'a', 'b', 'c'
    with pytest.raises(tg.InvalidPartitionKeyError, match="duplicate partition key 'a'"):
        files.build_add_request(["a", "a"])


def test_definitions_refuse_such_keys_when_imported() -> None:
    with pytest.raises(tg.InvalidDefinitionError, match=r"StaticPartitionsDefinition: invalid partition key '\.\.'"):
        tg.StaticPartitionsDefinition(["north", ".."])
    assert tg.StaticPartitionsDefinition(["eu/north", "eu/south"]).partition_keys == ("eu/north", "eu/south")
    with pytest.raises(tg.InvalidDefinitionError, match=r"fmt '\.\./%Y-%m-%d' makes invalid partition keys"):
        tg.DailyPartitionsDefinition(start_date="2024-01-01", fmt="../%Y-%m-%d")
    assert tg.DailyPartitionsDefinition(start_date="2024/01/01", fmt="%Y/%m/%d").time_window_for_key("2024/01/02")


# -- the filesystem IO manager's file names ----------------------------------------------------

ANY_KEY = st.one_of(
    st.text(st.characters(codec=None, exclude_categories=())),  # surrogates and controls included
    st.text(alphabet="./%,\\~ aé", max_size=12),  # the characters that matter, densely
    st.text(min_size=240, max_size=400),  # past NAME_MAX once quoted
)


@given(ANY_KEY)
@settings(max_examples=500, deadline=None)
def test_no_key_names_a_path_outside_its_assets_folder(key: str) -> None:
    io = FilesystemIOManager("/data/io")
    folder = Path("/data/io/sales/daily")
    path = io.path_for(AssetKey(("sales", "daily")), key)
    assert path.parent == folder and os.path.normpath(path) == str(path)
    assert path.name not in ("", ".", "..") and "/" not in path.name and "\x00" not in path.name
    assert len(path.name.encode()) <= 245  # the temporary ".<name>.XXXXXXXX" still fits NAME_MAX


@given(ANY_KEY, ANY_KEY)
@settings(max_examples=500, deadline=None)
def test_distinct_keys_get_distinct_file_names(first: str, second: str) -> None:
    if first != second:
        assert partition_file_name(first) != partition_file_name(second)


def test_quoting_leaves_the_names_outputs_already_have() -> None:
    # keys that were valid before keep their file names: outputs stored earlier are still found
    for key in ("2024-01-21", "2024-01-21-00:00", "in%2Fa%2Cb.csv", "über", "south west", "50%", ".env"):
        assert partition_file_name(key) == key
    collisions = ["a/b", "a%2Fb", ",a%2Fb", ",a%252Fb"]  # plain names never start with ','
    assert [partition_file_name(k) for k in collisions] == [",a%2Fb", "a%2Fb", ",%2Ca%252Fb", ",%2Ca%25252Fb"]
    assert partition_file_name("../../escaped") == ",..%2F..%2Fescaped"
    assert partition_file_name("..") == ",.." and partition_file_name("") == ","


@pytest.mark.parametrize("key", ["../../escaped", "..", "/", "/etc/passwd", "a/b", "x/" * 127 + "x", "é" * 255])
def test_outputs_of_any_key_are_written_and_read_inside_the_base_dir(tmp_path: Path, key: str) -> None:
    base = tmp_path / "io"
    io = FilesystemIOManager(base)
    asset = AssetKey(("files", "imported"))
    out = OutputContext(asset, "run-1", "imported", partition_key=key)
    io.handle_output(out, {"key": key})
    assert io.load_input(InputContext(asset, "run-2", "summary", partition_key=key)) == {"key": key}
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written == [base / "files" / "imported" / partition_file_name(key)]
    assert out.metadata["path"] == str(written[0])


# -- storage, the beat, launches ------------------------------------------------------------------


def test_storage_refuses_to_store_such_a_key(storage: Storage) -> None:
    with pytest.raises(
        tg.InvalidPartitionKeyError, match=r"dynamic partitions 'files': invalid partition key '\.\./x'"
    ):
        storage.add_dynamic_partitions("files", ["ok.csv", "../x"])
    assert storage.dynamic_partition_keys("files") == []  # nothing of the batch was added
    assert storage.add_dynamic_partitions("files", ["in/a.csv", "b.csv"]) == ["in/a.csv", "b.csv"]


def _files_defs(*sensors: Any) -> tuple[tg.Definitions, tg.DynamicPartitionsDefinition]:
    files = tg.DynamicPartitionsDefinition(name="files")

    @tg.asset(partitions_def=files)
    def imported(context: tg.AssetExecutionContext) -> str:
        return context.partition_key

    job = tg.define_asset_job("import_job", "imported")
    return tg.Definitions(assets=[imported], jobs=[job], sensors=list(sensors)), files


def test_a_sensor_adding_a_key_outside_the_io_folder_fails_its_tick_and_the_beat_goes_on(storage: Storage) -> None:
    running = tg.DefaultSensorStatus.RUNNING

    @tg.sensor(target="*", default_status=running, minimum_interval_seconds=10)
    def escaping(context: tg.SensorEvaluationContext) -> tg.SensorResult:
        return tg.SensorResult(  # built by hand: build_add_request would have refused it
            run_requests=[tg.RunRequest(run_key="e", partition_key="../../escaped")],
            cursor="moved",
            dynamic_partitions_requests=[tg.AddDynamicPartitionsRequest("files", ["../../escaped"])],
        )

    @tg.sensor(target="*", default_status=running, minimum_interval_seconds=10)
    def honest(context: tg.SensorEvaluationContext) -> tg.SensorResult:
        return tg.SensorResult(
            run_requests=[tg.RunRequest(run_key="a", partition_key="in/a.csv")],
            dynamic_partitions_requests=[tg.AddDynamicPartitionsRequest("files", ["in/a.csv"])],
        )

    defs, _files = _files_defs(escaping, honest)
    clock = FakeClock(datetime(2024, 2, 1, tzinfo=UTC))
    beat = Beat(defs, storage, lambda refs: None, clock=clock)
    beat.tick()
    clock.advance(11)
    beat.tick()  # the beat goes on: both sensors are evaluated again
    failed = storage.get_ticks("escaping")
    assert [t.status for t in failed] == [TickStatus.FAILURE, TickStatus.FAILURE]
    error = failed[0].error or ""
    assert "InvalidPartitionKeyError: sensor 'escaping': dynamic partitions 'files': " in error
    assert "invalid partition key '../../escaped'" in error
    assert storage.get_instigator("escaping").cursor is None  # type: ignore[union-attr]
    assert [t.status for t in storage.get_ticks("honest")] == [TickStatus.SUCCESS, TickStatus.SUCCESS]
    assert storage.dynamic_partition_keys("files") == ["in/a.csv"]
    assert [r.tags[PARTITION_TAG] for r in storage.list_runs()] == ["in/a.csv"]


def test_a_key_stored_before_it_was_refused_is_never_launched(storage: Storage) -> None:
    defs, files = _files_defs()
    with storage.engine.begin() as conn:  # as an older tidegate let a sensor store it
        for key in ("a.csv", "../../escaped"):
            conn.execute(
                insert(dynamic_partitions).values(
                    partitions_def="files", partition_key=key, created_at=datetime.now(UTC)
                )
            )
    assert files.get_partition_keys(dynamic_keys=storage.dynamic_partition_keys) == ["a.csv"]
    with pytest.raises(
        tg.InvalidPartitionKeyError, match=r"job 'import_job': invalid partition key '\.\./\.\./escaped'"
    ):
        prepare_job_run(defs, storage, "import_job", partition_key="../../escaped")  # CLI, API and Flower path
    with pytest.raises(tg.InvalidPartitionKeyError, match="job 'import_job': DynamicPartitionsDefinition"):
        defs.plan("import_job", partition_key="../../escaped", dynamic_keys=storage.dynamic_partition_keys)
    assert prepare_job_run(defs, storage, "import_job", partition_key="a.csv").plan.partition_key == "a.csv"
    assert storage.delete_dynamic_partitions("files", ["../../escaped"]) == 1  # it can still be removed
    assert storage.dynamic_partition_keys("files") == ["a.csv"]


# -- the command line ----------------------------------------------------------------------------

SEED = ROOT / "tests" / "projects" / "seed_partitions_project.py"


def _tidegate(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDEGATE_")}
    env.update(TIDEGATE_HOME=str(tmp_path / "home"), TIDEGATE_BROKER_URL="memory://localhost/")
    return subprocess.run([TIDEGATE, *args], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)


def test_the_cli_refuses_such_keys_everywhere(tmp_path: Path) -> None:
    added = _tidegate(tmp_path, "partitions", "add", "source_files", "a.csv", "..", "-f", str(SEED))
    assert added.returncode == 2
    assert "error: dynamic partitions 'source_files': invalid partition key '..'" in added.stderr
    listed = _tidegate(tmp_path, "partitions", "list", "source_files", "-f", str(SEED))
    assert listed.returncode == 0 and "no keys in dynamic partitions 'source_files'" in listed.stdout
    launched = _tidegate(
        tmp_path, "job", "launch", "import_dynamic_partition_job", "--partition", "../../x", "-f", str(SEED)
    )
    assert launched.returncode == 2
    assert "error: job 'import_dynamic_partition_job': invalid partition key '../../x'" in launched.stderr
    backfill = _tidegate(
        tmp_path, "backfill", "import_dynamic_partition_job", "--partitions", "/etc/passwd", "-f", str(SEED)
    )
    assert backfill.returncode == 2 and "invalid partition key '/etc/passwd'" in backfill.stderr
