"""The "Ray job" link on a task's page: the job in the cluster's dashboard, or the dashboard."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk.types import TaskInstanceKey

XCOM_KEY = "ray_dashboard_url"


class RayJobLink(BaseOperatorLink):
    """Where the task's Ray work can be watched: its job (Jobs API) or the cluster's dashboard.

    The operator records the URL when it submits; a connection without a dashboard URL (a
    driver connection to ``host:6379``) records none, and the link stays empty.
    """

    name = "Ray job"

    def get_link(self, operator: Any, *, ti_key: TaskInstanceKey) -> str:
        # Airflow asks when the task ends, in the process that ran it: the operator knows then
        # (a lookup of an XCom that was never pushed logs an error in every task log). After a
        # deferral, in a new process, the XCom pushed at submission holds it.
        known = getattr(operator, "ray_link", None)
        if isinstance(known, str):
            return known
        from airflow.sdk.execution_time.xcom import XCom

        value = XCom.get_value(ti_key=ti_key, key=XCOM_KEY)
        return value if isinstance(value, str) else ""
