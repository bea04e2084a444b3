"""S3 support (the ``s3`` extra, which installs boto3): ``S3Resource``, ``s3_sensor`` and ``S3IOManager``.

Importing this package does not import boto3; building a client does, and says how to
install it when it is missing.
"""

from tidegate.errors import S3DependencyError, S3IOManagerError, S3OutputNotFoundError
from tidegate.s3.io_manager import S3IOManager
from tidegate.s3.resource import S3Resource
from tidegate.s3.sensor import s3_sensor

__all__ = ["S3DependencyError", "S3IOManager", "S3IOManagerError", "S3OutputNotFoundError", "S3Resource", "s3_sensor"]
