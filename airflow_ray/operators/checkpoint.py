"""``RayCheckpointOperator``: persist chosen upstream results to S3."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, XComArg

from airflow_ray._remote.protocol import Producer
from airflow_ray.exceptions import RayConfigurationError

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_ray._remote.s3io import S3Access
    from airflow_ray.checkpoint.store import CheckpointStore


class RayCheckpointOperator(BaseOperator):
    """Write the results of upstream tasks to S3, so that a rerun after the cluster lost them works.

    A result kept in the Ray cluster (``RayXComBackend``) goes from the cluster to S3 directly:
    its bytes never pass through this worker. Any other task's XCom is written from here. Each
    result gets its own folder, named after its XCom, with a Parquet, ``.npy`` or cloudpickle
    file and a ``manifest.json`` (see :mod:`airflow_ray._remote.checkpoint_io`); a rerun overwrites it.

    When a later task needs a result that the cluster no longer holds, the XCom backend
    restores it from the configured location (``[ray] checkpoint_bucket``, the default here).

    Each checkpoint written is an asset event of every ``AssetAlias`` in ``outlets``: the
    asset's URI is the checkpoint's file, the event's extra its manifest (format, size, sha256,
    producer), so a DAG scheduled on the alias runs on each new checkpoint. With the OpenLineage
    provider installed, the files written are the task's output datasets.

    .. code-block:: python

        features = build_features()  # a @task.ray returning a pyarrow Table
        RayCheckpointOperator(
            task_id="checkpoint",
            outputs=[features, "split:test"],
            outlets=[AssetAlias("features")],
        )

    :param outputs: what to checkpoint (templated): XComArgs, or task ids as text, with
        ``task_id:key`` for another XCom key than ``return_value``. A mapped task's results are
        all written, one folder per map index.
    :param aws_conn_id: the AWS connection (templated; default ``[ray] checkpoint_conn_id``).
    :param bucket: the S3 bucket (templated; default ``[ray] checkpoint_bucket``).
    :param prefix: the key prefix (templated; default ``[ray] checkpoint_prefix``).
    :return: one entry per checkpoint written: ``task_id``, ``map_index``, ``key``, ``uri``,
        ``format``, ``size_bytes``, ``sha256``.
    """

    template_fields: Sequence[str] = ("outputs", "aws_conn_id", "bucket", "prefix")
    ui_color = "#ffe9c7"

    def __init__(
        self,
        *,
        outputs: XComArg | str | Sequence[XComArg | str],
        aws_conn_id: str | None = None,
        bucket: str | None = None,
        prefix: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        items = [outputs] if isinstance(outputs, (XComArg, str)) else list(outputs)
        self.outputs = [_source(item) for item in items]
        for item in items:
            if isinstance(item, XComArg):
                for operator, _ in item.iter_references():
                    self.set_upstream(operator)
        self.aws_conn_id = aws_conn_id
        self.bucket = bucket
        self.prefix = prefix
        self._written: list[str] = []  # the URIs of the files written, for OpenLineage

    def execute(self, context: Context) -> list[dict[str, Any]]:
        from airflow_ray.checkpoint.store import CheckpointLocation, CheckpointStore
        from airflow_ray.operators.lineage import announce_checkpoints, checkpoint_aliases
        from airflow_ray.xcom.reference import ray_consumer

        store = CheckpointStore(CheckpointLocation.resolve(self.aws_conn_id, self.bucket, self.prefix))
        s3 = store.preflight()
        ti = context["ti"]
        aliases = checkpoint_aliases(self.outlets)
        written: list[dict[str, Any]] = []
        for source in self.outputs:
            task_id, _, key = source.partition(":")
            key = key or "return_value"
            mapped = (
                _is_mapped(self.dag.get_task(task_id)) if self.dag and self.dag.has_task(task_id) else False
            )
            with ray_consumer():  # references stay references: the bytes stay in the cluster
                values = _pull_by_map_index(ti, task_id, key, mapped)
            if not values:
                raise RayConfigurationError(
                    f"Task {task_id!r} pushed no XCom {key!r} in run {ti.run_id!r}: nothing to "
                    f"checkpoint. Check the task id and key in outputs={self.outputs!r}."
                )
            for map_index, value in values.items():
                producer = Producer(ti.dag_id, ti.run_id, task_id, map_index, key)
                manifests = _write(store, producer, value, s3)
                self._written.extend(manifest["uri"] for manifest in manifests)
                if aliases:
                    announce_checkpoints(context, aliases, manifests)
                for manifest in manifests:
                    self.log.info(
                        "Checkpointed XCom %r of task %r to %s (%s, %d bytes)",
                        key,
                        task_id,
                        manifest["uri"],
                        manifest["format"],
                        manifest["size_bytes"],
                    )
                    written.append(
                        {
                            "task_id": task_id,
                            "map_index": manifest["producer"]["map_index"],
                            "key": key,
                            "uri": manifest["uri"],
                            "format": manifest["format"],
                            "size_bytes": manifest["size_bytes"],
                            "sha256": manifest["sha256"],
                        }
                    )
        if aliases:
            self.log.info(
                "Announced %d checkpoint(s) as asset events of %s",
                len(written),
                ", ".join(repr(alias.name) for alias in aliases),
            )
        return written

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage (when its provider is installed): the S3 files written are the outputs."""
        from airflow_ray.operators.lineage import operator_lineage

        return operator_lineage(outputs=self._written)


def _write(store: CheckpointStore, producer: Producer, value: Any, s3: S3Access) -> list[dict[str, Any]]:
    """A result kept in the cluster is written from there; any other value from here."""
    from airflow_ray.results.handover import hand_over
    from airflow_ray.results.persist import write_from_cluster
    from airflow_ray.results.resolve import transport_of
    from airflow_ray.xcom.reference import RayXComReference

    if not isinstance(value, RayXComReference):
        return store.write([(producer, value)], s3=s3)
    transport = transport_of(value)
    _, _, inputs, _ = hand_over((value,), {}, transport)  # restored first if the cluster lost it
    return write_from_cluster(store, transport, [(value.producer, inputs[0])], s3=s3)


def _pull_by_map_index(ti: Any, task_id: str, key: str, mapped: bool) -> dict[int, Any]:
    """``{map index: value}`` of the XComs ``key`` of ``task_id`` that are not ``None``.

    Each value is pulled by its own map index, so that it is filed under it whatever the other
    instances did (returned ``None``, were skipped or failed, pushed nothing).
    """
    if not mapped:
        value = ti.xcom_pull(task_ids=task_id, key=key, map_indexes=-1)
        return {} if value is None else {-1: value}
    count = ti.get_ti_count(dag_id=ti.dag_id, task_ids=[task_id], run_ids=[ti.run_id])
    values = {}
    for map_index in range(count):
        value = ti.xcom_pull(task_ids=task_id, key=key, map_indexes=map_index)
        if value is not None:
            values[map_index] = value
    return values


def _is_mapped(task: Any) -> bool:
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    return isinstance(task, MappedOperator)


def _source(item: XComArg | str) -> str:
    """``task_id`` or ``task_id:key`` for an output given as an XComArg or as text."""
    if isinstance(item, str):
        return item
    references = list(item.iter_references()) if isinstance(item, XComArg) else []
    if len(references) != 1:
        raise RayConfigurationError(
            f"outputs holds {item!r}; give XComArgs of one task each (a task's .output, what a "
            f"@task returns, or one key of it) or task ids as text."
        )
    operator, key = references[0]
    return operator.task_id if key == "return_value" else f"{operator.task_id}:{key}"
