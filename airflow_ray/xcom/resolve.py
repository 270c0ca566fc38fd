"""Turning references back into objects: refs for a Ray task, values for anything else."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from airflow_ray.exceptions import RayObjectLostError
from airflow_ray.xcom.reference import RayXComReference


def _owner(reference: RayXComReference) -> Any | None:
    from airflow_ray.cluster.owner import find_owner
    from airflow_ray.hooks.ray import RayHook

    RayHook(reference.conn_id).get_conn()
    return find_owner(reference.owner, reference.namespace)


def _lost(reference: RayXComReference) -> RayObjectLostError:
    return RayObjectLostError(
        f"The {reference.describe_producer()} is no longer in the Ray cluster of connection "
        f"{reference.conn_id!r}, and it has no checkpoint: the cluster restarted, its owner actor "
        f"died, or the object was released (retention: [ray] keep_runs and pin_ttl). Clear that "
        f"task to compute it again, or give it checkpoint=True (with [ray] checkpoint_bucket set) "
        f"so that a rerun can restore it."
    )


def _pinned(reference: RayXComReference) -> Any | None:
    """The ObjectRef pinned for ``reference``: by the owner that made it, or by this code's owner
    (where a restore from a checkpoint puts it)."""
    import ray

    from airflow_ray.cluster.owner import owner_name
    from airflow_ray.hooks.ray import RayHook

    owner = _owner(reference)
    held = None if owner is None else ray.get(owner.get.remote(reference.pin))
    if held is None and reference.owner != owner_name():
        current = RayHook(reference.conn_id).owner(reference.namespace)
        held = ray.get(current.get.remote(reference.pin))
    return None if held is None else held[0]


def object_refs(references: list[RayXComReference]) -> list[Any]:
    """The ObjectRefs of ``references`` (the bytes stay in the cluster).

    A value the cluster lost is restored from its S3 checkpoint, where it has one.

    :raises RayObjectLostError: when one is no longer in its cluster and has no checkpoint.
    """
    from airflow_ray.checkpoint.store import restore

    refs: list[Any] = []
    for reference in references:
        ref = _pinned(reference)
        if ref is None:
            ref = restore(reference)
        if ref is None:
            raise _lost(reference)
        refs.append(ref)
    return refs


def materialize(reference: RayXComReference) -> Any:
    """Fetch the value of ``reference`` into this process."""
    import ray

    (ref,) = object_refs([reference])
    return ray.get(ref)


def release(references: list[RayXComReference]) -> int:
    """Unpin ``references`` in their clusters; return how many were pinned."""
    import ray

    by_owner: dict[tuple[str, str, str], list[RayXComReference]] = defaultdict(list)
    for reference in references:
        by_owner[(reference.conn_id, reference.namespace, reference.owner)].append(reference)
    released = 0
    for group in by_owner.values():
        owner = _owner(group[0])
        if owner is not None:  # a gone owner has released everything already
            released += ray.get(owner.release.remote([reference.pin for reference in group]))
    return released
