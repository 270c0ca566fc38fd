"""The owner actor's name (its body is :mod:`airflow_ray._remote.owner_actor`; finding and
creating it, :mod:`airflow_ray._remote.pins`)."""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path
from typing import Any

from airflow_ray._remote import pins
from airflow_ray._remote.pins import OWNER_PREFIX, all_owners, find_owner

__all__ = ["OWNER_PREFIX", "all_owners", "find_owner", "get_owner", "owner_name"]


@cache
def code_fingerprint() -> str:
    """A fingerprint of the code that runs in the cluster (:mod:`airflow_ray._remote`)."""
    from airflow_ray import _remote

    digest = hashlib.sha1()
    for source in sorted(Path(_remote.__file__).parent.glob("*.py")):
        digest.update(source.name.encode())
        digest.update(source.read_bytes())
    return digest.hexdigest()[:10]


def owner_name() -> str:
    """The owner actor's name: ``airflow_ray_owner_<deployment>_<code>``.

    The deployment's identity (:func:`airflow_ray.deployment.deployment_id`) keeps deployments
    that share a cluster apart: each has owners of its own, and lists, releases and retires only
    what they pin. The code's fingerprint: a detached actor keeps the code it was created with for
    as long as it lives; after an upgrade of airflow-ray that changes :mod:`airflow_ray._remote`,
    the new code gets an owner of its own, and references made before the upgrade still find
    theirs by name. Code that runs only in the Airflow worker does not rename it.
    """
    from airflow_ray.deployment import deployment_id

    return f"{OWNER_PREFIX}_{deployment_id()}_{code_fingerprint()}"


def get_owner(namespace: str, keep_runs: int, pin_ttl: float) -> Any:
    """This code's owner actor in ``namespace``, created on first use.

    The caller has registered :mod:`airflow_ray._remote` by value
    (:func:`~airflow_ray.cluster.byvalue.register_by_value`).
    """
    return pins.get_owner(owner_name(), namespace, keep_runs, pin_ttl)
