"""Unpinning results kept in the cluster (when Airflow purges their XCom)."""

from __future__ import annotations

from collections import defaultdict

from airflow_ray.results.resolve import input_of, transport_of
from airflow_ray.xcom.reference import RayXComReference


def release(references: list[RayXComReference]) -> int:
    """Unpin ``references`` in their clusters; return how many were pinned."""
    by_connection: dict[str, list[RayXComReference]] = defaultdict(list)
    for reference in references:
        by_connection[reference.conn_id].append(reference)
    return sum(
        transport_of(group[0]).release([input_of(reference) for reference in group])
        for group in by_connection.values()
    )
