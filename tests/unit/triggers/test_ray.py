"""RayJobTrigger's serialization: the triggerer rebuilds it from what it stores."""

from __future__ import annotations

import importlib

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
