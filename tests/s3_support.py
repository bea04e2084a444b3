"""An S3 (and SQS) server for the tests: moto in server mode, in its own process, reached over
HTTP by boto3.

Test files use it with::

    from tests.s3_support import s3_endpoint  # noqa: F401

and then ``s3_endpoint`` (the URL), ``s3_resource`` (an ``S3Resource`` pointing at it) and
``s3_bucket`` (a fresh, empty bucket for one test, deleted afterwards) as fixtures. The server
is started once per session on a free port; the AWS environment is set to dummy credentials
(``testing``) so no real account or ~/.aws file is ever used.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.support import free_port, require_service

REGION = "us-east-1"
DUMMY_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}


@contextlib.contextmanager
def moto_server(log_dir: Path | None = None, timeout: float = 30.0) -> Iterator[str]:
    """Start ``python -m moto.server`` on a free port, wait until it answers, yield its URL, stop it.

    Raises RuntimeError if moto is not installed or does not come up."""
    try:
        import moto.server  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(f"moto[server] is not installed ({exc}); pip install -e '.[dev]'") from exc
    log_path = Path(log_dir or tempfile.mkdtemp(prefix="tidegate-moto-")) / "moto.log"
    for _attempt in range(3):  # the free port may be taken between probing and binding it
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {**os.environ, **DUMMY_AWS_ENV}
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + timeout
        up = False
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"{url}/moto-api/", timeout=1):
                    up = True
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.1)
        if up:
            try:
                yield url
            finally:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            return
        if process.poll() is None:
            process.kill()
        process.wait()
    raise RuntimeError(f"moto server did not start; see {log_path}:\n{log_path.read_text()[-2000:]}")


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a moto server (S3 and SQS) for the whole session, with dummy AWS credentials
    in the environment while it runs."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in DUMMY_AWS_ENV.items():
            patch.setenv(name, value)
        try:
            server = moto_server(tmp_path_factory.mktemp("moto"))
            url = server.__enter__()
        except RuntimeError as exc:
            require_service("moto S3 server", str(exc))
            raise  # not reached: require_service skips or fails
        try:
            yield url
        finally:
            server.__exit__(None, None, None)


@pytest.fixture
def s3_resource(s3_endpoint: str) -> Any:
    from tidegate.s3 import S3Resource

    return S3Resource(endpoint_url=s3_endpoint, region_name=REGION)


@pytest.fixture
def s3_bucket(s3_resource: Any) -> Iterator[str]:
    """A fresh empty bucket for one test; emptied and deleted afterwards."""
    client = s3_resource.get_client()
    name = new_bucket(client)
    yield name
    delete_bucket(client, name)


def new_bucket(client: Any, prefix: str = "tg-test") -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    return name


def delete_bucket(client: Any, bucket: str) -> None:
    """Delete every object (all versions are not used: buckets are unversioned) and the bucket."""
    with contextlib.suppress(client.exceptions.NoSuchBucket):
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
        client.delete_bucket(Bucket=bucket)


def put_objects(client: Any, bucket: str, keys: list[str], body: bytes = b"x", threads: int = 8) -> None:
    """Put many small objects fast from a thread pool (boto3 clients are thread-safe; botocore
    keeps 10 connections per client, hence 8 threads)."""
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(lambda key: client.put_object(Bucket=bucket, Key=key, Body=body), keys))


def seed_objects(endpoint: str, bucket: str, keys: list[str], body: bytes = b"x", threads: int = 4) -> None:
    """Put many small objects into moto for a test to find, as plain unsigned HTTP PUTs (moto
    checks no signature): twice as fast as boto3, whose request building and signing cost more
    CPU than moto's handling of a 1-byte object. For seeding only; the code under test talks
    to moto through boto3."""
    parts = urllib.parse.urlsplit(endpoint)
    assert parts.hostname is not None and parts.port is not None, endpoint

    def put(chunk: list[str]) -> None:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        try:
            for key in chunk:
                connection.request("PUT", f"/{bucket}/{urllib.parse.quote(key, safe='/~')}", body=body)
                response = connection.getresponse()
                answer = response.read()
                assert response.status == 200, f"PUT {key}: {response.status} {answer[:500]!r}"
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(put, [keys[i::threads] for i in range(threads)]))


class RequestCounter:
    """Counts the API calls a boto3 client makes (one per HTTP request, retries aside), by
    operation name, through botocore's ``before-call`` event."""

    def __init__(self, *clients: Any) -> None:
        self.calls: Counter[str] = Counter()
        for client in clients:
            client.meta.events.register("before-call", self._count)

    def _count(self, model: Any, **_: Any) -> None:
        self.calls[model.name] += 1

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    def reset(self) -> Counter[str]:
        seen = self.calls.copy()
        self.calls.clear()
        return seen
