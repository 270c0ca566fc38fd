"""Reaching the owner actors and what they pin, from a Ray driver.

Two drivers use these: the Airflow worker in driver mode (:mod:`airflow_ray.cluster.driver`) and
a job's entrypoint inside the cluster in Jobs API mode (:mod:`airflow_ray._remote.job_entry`).
A result is pinned by the owner that made it, or by this code's owner (where a restore from a
checkpoint puts it); owners of earlier versions of the code live on until they are released.
"""

from __future__ import annotations

from typing import Any

OWNER_PREFIX = "airflow_ray_owner"
HEAD_RESOURCE = "node:__internal_head__"  # Ray gives the head node this resource, and only it


def get_owner(name: str, namespace: str, keep_runs: int, pin_ttl: float) -> Any:
    """The owner actor called ``name``, created (detached) on first use, with these settings."""
    import ray

    from airflow_ray._remote.owner_actor import OwnerActor

    actor_class: Any = ray.remote(OwnerActor)
    owner = actor_class.options(
        name=name,
        namespace=namespace,
        lifetime="detached",
        get_if_exists=True,
        num_cpus=0,
        # On the head node: a cluster that loses the head is lost anyway, while losing a worker
        # node must not drop every pin of every DAG (nor may a replacement owner be placed on a
        # node that has died but is not yet known to be dead).
        resources={HEAD_RESOURCE: 0.001},
        max_restarts=0,
        max_concurrency=1000,
    ).remote(keep_runs, pin_ttl)
    ray.get(owner.configure.remote(keep_runs, pin_ttl))  # the actor outlives config changes
    return owner


def find_owner(name: str, namespace: str) -> Any | None:
    """The owner actor called ``name``, or ``None`` when it is gone: looking never creates one."""
    import ray

    try:
        return ray.get_actor(name, namespace=namespace)
    except ValueError:
        return None


def deployment_scope(owner: str) -> str:
    """What the names of every owner of ``owner``'s deployment start with (its name without the
    code's fingerprint): ``airflow_ray_owner_<deployment>_``."""
    return owner.rsplit("_", 1)[0] + "_"


def all_owners(namespace: str, owner: str) -> list[Any]:
    """Every owner actor of ``owner``'s deployment in ``namespace``: this code's and those of
    earlier versions still alive; never another deployment's."""
    import ray

    scope = deployment_scope(owner)
    names = [
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["namespace"] == namespace and a["name"].startswith(scope)
    ]
    found = [find_owner(name, namespace) for name in names]
    return [each for each in found if each is not None]


def pinned_ref(key: str, made_by: str, current: str, namespace: str) -> Any | None:
    """The ObjectRef pinned under ``key``: by ``made_by``, or by ``current``; ``None`` if neither."""
    import ray

    for name in dict.fromkeys((made_by, current)):
        owner = find_owner(name, namespace)
        held = None if owner is None else ray.get(owner.get.remote(key))
        if held is not None:
            return held[0]
    return None


def submit_input(key: str, made_by: str, current: str, namespace: str) -> Any:
    """What the current owner's ``submit`` takes for an input: its pin key, or ``[ObjectRef]``
    when an older owner still holds it."""
    import ray

    if made_by != current:
        older = find_owner(made_by, namespace)
        held = None if older is None else ray.get(older.get.remote(key))
        if held is not None:
            return held
    return key


def release(pins: list[tuple[str, str]], namespace: str) -> int:
    """Unpin each ``(key, owner that made it)``; how many were pinned."""
    import ray

    by_owner: dict[str, list[str]] = {}
    for key, made_by in pins:
        by_owner.setdefault(made_by, []).append(key)
    released = 0
    for name, keys in by_owner.items():
        owner = find_owner(name, namespace)
        if owner is not None:  # a gone owner has released everything already
            released += ray.get(owner.release.remote(keys))
    return released


def list_pins(namespace: str, owner: str, dag_id: str | None, run_id: str | None) -> list[dict[str, Any]]:
    """What every owner of ``owner``'s deployment in ``namespace`` pins (of a DAG, of a run)."""
    import ray

    listed = ray.get([each.list_pins.remote(dag_id, run_id) for each in all_owners(namespace, owner)])
    return [pin for pins in listed for pin in pins]


def release_matching(namespace: str, owner: str, dag_id: str | None, run_id: str | None) -> int:
    """Unpin what every owner of ``owner``'s deployment in ``namespace`` pins (of a DAG, of a
    run); how many were."""
    import ray

    return sum(
        ray.get([each.release_matching.remote(dag_id, run_id) for each in all_owners(namespace, owner)])
    )
