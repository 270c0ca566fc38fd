"""A checkpoint the cluster refused reaches the user as RayCheckpointIntegrityError; other errors
pass through as they are."""

from __future__ import annotations

import pytest

from airflow_ray._remote.protocol import CheckpointRefusedError
from airflow_ray.exceptions import RayCheckpointIntegrityError
from airflow_ray.results.errors import checkpoint_refusals


def test_a_refusal_becomes_an_integrity_error_with_its_message():
    refusal = CheckpointRefusedError("Refusing s3://b/k: it holds 3 bytes but its manifest says 4")
    with pytest.raises(RayCheckpointIntegrityError, match="holds 3 bytes") as raised:
        with checkpoint_refusals():
            raise refusal
    assert raised.value.__cause__ is refusal


def test_a_refusal_rebuilt_in_the_cluster_is_recognised_by_its_name():
    # A class shipped by value is another class object on the other side, with the same name.
    shipped = type("CheckpointRefusedError", (ValueError,), {"__module__": CheckpointRefusedError.__module__})
    with pytest.raises(RayCheckpointIntegrityError, match="tampered"):
        with checkpoint_refusals():
            raise shipped("tampered")


@pytest.mark.parametrize("error", [ValueError("bad value"), KeyError("k"), OSError("disk")])
def test_other_errors_pass_through_unchanged(error):
    with pytest.raises(type(error)) as raised:
        with checkpoint_refusals():
            raise error
    assert raised.value is error
