"""Checkpoint files and their transfer to S3: what runs where the value is (usually in Ray).

Formats a data scientist opens without airflow-ray:

- ``pyarrow.Table`` and ``pandas.DataFrame``: Parquet (``value.parquet``);
- ``numpy.ndarray`` (not of object dtype): NumPy's ``.npy`` (``value.npy``);
- anything else: cloudpickle (``value.pkl``).

Beside each file, ``manifest.json`` says its format, size, sha256 and producer. It is written
after the file, so a manifest always describes a complete file.

Writing streams: the value is encoded into a multipart upload part by part (a few parts in
flight), hashing as it goes, so no second copy of the value is ever held. Reading fetches the
file with parallel ranged GETs into one buffer (for ``.npy``, straight into the array), checks
size and sha256 against the manifest, and only then decodes: a file that does not match its
manifest is refused, never parsed or unpickled.

Like :mod:`airflow_ray.cluster.remote_call`, this module is shipped to the cluster by value and
imports only the standard library at module level (boto3, numpy, pyarrow, pandas inside).
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

MANIFEST_NAME = "manifest.json"
DATA_NAMES = {"parquet": "value.parquet", "npy": "value.npy", "cloudpickle": "value.pkl"}
MANIFEST_VERSION = 1
PART_SIZE = 16 * 1024 * 1024
MAX_PARTS = 9000  # S3 allows 10,000 parts per upload
IN_FLIGHT = 4
_PARQUET_ROWS_PER_BATCH = 256 * 1024


class CheckpointRefusedError(ValueError):
    """A checkpoint failed verification (or may not be unpickled from where it is); never loaded.

    The Airflow side recognizes it by ``airflow_ray_refused`` (this class travels by value, so
    it is not the same class object there).
    """

    airflow_ray_refused = True


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


# -- writing -------------------------------------------------------------------------------


class MultipartUpload(io.RawIOBase):
    """A writable stream that uploads to ``s3://bucket/key`` in parts, hashing what it is given.

    Up to ``IN_FLIGHT`` parts upload at once; on close the upload completes (one ``PutObject``
    when everything fit in one part). Leaving the ``with`` block through an exception aborts
    it, so no incomplete upload is left behind.
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


def choose_format(value: Any) -> tuple[str, str]:
    """``(format, kind)`` for a value: kind says what :func:`decode` gives back."""
    module = type(value).__module__.split(".")[0]
    name = type(value).__name__
    if module == "pyarrow" and name == "Table":
        return "parquet", "pyarrow.Table"
    if module == "pandas" and name == "DataFrame" and _arrow_can_hold(value):
        return "parquet", "pandas.DataFrame"
    if module == "numpy" and name == "ndarray" and not value.dtype.hasobject:
        return "npy", "numpy.ndarray"
    return "cloudpickle", f"{type(value).__module__}.{type(value).__qualname__}".removeprefix("builtins.")


def _arrow_can_hold(frame: Any) -> bool:
    import pyarrow as pa

    try:
        pa.Schema.from_pandas(frame.head(1000))
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return False
    return True


def size_hint(value: Any) -> int | None:
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    if hasattr(value, "memory_usage"):
        return int(value.memory_usage(index=True, deep=False).sum())
    return None


def encode(value: Any, fmt: str, sink: Any) -> None:
    """Write ``value`` to the binary stream ``sink`` in ``fmt``, a piece at a time."""
    if fmt == "npy":
        _write_npy(value, sink)
    elif fmt == "parquet":
        _write_parquet(value, sink)
    else:
        import ray.cloudpickle as cloudpickle

        cloudpickle.dump(value, sink, protocol=5)


def _write_npy(array: Any, sink: Any) -> None:
    import numpy as np

    if not (array.flags.c_contiguous or array.flags.f_contiguous):
        np.lib.format.write_array(sink, array, allow_pickle=False)
        return
    header = np.lib.format.header_data_from_array_1_0(array)
    if len(repr(header)) > 65000:  # version 1.0 headers hold at most 64 KiB
        np.lib.format.write_array_header_2_0(sink, header)
    else:
        np.lib.format.write_array_header_1_0(sink, header)
    # The array's own memory, in file order, a part at a time: no copy of the whole.
    data = memoryview(array.ravel(order="K").view(np.uint8))  # a view: the array is contiguous
    for start in range(0, len(data), PART_SIZE):
        sink.write(data[start : start + PART_SIZE])


