"""Checkpoint file formats that a data scientist opens without airflow-ray.

- ``pyarrow.Table`` and ``pandas.DataFrame``: Parquet (``value.parquet``);
- ``numpy.ndarray`` (not of object dtype): NumPy's ``.npy`` (``value.npy``);
- anything else: cloudpickle (``value.pkl``).

Encoding writes to a binary stream a piece at a time, so no second copy of the value is held.
numpy, pyarrow and pandas are imported inside the functions that need them.
"""

from __future__ import annotations

import io
from typing import Any

from airflow_ray._remote.protocol import CheckpointRefusedError

DATA_NAMES = {"parquet": "value.parquet", "npy": "value.npy", "cloudpickle": "value.pkl"}
WRITE_CHUNK = 16 * 1024 * 1024
_PARQUET_ROWS_PER_BATCH = 256 * 1024


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
    for start in range(0, len(data), WRITE_CHUNK):
        sink.write(data[start : start + WRITE_CHUNK])


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


def npy_layout(head: bytes, uri: str) -> tuple[Any, int]:
    """An empty array shaped as the ``.npy`` file whose first bytes are ``head``, and the size of
    its header; refuses object dtypes (they would need unpickling)."""
    import numpy as np

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
    return np.empty(shape, dtype=dtype, order="F" if fortran_order else "C"), stream.tell()


def array_bytes(array: Any) -> memoryview:
    """The array's own memory as bytes, in file order (no copy)."""
    import numpy as np

    return memoryview(array.ravel(order="K").view(np.uint8)) if array.nbytes else memoryview(b"")


def decode(buffer: bytearray, fmt: str, kind: str) -> Any:
    """The value of a Parquet or cloudpickle file held in ``buffer``."""
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pq.read_table(pa.py_buffer(buffer))
        if kind == "pandas.DataFrame":
            return table.to_pandas(self_destruct=True, split_blocks=True)
        return table
    import ray.cloudpickle as cloudpickle

    return cloudpickle.loads(buffer)
