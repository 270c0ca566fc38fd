"""The checkpoint file formats and the multipart writer, against an in-memory stand-in for S3."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from airflow_ray._remote import codecs, s3io
from airflow_ray._remote.codecs import choose_format
from airflow_ray._remote.s3io import MultipartUpload, S3Access


class FakeS3:
    """Records what the writer sends; only what MultipartUpload calls."""

    def __init__(self) -> None:
        self.parts: dict[int, bytes] = {}
        self.objects: dict[str, bytes] = {}
        self.aborted = False

    def create_multipart_upload(self, Bucket, Key):
        return {"UploadId": "u1"}

    def upload_part(self, Bucket, Key, UploadId, PartNumber, Body):
        self.parts[PartNumber] = Body
        return {"ETag": f"e{PartNumber}"}

    def complete_multipart_upload(self, Bucket, Key, UploadId, MultipartUpload):
        numbers = [p["PartNumber"] for p in MultipartUpload["Parts"]]
        assert numbers == sorted(self.parts) == list(range(1, len(numbers) + 1))
        self.objects[Key] = b"".join(self.parts[n] for n in numbers)

    def put_object(self, Bucket, Key, Body):
        self.objects[Key] = Body

    def abort_multipart_upload(self, Bucket, Key, UploadId):
        self.aborted = True


def test_formats_are_chosen_by_type():
    assert choose_format(pa.table({"a": [1]})) == ("parquet", "pyarrow.Table")
    assert choose_format(pd.DataFrame({"a": [1]})) == ("parquet", "pandas.DataFrame")
    assert choose_format(np.zeros(3)) == ("npy", "numpy.ndarray")
    assert choose_format(np.array([object()]))[0] == "cloudpickle"
    assert choose_format(pd.DataFrame({"a": [object()]}))[0] == "cloudpickle"  # Arrow cannot hold it
    assert choose_format({"a": 1}) == ("cloudpickle", "dict")


def test_a_large_value_goes_up_in_parts_hashed_as_it_is_written(monkeypatch):
    monkeypatch.setattr(s3io, "PART_SIZE", 1000)
    s3 = FakeS3()
    upload = MultipartUpload(s3, "b", "k")
    data = bytes(range(256)) * 20  # 5120 bytes: five full parts and a short one
    for start in range(0, len(data), 333):
        upload.write(data[start : start + 333])
    upload.finish()
    assert [len(part) for _, part in sorted(s3.parts.items())] == [1000] * 5 + [120]
    assert s3.objects["k"] == data
    assert upload.sha256 == hashlib.sha256(data).hexdigest() and upload.size == len(data)


def test_a_small_value_is_one_put_and_a_failed_upload_is_aborted(monkeypatch):
    monkeypatch.setattr(s3io, "PART_SIZE", 1000)
    s3 = FakeS3()
    small = MultipartUpload(s3, "b", "small")
    small.write(b"x" * 10)
    small.finish()
    assert s3.objects == {"small": b"x" * 10} and not s3.parts
    failing = MultipartUpload(s3, "b", "big")
    failing.write(b"y" * 2500)
    failing.abort()
    assert s3.aborted and "big" not in s3.objects


def test_the_part_size_grows_so_that_huge_values_fit_in_10000_parts():
    assert MultipartUpload(FakeS3(), "b", "k", size_hint=10).part_size == s3io.PART_SIZE
    huge = 500 * 1024**3
    assert MultipartUpload(FakeS3(), "b", "k", size_hint=huge).part_size * s3io.MAX_PARTS >= huge


@pytest.mark.parametrize("order", ["C", "F"])
def test_npy_encoding_is_what_numpy_reads(order):
    array = np.asarray(np.arange(60, dtype=np.float32).reshape(3, 4, 5), order=order)
    sink = io.BytesIO()
    codecs.encode(array, "npy", sink)
    loaded = np.load(io.BytesIO(sink.getvalue()), allow_pickle=False)
    assert np.array_equal(loaded, array) and loaded.flags.f_contiguous == array.flags.f_contiguous


def test_credentials_stay_out_of_repr():
    access = S3Access("http://127.0.0.1:9000", "us-east-1", "AKIAEXAMPLE", "very-secret", "token-xyz")
    shown = repr(access)
    assert "very-secret" not in shown and "AKIAEXAMPLE" not in shown and "token-xyz" not in shown
    assert "127.0.0.1:9000" in shown
