"""Putting a result the cluster lost back from its S3 checkpoint, owned and pinned by the owner
actor as if its producer had just returned it.

The bytes go from S3 into the cluster directly: a Ray task reads and verifies the checkpoint.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

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


def _checkpoint_of(reference: RayXComReference) -> tuple[CheckpointStore, tuple[Any, ...]] | None:
    """The store holding a checkpoint of ``reference``, and ``read_checkpoint``'s arguments for
    it (access, bucket, folder, whether pickles may load); ``None`` when it has none."""
    configured = CheckpointLocation.configured()
    for location in candidates(reference):
        store = CheckpointStore(location)
        if store.exists(reference.producer):
            prefix = location.key_prefix(reference.producer)
            return store, (store.access(), location.bucket, prefix, location.trusted(configured))
    return None


def restore(reference: RayXComReference, transport: Transport) -> bool:
    """Put the value of ``reference`` back into the cluster from a checkpoint, pinned under its
    XCom; ``False`` when it has no checkpoint.

    :raises RayCheckpointIntegrityError: when the checkpoint does not match its manifest.
    :raises RayCheckpointError: when S3 fails, naming the connection and bucket.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    from airflow_ray._remote.checkpoint_io import read_checkpoint

    found = _checkpoint_of(reference)
    if found is None:
        return False
    store, arguments = found
    uri = store.location.uri(arguments[2])
    log.info("Restoring the %s from its checkpoint %s", reference.producer.describe(), uri)
    spec = TaskSpec(
        read_checkpoint,
        arguments,
        {},
        name=f"restore {arguments[2]}",
        resources=IO_TASK,
        pin=reference.producer,
    )
    with checkpoint_refusals():
        try:
            run_in_cluster(transport, spec, log=log)
        except (BotoCoreError, ClientError) as err:
            raise store.error(err, f"reading {uri} from") from err
    return True


def read_here(reference: RayXComReference) -> tuple[bool, Any]:
    """Read the value of ``reference`` from its checkpoint into this process: ``(found, value)``.

    For a plain consumer of a result too large to come out of the cluster otherwise.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    from airflow_ray._remote.checkpoint_io import read_checkpoint

    found = _checkpoint_of(reference)
    if found is None:
        return False, None
    store, arguments = found
    uri = store.location.uri(arguments[2])
    log.info("Reading the %s from its checkpoint %s", reference.producer.describe(), uri)
    with checkpoint_refusals():
        try:
            return True, read_checkpoint(*arguments)
        except (BotoCoreError, ClientError) as err:
            raise store.error(err, f"reading {uri} from") from err
