"""The Ray run of one execute() (operators/run.py), through the operator, over a fake transport:
no cluster, no network."""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_ray import RayPythonOperator
from airflow_ray._remote.protocol import CallState, Returned
from airflow_ray.cluster.transport import Call
from airflow_ray.exceptions import AirflowRayError, RayConfigurationError, RayTaskFailedError
from airflow_ray.operators.run import RayRun, submission_id
from airflow_ray.triggers.events import FollowFailed, JobEnded, Resume

RESUME = Resume("airflow-ray-d-t-01", "d.t", pinned=False, keep=False, try_number=2)


class FakeTransport:
    """The part of a transport the run asks in these tests."""

    def __init__(
        self, state: CallState = CallState.RUNNING, pins: list[dict[str, Any]] | None = None
    ) -> None:
        self._state = state
        self._pins = pins or []
        self.taken: list[Call] = []

    def state(self, call: Call) -> CallState:
        return self._state

    def list_pins(self, dag_id: str | None = None, run_id: str | None = None) -> list[dict[str, Any]]:
        return self._pins

    def take(self, call: Call) -> Any:
        self.taken.append(call)
        return 42

    def job_id(self, call: Call) -> str | None:
        return call.call_id


def operator(transport: FakeTransport | None = None) -> RayPythonOperator:
    op = RayPythonOperator(task_id="t", python_callable=lambda: 1, ray_conn_id="ray_jobs")
    op.__dict__["transport"] = transport or FakeTransport()
    op.__dict__["hook"] = SimpleNamespace(describe=lambda address=None: "connection 'ray_jobs'")
    return op


def context(try_number: int = 3) -> dict[str, Any]:
    ti = SimpleNamespace(dag_id="d", run_id="r", task_id="t", map_index=-1, try_number=try_number)
    return {"ti": ti}


@pytest.mark.parametrize(
    "event",
    [
        {"status": "ended", "info": {"status": "STOPPED"}, "preamble": []},  # before events were typed
        {"status": "answered", "record": {"event": "end"}},
        {"status": "surprise", "resume": RESUME.to_wire()},
        "not an event",
    ],
)
def test_a_malformed_event_is_a_clear_error_not_a_key_error(event):
    with pytest.raises(AirflowRayError, match="cannot read") as raised:
        operator().execute_complete(context(), event)
    assert not isinstance(raised.value, KeyError)


def test_a_job_stopped_from_outside_fails_the_task_saying_so():
    event = JobEnded(
        RESUME, {"status": "STOPPED", "message": "Job was intentionally stopped."}, ["working 3"], []
    )
    with pytest.raises(RayTaskFailedError) as raised:
        operator().execute_complete(context(), event.to_wire())
    message = str(raised.value)
    assert "The Ray job airflow-ray-d-t-01 of task d.t was stopped before it answered" in message
    assert message.endswith("The end of the job's log:\nworking 3")


def test_an_entrypoint_without_ray_is_a_configuration_error_naming_the_interpreter():
    no_ray = {
        "event": "no_ray",
        "python": "/usr/bin/python3",
        "version": "3.11.2",
        "error": "No module named 'ray'",
    }
    event = JobEnded(RESUME, {"status": "FAILED", "message": "exit 3"}, [], [no_ray])
    with pytest.raises(
        RayConfigurationError, match=re.escape("/usr/bin/python3 (Python 3.11.2), cannot import Ray")
    ):
        operator().execute_complete(context(), event.to_wire())


def test_a_trigger_that_could_not_follow_fails_the_task_with_its_message():
    with pytest.raises(
        RayTaskFailedError, match=re.escape("Following Ray task d.t failed: the dashboard answered 502")
    ):
        operator().execute_complete(context(), FollowFailed(RESUME, "the dashboard answered 502").to_wire())


def test_the_event_names_the_try_that_submitted_the_job():
    op = operator()
    with pytest.raises(RayTaskFailedError):
        op.execute_complete(context(try_number=3), FollowFailed(RESUME, "gone").to_wire())
    assert op._run is not None and op._run.producer.try_number == 2  # the event's try, not the resuming one


def test_a_failed_deferral_stops_the_recorded_job_and_a_run_in_place_is_cancelled_on_kill():
    class Stoppable(FakeTransport):
        cancelled: list[Call] = []

        def cancel(self, call: Call) -> None:
            self.cancelled.append(call)

    transport = Stoppable()
    op = operator(transport)
    store = {"airflow_ray_call": RESUME.to_wire()}
    with pytest.raises(Exception):  # noqa: B017 - BaseOperator's own failure after the stop
        op.resume_execution(
            "__fail__", {"error": "Trigger timeout"}, {**context(), "task_state_store": store}
        )
    assert transport.cancelled == [RESUME.call]
    op.on_kill()
    assert transport.cancelled == [RESUME.call, RESUME.call]


@pytest.mark.parametrize(
    ("state", "keep", "pins", "status", "active", "succeeded"),
    [
        (CallState.RUNNING, False, [], "running", True, False),
        (CallState.DONE, False, [], "done", False, True),
        (CallState.FAILED, False, [], "failed", False, False),
        (CallState.UNKNOWN, False, [], "unknown", False, False),
        # Finished and taken by the first try: its result is still pinned, so it succeeded.
        (
            CallState.UNKNOWN,
            True,
            [
                {
                    "dag_id": "d",
                    "run_id": "r",
                    "task_id": "t",
                    "map_index": -1,
                    "key": "return_value",
                    "try_number": 2,
                }
            ],
            "done",
            False,
            True,
        ),
    ],
)
def test_a_retry_reads_the_recorded_calls_state(state, keep, pins, status, active, succeeded):
    for pin in pins:
        pin["meta"] = Returned({"type": "int"}).meta
    op = operator(FakeTransport(state, pins))
    ctx = context()
    recorded = Resume(RESUME.call_id, RESUME.name, keep=keep, try_number=2)
    found = op.get_job_status(recorded.to_wire(), ctx)
    assert found == status
    assert op.is_job_active(found) is active and op.is_job_succeeded(found) is succeeded


def test_an_unpinned_result_is_taken_as_the_value():
    transport = FakeTransport(CallState.DONE)
    run = RayRun(operator(transport), context())
    assert run.finish(Resume("c1", "d.t"), Returned({"type": "int"})) == 42
    assert transport.taken == [Call("d.t", "c1")]
    assert run.result(Resume("c1", "d.t")) == 42 and len(transport.taken) == 1  # not taken twice


def test_the_job_id_of_a_try_is_its_deployments_own(monkeypatch):
    """Staging and production name a day's run alike: each finds its own job, never the other's."""
    from airflow_ray import deployment
    from airflow_ray._remote.protocol import Producer

    producer = Producer("dag", "manual__2026-01-02T00:00:00+00:00", "task", -1, "return_value", 1)
    ids = {}
    for name in ("staging", "production"):
        monkeypatch.setattr(deployment, "deployment_id", lambda name=name: name)
        ids[name] = submission_id(producer)
        assert ids[name] == submission_id(producer)  # a second submission of the try finds it
    assert ids["staging"] != ids["production"]


def test_the_link_is_the_runs_own_until_a_deferral_and_then_the_submitting_process_xcom():
    op = operator()
    assert op.ray_link is None  # before execute(): RayJobLink reads the XCom
    op._run_of(context())
    assert op.ray_link == ""  # submitted nothing yet: no XCom lookup, no link
    with pytest.raises(RayTaskFailedError):
        op.execute_complete(context(), FollowFailed(RESUME, "gone").to_wire())
    assert op.ray_link is None  # resumed in another process: the XCom pushed at submission holds it
