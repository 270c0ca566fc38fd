"""Apache Airflow provider for Ray.

Importing this package imports neither Ray nor Airflow's task machinery, and reads no
connection: the public names below are loaded on first use (PEP 562).

.. code-block:: python

    from airflow_ray import RayPythonOperator, ray_task

- :class:`RayHook`: a ``ray`` connection and its cluster;
- :class:`RayPythonOperator` and ``@task.ray`` (:func:`ray_task`): a callable run on Ray;
- :class:`RayCheckpointOperator`: results written to S3;
- :class:`RayXComBackend`: results kept in the cluster, the XCom row holds a reference;
- :class:`CheckpointLocation`: where checkpoints go (``CheckpointLocation.configured()``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_PUBLIC = {
    "RayHook": "airflow_ray.hooks.ray",
    "RayPythonOperator": "airflow_ray.operators.ray",
    "RayCheckpointOperator": "airflow_ray.operators.checkpoint",
    "ray_task": "airflow_ray.decorators.ray",
    "RayXComBackend": "airflow_ray.xcom.backend",
    "CheckpointLocation": "airflow_ray.checkpoint.store",
}

__all__ = [
    "CheckpointLocation",
    "RayCheckpointOperator",
    "RayHook",
    "RayPythonOperator",
    "RayXComBackend",
    "__version__",
    "ray_task",
]

if TYPE_CHECKING:
    from airflow_ray.checkpoint.store import CheckpointLocation
    from airflow_ray.decorators.ray import ray_task
    from airflow_ray.hooks.ray import RayHook
    from airflow_ray.operators.checkpoint import RayCheckpointOperator
    from airflow_ray.operators.ray import RayPythonOperator
    from airflow_ray.xcom.backend import RayXComBackend


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'airflow_ray' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
