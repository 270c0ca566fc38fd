"""One checkpoint: a data file and its ``manifest.json``, written and read where the value is.

Beside each file, ``manifest.json`` says its format, size, sha256 and producer. It is written
after the file, so a manifest always describes a complete file.

Writing streams the value into a multipart upload (:mod:`.s3io`), hashing as it goes. Reading
fetches the file with parallel ranged GETs into one buffer (for ``.npy``, straight into the
array), checks size and sha256 against the manifest, and only then decodes: a file that does not
match its manifest is refused (:class:`~.protocol.CheckpointRefusedError`), never parsed or
unpickled.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from airflow_ray._remote import codecs
from airflow_ray._remote.protocol import CheckpointRefusedError
from airflow_ray._remote.s3io import MultipartUpload, S3Access, download, list_objects

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
_NPY_HEAD_BYTES = 1024 * 1024


def write_checkpoint(
    value: Any, access: S3Access, bucket: str, prefix: str, producer: dict[str, Any]
) -> dict[str, Any]:
    """Write ``value`` and its manifest under ``s3://bucket/prefix`` and return the manifest.

    ``prefix`` names one XCom of one task instance (it ends with ``/``): a retry overwrites
    it, and any other object left there by an earlier try (in another format) is removed.
    """
    client = access.client()
    fmt, kind = codecs.choose_format(value)
    data_name = codecs.DATA_NAMES[fmt]
    started = time.monotonic()
    upload = MultipartUpload(client, bucket, prefix + data_name, codecs.size_hint(value))
    try:
        codecs.encode(value, fmt, upload)
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
    for item in list(list_objects(client, bucket, prefix)):
        if item["Key"] not in (prefix + data_name, prefix + MANIFEST_NAME):
            client.delete_object(Bucket=bucket, Key=item["Key"])
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
        or manifest["format"] not in codecs.DATA_NAMES
        or manifest["object"] != codecs.DATA_NAMES[manifest["format"]]
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
    key = prefix + manifest["object"]
    uri = f"s3://{bucket}/{key}"
    if manifest["format"] == "cloudpickle" and not allow_pickle:
        raise CheckpointRefusedError(
            f"Refusing to unpickle {uri}: pickled checkpoints load only from the configured "
            f"checkpoint bucket ([ray] checkpoint_bucket, through [ray] checkpoint_conn_id)."
        )
    size = int(client.head_object(Bucket=bucket, Key=key)["ContentLength"])
    if size != manifest["size_bytes"]:
        raise CheckpointRefusedError(
            f"Refusing {uri}: it holds {size} bytes but its manifest says {manifest['size_bytes']}; "
            f"the file was changed or replaced after it was written. Clear the producing task to "
            f"compute it again."
        )
    if manifest["format"] == "npy":
        value = _read_npy(client, bucket, key, size, manifest, uri)
    else:
        buffer = bytearray(size)
        _verify(uri, manifest, download(client, bucket, key, memoryview(buffer), 0))
        value = codecs.decode(buffer, manifest["format"], manifest["kind"])
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


def _read_npy(client: Any, bucket: str, key: str, size: int, manifest: dict[str, Any], uri: str) -> Any:
    """Read a ``.npy`` straight into its array: the header first, to size it, then the data."""
    head = client.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{min(size, _NPY_HEAD_BYTES) - 1}")[
        "Body"
    ].read()
    array, header_size = codecs.npy_layout(head, uri)
    if header_size + array.nbytes != size:
        raise CheckpointRefusedError(
            f"Refusing {uri}: its header describes {array.nbytes} bytes of data but the file holds "
            f"{size - header_size}."
        )
    sha = hashlib.sha256(head[:header_size])
    _verify(uri, manifest, download(client, bucket, key, codecs.array_bytes(array), header_size, sha))
    return array
