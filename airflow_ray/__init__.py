"""Apache Airflow provider for Ray.

Importing this package imports neither Ray nor any connection: Ray is imported where a task
runs. Use :class:`airflow_ray.hooks.ray.RayHook`,
:class:`airflow_ray.operators.ray.RayPythonOperator` and ``@task.ray``
(:func:`airflow_ray.decorators.ray.ray_task`).
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
