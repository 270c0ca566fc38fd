"""``RayXComBackend``: values produced on Ray stay in the cluster; the XCom row holds a reference.

Airflow imports this module while ``airflow.sdk`` is still loading (it resolves the configured
backend at import time), so nothing but ``BaseXCom`` may be imported at module level: any other
import of ours or of Airflow's fails every Airflow command with a circular ImportError.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk.bases.xcom import BaseXCom


class RayXComBackend(BaseXCom):
    """Keep results of Ray tasks in the Ray cluster, owned by the cluster's owner actor.

    - A ``RayPythonOperator`` / ``@task.ray`` result is pinned in the cluster; the XCom row holds
      a JSON reference under 1 KB (producer, type, size, shape, rows, columns) that the UI shows.
    - A downstream Ray task gets the object inside the cluster: no bytes through this worker.
    - Any other consumer (``@task``, PythonOperator, a Jinja template) gets the real value.
    - Values pushed by other tasks are stored exactly as Airflow's default backend stores them.
    - Clearing or retrying the producer releases its pin (``purge``); the owner actor also keeps
      only the newest ``[ray] keep_runs`` runs of each DAG and drops pins older than
      ``[ray] pin_ttl`` seconds.
    """

    @staticmethod
    def serialize_value(
        value: Any,
        *,
        key: str | None = None,
        task_id: str | None = None,
        dag_id: str | None = None,
        run_id: str | None = None,
        map_index: int | None = None,
    ) -> Any:
        from airflow_ray._remote.protocol import UNCHANGED, map_tree
        from airflow_ray.xcom.reference import RayXComReference

        def encode(node: Any) -> Any:
            return node.to_json() if isinstance(node, RayXComReference) else UNCHANGED

        return BaseXCom.serialize_value(
            map_tree(value, encode),
            key=key,
            task_id=task_id,
            dag_id=dag_id,
            run_id=run_id,
            map_index=map_index,
        )

    @staticmethod
    def deserialize_value(result: Any) -> Any:
        from airflow_ray._remote.protocol import UNCHANGED, map_tree
        from airflow_ray.results.resolve import PulledReference, materialize
        from airflow_ray.xcom.reference import is_ray_consumer, is_reference_json

        value = BaseXCom.deserialize_value(result)
        keep = is_ray_consumer()

        def decode(node: Any) -> Any:
            if not is_reference_json(node):
                return UNCHANGED
            reference = PulledReference.from_json(node)
            return reference if keep else materialize(reference)

        return map_tree(value, decode)

    @classmethod
    def purge(cls, xcom: Any, *args: Any) -> None:
        from airflow_ray.results.release import release
        from airflow_ray.xcom.reference import stored_references

        references = stored_references(getattr(xcom, "value", None))
        if references:
            release(references)

    @classmethod
    def is_configured(cls) -> bool:
        """Whether Airflow is configured with this backend (or a subclass of it)."""
        from airflow.sdk.execution_time.xcom import XCom

        return isinstance(XCom, type) and issubclass(XCom, cls)
