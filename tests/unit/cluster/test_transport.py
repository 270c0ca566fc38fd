"""The transport seam's own logic: runtime_env merging and what a failed call raises here."""

from __future__ import annotations

import logging
import pickle

import pytest

from airflow_ray._remote.protocol import CallError, ErrorKind
from airflow_ray.cluster.transport import merged_runtime_env, raise_call_error
from airflow_ray.exceptions import RayTaskFailedError, RemoteCallableError


def test_a_tasks_runtime_env_is_merged_over_the_connections_as_ray_merges_them(caplog):
    connection = {
        "py_modules": ["s3://b/lib.zip"],
        "pip": ["xgboost==2.0.3"],
        "env_vars": {"A": "1", "B": "1"},
    }
    task = {"pip": ["pandas"], "env_vars": {"B": "2", "C": "2"}, "working_dir": "."}
    with caplog.at_level(logging.INFO):
        merged = merged_runtime_env(connection, task, "d.t")
    assert merged == {
        "py_modules": ["s3://b/lib.zip"],
        "pip": ["pandas"],
        "working_dir": ".",
        "env_vars": {"A": "1", "B": "2", "C": "2"},
    }
    assert "runtime_env of Ray task d.t replaces the connection's pip, env_vars.B with its own" in caplog.text
    # Neither input is changed.
    assert connection["env_vars"] == {"A": "1", "B": "1"} and task["env_vars"] == {"B": "2", "C": "2"}


def test_merging_without_conflicts_logs_nothing(caplog):
    with caplog.at_level(logging.INFO):
        assert merged_runtime_env({}, {}, "t") == {}
        assert merged_runtime_env({"env_vars": {"A": "1"}}, {"env_vars": {"A": "1"}}, "t") == {
            "env_vars": {"A": "1"}
        }
        assert merged_runtime_env({"pip": ["x"]}, {"env_vars": {"A": "1"}}, "t") == {
            "pip": ["x"],
            "env_vars": {"A": "1"},
        }
    assert "replaces" not in caplog.text


def test_a_callable_error_is_raised_as_itself_with_the_remote_traceback():
    error = CallError(
        ErrorKind.CALLABLE, "Traceback ...\nKeyError: 'x'", pickle.dumps(KeyError("x")), "KeyError"
    )
    with pytest.raises(KeyError) as raised:
        raise_call_error("d.t", error, None)
    assert isinstance(raised.value.__cause__, RemoteCallableError)
    assert "Traceback ...\nKeyError: 'x'" in str(raised.value.__cause__)


def test_an_error_whose_class_is_not_importable_here_keeps_its_traceback():
    error = CallError(ErrorKind.CALLABLE, "Traceback ...\nMyError: bad", b"not a pickle", "my.MyError")
    with pytest.raises(RemoteCallableError, match=r"with my\.MyError, which is not raised here as itself"):
        raise_call_error("d.t", error, None)


def test_a_callable_that_exits_fails_the_task_instead_of_ending_its_process():
    error = CallError(
        ErrorKind.CALLABLE, "Traceback ...\nSystemExit: 3", pickle.dumps(SystemExit(3)), "SystemExit"
    )
    with pytest.raises(
        RemoteCallableError, match=r"with SystemExit, .* would end this Airflow task's process"
    ):
        raise_call_error("d.t", error, None)


def test_a_failure_outside_the_callable_is_a_task_failure():
    with pytest.raises(RayTaskFailedError, match=r"Ray task d\.t failed outside the callable: worker died"):
        raise_call_error("d.t", CallError(ErrorKind.TASK, "worker died"), None)
