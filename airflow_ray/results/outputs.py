"""What one Ray task returned, pinned in the cluster under its XCom (one per key of a split dict):
checkpointed to S3, described by references, or fetched for Airflow's own XCom."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from airflow_ray._remote.protocol import RETURN_VALUE, Producer, Returned
from airflow_ray.cluster.transport import Input
from airflow_ray.xcom.reference import RayXComReference

if TYPE_CHECKING:
    from airflow_ray._remote.s3io import S3Access
    from airflow_ray.checkpoint.store import CheckpointStore
    from airflow_ray.cluster.transport import Call, Transport


class PinnedOutputs:
    """The XComs of a finished task whose result the owner pinned.

    :param producer: the task instance's ``return_value`` XCom.
    :param returned: the description the task sent back.
    """

    def __init__(self, transport: Transport, producer: Producer, returned: Returned) -> None:
        self.transport = transport
        self.returned = returned
        keys = list(returned.parts) if returned.parts is not None else [RETURN_VALUE]
        self.producers = {key: producer.with_key(key) for key in keys}

    def _input(self, key: str) -> Input:
        return Input(self.producers[key].pin_key, self.transport.owner_name)

    def _shaped(self, values: dict[str, Any]) -> Any:
        """``{key: ...}`` for a split dict, else the one value."""
        return values if self.returned.parts is not None else values[RETURN_VALUE]

    def checkpoint(
        self,
        store: CheckpointStore,
        s3: S3Access | None,
        on_output: Callable[[str], None] | None = None,
        log: Any = None,
    ) -> dict[str, dict[str, Any]]:
        """Write each value from the cluster to S3; ``{xcom key: checkpoint document}``."""
        from airflow_ray.results.persist import write_from_cluster

        log = log or logging.getLogger(__name__)
        items = [(producer, self._input(key)) for key, producer in self.producers.items()]
        manifests = write_from_cluster(store, self.transport, items, s3=s3, on_output=on_output, log=log)
        documents = {}
        for key, manifest in zip(self.producers, manifests, strict=True):
            log.info(
                "Checkpointed XCom %r to %s (%s, %d bytes, sha256 %s)",
                key,
                manifest["uri"],
                manifest["format"],
                manifest["size_bytes"],
                manifest["sha256"],
            )
            documents[key] = {**store.location.to_json(), "uri": manifest["uri"]}
        return documents

    @property
    def _metas(self) -> dict[str, dict[str, Any]]:
        return self.returned.parts if self.returned.parts is not None else {RETURN_VALUE: self.returned.meta}

    def small_values(self, call: Call, max_bytes: int) -> dict[str, Any]:
        """``{key: value}`` of the results that Airflow's own XCom serializer stores as they are,
        in at most ``max_bytes``: fetched here, before the call is forgotten (see
        :meth:`release_small`)."""
        if max_bytes <= 0:
            return {}
        candidates = {
            key: self._input(key)
            for key, meta in self._metas.items()
            if isinstance(meta.get("size_bytes"), int) and meta["size_bytes"] <= max_bytes
        }
        if not candidates:
            return {}
        fetched = self.transport.small_results(call, candidates, max_bytes)
        return {key: value for key, value in fetched.items() if _storable_in_row(value, max_bytes)}

    def release_small(self, small: dict[str, Any]) -> None:
        """Unpin what the XCom row now holds itself, where that is cheap (else retention does)."""
        self.transport.release_copied([self._input(key) for key in small])

    def references(
        self,
        conn_id: str,
        checkpoints: dict[str, dict[str, Any]] | None = None,
        inline: dict[str, Any] | None = None,
    ) -> Any:
        """The XCom value(s): one per key of a split dict, else one; a reference for each, but
        for the values in ``inline``, which are themselves."""
        inline = inline or {}
        return self._shaped(
            {
                key: inline[key]
                if key in inline
                else RayXComReference(
                    conn_id,
                    self.transport.namespace,
                    self.transport.owner_name,
                    producer,
                    self._metas[key],
                    (checkpoints or {}).get(key),
                    self.transport.holder,
                )
                for key, producer in self.producers.items()
            }
        )

    def fetch_and_release(self, fetch: bool = True) -> Any:
        """The values, fetched into this process (with ``fetch``), and the pins released."""
        items = {key: self._input(key) for key in self.producers}
        if not fetch:
            self.transport.release(list(items.values()))
            return None
        values = self.transport.fetch_and_release(list(items.values()))
        return self._shaped(dict(zip(items, values, strict=True)))


def _storable_in_row(value: Any, max_bytes: int) -> bool:
    """Whether Airflow's own XCom serializer stores ``value`` in ``max_bytes`` of JSON and gives
    back a value of the same type (it refuses or changes what it does not know)."""
    import json

    from airflow.sdk.serde import deserialize, serialize

    try:
        document = serialize(value)
        if len(json.dumps(document)) > max_bytes:
            return False
        return type(deserialize(document)) is type(value)
    except Exception:  # noqa: BLE001 - anything the serializer cannot do means: keep a reference
        return False
