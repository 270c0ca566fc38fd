"""Writing results kept in the cluster to S3, from the cluster: no bytes through this worker."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from airflow_ray._remote.protocol import Producer, ref_slot
from airflow_ray.checkpoint.store import CheckpointStore
from airflow_ray.cluster.resources import IO_TASK
from airflow_ray.cluster.transport import Input, TaskSpec, run_in_cluster
from airflow_ray.results.errors import checkpoint_refusals

if TYPE_CHECKING:
    from airflow_ray._remote.s3io import S3Access
    from airflow_ray.cluster.transport import Transport


def write_from_cluster(
    store: CheckpointStore,
    transport: Transport,
    items: list[tuple[Producer, Input]],
    *,
    s3: S3Access | None = None,
    on_output: Callable[[str], None] | None = None,
    log: Any = None,
) -> list[dict[str, Any]]:
    """Checkpoint each ``(producer, result in the cluster)`` with a Ray task that reads it there,
    zero-copy; their manifests (with ``uri``).

    :raises RayCheckpointError: naming the connection and bucket, when S3 fails.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    from airflow_ray._remote.checkpoint_io import write_checkpoint

    s3 = s3 or store.access()
    location = store.location
    manifests = []
    for producer, item in items:
        prefix = location.key_prefix(producer)
        spec = TaskSpec(
            write_checkpoint,
            (ref_slot(0), s3, location.bucket, prefix, producer.to_wire()),
            {},
            name=f"checkpoint {prefix}",
            resources=IO_TASK,
            inputs=[item],
        )
        with checkpoint_refusals():
            try:
                manifest = run_in_cluster(transport, spec, on_output, log)
            except (BotoCoreError, ClientError) as err:
                raise store.error(err, f"writing {location.uri(prefix)} to") from err
        manifests.append(store.described(manifest, prefix))
    return manifests
