"""The ``[ray]`` settings: their defaults, ``AIRFLOW__RAY__<OPTION>`` (read on each call), and
errors that name the option and the value."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_ray import config
from airflow_ray.exceptions import RayConfigurationError
from airflow_ray.get_provider_info import get_provider_info

# Every option the provider declares: each one is read, defaulted and validated below.
DECLARED = get_provider_info()["config"]["ray"]["options"]
OPTIONS = sorted(DECLARED)
NUMBERS = sorted(name for name, option in DECLARED.items() if option["type"] in ("integer", "float"))
# Counts where 0 is meaningful (inline_max_bytes=0: always a reference) are checked on their own.
POSITIVE = [name for name in NUMBERS if name != "inline_max_bytes"]


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
    assert config.orphan_timeout() == 900.0
    assert config.inline_max_bytes() == 64 * 1024
    assert config.schedule_timeout() is None


@pytest.mark.parametrize("option", OPTIONS)
def test_each_declared_option_has_a_getter_whose_default_is_the_declared_one(option):
    getter = getattr(config, option)
    declared = DECLARED[option]["default"]
    value = getter()
    if declared in ("", None):
        assert value is None or option == "embedded_dir"
    elif isinstance(value, (int, float)):
        assert value == float(declared)
    else:
        assert str(value) == declared


# One value of each option, as set in the environment, and what the getter reads.
VALUES = [
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
    ("orphan_timeout", "60", 60.0),
    ("inline_max_bytes", "0", 0),
    ("schedule_timeout", "90", 90.0),
]


@pytest.mark.parametrize(("option", "value", "expected"), VALUES)
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


def test_every_declared_option_is_read_from_the_environment_in_a_test():
    assert {option for option, _, _ in VALUES} == set(OPTIONS)


@pytest.mark.parametrize("option", POSITIVE)
@pytest.mark.parametrize("value", ["0", "-2", "many", "1e", "nan", "inf"])
def test_a_bad_number_names_the_option_the_value_and_the_variable(monkeypatch, option, value):
    monkeypatch.setenv(env(option), value)
    with pytest.raises(RayConfigurationError) as info:
        getattr(config, option)()
    message = str(info.value)
    assert f"[ray] {option} = {value!r} is not a positive number" in message
    assert env(option) in message


@pytest.mark.parametrize("value", ["-1", "many", "nan"])
def test_inline_max_bytes_may_be_zero_but_not_negative_or_text(monkeypatch, value):
    monkeypatch.setenv(env("inline_max_bytes"), value)
    with pytest.raises(RayConfigurationError, match=r"\[ray\] inline_max_bytes") as info:
        config.inline_max_bytes()
    assert repr(value) in str(info.value)


@pytest.mark.parametrize(
    "option", sorted(name for name, option in DECLARED.items() if option["type"] == "integer")
)
def test_a_count_must_be_a_whole_number(monkeypatch, option):
    monkeypatch.setenv(env(option), "0.5")
    with pytest.raises(RayConfigurationError, match=rf"\[ray\] {option} = '0.5' is not a whole number"):
        getattr(config, option)()
