"""The Ray version window and the Python check: refused before anything runs, naming both versions."""

from __future__ import annotations

import platform

import pytest

from airflow_ray._remote import job_entry
from airflow_ray.cluster import versions
from airflow_ray.cluster.jobs import ended_early
from airflow_ray.cluster.transport import Call
from airflow_ray.exceptions import RayConfigurationError

WHERE = "connection 'ray_jobs' (address http://head:8265)"


@pytest.mark.parametrize(
    ("version", "parsed"),
    [("2.46.0", (2, 46)), ("2.60.1", (2, 60)), ("3.0.0rc1", (3, 0)), ("2.61.0.dev0", (2, 61)), ("x", None)],
)
def test_release(version, parsed):
    assert versions.release(version) == parsed


@pytest.mark.parametrize("version", ["2.46.0", "2.51.2", "2.56.1", "2.60.0", "2.60.9"])
def test_clusters_in_the_window_are_taken(version):
    versions.check_cluster_ray(version, WHERE)


@pytest.mark.parametrize("version", ["2.45.9", "2.9.3", "2.61.0", "3.0.0", "nonsense"])
def test_clusters_outside_the_window_are_refused_naming_both_versions(version):
    with pytest.raises(RayConfigurationError) as raised:
        versions.check_cluster_ray(version, WHERE)
    message = str(raised.value)
    assert f"runs Ray {version}" in message and "Ray 2.46 to 2.60 through the Jobs API" in message
    assert f"this Airflow worker runs Ray {versions._our_ray()}" in message and WHERE in message


def test_the_entrypoint_refuses_another_python_minor_before_unpickling(tmp_path, capsys):
    ours = versions.worker_python()
    other = "3.10" if ours != "3.10" else "3.12"
    payload = tmp_path / "never-read.pkl"  # not there: nothing may be unpickled
    assert job_entry.main(str(payload), other) == 3
    (line,) = capsys.readouterr().out.splitlines()
    answer = job_entry.parse_record(line)
    assert answer is not None and answer["event"] == "python_mismatch"
    assert answer["python"] == platform.python_version() and answer["wanted"] == other

    error = ended_early(Call("dag.task", "job-1"), {"status": "FAILED"}, [], [answer], WHERE)
    assert isinstance(error, RayConfigurationError)
    message = str(error)
    assert f"runs Python {platform.python_version()}" in message
    assert f"this Airflow worker Python {platform.python_version()}" in message
    assert "does not cross Python minor versions" in message and "job-1" in message


def test_ray_s_own_version_mismatch_of_a_driver_is_said_plainly():
    ray_says = (
        "Version mismatch: The cluster was started with:\n    Ray: 2.46.0\n    Python: 3.11.2\n"
        "This process on node 127.0.0.1 was started with:\n    Ray: 2.60.0\n    Python: 3.11.2\n"
    )
    message = str(versions.driver_mismatch(ray_says, WHERE))
    assert "Ray: 2.46.0" in message and "Ray: 2.60.0" in message and WHERE in message
    assert "Jobs API transport" in message and "Ray 2.46 to 2.60" in message
