from __future__ import annotations

import pytest

from airflow_ray.cluster.resources import TaskResources
from airflow_ray.exceptions import RayConfigurationError


def test_templated_strings_become_numbers():
    resources = TaskResources.from_arguments(
        num_cpus="2", num_gpus="0.5", memory="1e9", resources='{"tpu": "1"}'
    )
    assert resources.as_options() == {
        "num_cpus": 2.0,
        "num_gpus": 0.5,
        "memory": 1_000_000_000,
        "resources": {"tpu": 1.0},
    }
    assert resources.demand() == {"CPU": 2.0, "GPU": 0.5, "memory": 1e9, "tpu": 1.0}


def test_defaults_ask_for_nothing_explicit_but_demand_one_cpu():
    resources = TaskResources.from_arguments(num_cpus=None, num_gpus="", memory="None")
    assert resources.as_options() == {}
    assert resources.demand() == {"CPU": 1.0}
    assert TaskResources.from_arguments(num_cpus=0).demand() == {}


@pytest.mark.parametrize(
    ("field", "value", "shown"),
    [
        ("num_cpus", "two", "num_cpus='two'"),
        ("num_gpus", -1, "num_gpus=-1"),
        ("num_cpus", True, "num_cpus=True"),
        ("memory", [1], "memory=[1]"),
    ],
)
def test_bad_numbers_name_the_field_and_value(field, value, shown):
    with pytest.raises(RayConfigurationError, match="not a non-negative number") as info:
        TaskResources.from_arguments(**{field: value})
    assert shown in str(info.value)


@pytest.mark.parametrize(
    ("value", "message"), [("{not json", "not a JSON object"), ([1, 2], "must be a dict")]
)
def test_bad_custom_resources(value, message):
    with pytest.raises(RayConfigurationError, match=message):
        TaskResources.from_arguments(resources=value)
