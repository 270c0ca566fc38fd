"""Airflow connections that a Ray task names (``airflow_conn_ids``), shipped with its request.

They are read on the Airflow worker, through Airflow's own layers (secrets backends, the
environment, the metadata DB through the Task SDK), which also registers each secret with
Airflow's log masker there, so that a line of the callable's output that holds one is masked in
the task log. They travel inside the task's request (not its ``runtime_env``, which the
dashboard shows), and the Ray task sets them as ``AIRFLOW_CONN_<ID>`` environment variables
only while its callable runs, where any Airflow hook finds them.
"""

from __future__ import annotations

from typing import Any

from airflow_ray.arguments import conn_ids
from airflow_ray.exceptions import RayConfigurationError


def environment_variable(conn_id: str) -> str:
    """The variable that Airflow's environment secrets backend reads for ``conn_id``."""
    return f"AIRFLOW_CONN_{conn_id.upper()}"


def shipped_connections(value: Any, task: str) -> dict[str, str]:
    """``AIRFLOW_CONN_<ID>`` → the connection as JSON, for each id that ``value`` names.

    :param value: the rendered ``airflow_conn_ids``.
    :param task: how messages name the task.
    :raises RayConfigurationError: naming a connection that is not defined, before any work.
    """
    ids = conn_ids(value)
    if not ids:
        return {}
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    shipped = {}
    for conn_id in ids:
        try:
            connection = BaseHook.get_connection(conn_id)
        except AirflowNotFoundException as err:
            raise RayConfigurationError(
                f"Task {task} names the Airflow connection {conn_id!r} in airflow_conn_ids, and it is "
                f"not defined ({err}). Define it where this worker reads connections (the UI or "
                f"`airflow connections add`, {environment_variable(conn_id)}, or a secrets backend), "
                f"or leave it out of airflow_conn_ids."
            ) from None
        shipped[environment_variable(conn_id)] = connection.as_json()
    return shipped
