"""HIGGS data for the XGBoost examples: the real file, or generated rows of the same shape.

The UCI HIGGS data set (11M rows; ``HIGGS.csv.gz`` is 2.6 GB) is a CSV without a header: a
0/1 label, then 28 float features. :func:`read_higgs` reads that format from a local path, an
http(s) URL or ``s3://bucket/key`` (through an Airflow AWS connection), plain or gzipped.
:func:`generate_higgs` makes rows of the same shape with a known, learnable but noisy signal,
for machines without the real file; :func:`load_higgs` picks one of the two.

Imports of numpy, pyarrow and Airflow's S3 hook happen inside the functions, so that parsing
a DAG that imports this module stays cheap.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

# The names xgboost_ray's own HIGGS example gives the columns.
COLUMNS = ["label"] + [f"feature-{i:02d}" for i in range(1, 29)]
FEATURES = COLUMNS[1:]

# Generated rows come in chunks with a seed of their own, so the first N rows are the same
# whatever the total (like reading the first N rows of the file) and memory stays bounded.
_CHUNK_ROWS = 1_000_000
_SIGNAL_ACCURACY = b"higgs.signal_accuracy"

log = logging.getLogger(__name__)


class HiggsFormatError(ValueError):
    """The data read is not in the HIGGS format (no header; label, then 28 features)."""


# The AWS connection that the load task's hooks need, named only for an s3:// path (a task sees
# only the Airflow connections it names in airflow_conn_ids).
S3_CONNECTION = "{{ params.aws_conn_id if params.path.startswith('s3://') else '' }}"


def data_params(rows: int) -> dict[str, Any]:
    """The DAG params that choose the rows: ``path``, ``rows`` and ``aws_conn_id`` (see load_higgs)."""
    from airflow.sdk import Param

    return {
        "path": Param(
            "", type="string", description="HIGGS .csv(.gz): local, http(s) or s3://; empty: generate"
        ),
        "rows": Param(rows, type="integer", minimum=0, description="rows to read (0: all) or to generate"),
        "aws_conn_id": Param(
            "aws_default", type="string", description="the connection that reads s3:// paths"
        ),
    }


def load_higgs(
    path: str | None = None,
    rows: int | str | None = None,
    seed: int | str = 42,
    aws_conn_id: str = "aws_default",
) -> pa.Table:
    """The rows the pipeline works on: read from ``path``, or generated when no path is set.

    :param path: a local path, an http(s) URL or ``s3://bucket/key`` of a HIGGS ``.csv`` or
        ``.csv.gz``; empty to generate HIGGS-shaped rows instead.
    :param rows: the first ``rows`` rows of the file (all of them when empty or 0), or how many
        rows to generate.
    :param seed: the generator's seed.
    :param aws_conn_id: the Airflow AWS connection that reads ``s3://`` paths.
    :return: a table of ``label`` and ``feature-01`` ... ``feature-28``, all float32.
    """
    count = int(rows) if rows not in (None, "") else 0
    if not path:
        log.info("No HIGGS path configured: generating %s HIGGS-shaped rows (seed %s)", f"{count:,}", seed)
        table = generate_higgs(count, int(seed))
        log.info(
            "Generated data: a noisy signal that allows an accuracy of about %.3f", signal_accuracy(table)
        )
        return table
    log.info("Reading HIGGS data from %s (%s)", path, f"first {count:,} rows" if count else "all rows")
    table = read_higgs(path, count or None, aws_conn_id)
    log.info("Read %s rows from %s", f"{table.num_rows:,}", path)
    return table


def read_higgs(path: str, rows: int | None = None, aws_conn_id: str = "aws_default") -> pa.Table:
    """Read the HIGGS format from a local path, an http(s) URL or ``s3://bucket/key``.

    Reading stops after ``rows`` rows, so the first rows of a remote file cost only their share
    of the download. A name ending in ``.gz`` is decompressed.
    """
    import pyarrow as pa
    import pyarrow.csv as csv

    read_options = csv.ReadOptions(column_names=COLUMNS, block_size=16 * 1024 * 1024)
    convert_options = csv.ConvertOptions(column_types=dict.fromkeys(COLUMNS, pa.float32()))
    batches = []
    count = 0
    with _open_binary(path, aws_conn_id) as raw:
        stream = pa.CompressedInputStream(raw, "gzip") if path.endswith(".gz") else raw
        try:
            reader = csv.open_csv(stream, read_options=read_options, convert_options=convert_options)
            for batch in reader:
                batches.append(batch)
                count += batch.num_rows
                if rows and count >= rows:
                    break
        except pa.ArrowInvalid as err:
            raise HiggsFormatError(
                f"{path} is not in the HIGGS format (no header; a 0/1 label, then 28 float features, "
                f"comma-separated): {err}"
            ) from err
    table = pa.Table.from_batches(batches, schema=reader.schema)
    return table.slice(0, rows) if rows else table


@contextmanager
def _open_binary(path: str, aws_conn_id: str) -> Iterator[Any]:
    """A pyarrow input stream of the bytes at ``path`` (local, http(s) or s3)."""
    import pyarrow as pa

    if path.startswith("s3://"):
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        hook = S3Hook(aws_conn_id=aws_conn_id)
        bucket, key = S3Hook.parse_s3_url(path)
        if not hook.check_for_key(key, bucket_name=bucket):
            raise FileNotFoundError(f"No HIGGS file at {path} (read through the connection {aws_conn_id!r}).")
        body = hook.get_key(key, bucket_name=bucket).get()["Body"]
        try:
            yield pa.PythonFile(body, mode="r")
        finally:
            body.close()
    elif path.startswith(("http://", "https://")):
        import urllib.request

        with urllib.request.urlopen(path, timeout=60) as response:
            yield pa.PythonFile(response, mode="r")
    else:
        with pa.OSFile(path.removeprefix("file://")) as file:
            yield file


def generate_higgs(rows: int, seed: int = 42) -> pa.Table:
    """``rows`` rows in the HIGGS format with a learnable but noisy signal.

    The label is drawn with a probability that depends on seven of the 28 features (linear, a
    step, an interaction, a symmetric and a saturating term); the other 21 are noise. The
    accuracy an ideal model reaches on them (the Bayes rate, about 0.79) travels with the table:
    :func:`signal_accuracy`.
    """
    import numpy as np
    import pyarrow as pa

    if rows <= 0:
        raise ValueError(f"rows={rows!r}: say how many HIGGS-shaped rows to generate (a positive number).")
    labels: list[np.ndarray] = []
    features: list[np.ndarray] = []
    certainty = 0.0
    for chunk, start in enumerate(range(0, rows, _CHUNK_ROWS)):
        chunk_labels, chunk_features, probability = _simulate(min(_CHUNK_ROWS, rows - start), seed, chunk)
        labels.append(chunk_labels)
        features.append(chunk_features)
        certainty += float(np.maximum(probability, 1 - probability).sum())
    columns = [np.concatenate(labels), *np.concatenate(features, axis=1)]
    table = pa.table(dict(zip(COLUMNS, columns, strict=True)))
    return table.replace_schema_metadata({_SIGNAL_ACCURACY: f"{certainty / rows:.6f}"})


def _simulate(rows: int, seed: int, chunk: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels (float32), features (28 x rows, float32) and each row's probability of label 1."""
    import numpy as np

    # Row by row from streams of their own, so that a shorter chunk is a prefix of a longer one.
    feature_rng, label_rng = np.random.default_rng([seed, chunk]).spawn(2)
    x = np.ascontiguousarray(feature_rng.standard_normal((rows, len(FEATURES)), dtype=np.float32).T)
    score = (
        1.0 * x[0]
        - 0.8 * x[1]
        + 0.4 * x[2] * x[3]
        + 1.0 * (x[4] > 0.5)
        - 0.4 * np.abs(x[5])
        + 0.5 * np.tanh(2 * x[6])
        + 0.1
    )
    probability = 1 / (1 + np.exp(-1.5 * score))
    labels = (label_rng.random(rows, dtype=np.float32) < probability).astype(np.float32)
    return labels, x, probability


