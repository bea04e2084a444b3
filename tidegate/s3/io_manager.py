"""``S3IOManager``: step outputs as pickles in an S3 bucket, so workers on different machines
share nothing but the bucket (and Redis and the database).

One object per asset and partition::

    s3://<bucket>/<prefix>/<asset/key/path>/<quoted partition key | __unpartitioned__>

Partition keys are percent-quoted (``/``, spaces, ``%`` and non-ASCII characters included), so
every key maps to exactly one object name and none can reach outside its asset's folder. A PUT
is atomic in S3: a reader sees the previous object or the new one, never half of one, so unlike
the filesystem IO manager no temporary name is needed.
"""

from __future__ import annotations

import pickle
import tempfile
from typing import Any
from urllib.parse import quote

from tidegate.definitions.key import AssetKey
from tidegate.errors import InvalidDefinitionError, S3IOManagerError, S3OutputNotFoundError
from tidegate.s3.resource import S3Resource
from tidegate.workers.io import InputContext, IOManager, OutputContext

UNPARTITIONED = "__unpartitioned__"
_SPOOL_BYTES = 64 * 1024 * 1024  # pickles up to this size stay in memory on their way to S3
_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})


class S3IOManager(IOManager):
    """Pickles each output to one S3 object; use it as the default IO manager of a code
    location whose workers run on several machines::

        defs = tg.Definitions(
            assets=[...],
            resources={"io_manager": S3IOManager(bucket="my-bucket", s3=S3Resource(region_name="eu-west-1"))},
        )

    ``s3`` says how to reach S3 (endpoint, region, credentials); by default an ``S3Resource()``
    using the standard AWS credential chain. Each process makes its own client on first use.
    Output metadata records ``uri`` (``s3://bucket/key``) and ``size`` (bytes).
    """

    def __init__(self, bucket: str, prefix: str = "tidegate", s3: S3Resource | None = None) -> None:
        if not isinstance(bucket, str) or not bucket.strip() or "/" in bucket:
            raise InvalidDefinitionError(f"S3IOManager: bucket must be a bucket name (no '/'), got {bucket!r}")
        if not isinstance(prefix, str):
            raise InvalidDefinitionError(f"S3IOManager: prefix must be a string, got {prefix!r}")
        if s3 is not None and not callable(getattr(s3, "get_client", None)):
            raise InvalidDefinitionError(f"S3IOManager: s3 must be an S3Resource, got {type(s3).__name__}")
        self.bucket = bucket.strip()
        self.prefix = prefix.strip("/")
        self.s3 = s3 if s3 is not None else S3Resource()

    # -- naming ----------------------------------------------------------------------------

    def object_key(self, asset_key: AssetKey, partition_key: str | None = None) -> str:
        """The object name of one asset's (one partition's) output."""
        last = UNPARTITIONED if partition_key is None else quote(partition_key, safe="")
        return "/".join([*filter(None, [self.prefix]), *asset_key.path, last])

    def _context_key(self, context: OutputContext | InputContext) -> str:
        if context.asset_key is None:  # an op output: run id / step key / output [/ mapping key]
            parts = [quote(part, safe="") for part in context.get_identifier()]
            return "/".join([*filter(None, [self.prefix]), ".op_outputs", *parts])
        return self.object_key(context.asset_key, context.partition_key)

    def uri_for(self, asset_key: AssetKey, partition_key: str | None = None) -> str:
        return f"s3://{self.bucket}/{self.object_key(asset_key, partition_key)}"

    # -- the protocol ----------------------------------------------------------------------

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        key = self._context_key(context)
        with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as buffer:
            pickle.dump(obj, buffer, protocol=pickle.HIGHEST_PROTOCOL)
            size = buffer.tell()
            buffer.seek(0)
            try:
                self.client().upload_fileobj(
                    buffer,
                    self.bucket,
                    key,
                    ExtraArgs={
                        "ContentType": "application/x-python-pickle",
                        "Metadata": {"tidegate-asset": str(context.asset_key), "tidegate-run-id": context.run_id},
                    },
                )
            except Exception as exc:
                if not _is_boto_error(exc):
                    raise
                raise S3IOManagerError(
                    f"{_describe(context.asset_key, context.partition_key)}: cannot write "
                    f"s3://{self.bucket}/{key}: {_error_text(exc)}"
                ) from exc
        context.add_output_metadata({"uri": f"s3://{self.bucket}/{key}", "size": size})

    def load_input(self, context: InputContext) -> Any:
        key = self._context_key(context)
        uri = f"s3://{self.bucket}/{key}"
        with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as buffer:
            try:
                self.client().download_fileobj(self.bucket, key, buffer)
            except Exception as exc:
                if not _is_boto_error(exc):
                    raise
                where = _describe(context.asset_key, context.partition_key)
                if _error_code(exc) in _NOT_FOUND_CODES:
                    raise S3OutputNotFoundError(
                        f"{where}: no stored output at {uri}: materialize it first (or it returned None)",
                        asset_key=context.asset_key,
                        partition_key=context.partition_key,
                        uri=uri,
                    ) from None
                raise S3IOManagerError(f"{where}: cannot read {uri}: {_error_text(exc)}") from exc
            buffer.seek(0)
            return pickle.load(buffer)

    # -- the client ------------------------------------------------------------------------

    def client(self) -> Any:
        """This process's S3 client (``S3Resource`` builds one per process)."""
        return self.s3.get_client()

    def __repr__(self) -> str:
        return f"S3IOManager(bucket={self.bucket!r}, prefix={self.prefix!r}, s3={self.s3!r})"


def _describe(asset_key: AssetKey | None, partition_key: str | None) -> str:
    text = f"asset '{asset_key}'" if asset_key is not None else "op output"
    return text if partition_key is None else f"{text} partition {partition_key!r}"


def _is_boto_error(exc: BaseException) -> bool:
    return type(exc).__module__.startswith(("botocore", "boto3", "s3transfer"))


def _error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def _error_text(exc: BaseException) -> str:
    # botocore messages name the operation, the error code and the server's message; they carry
    # no credentials (requests are signed, keys never sent)
    return f"{type(exc).__name__}: {exc}"
