"""Which Airflow deployment this is, so that deployments sharing a Ray cluster stay apart.

Staging and production often share one Ray cluster, and both schedulers name a day's run
alike. Each deployment's owner actor carries its deployment's identity in its name, so that
neither reads, lists, releases nor retires the other's results.

The identity is a random id kept in the deployment's own metadata DB, as the Airflow Variable
:data:`VARIABLE`, created by the first task that needs it: every worker, host and process of
the deployment reads the same row (through the Task SDK in a task, from the DB elsewhere),
whatever host name or path each one reaches the DB by. Setting ``AIRFLOW_VAR_AIRFLOW_RAY_DEPLOYMENT``
(or the variable in a secrets backend) fixes it; two deployments given the same value share
their results, as one deployment.
"""

from __future__ import annotations

import re
import sys
import uuid
from functools import cache

VARIABLE = "airflow_ray_deployment"
DESCRIPTION = (
    "airflow-ray: this deployment's identity on shared Ray clusters (the name of its owner actors). "
    "Changing it orphans the results that Ray holds for this deployment."
)
_VALID = re.compile(r"^[A-Za-z0-9]{1,32}$")


@cache
def deployment_id() -> str:
    """This deployment's identity, created in its metadata DB on first use."""
    current = _read()
    if current is None:
        _write(uuid.uuid4().hex[:12])
        # Two first tasks may write at once; both go on with what the DB kept.
        current = _read()
    if current is None or not _VALID.match(current):
        raise ValueError(
            f"The Airflow Variable {VARIABLE!r} is {current!r}: airflow-ray names this deployment's "
            "Ray owner actors after it, so it must be 1 to 32 letters or digits. Delete it to have "
            "a new one made, or set it to such a value."
        )
    return current


def _in_task() -> bool:
    runner = sys.modules.get("airflow.sdk.execution_time.task_runner")
    return getattr(runner, "SUPERVISOR_COMMS", None) is not None


def _read() -> str | None:
    if _in_task():
        from airflow.sdk import Variable

        value = Variable.get(VARIABLE, default=None)
    else:
        from airflow.models.variable import Variable as StoredVariable

        try:
            value = StoredVariable.get(VARIABLE, default_var=None)
        except Exception as err:  # the DB's own error: no DB, not migrated, unreachable
            from airflow_ray.exceptions import RayConfigurationError

            raise RayConfigurationError(
                f"airflow-ray names this deployment's Ray owner actors after the Airflow Variable "
                f"{VARIABLE!r}, and this process, outside an Airflow task, cannot read it from the "
                f"metadata DB ({type(err).__name__}: {str(err).splitlines()[0][:200]}). Run it where "
                f"Airflow's metadata DB is configured, or set AIRFLOW_VAR_AIRFLOW_RAY_DEPLOYMENT to "
                f"the deployment's id (the value of that Variable)."
            ) from err
    return None if value is None else str(value).strip()


def _write(value: str) -> None:
    if _in_task():
        from airflow.sdk import Variable

        Variable.set(VARIABLE, value, description=DESCRIPTION)
    else:
        from airflow.models.variable import Variable as StoredVariable

        StoredVariable.set(VARIABLE, value, description=DESCRIPTION)
