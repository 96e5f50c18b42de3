"""A local S3 endpoint for the tests (moto's threaded server on 127.0.0.1, a free port): never the internet."""

from __future__ import annotations

import itertools
import logging
import os
from pathlib import Path

import pytest

# Fake credentials only: they prove none of them leaks into messages, manifests or summaries.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "AKIDOCSCORETEST", "AWS_SECRET_ACCESS_KEY": "docscore-test-secret-key",
               "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
_names = itertools.count()


class S3:
    """The endpoint, a boto3 client, and helpers to create buckets and move trees in and out."""

    def __init__(self, endpoint: str):
        import boto3

        self.endpoint = endpoint
        self.client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")

    def bucket(self) -> str:
        name = f"bucket-{os.getpid()}-{next(_names)}"
        self.client.create_bucket(Bucket=name)
        return name

    def upload(self, local: Path, bucket: str, prefix: str) -> str:
        for path in sorted(p for p in Path(local).rglob("*") if p.is_file()):
            self.client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(local).as_posix()}")
        return f"s3://{bucket}/{prefix}"

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def get(self, bucket: str, key: str) -> bytes:
        return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()


@pytest.fixture(scope="session")
def s3():
    pytest.importorskip("moto", reason="pip install 'docscore[dev]' for the object-storage tests")
    from moto.server import ThreadedMotoServer

    saved = {k: os.environ.get(k) for k in [*CREDENTIALS, "AWS_ENDPOINT_URL", "AWS_PROFILE"]}
    os.environ.update(CREDENTIALS)
    os.environ.pop("AWS_ENDPOINT_URL", None)
    os.environ.pop("AWS_PROFILE", None)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield S3(f"http://{host}:{port}")
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
