"""``S3Resource``: boto3 clients for S3 (and SQS, for event notifications) built from the
standard AWS credential chain.

Credentials given explicitly are only passed to ``boto3.Session``; they never appear in the
resource's repr (``ConfigurableResource`` prints field names only), in logs, tick records,
run tags or error messages. Leave them unset in production: environment variables, the
shared config/credentials files (``profile_name``), web identity and instance or container
roles are then used, in boto3's usual order.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from tidegate.definitions.resource import ConfigurableResource
from tidegate.errors import InvalidDefinitionError, S3DependencyError

INSTALL_HINT = "pip install 'tidegate[s3]'"
_RETRY_MODES = ("standard", "adaptive", "legacy")
_ADDRESSING_STYLES = ("auto", "path", "virtual")
_CLIENT_LOCK = threading.Lock()


def import_boto3() -> Any:
    """boto3, or a typed error with the install hint."""
    try:
        import boto3
    except ImportError as exc:
        raise S3DependencyError(f"S3 support needs boto3, which is not installed: {INSTALL_HINT}") from exc
    return boto3


class S3Resource(ConfigurableResource):
    """Where and how to reach S3::

        defs = tg.Definitions(..., resources={"s3": tg.S3Resource(region_name="eu-west-1")})

    ``endpoint_url`` points at an S3-compatible server (MinIO, moto, Ceph); SQS uses
    ``sqs_endpoint_url`` or, when that is unset, ``endpoint_url``. Clients are created once per
    resource object and process, and shared by its threads (boto3 clients are thread-safe); a
    forked process (a Celery worker child) builds its own instead of using its parent's sockets.
    """

    endpoint_url: str | None = None
    region_name: str | None = None
    profile_name: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    aws_session_token: str | None = None
    sqs_endpoint_url: str | None = None
    max_attempts: int = 5
    retry_mode: str = "standard"
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    addressing_style: str = "auto"

    def __post_init__(self) -> None:
        name = type(self).__name__
        if not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise InvalidDefinitionError(f"{name}: max_attempts must be an int >= 1, got {self.max_attempts!r}")
        if self.retry_mode not in _RETRY_MODES:
            raise InvalidDefinitionError(f"{name}: retry_mode must be one of {_RETRY_MODES}, got {self.retry_mode!r}")
        if self.addressing_style not in _ADDRESSING_STYLES:
            raise InvalidDefinitionError(
                f"{name}: addressing_style must be one of {_ADDRESSING_STYLES}, got {self.addressing_style!r}"
            )
        for field_name in ("connect_timeout", "read_timeout"):
            value = getattr(self, field_name)
            if not isinstance(value, int | float) or value <= 0:
                raise InvalidDefinitionError(f"{name}: {field_name} must be > 0, got {value!r}")
        if (self.aws_access_key_id is None) != (self.aws_secret_access_key is None):
            # name the fields, never their values
            raise InvalidDefinitionError(
                f"{name}: give both aws_access_key_id and aws_secret_access_key, or neither "
                "(neither: the standard AWS credential chain is used)"
            )

    def get_client(self) -> Any:
        """The S3 client (``botocore.client.S3``), created on first use."""
        return self._client("s3", self.endpoint_url)

    def get_sqs_client(self) -> Any:
        """The SQS client, for S3 event notifications delivered to a queue."""
        return self._client("sqs", self.sqs_endpoint_url or self.endpoint_url)

    def _client(self, service: str, endpoint_url: str | None) -> Any:
        pid = os.getpid()
        with _CLIENT_LOCK:
            owner, cache = self.__dict__.get("_tidegate_clients", (None, {}))
            if owner != pid:
                cache = {}
                self.__dict__["_tidegate_clients"] = (pid, cache)
            if service not in cache:
                cache[service] = self._session().client(service, endpoint_url=endpoint_url, config=self._config())
            return cache[service]

    def _session(self) -> Any:
        boto3 = import_boto3()
        return boto3.session.Session(
            aws_access_key_id=self.aws_access_key_id,
            aws_secret_access_key=self.aws_secret_access_key,
            aws_session_token=self.aws_session_token,
            region_name=self.region_name,
            profile_name=self.profile_name,
        )

    def _config(self) -> Any:
        from botocore.config import Config

        return Config(
            retries={"max_attempts": self.max_attempts, "mode": self.retry_mode},
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            s3={"addressing_style": self.addressing_style},
        )

    def __getstate__(self) -> dict[str, Any]:
        # clients hold sockets and locks: a copy (e.g. sent to another process) makes its own
        state = dict(self.__dict__)
        state.pop("_tidegate_clients", None)
        return state
