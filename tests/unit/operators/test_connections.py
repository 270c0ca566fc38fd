"""``airflow_conn_ids``: which connections a task names, read through Airflow's own layers."""

from __future__ import annotations

import json

import pytest

from airflow_ray.arguments import conn_ids
from airflow_ray.exceptions import RayConfigurationError
from airflow_ray.operators.connections import shipped_connections


@pytest.mark.parametrize(
    ("value", "ids"),
    [
        (None, []),
        ("", []),
        ("aws_data", ["aws_data"]),
        ("aws_data, pg ,", ["aws_data", "pg"]),
        (["aws_data", "", " pg ", "aws_data"], ["aws_data", "pg"]),
        (("a",), ["a"]),
    ],
)
def test_conn_ids(value, ids):
    assert conn_ids(value) == ids


@pytest.mark.parametrize(("value", "says"), [(3, "got int: 3"), (["a", 1], "got int: 1 (in ['a', 1])")])
def test_conn_ids_that_are_not_text_are_refused_naming_them(value, says):
    with pytest.raises(RayConfigurationError, match="airflow_conn_ids must") as raised:
        conn_ids(value)
    assert says in str(raised.value)


def test_named_connections_travel_as_the_variables_airflow_reads(monkeypatch):
    document = {"conn_type": "aws", "login": "k", "password": "s3cret", "extra": {"region_name": "x"}}
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DATA", json.dumps(document))
    shipped = shipped_connections(["aws_data"], "d.t")
    assert list(shipped) == ["AIRFLOW_CONN_AWS_DATA"]
    assert json.loads(shipped["AIRFLOW_CONN_AWS_DATA"]) == document
    assert shipped_connections("", "d.t") == {}


def test_a_connection_that_is_not_defined_is_named_with_the_fix(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_AWS_NOWHERE", raising=False)
    with pytest.raises(RayConfigurationError) as raised:
        shipped_connections(["aws_nowhere"], "d.t")
    message = str(raised.value)
    assert "Task d.t names the Airflow connection 'aws_nowhere' in airflow_conn_ids" in message
    assert "AIRFLOW_CONN_AWS_NOWHERE" in message
