"""The ``[ray]`` settings: their defaults, ``AIRFLOW__RAY__<OPTION>`` (read on each call), and
errors that name the option and the value."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_ray import config
from airflow_ray.exceptions import RayConfigurationError

OPTIONS = [
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
]
NUMBERS = [
    "embedded_num_cpus",
    "embedded_object_store_memory",
    "connect_timeout",
    "keep_runs",
    "pin_ttl",
    "checkpoint_retention_days",
    "jobs_inline_max_bytes",
]


def env(option: str) -> str:
    return f"AIRFLOW__RAY__{option.upper()}"


@pytest.fixture(autouse=True)
def unset(monkeypatch):
    """Every option at its default (the test settings set some of them)."""
    for option in OPTIONS:
        monkeypatch.delenv(env(option), raising=False)


def test_defaults(airflow_home):
    assert config.embedded_dir() == airflow_home / "ray"
    assert config.embedded_num_cpus() is None
    assert config.embedded_object_store_memory() is None
    assert config.connect_timeout() == 30.0
    assert config.keep_runs() == 3
    assert config.pin_ttl() == 24 * 3600.0
    assert config.checkpoint_conn_id() == "aws_default"
    assert config.checkpoint_bucket() is None
    assert config.checkpoint_prefix() == "airflow-ray"
    assert config.checkpoint_retention_days() is None
    assert config.jobs_inline_max_bytes() == 1024 * 1024


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("embedded_dir", "/srv/ray-state", Path("/srv/ray-state")),
        ("embedded_num_cpus", "8", 8),
        ("embedded_object_store_memory", "2000000000", 2_000_000_000),
        ("connect_timeout", "2.5", 2.5),
        ("keep_runs", " 5 ", 5),
        ("pin_ttl", "3600", 3600.0),
        ("checkpoint_conn_id", "aws_ckpt", "aws_ckpt"),
        ("checkpoint_bucket", "results", "results"),
        ("checkpoint_prefix", "team/pipelines", "team/pipelines"),
        ("checkpoint_retention_days", "7", 7.0),
        ("jobs_inline_max_bytes", "4096", 4096),
    ],
)
def test_a_value_set_in_the_environment_is_read_when_asked_for(monkeypatch, option, value, expected):
    getter = getattr(config, option)
    default = getter()
    monkeypatch.setenv(env(option), value)
    assert getter() == expected
    assert type(getter()) is type(expected)
    monkeypatch.setenv(env(option), "")
    assert getter() == default


def test_embedded_dir_expands_the_home_directory(monkeypatch):
    monkeypatch.setenv(env("embedded_dir"), "~/ray-state")
    assert config.embedded_dir() == Path.home() / "ray-state"


@pytest.mark.parametrize("option", NUMBERS)
@pytest.mark.parametrize("value", ["0", "-2", "many", "1e", "nan", "inf"])
def test_a_bad_number_names_the_option_the_value_and_the_variable(monkeypatch, option, value):
    monkeypatch.setenv(env(option), value)
    with pytest.raises(RayConfigurationError) as info:
        getattr(config, option)()
    message = str(info.value)
    assert f"[ray] {option} = {value!r} is not a positive number" in message
    assert env(option) in message


@pytest.mark.parametrize(
    "option", ["keep_runs", "embedded_num_cpus", "embedded_object_store_memory", "jobs_inline_max_bytes"]
)
def test_a_count_must_be_a_whole_number(monkeypatch, option):
    monkeypatch.setenv(env(option), "0.5")
    with pytest.raises(RayConfigurationError, match=rf"\[ray\] {option} = '0.5' is not a whole number"):
        getattr(config, option)()
