"""The trigger's events: typed records that cross from the triggerer to the worker as JSON."""

from __future__ import annotations

import json

import pytest

from airflow_ray.exceptions import AirflowRayError
from airflow_ray.triggers.events import FollowFailed, JobAnswered, JobEnded, Resume, event_from_wire

RESUME = {"call_id": "airflow-ray-d-t-01", "name": "d.t", "pinned": True, "keep": True, "try": 2}
RECORDED = Resume("airflow-ray-d-t-01", "d.t", pinned=True, keep=True, try_number=2)


def test_the_recorded_call_reads_as_earlier_versions_stored_it():
    assert Resume.from_wire(RESUME) == RECORDED and RECORDED.to_wire() == RESUME
    assert Resume.from_wire({"call_id": "c", "name": "n"}) == Resume("c", "n")  # before pinned, keep, try
    with pytest.raises(AirflowRayError, match="lacks the task's 'name'"):
        Resume.from_wire({"call_id": "c"})


@pytest.mark.parametrize(
    "event",
    [
        JobAnswered(RECORDED, {"event": "end", "reply": {"state": "done"}}),
        JobEnded(RECORDED, {"status": "STOPPED", "message": "stopped"}, ["last line"], [{"event": "begin"}]),
        JobEnded(RECORDED, None),
        FollowFailed(RECORDED, "the dashboard answered 502"),
    ],
)
def test_every_event_round_trips_through_json(event):
    wire = json.loads(json.dumps(event.to_wire()))
    assert event_from_wire(wire) == event


@pytest.mark.parametrize(
    ("received", "why"),
    [
        (
            {"status": "ended", "info": {"status": "STOPPED"}, "preamble": []},
            "its 'resume' is NoneType, not dict",
        ),
        (
            {"status": "answered", "resume": {"name": "d.t"}, "record": {"event": "end"}},
            "lacks the task's 'call_id'",
        ),
        ({"status": "answered", "resume": RESUME}, "its 'record' is NoneType, not dict"),
        ({"status": "answered", "resume": RESUME, "record": {"reply": {}}}, "its 'record' names no event"),
        ({"status": "ended", "resume": RESUME, "info": "STOPPED"}, "its 'info' is str, not dict"),
        ({"status": "ended", "resume": RESUME, "info": None, "log_tail": [1, 2]}, "'log_tail' or 'records'"),
        ({"status": "error", "resume": RESUME}, "its 'message' is NoneType, not str"),
        (
            {"status": "done", "resume": RESUME},
            "its status 'done' is not one of ['answered', 'ended', 'error']",
        ),
        ({"resume": RESUME}, "its status None is not one of"),
        (["ended"], "it is list, not a dict"),
        (None, "it is NoneType, not a dict"),
    ],
)
def test_a_malformed_or_unknown_event_is_a_clear_error_showing_it(received, why):
    with pytest.raises(AirflowRayError) as raised:
        event_from_wire(received)
    message = str(raised.value)
    assert why in message
    assert repr(received)[:60] in message
    assert "cannot read" in message and "Clear the task" in message
    assert not isinstance(raised.value, KeyError)


def test_a_huge_event_is_shown_shortened():
    with pytest.raises(AirflowRayError) as raised:
        event_from_wire({"status": "nope", "blob": "x" * 100_000})
    assert len(str(raised.value)) < 1000
