"""The small, readable reference that the XCom row holds for a value kept in the Ray cluster.

Plain data: reaching the value is :mod:`airflow_ray.results`' work.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

from airflow_ray._remote.protocol import UNCHANGED, Producer, map_tree

MARKER = "airflow_ray"
MARKER_VALUE = "ray-object"
MAX_REFERENCE_BYTES = 1000
_TOKEN_PREFIX = "ray-xcom://"

# True while a Ray operator renders the arguments of its callable: references are then kept as
# references (the object is handed over inside the cluster) instead of being materialized.
_ray_consumer: ContextVar[bool] = ContextVar("airflow_ray_consumer", default=False)


@contextlib.contextmanager
def ray_consumer() -> Iterator[None]:
    token = _ray_consumer.set(True)
    try:
        yield
    finally:
        _ray_consumer.reset(token)


def is_ray_consumer() -> bool:
    return _ray_consumer.get()


@dataclass(frozen=True)
class RayXComReference:
    """Where a value lives in the Ray cluster, and what it is.

    :param conn_id: the ``ray`` connection of the cluster holding it.
    :param namespace: the Ray namespace of the owner actor.
    :param owner: the owner actor's name.
    :param producer: the XCom it is (a :class:`~airflow_ray._remote.protocol.Producer`, or its
        ``dag_id``, ``run_id``, ``task_id``, ``map_index`` and ``key`` as a dict).
    :param meta: ``type``, ``size_bytes`` and, where they apply, ``shape``, ``dtype``,
        ``rows``, ``columns``, ``length``.
    :param checkpoint: where the producer checkpointed the value on S3 (``conn_id``, ``bucket``,
        ``prefix``, and a readable ``uri``), if it did.
    :param cluster: which embedded cluster holds it (``host:state_dir@started``), for a
        connection without an address: each host runs its own, and a consumer elsewhere cannot
        reach it (:func:`airflow_ray.cluster.transport.OwnedResults.holder`).
    """

    conn_id: str
    namespace: str
    owner: str
    producer: Producer
    meta: dict[str, Any] = field(default_factory=dict)
    checkpoint: dict[str, Any] | None = None
    cluster: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "producer", Producer.from_wire(self.producer))

    @property
    def pin(self) -> str:
        """The key the owner actor keeps the object under."""
        return self.producer.pin_key

    def to_json(self) -> dict[str, Any]:
        """The JSON stored in the XCom row: under 1 KB, readable in the Airflow UI."""
        meta = dict(self.meta)
        document = {MARKER: MARKER_VALUE, "v": 1, **_readable(meta), "producer": self.producer.to_wire()}
        document.update(conn_id=self.conn_id, namespace=self.namespace, owner=self.owner)
        if self.checkpoint:
            document["checkpoint"] = self.checkpoint
        if self.cluster:
            document["cluster"] = self.cluster
        _trim_columns(document)  # short for the eye too: the UI shows the row as it is
        for trim in (_drop_detail, _drop_checkpoint_uri):
            if len(json.dumps(document)) <= MAX_REFERENCE_BYTES:
                break
            trim(document)
        return document

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> RayXComReference:
        skip = (MARKER, "v", "producer", "conn_id", "namespace", "owner", "size", "checkpoint", "cluster")
        meta = {k: v for k, v in document.items() if k not in skip}
        return cls(
            document["conn_id"],
            document["namespace"],
            document["owner"],
            Producer.from_wire(document["producer"]),
            meta,
            document.get("checkpoint"),
            document.get("cluster"),
        )

    def token(self) -> str:
        """What a non-native Jinja template renders the reference to, recognized by Ray operators."""
        p = self.producer
        parts = [self.conn_id, self.namespace, self.owner, p.dag_id, p.run_id, p.task_id, p.map_index, p.key]
        if p.try_number:
            parts.append(p.try_number)
        return _TOKEN_PREFIX + "/".join(quote(str(part), safe="") for part in parts)

    @classmethod
    def from_token(cls, text: str) -> RayXComReference | None:
        if not text.startswith(_TOKEN_PREFIX):
            return None
        parts = [unquote(part) for part in text[len(_TOKEN_PREFIX) :].split("/")]
        if len(parts) not in (8, 9):
            return None
        conn_id, namespace, owner, dag_id, run_id, task_id, map_index, key = parts[:8]
        try:
            producer = Producer(
                dag_id, run_id, task_id, int(map_index), key, int(parts[8]) if parts[8:] else 0
            )
        except ValueError:
            return None
        return cls(conn_id, namespace, owner, producer)

    def __str__(self) -> str:
        return self.token()

    def __repr__(self) -> str:
        size = self.meta.get("size_bytes")
        shape = f", shape {tuple(self.meta['shape'])}" if "shape" in self.meta else ""
        return f"<Ray object {self.meta.get('type', '?')}, {_human(size)}{shape}: {self.producer.describe()}>"


def is_reference_json(value: Any) -> bool:
    return isinstance(value, dict) and value.get(MARKER) == MARKER_VALUE


def stored_references(value: Any) -> list[RayXComReference]:
    """The references inside a value as the XCom row stores it (JSON documents)."""
    found: list[RayXComReference] = []

    def collect(node: Any) -> Any:
        if not is_reference_json(node):
            return UNCHANGED
        found.append(RayXComReference.from_json(node))
        return node

    map_tree(value, collect)
    return found


def _readable(meta: dict[str, Any]) -> dict[str, Any]:
    size = meta.get("size_bytes")
    ordered = {"type": meta.get("type"), "size": _human(size), "size_bytes": size}
    ordered.update({k: v for k, v in meta.items() if k not in ordered})
    return ordered


def _trim_columns(document: dict[str, Any]) -> None:
    columns = document.get("columns")
    if isinstance(columns, list) and len(columns) > 10:
        document["columns_total"] = len(columns)
        document["columns"] = [str(c)[:40] for c in columns[:10]]


def _drop_detail(document: dict[str, Any]) -> None:
    for key in ("columns", "shape", "dtype"):
        document.pop(key, None)


def _drop_checkpoint_uri(document: dict[str, Any]) -> None:
    """The uri only repeats the location and the producer, which restore uses."""
    if isinstance(document.get("checkpoint"), dict):
        document["checkpoint"] = {k: v for k, v in document["checkpoint"].items() if k != "uri"}


def _human(size: Any) -> str:
    if not isinstance(size, int):
        return "unknown size"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"
