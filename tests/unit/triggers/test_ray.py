"""RayJobTrigger's serialization: the triggerer rebuilds it from what it stores."""

from __future__ import annotations

import importlib

from airflow_ray.triggers.events import Resume
from airflow_ray.triggers.ray import RayJobTrigger


def test_the_trigger_round_trips_through_its_serialization():
    trigger = RayJobTrigger(
        ray_conn_id="ray_jobs",
        submission_id="airflow-ray-x",
        task_name="d.t",
        poll_interval=0.5,
        resume={"a": 1},
    )
    path, kwargs = trigger.serialize()
    module, _, name = path.rpartition(".")
    rebuilt = getattr(importlib.import_module(module), name)(**kwargs)
    assert rebuilt.serialize() == (path, kwargs)
    assert kwargs == {
        "ray_conn_id": "ray_jobs",
        "submission_id": "airflow-ray-x",
        "task_name": "d.t",
        "poll_interval": 0.5,
        "resume": {"a": 1},
    }


class FakeJobsApi:
    """What the trigger reads from the Jobs API, one look after another."""

    def __init__(self, looks: list[tuple[dict | None, str]]) -> None:
        self.looks = looks
        self.closed = False
        self.seen = 0

    async def info(self, submission_id: str) -> dict | None:
        self.seen = min(self.seen + 1, len(self.looks))
        return self.looks[self.seen - 1][0]

    async def logs(self, submission_id: str) -> str:
        return self.looks[self.seen - 1][1]

    async def close(self) -> None:
        self.closed = True


def events_of(trigger: RayJobTrigger, api: FakeJobsApi) -> list:
    import asyncio

    from airflow_ray.triggers.events import event_from_wire

    async def client() -> FakeJobsApi:
        return api

    trigger._client = client  # type: ignore[method-assign]

    async def collect() -> list:
        return [event_from_wire(event.payload) async for event in trigger.run()]

    return asyncio.run(collect())


RESUME = {"call_id": "airflow-ray-x", "name": "d.t", "pinned": False, "keep": False, "try": 1}
RECORDED = Resume("airflow-ray-x", "d.t", try_number=1)


def make_trigger() -> RayJobTrigger:
    return RayJobTrigger(
        ray_conn_id="ray_jobs", submission_id="airflow-ray-x", task_name="d.t", poll_interval=0, resume=RESUME
    )


def test_a_job_stopped_before_it_answered_is_one_ended_event_with_its_status_and_log():
    from airflow_ray._remote.job_entry import record
    from airflow_ray.triggers.events import JobEnded

    log = "Ray starting\n" + record("begin", call_id="c") + "\nworking 1\nworking 2\n"
    api = FakeJobsApi(
        [({"status": "RUNNING"}, log), ({"status": "STOPPED", "message": "Job was stopped."}, log)]
    )
    [event] = events_of(make_trigger(), api)
    assert event == JobEnded(
        RECORDED,
        {"status": "STOPPED", "message": "Job was stopped."},
        ["Ray starting", "working 1", "working 2"],
        [{"event": "begin", "call_id": "c"}],
    )
    assert api.closed


def test_an_answered_job_is_one_answered_event_with_its_record():
    from airflow_ray._remote.job_entry import record
    from airflow_ray.triggers.events import JobAnswered

    log = record("begin", call_id="c") + "\n" + record("end", reply={"state": "done"}) + "\n"
    [event] = events_of(make_trigger(), FakeJobsApi([({"status": "SUCCEEDED"}, log)]))
    assert event == JobAnswered(RECORDED, {"event": "end", "reply": {"state": "done"}})


def test_a_job_that_is_gone_ends_and_a_failing_api_is_an_error_event():
    from airflow_ray.exceptions import RayConnectionError
    from airflow_ray.triggers.events import FollowFailed, JobEnded

    [event] = events_of(make_trigger(), FakeJobsApi([(None, "")]))
    assert event == JobEnded(RECORDED, None, [], [])

    class Broken(FakeJobsApi):
        async def info(self, submission_id: str) -> dict | None:
            raise RayConnectionError("the dashboard answered 502")

    broken = Broken([])
    [event] = events_of(make_trigger(), broken)
    assert event == FollowFailed(RECORDED, "the dashboard answered 502") and broken.closed
