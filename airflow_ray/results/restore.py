"""Putting a result the cluster lost back from its S3 checkpoint, owned and pinned by the owner
actor as if its producer had just returned it.

The bytes go from S3 into the cluster directly: a Ray task reads and verifies the checkpoint.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from airflow_ray.checkpoint.store import CheckpointLocation, CheckpointStore
from airflow_ray.cluster.resources import IO_TASK
from airflow_ray.cluster.transport import TaskSpec, run_in_cluster
from airflow_ray.results.errors import checkpoint_refusals
from airflow_ray.xcom.reference import RayXComReference

if TYPE_CHECKING:
    from airflow_ray.cluster.transport import Transport

log = logging.getLogger(__name__)


def candidates(reference: RayXComReference) -> list[CheckpointLocation]:
    """Where a checkpoint of ``reference`` may be: where its producer wrote it
    (``checkpoint=True`` records that in the reference), then the configured ``[ray]`` location."""
    found = [CheckpointLocation.from_json(reference.checkpoint)] if reference.checkpoint else []
    configured = CheckpointLocation.configured()
    if configured is not None and configured not in found:
        found.append(configured)
    return found


def restore(reference: RayXComReference, transport: Transport) -> bool:
    """Put the value of ``reference`` back into the cluster from a checkpoint, pinned under its
    XCom; ``False`` when it has no checkpoint.

    :raises RayCheckpointIntegrityError: when the checkpoint does not match its manifest.
    :raises RayCheckpointError: when S3 fails, naming the connection and bucket.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    from airflow_ray._remote.checkpoint_io import read_checkpoint

    configured = CheckpointLocation.configured()
    for location in candidates(reference):
        store = CheckpointStore(location)
        if not store.exists(reference.producer):
            continue
        prefix = location.key_prefix(reference.producer)
        uri = location.uri(prefix)
        log.info("Restoring the %s from its checkpoint %s", reference.producer.describe(), uri)
        spec = TaskSpec(
            read_checkpoint,
            (store.access(), location.bucket, prefix, location.trusted(configured)),
            {},
            name=f"restore {prefix}",
            resources=IO_TASK,
            pin=reference.producer,
        )
        with checkpoint_refusals():
            try:
                run_in_cluster(transport, spec, log=log)
            except (BotoCoreError, ClientError) as err:
                raise store.error(err, f"reading {uri} from") from err
        return True
    return False


def read_here(reference: RayXComReference) -> tuple[bool, object]:
    """Read the value of ``reference`` from its checkpoint into this process: ``(found, value)``.

    For a plain consumer of a result too large to come out of the cluster otherwise.
    """
    from airflow_ray._remote.checkpoint_io import read_checkpoint

    configured = CheckpointLocation.configured()
    for location in candidates(reference):
        store = CheckpointStore(location)
        if not store.exists(reference.producer):
            continue
        prefix = location.key_prefix(reference.producer)
        log.info("Reading the %s from its checkpoint %s", reference.producer.describe(), location.uri(prefix))
        with checkpoint_refusals():
            return True, read_checkpoint(
                store.access(), location.bucket, prefix, location.trusted(configured)
            )
    return False, None
