"""S3 transfers where the value is: a streaming multipart upload and a parallel, hashed download.

Runs inside the cluster (and in the Airflow worker for values that live there). boto3 and
botocore are imported inside the functions that need them.
"""

from __future__ import annotations

import hashlib
import io
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from airflow_ray._remote.protocol import CheckpointRefusedError

PART_SIZE = 16 * 1024 * 1024
MAX_PARTS = 9000  # S3 allows 10,000 parts per upload
IN_FLIGHT = 4


@dataclass(frozen=True)
class S3Access:
    """How to reach the S3 endpoint of an Airflow AWS connection, resolved by the Airflow worker.

    The secrets are kept out of ``repr`` so that they never reach a log or an error message.
    """

    endpoint_url: str | None
    region_name: str | None
    access_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    verify: bool | str | None = None
    config: Any = field(default=None, repr=False)  # botocore Config (timeouts, addressing style)

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        # Our own sha256 covers every byte. botocore's response checksums are those of the whole
        # object, which some S3 servers also send for a ranged GET, failing a good read.
        config = Config(
            request_checksum_calculation="when_required", response_checksum_validation="when_required"
        )
        if self.config is not None:
            config = self.config.merge(config)
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region_name,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            aws_session_token=self.session_token,
            verify=self.verify,
            config=config,
        )


def list_objects(client: Any, bucket: str, prefix: str) -> Iterator[dict[str, Any]]:
    """Every object under ``prefix`` (``Key``, ``Size``, ``LastModified`` ...), page by page."""
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        yield from page.get("Contents", [])


class MultipartUpload(io.RawIOBase):
    """A writable stream that uploads to ``s3://bucket/key`` in parts, hashing what it is given.

    Up to ``IN_FLIGHT`` parts upload at once; :meth:`finish` completes the upload (one
    ``PutObject`` when everything fit in one part) and :meth:`abort` drops it, so no incomplete
    upload is left behind.
    """

    def __init__(self, client: Any, bucket: str, key: str, size_hint: int | None = None) -> None:
        super().__init__()
        self._client = client
        self._bucket = bucket
        self._key = key
        self.part_size = max(PART_SIZE, -(-(size_hint or 0) // MAX_PARTS))
        self._buffer = bytearray()
        self._sha = hashlib.sha256()
        self.size = 0
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._pending: deque[tuple[int, Future[Any]]] = deque()
        self._pool: ThreadPoolExecutor | None = None

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        written = len(view)
        self._sha.update(view)
        self.size += written
        while len(view):
            room = self.part_size - len(self._buffer)
            self._buffer += view[:room]
            view = view[room:]
            if len(self._buffer) >= self.part_size:
                self._send_part()
        return written

    def _send_part(self) -> None:
        if self._upload_id is None:
            self._upload_id = self._client.create_multipart_upload(Bucket=self._bucket, Key=self._key)[
                "UploadId"
            ]
            self._pool = ThreadPoolExecutor(IN_FLIGHT, thread_name_prefix="checkpoint-upload")
        assert self._pool is not None
        while len(self._pending) >= IN_FLIGHT:
            self._collect(*self._pending.popleft())
        number = len(self._parts) + len(self._pending) + 1
        body = bytes(self._buffer)
        self._buffer = bytearray()
        future = self._pool.submit(
            self._client.upload_part,
            Bucket=self._bucket,
            Key=self._key,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=body,
        )
        self._pending.append((number, future))

    def _collect(self, number: int, future: Future[Any]) -> None:
        self._parts.append({"PartNumber": number, "ETag": future.result()["ETag"]})

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    def finish(self) -> None:
        """Upload what is left and complete the object."""
        if self._upload_id is None:
            self._client.put_object(Bucket=self._bucket, Key=self._key, Body=bytes(self._buffer))
            return
        if self._buffer:
            self._send_part()
        while self._pending:
            self._collect(*self._pending.popleft())
        self._client.complete_multipart_upload(
            Bucket=self._bucket,
            Key=self._key,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": sorted(self._parts, key=lambda p: p["PartNumber"])},
        )
        self._shutdown()

    def abort(self) -> None:
        for _, future in self._pending:
            future.cancel()
        self._shutdown()
        if self._upload_id is not None:
            self._client.abort_multipart_upload(Bucket=self._bucket, Key=self._key, UploadId=self._upload_id)

    def _shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def download(client: Any, bucket: str, key: str, into: memoryview, offset: int, sha: Any = None) -> str:
    """Fill ``into`` with the object's bytes from ``offset`` on, parts in parallel; return sha256.

    ``sha`` may already hold the hash of the bytes before ``offset``.
    """
    sha = sha or hashlib.sha256()
    total = len(into)
    spans = [(start, min(start + PART_SIZE, total)) for start in range(0, total, PART_SIZE)]

    def fetch(span: tuple[int, int]) -> None:
        start, end = span
        body = client.get_object(Bucket=bucket, Key=key, Range=f"bytes={offset + start}-{offset + end - 1}")[
            "Body"
        ]
        position = start
        for chunk in body.iter_chunks(1024 * 1024):
            into[position : position + len(chunk)] = chunk
            position += len(chunk)
        if position != end:
            raise CheckpointRefusedError(f"s3://{bucket}/{key} ended early, at byte {offset + position}.")

    with ThreadPoolExecutor(IN_FLIGHT, thread_name_prefix="checkpoint-download") as pool:
        futures = [pool.submit(fetch, span) for span in spans]
        for (start, end), future in zip(spans, futures, strict=True):
            future.result()
            sha.update(into[start:end])  # in order, while later parts still download
    return str(sha.hexdigest())