def _write_parquet(value: Any, sink: Any) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if isinstance(value, pa.Table):
        pq.write_table(value, sink, use_dictionary=_dictionary_columns(value.schema))
        return
    # A DataFrame is converted a slice at a time: never a full Arrow copy beside it. The schema
    # (and its pandas metadata: index, column names) is the whole frame's.
    schema = pa.Schema.from_pandas(value)
    with pq.ParquetWriter(sink, schema, use_dictionary=_dictionary_columns(schema)) as writer:
        for start in range(0, max(len(value), 1), _PARQUET_ROWS_PER_BATCH):
            chunk = value.iloc[start : start + _PARQUET_ROWS_PER_BATCH]
            writer.write_table(pa.Table.from_pandas(chunk, schema=schema, preserve_index=None))


def _dictionary_columns(schema: Any) -> list[str]:
    """Columns worth dictionary encoding: not floating point, whose values rarely repeat (trying
    it on 100 MB of doubles costs more than the upload)."""
    import pyarrow as pa

    return [field.name for field in schema if not pa.types.is_floating(field.type)]


def write_checkpoint(
    value: Any, access: S3Access, bucket: str, prefix: str, producer: dict[str, Any]
) -> dict[str, Any]:
    """Write ``value`` and its manifest under ``s3://bucket/prefix`` and return the manifest.

    ``prefix`` names one XCom of one task instance (it ends with ``/``): a retry overwrites
    it, and any other object left there by an earlier try (in another format) is removed.
    """
    client = access.client()
    fmt, kind = choose_format(value)
    data_name = DATA_NAMES[fmt]
    started = time.monotonic()
    upload = MultipartUpload(client, bucket, prefix + data_name, size_hint(value))
    try:
        encode(value, fmt, upload)
        upload.finish()
    except BaseException:
        upload.abort()
        raise
    manifest = {
        "airflow_ray_checkpoint": MANIFEST_VERSION,
        "format": fmt,
        "kind": kind,
        "object": data_name,
        "size_bytes": upload.size,
        "sha256": upload.sha256,
        "producer": producer,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": _versions(fmt),
    }
    client.put_object(
        Bucket=bucket,
        Key=prefix + MANIFEST_NAME,
        Body=json.dumps(manifest, indent=1).encode(),
        ContentType="application/json",
    )
    for key in _keys_under(client, bucket, prefix):
        if key not in (prefix + data_name, prefix + MANIFEST_NAME):
            client.delete_object(Bucket=bucket, Key=key)
    print(
        f"Checkpoint written: s3://{bucket}/{prefix}{data_name} ({fmt}, {upload.size / 1024**2:.1f} MB, "
        f"{time.monotonic() - started:.2f} s)"
    )
    return manifest


def _versions(fmt: str) -> dict[str, str]:
    import platform

    versions = {"python": platform.python_version()}
    module = {"parquet": "pyarrow", "npy": "numpy", "cloudpickle": "ray"}[fmt]
    versions[module] = __import__(module).__version__
    return versions


