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
        f"{reference.conn_id!r}: the cluster restarted, its owner actor died, or the object was "
        f"released (retention: [ray] keep_runs and pin_ttl). Clear that task to compute it "
        f"again, or enable checkpoints for it."
    )


def object_refs(references: list[RayXComReference]) -> list[Any]:
    """The ObjectRefs of ``references`` (the bytes stay in the cluster).

    :raises RayObjectLostError: when one is no longer pinned in its cluster.
    """
    import ray

    refs: list[Any] = []
    for reference in references:
        owner = _owner(reference)
        held = None if owner is None else ray.get(owner.get.remote(reference.pin))
        if held is None:
            raise _lost(reference)
        refs.append(held[0])
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
