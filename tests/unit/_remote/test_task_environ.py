"""The connections a task names: set only while its callable runs, their secrets kept out of
what it sends back."""

from __future__ import annotations

import json
import os

import pytest

from airflow_ray._remote import task as remote_call
from tests.unit._remote.streams import stream, worker_streams

CONNECTION = json.dumps(
    {
        "conn_type": "aws",
        "login": "KEYID",
        "password": "s3cret-value",
        "extra": {
            "endpoint_url": "http://127.0.0.1:9",
            "session_token": "tok-123",
            "nested": [{"api_key": "k-99"}],
        },
    }
)


def test_a_named_connection_is_set_only_while_the_callable_runs(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_KEPT", "before")
    monkeypatch.delenv("AIRFLOW_CONN_AWS_DATA", raising=False)
    environ = {"AIRFLOW_CONN_AWS_DATA": CONNECTION, "AIRFLOW_CONN_KEPT": "during"}

    def read() -> list:
        return [os.environ.get("AIRFLOW_CONN_AWS_DATA"), os.environ.get("AIRFLOW_CONN_KEPT")]

    with worker_streams():
        events = stream(read, (), {}, environ=environ)
    assert events[-1] == [CONNECTION, "during"]
    assert "AIRFLOW_CONN_AWS_DATA" not in os.environ
    assert os.environ["AIRFLOW_CONN_KEPT"] == "before"


def test_a_callable_that_fails_leaves_the_environment_as_it_was(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_AWS_DATA", raising=False)

    def fail() -> None:
        raise ValueError("password was " + json.loads(os.environ["AIRFLOW_CONN_AWS_DATA"])["password"])

    with worker_streams():
        events = stream(fail, (), {}, environ={"AIRFLOW_CONN_AWS_DATA": CONNECTION})
    assert events[-1][0] == "error"
    assert "password was ***" in events[-1][2] and "s3cret-value" not in events[-1][2]
    assert "AIRFLOW_CONN_AWS_DATA" not in os.environ


def test_what_the_callable_prints_has_the_secrets_masked():
    def show() -> None:
        connection = json.loads(os.environ["AIRFLOW_CONN_AWS_DATA"])
        print("login", connection["login"], "password", connection["password"])
        print(
            "token", connection["extra"]["session_token"], "key", connection["extra"]["nested"][0]["api_key"]
        )
        print("endpoint", connection["extra"]["endpoint_url"])

    with worker_streams():
        events = stream(show, (), {}, environ={"AIRFLOW_CONN_AWS_DATA": CONNECTION})
    output = "".join(event[1] for event in events[:-2] if event[0] == "output")
    assert output == "login KEYID password ***\ntoken *** key ***\nendpoint http://127.0.0.1:9\n"


@pytest.mark.parametrize(
    ("environ", "secrets"),
    [
        ({"AIRFLOW_CONN_A": CONNECTION}, ["s3cret-value", "tok-123", "k-99"]),
        # The extra as text, as Airflow's JSON form may carry it.
        (
            {"AIRFLOW_CONN_A": json.dumps({"password": "pw-long", "extra": json.dumps({"token": "t-x1"})})},
            ["pw-long", "t-x1"],
        ),
        # A URI, and variables that are no connection: nothing to read.
        ({"AIRFLOW_CONN_A": "aws://k:secret@host", "OTHER": CONNECTION}, []),
        ({"AIRFLOW_CONN_A": json.dumps({"password": "abc"})}, []),  # too short to mask safely
    ],
)
def test_connection_secrets(environ, secrets):
    assert sorted(remote_call.connection_secrets(environ)) == sorted(secrets)
