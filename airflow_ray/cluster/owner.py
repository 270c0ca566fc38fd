"""Finding and creating the owner actor (its body is :mod:`airflow_ray._remote.owner_actor`)."""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path
from typing import Any

OWNER_NAME = "airflow_ray_owner"


@cache
def owner_name() -> str:
    """The owner actor's name, which carries a fingerprint of the code that runs in the cluster.

    A detached actor keeps the code it was created with for as long as it lives; after an
    upgrade of airflow-ray that changes :mod:`airflow_ray._remote`, the new code gets an owner of
    its own, and references made before the upgrade still find theirs by name. Code that runs
    only in the Airflow worker does not rename it.
    """
    from airflow_ray import _remote

    digest = hashlib.sha1()
    for source in sorted(Path(_remote.__file__).parent.glob("*.py")):
        digest.update(source.name.encode())
        digest.update(source.read_bytes())
    return f"{OWNER_NAME}_{digest.hexdigest()[:10]}"


def find_owner(name: str, namespace: str) -> Any | None:
    """The owner actor called ``name`` in ``namespace``, or ``None`` when it is gone."""
    import ray

    try:
        return ray.get_actor(name, namespace=namespace)
    except ValueError:
        return None


def all_owners(namespace: str) -> list[Any]:
    """Every owner actor in ``namespace``: this code's and those of earlier versions still alive."""
    import ray

    names = [
        a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["namespace"] == namespace
    ]
    owners = [find_owner(name, namespace) for name in names if name.startswith(OWNER_NAME)]
    return [owner for owner in owners if owner is not None]


def get_owner(namespace: str, keep_runs: int, pin_ttl: float) -> Any:
    """The cluster's owner actor in ``namespace`` for this code, created on first use.

    The caller has registered :mod:`airflow_ray._remote` by value
    (:func:`~airflow_ray.cluster.byvalue.register_by_value`).
    """
    import ray

    from airflow_ray._remote.owner_actor import OwnerActor

    actor_class = ray.remote(OwnerActor)
    owner: Any = actor_class.options(
        name=owner_name(),
        namespace=namespace,
        lifetime="detached",
        get_if_exists=True,
        num_cpus=0,
        max_restarts=0,
        max_concurrency=1000,
    ).remote(keep_runs, pin_ttl)
    ray.get(owner.configure.remote(keep_runs, pin_ttl))
    return owner
