"""``RayJobTrigger``: follows a Ray job from the triggerer, so that the worker slot is free.

It follows the job's log and status through the dashboard with non-blocking HTTP calls only
(:func:`~airflow_ray.cluster.jobs.follow_log`), writes what the callable prints to the task's log,
and fires once the job has answered or ended.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class RayJobTrigger(BaseTrigger):
    """Wait for a Ray job submitted by :class:`~airflow_ray.operators.ray.RayPythonOperator`.

    :param ray_conn_id: the ``ray`` connection (its dashboard runs the job).
    :param submission_id: the job.
    :param task_name: how the log names the Ray task.
    :param poll_interval: seconds between two looks at the job.
    :param resume: what the operator needs back to finish (sent with the event): the wire form
        of a :class:`~airflow_ray.triggers.events.Resume`, kept as such in the serialized trigger.
    """

    def __init__(
        self,
        *,
        ray_conn_id: str,
        submission_id: str,
        task_name: str,
        poll_interval: float = 1.0,
        resume: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.ray_conn_id = ray_conn_id
        self.submission_id = submission_id
        self.task_name = task_name
        self.poll_interval = float(poll_interval)
        self.resume = dict(resume or {})

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "ray_conn_id": self.ray_conn_id,
                "submission_id": self.submission_id,
                "task_name": self.task_name,
                "poll_interval": self.poll_interval,
                "resume": self.resume,
            },
        )

    async def _client(self) -> Any:
        from asgiref.sync import sync_to_async

        from airflow_ray.cluster.jobs_api import AsyncJobsClient
        from airflow_ray.hooks.ray import RayHook

        # Reading the connection is a blocking call: off the event loop. It never starts a cluster.
        endpoint = await sync_to_async(RayHook(self.ray_conn_id).jobs_endpoint)(start=False)
        return AsyncJobsClient(endpoint)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_ray.cluster.jobs import LogReader, follow_log
        from airflow_ray.exceptions import AirflowRayError
        from airflow_ray.operators.lines import log_line
        from airflow_ray.triggers.events import FollowFailed, JobAnswered, JobEnded, Resume

        resume = Resume.from_wire(self.resume)
        reader = LogReader()
        try:
            client = await self._client()
        except AirflowRayError as err:
            yield TriggerEvent(FollowFailed(resume, str(err)).to_wire())
            return
        try:
            record, info = await follow_log(
                client,
                self.submission_id,
                reader,
                lambda line: log_line(self.log, line.rstrip("\n")),
                self.poll_interval,
            )
            if record is not None:
                yield TriggerEvent(JobAnswered(resume, record).to_wire())
            else:
                yield TriggerEvent(JobEnded(resume, info, list(reader.tail), reader.records).to_wire())
        except AirflowRayError as err:
            yield TriggerEvent(FollowFailed(resume, str(err)).to_wire())
        finally:
            await client.close()

    async def on_kill(self) -> None:
        """The task was marked failed or cleared while deferred: stop the Ray job (and its task)."""
        client = await self._client()
        try:
            stopped = await client.stop(self.submission_id)
            self.log.info("Stopped Ray job %s of %s: %s", self.submission_id, self.task_name, stopped)
        finally:
            await client.close()
