from __future__ import annotations

import json
from importlib.metadata import entry_points
from pathlib import Path

import airflow
import jsonschema

from airflow_ray.get_provider_info import get_provider_info


def test_provider_info_is_valid_against_airflows_schema():
    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    jsonschema.validate(get_provider_info(), schema)


def test_entry_point_points_at_the_provider_info():
    (entry,) = [ep for ep in entry_points(group="apache_airflow_provider") if ep.dist.name == "airflow-ray"]
    assert entry.load() is get_provider_info


def test_connection_form_and_decorator():
    info = get_provider_info()
    (conn,) = info["connection-types"]
    assert conn["connection-type"] == "ray"
    assert conn["hook-class-name"] == "airflow_ray.hooks.ray.RayHook"
    assert conn["ui-field-behaviour"]["relabeling"]["password"] == "Ray auth token"
    assert set(conn["conn-fields"]) == {
        "runtime_env",
        "init_kwargs",
        "transport",
        "dashboard_url",
        "python",
        "verify",
        "headers",
    }
    assert info["task-decorators"] == [{"class-name": "airflow_ray.decorators.ray.ray_task", "name": "ray"}]
    assert set(info["config"]["ray"]["options"]) == {
        "embedded_dir",
        "embedded_num_cpus",
        "embedded_object_store_memory",
        "connect_timeout",
        "keep_runs",
        "pin_ttl",
        "checkpoint_conn_id",
        "checkpoint_bucket",
        "checkpoint_prefix",
        "checkpoint_retention_days",
        "jobs_inline_max_bytes",
        "orphan_timeout",
        "inline_max_bytes",
        "schedule_timeout",
    }


def test_the_port_lives_in_the_address():
    (conn,) = get_provider_info()["connection-types"]
    assert "port" in conn["ui-field-behaviour"]["hidden-fields"]
    assert "port" not in conn["ui-field-behaviour"]["placeholders"]
