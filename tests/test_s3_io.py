# ruff: noqa: F811  (pytest fixtures imported from tests.s3_support are parameters here)
"""S3IOManager against a real moto S3 server reached over HTTP: object names, round trips,
partitions, errors, and ``tidegate.materialize`` storing its outputs in the bucket."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

import tidegate as tg
from tests.s3_support import REGION, s3_bucket, s3_endpoint, s3_resource  # noqa: F401  (fixtures)
from tidegate.errors import InvalidDefinitionError, S3IOManagerError, S3OutputNotFoundError, TidegateError
from tidegate.s3 import S3Resource
from tidegate.s3.io_manager import S3IOManager

SECRET = "wJalrXUtnFEMI-do-not-print-me"


def out(key: str, partition: str | None = None) -> tg.OutputContext:
    return tg.OutputContext(tg.AssetKey.from_user_string(key), "run-1", key, partition)


def inp(key: str, partition: str | None = None) -> tg.InputContext:
    return tg.InputContext(tg.AssetKey.from_user_string(key), "run-2", "downstream", partition)


def object_names(resource: S3Resource, bucket: str) -> set[str]:
    listing = resource.get_client().list_objects_v2(Bucket=bucket)
    return {o["Key"] for o in listing.get("Contents", [])}


def test_object_names_quote_partition_keys() -> None:
    manager = S3IOManager(bucket="b", prefix="/warehouse/")
    key = tg.AssetKey(["sales", "orders"])
    assert manager.object_key(key) == "warehouse/sales/orders/__unpartitioned__"
    assert manager.object_key(key, "2024-01-22") == "warehouse/sales/orders/2024-01-22"
    assert manager.object_key(key, "a/../b c") == "warehouse/sales/orders/a%2F..%2Fb%20c"
    assert manager.object_key(key, "café") == "warehouse/sales/orders/caf%C3%A9"
    assert manager.object_key(key, "50%") == "warehouse/sales/orders/50%25"  # '%' itself is quoted: no clashes
    assert manager.uri_for(key, "x") == "s3://b/warehouse/sales/orders/x"
    assert S3IOManager(bucket="b", prefix="").object_key(key) == "sales/orders/__unpartitioned__"


@pytest.mark.parametrize("bucket", ["", "  ", "a/b", None])
def test_bad_bucket_is_a_definition_error(bucket: Any) -> None:
    with pytest.raises(InvalidDefinitionError, match="S3IOManager: bucket"):
        S3IOManager(bucket=bucket)


def test_round_trip_and_metadata(s3_resource: S3Resource, s3_bucket: str) -> None:
    manager = S3IOManager(bucket=s3_bucket, prefix="tg", s3=s3_resource)
    value = {"rows": list(range(1000)), "name": "orders"}
    context = out("sales/orders")
    manager.handle_output(context, value)

    assert context.metadata["uri"] == f"s3://{s3_bucket}/tg/sales/orders/__unpartitioned__"
    stored = s3_resource.get_client().get_object(Bucket=s3_bucket, Key="tg/sales/orders/__unpartitioned__")
    body = stored["Body"].read()
    assert context.metadata["size"] == len(body)
    assert pickle.loads(body) == value
    assert stored["Metadata"] == {"tidegate-asset": "sales/orders", "tidegate-run-id": "run-1"}
    assert manager.load_input(inp("sales/orders")) == value

    manager.handle_output(out("sales/orders"), ["replaced"])  # a re-run overwrites in place
    assert manager.load_input(inp("sales/orders")) == ["replaced"]
    assert object_names(s3_resource, s3_bucket) == {"tg/sales/orders/__unpartitioned__"}


def test_one_object_per_partition(s3_resource: S3Resource, s3_bucket: str) -> None:
    manager = S3IOManager(bucket=s3_bucket, s3=s3_resource)
    partitions = ["2024-01-01", "a/b", "with space", "naïve café", "50%", "?#&"]
    for i, partition in enumerate(partitions):
        manager.handle_output(out("events", partition), i)
    assert object_names(s3_resource, s3_bucket) == {
        "tidegate/events/2024-01-01",
        "tidegate/events/a%2Fb",
        "tidegate/events/with%20space",
        "tidegate/events/na%C3%AFve%20caf%C3%A9",
        "tidegate/events/50%25",
        "tidegate/events/%3F%23%26",
    }
    assert [manager.load_input(inp("events", p)) for p in partitions] == list(range(len(partitions)))


def test_missing_object_names_asset_partition_and_uri(s3_resource: S3Resource, s3_bucket: str) -> None:
    manager = S3IOManager(bucket=s3_bucket, s3=s3_resource)
    with pytest.raises(S3OutputNotFoundError) as caught:
        manager.load_input(inp("sales/orders", "2024-01-02"))
    error = caught.value
    assert isinstance(error, TidegateError)
    uri = f"s3://{s3_bucket}/tidegate/sales/orders/2024-01-02"
    assert error.uri == uri and error.partition_key == "2024-01-02"
    assert error.asset_key == tg.AssetKey(["sales", "orders"])
    assert str(error) == (
        f"asset 'sales/orders' partition '2024-01-02': no stored output at {uri}: "
        "materialize it first (or it returned None)"
    )


def test_write_to_a_missing_bucket_is_typed_and_keeps_secrets_out(s3_endpoint: str) -> None:
    resource = S3Resource(
        endpoint_url=s3_endpoint, region_name=REGION, aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key=SECRET
    )
    manager = S3IOManager(bucket="tg-no-such-bucket", s3=resource)
    with pytest.raises(S3IOManagerError) as caught:
        manager.handle_output(out("orders"), [1])
    message = str(caught.value)
    assert message.startswith("asset 'orders': cannot write s3://tg-no-such-bucket/tidegate/orders/__unpartitioned__")
    assert "NoSuchBucket" in message
    for text in (message, repr(manager), repr(resource)):
        assert SECRET not in text and "AKIDEXAMPLE" not in text
    assert repr(manager).startswith("S3IOManager(bucket='tg-no-such-bucket', prefix='tidegate', s3=S3Resource(")


@tg.asset(partitions_def=tg.StaticPartitionsDefinition(["north", "south west", "über"]))
def readings(context: tg.AssetExecutionContext) -> dict[str, Any]:
    return {"region": context.partition_key, "value": len(context.partition_key or "")}


@tg.asset(
    partitions_def=tg.StaticPartitionsDefinition(["all"]),
    ins={"readings": tg.AssetIn(partition_mapping=tg.AllPartitionMapping())},
)
def all_readings(readings: dict[str, dict[str, Any]]) -> dict[str, int]:
    return {key: reading["value"] for key, reading in readings.items()}


@tg.asset(io_manager_key="s3_io")
def prices() -> list[float]:
    return [1.5, 2.5]


@tg.asset(io_manager_key="s3_io")
def total(prices: list[float]) -> float:
    return sum(prices)


def test_materialize_with_s3_default_io_manager(s3_resource: S3Resource, s3_bucket: str) -> None:
    manager = S3IOManager(bucket=s3_bucket, prefix="m", s3=s3_resource)
    resources = {"io_manager": manager}
    for partition in ["north", "south west", "über"]:
        result = tg.materialize([readings, all_readings], resources, selection=[readings], partition_key=partition)
        (mat,) = [m for m in result.materializations if m.run_id == result.run_id]
        assert mat.metadata["uri"] == manager.uri_for(readings.key, partition)
        assert mat.metadata["size"] > 0
    # a downstream reading all partitions of its upstream loads them, as a dict, from S3
    # (it is partitioned itself because materialize's implicit job asks a partition key of any
    # selection once some asset is partitioned)
    result = tg.materialize([readings, all_readings], resources, selection=[all_readings], partition_key="all")
    value = manager.load_input(tg.InputContext(all_readings.key, result.run_id, "check", "all"))
    assert value == {"north": 5, "south west": 10, "über": 4}
    assert object_names(s3_resource, s3_bucket) == {
        "m/readings/north",
        "m/readings/south%20west",
        "m/readings/%C3%BCber",
        "m/all_readings/all",
    }


def test_materialize_with_io_manager_key(s3_resource: S3Resource, s3_bucket: str) -> None:
    manager = S3IOManager(bucket=s3_bucket, s3=s3_resource)
    result = tg.materialize([prices, total], {"s3_io": manager})
    assert result.success
    assert manager.load_input(inp("total")) == 4.0
    assert object_names(s3_resource, s3_bucket) == {
        "tidegate/prices/__unpartitioned__",
        "tidegate/total/__unpartitioned__",
    }
    # the in-memory default held nothing: both values went through S3
    with pytest.raises(KeyError):
        result.asset_value("total")