def _keys_under(client: Any, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return keys


# -- reading -------------------------------------------------------------------------------


def read_manifest(client: Any, bucket: str, prefix: str) -> dict[str, Any]:
    body = client.get_object(Bucket=bucket, Key=prefix + MANIFEST_NAME)["Body"].read()
    try:
        manifest = json.loads(body)
    except ValueError as err:
        raise CheckpointRefusedError(
            f"s3://{bucket}/{prefix}{MANIFEST_NAME} is not a checkpoint manifest: {err}"
        ) from err
    expected = {"format", "kind", "object", "size_bytes", "sha256"}
    if (
        not isinstance(manifest, dict)
        or not expected <= manifest.keys()
        or manifest["format"] not in DATA_NAMES
        or manifest["object"] != DATA_NAMES[manifest["format"]]
    ):
        raise CheckpointRefusedError(
            f"s3://{bucket}/{prefix}{MANIFEST_NAME} is not a manifest airflow-ray wrote "
            f"(format {manifest.get('format') if isinstance(manifest, dict) else None!r})."
        )
    return manifest


def read_checkpoint(access: S3Access, bucket: str, prefix: str, allow_pickle: bool) -> Any:
    """The value checkpointed under ``s3://bucket/prefix``, verified against its manifest.

    :param allow_pickle: whether this location may hold cloudpickle files (only the configured
        checkpoint bucket may: unpickling runs code).
    :raises CheckpointRefusedError: the file is not what its manifest says, or is a pickle
        outside the configured location.
    """
    client = access.client()
    started = time.monotonic()
    manifest = read_manifest(client, bucket, prefix)
    uri = f"s3://{bucket}/{prefix}{manifest['object']}"
    if manifest["format"] == "cloudpickle" and not allow_pickle:
        raise CheckpointRefusedError(
            f"Refusing to unpickle {uri}: pickled checkpoints load only from the configured "
            f"checkpoint bucket ([ray] checkpoint_bucket, through [ray] checkpoint_conn_id)."
        )
    size = int(client.head_object(Bucket=bucket, Key=prefix + manifest["object"])["ContentLength"])
    if size != manifest["size_bytes"]:
        raise CheckpointRefusedError(
            f"Refusing {uri}: it holds {size} bytes but its manifest says {manifest['size_bytes']}; "
            f"the file was changed or replaced after it was written. Clear the producing task to "
            f"compute it again."
        )
    if manifest["format"] == "npy":
        value = _read_npy(client, bucket, prefix + manifest["object"], size, manifest, uri)
    else:
        buffer = bytearray(size)
        _verify(uri, manifest, _download(client, bucket, prefix + manifest["object"], memoryview(buffer), 0))
        value = _decode(buffer, manifest)
    print(
        f"Checkpoint read: {uri} ({manifest['format']}, {size / 1024**2:.1f} MB, sha256 verified, "
        f"{time.monotonic() - started:.2f} s)"
    )
    return value


def _verify(uri: str, manifest: dict[str, Any], digest: str) -> None:
    if digest != manifest["sha256"]:
        raise CheckpointRefusedError(
            f"Refusing {uri}: its sha256 is {digest} but its manifest says {manifest['sha256']}; "
            f"the file is corrupt or was changed after it was written. Clear the producing task "
            f"to compute it again."
        )


def _download(client: Any, bucket: str, key: str, into: memoryview, offset: int, sha: Any = None) -> str:
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


def _read_npy(client: Any, bucket: str, key: str, size: int, manifest: dict[str, Any], uri: str) -> Any:
    import numpy as np

    head = client.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{min(size, 1024 * 1024) - 1}")[
        "Body"
    ].read()
    stream = io.BytesIO(head)
    try:
        version = np.lib.format.read_magic(stream)
        reader = (
            np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        )
        shape, fortran_order, dtype = reader(stream)
    except ValueError as err:
        raise CheckpointRefusedError(f"Refusing {uri}: not a valid .npy file ({err}).") from err
    if dtype.hasobject:
        raise CheckpointRefusedError(f"Refusing {uri}: a .npy of object dtype would need unpickling.")
    header_size = stream.tell()
    array: Any = np.empty(shape, dtype=dtype, order="F" if fortran_order else "C")
    if header_size + array.nbytes != size:
        raise CheckpointRefusedError(
            f"Refusing {uri}: its header describes {array.nbytes} bytes of data but the file holds "
            f"{size - header_size}."
        )
    sha = hashlib.sha256(head[:header_size])
    data = memoryview(array.ravel(order="K").view(np.uint8)) if array.nbytes else memoryview(b"")
    _verify(uri, manifest, _download(client, bucket, key, data, header_size, sha))
    return array


def _decode(buffer: bytearray, manifest: dict[str, Any]) -> Any:
    if manifest["format"] == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pq.read_table(pa.py_buffer(buffer))
        if manifest["kind"] == "pandas.DataFrame":
            return table.to_pandas(self_destruct=True, split_blocks=True)
        return table
    import ray.cloudpickle as cloudpickle

    return cloudpickle.loads(buffer)
