"""The small, readable reference that the XCom row holds for a value kept in the Ray cluster."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

from airflow_ray.cluster.owner import pin_key

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
    :param producer: ``dag_id``, ``run_id``, ``task_id``, ``map_index`` and XCom ``key``.
    :param meta: ``type``, ``size_bytes`` and, where they apply, ``shape``, ``dtype``,
        ``rows``, ``columns``, ``length``.
    :param checkpoint: where the producer checkpointed the value on S3 (``conn_id``, ``bucket``,
        ``prefix``, and a readable ``uri``), if it did.
    """

    conn_id: str
    namespace: str
    owner: str
    producer: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    checkpoint: dict[str, Any] | None = None

    @property
    def pin(self) -> str:
        """The key the owner actor keeps the object under."""
        return pin_key(**self.producer)

    def describe_producer(self) -> str:
        p = self.producer
        index = f" (map index {p['map_index']})" if p["map_index"] is not None and p["map_index"] >= 0 else ""
        return (
            f"XCom {p['key']!r} of task {p['task_id']!r}{index} in run {p['run_id']!r} of DAG {p['dag_id']!r}"
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON stored in the XCom row: under 1 KB, readable in the Airflow UI."""
        meta = dict(self.meta)
        document = {MARKER: MARKER_VALUE, "v": 1, **_readable(meta), "producer": self.producer}
        document.update(conn_id=self.conn_id, namespace=self.namespace, owner=self.owner)
        if self.checkpoint:
            document["checkpoint"] = self.checkpoint
        for trim in (_trim_columns, _drop_detail):
            if len(json.dumps(document)) <= MAX_REFERENCE_BYTES:
                break
            trim(document)
        return document

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> RayXComReference:
        skip = (MARKER, "v", "producer", "conn_id", "namespace", "owner", "size", "checkpoint")
        meta = {k: v for k, v in document.items() if k not in skip}
        return cls(
            document["conn_id"],
            document["namespace"],
            document["owner"],
            dict(document["producer"]),
            meta,
            document.get("checkpoint"),
        )

    def token(self) -> str:
        """What a non-native Jinja template renders the reference to, recognized by Ray operators."""
        p = self.producer
        parts = [
            self.conn_id,
            self.namespace,
            self.owner,
            p["dag_id"],
            p["run_id"],
            p["task_id"],
            p["map_index"],
            p["key"],
        ]
        return _TOKEN_PREFIX + "/".join(quote(str(part), safe="") for part in parts)

    @classmethod
    def from_token(cls, text: str) -> RayXComReference | None:
        if not text.startswith(_TOKEN_PREFIX):
            return None
        parts = [unquote(part) for part in text[len(_TOKEN_PREFIX) :].split("/")]
        if len(parts) != 8:
            return None
        conn_id, namespace, owner, dag_id, run_id, task_id, map_index, key = parts
        producer = {
            "dag_id": dag_id,
            "run_id": run_id,
            "task_id": task_id,
            "map_index": int(map_index),
            "key": key,
        }
        return cls(conn_id, namespace, owner, producer)

    def __str__(self) -> str:
        return self.token()

    def __repr__(self) -> str:
        size = self.meta.get("size_bytes")
        shape = f", shape {tuple(self.meta['shape'])}" if "shape" in self.meta else ""
        return f"<Ray object {self.meta.get('type', '?')}, {_human(size)}{shape}: {self.describe_producer()}>"

    # A template that indexes or iterates a pulled value needs the value itself.
    def __getitem__(self, item: Any) -> Any:
        return self.materialize()[item]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.materialize())

    def __len__(self) -> int:
        return len(self.materialize())

    def materialize(self) -> Any:
        """Fetch the value into this process."""
        from airflow_ray.xcom.resolve import materialize

        return materialize(self)


def is_reference_json(value: Any) -> bool:
    return isinstance(value, dict) and value.get(MARKER) == MARKER_VALUE


def transform(value: Any, fn: Callable[[Any], Any | None]) -> Any:
    """``value`` with ``fn`` applied to each node of lists, tuples and dicts it returns non-None for."""
    replaced = fn(value)
    if replaced is not None:
        return replaced
    if isinstance(value, list):
        return [transform(item, fn) for item in value]
    if isinstance(value, tuple):
        return tuple(transform(item, fn) for item in value)
    if isinstance(value, dict):
        return {key: transform(item, fn) for key, item in value.items()}
    return value


class Opaque:
    """Wraps a value so that :func:`transform` leaves it alone; :func:`unwrap` takes it out."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def unwrap(value: Any) -> Any:
    """``value`` with every :class:`Opaque` inside lists, tuples and dicts replaced by its value."""
    if isinstance(value, Opaque):
        return value.value
    if isinstance(value, list):
        return [unwrap(item) for item in value]
    if isinstance(value, tuple):
        return tuple(unwrap(item) for item in value)
    if isinstance(value, dict):
        return {key: unwrap(item) for key, item in value.items()}
    return value


def stored_references(value: Any) -> list[RayXComReference]:
    """The references inside a value as the XCom row stores it (JSON documents)."""
    found: list[RayXComReference] = []

    def collect(node: Any) -> None:
        if is_reference_json(node):
            found.append(RayXComReference.from_json(node))
        return None

    transform(value, collect)
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


def _human(size: Any) -> str:
    if not isinstance(size, int):
        return "unknown size"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"
