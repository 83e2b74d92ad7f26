"""A local S3 server (moto in server mode on 127.0.0.1) and helpers that point the web
process and its workers at it. pytest loads it as a plugin (`-p tests.s3_server` in
pyproject.toml), so the session has one S3 server, started by the first test that uses it."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid

import pytest

from tests.bootstrap import VAR

BUCKET = "flowsite-tests"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class S3Server:
    """One `python -m moto.server` process and one bucket in it."""

    def __init__(self):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log_path = VAR / f"moto-{self.port}.log"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=open(self.log_path, "w"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.client = self._client()
        self._wait_ready()
        self.client.create_bucket(Bucket=BUCKET)

    def _client(self):
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id="testing", aws_secret_access_key="testing",
        )

    def _wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto server exited:\n{self.log_path.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"moto server not listening after {timeout} s")

    def env(self, prefix: str) -> dict:
        """The environment a Flowsite process needs to keep its files under prefix."""
        return {
            "FLOWSITE_STORAGE": "s3",
            "FLOWSITE_S3_BUCKET": BUCKET,
            "FLOWSITE_S3_PREFIX": prefix,
            "FLOWSITE_S3_ENDPOINT_URL": self.endpoint,
            "FLOWSITE_S3_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
        }

    def keys(self, prefix: str) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=BUCKET, Prefix=prefix
        )
        return [item["Key"] for page in pages for item in page.get("Contents", [])]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="session")
def s3_server():
    server = S3Server()
    yield server
    server.stop()


def storages_for(env: dict) -> dict:
    """STORAGES for the test process with the artifact alias built from env."""
    from django.conf import settings

    from flowsite import config

    return {**settings.STORAGES, "artifacts": config.artifact_storage(env, VAR)}


def worker_env(*, storage_env: dict, queue: str, own_disk: bool, name: str) -> dict:
    """Environment for a worker that shares only the database, broker and S3 with us.

    With own_disk, the worker also gets its own FLOWSITE_VAR_DIR, as on another host.
    The embedded filesystem broker lives in var/, so callers pass own_disk=False there.
    """
    from django.conf import settings

    env = {
        **storage_env,
        "FLOWSITE_DEFAULT_QUEUE": queue,
        # Step tokens are signed with SECRET_KEY, so every host needs the same one.
        "SECRET_KEY": settings.SECRET_KEY,
        "FLOWSITE_WORK_DIR": str(VAR / f"host-{name}" / "work"),
    }
    if own_disk:
        env["FLOWSITE_VAR_DIR"] = str(VAR / f"host-{name}" / "var")
    return env


def unique_prefix(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


def separate_hosts_supported() -> str:
    """Return why workers cannot act as separate hosts here, or '' when they can."""
    from django.conf import settings

    if settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        return "SQLite is one file on one disk; set DATABASE_URL to a PostgreSQL database"
    if settings.CELERY_BROKER_URL.startswith("filesystem://"):
        return "the filesystem broker is a folder on one disk; set CELERY_BROKER_URL to Redis"
    return ""