def signal_accuracy(table: pa.Table) -> float | None:
    """The accuracy the signal of generated rows allows (their Bayes rate); None for real data."""
    value = (table.schema.metadata or {}).get(_SIGNAL_ACCURACY)
    return None if value is None else float(value)


def split_higgs(
    table: pa.Table, test_fraction: float | str = 0.2, valid_fraction: float | str = 0.1, seed: int | str = 42
) -> dict[str, pd.DataFrame]:
    """Split the rows at random into ``{"train": ..., "valid": ..., "test": ...}`` DataFrames.

    ``valid`` is what training reports its metrics on each round, ``test`` is kept for the
    final evaluation. pandas because xgboost_ray's ``RayDMatrix`` takes DataFrames (not Arrow).
    """
    import numpy as np

    test, valid = float(test_fraction), float(valid_fraction)
    if not (0 < test < 1 and 0 < valid < 1 and test + valid < 1):
        raise ValueError(
            f"test_fraction={test_fraction!r} and valid_fraction={valid_fraction!r} must be fractions "
            f"between 0 and 1 that leave rows to train on, e.g. 0.2 and 0.1."
        )
    order = np.random.default_rng(int(seed)).permutation(table.num_rows)
    ends = np.cumsum([round(table.num_rows * test), round(table.num_rows * valid)])
    # Sorted indices keep each part in the file's order (and the take cache-friendly).
    test_rows, valid_rows, train_rows = np.split(order, ends)
    parts = {
        name: table.take(np.sort(indices)).to_pandas()
        for name, indices in (("train", train_rows), ("valid", valid_rows), ("test", test_rows))
    }
    log.info(
        "Split %s rows: %s to train on, %s to validate each round, %s to test",
        f"{table.num_rows:,}",
        *(f"{len(parts[name]):,}" for name in ("train", "valid", "test")),
    )
    return parts
