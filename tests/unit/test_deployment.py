"""The deployment's identity, which keeps deployments that share a Ray cluster apart."""

from __future__ import annotations

import pytest

from airflow_ray import deployment
from airflow_ray._remote.pins import deployment_scope


@pytest.fixture(autouse=True)
def _fresh():
    deployment.deployment_id.cache_clear()
    yield
    deployment.deployment_id.cache_clear()


def test_a_variable_set_in_the_environment_is_the_identity_without_a_metadata_db(monkeypatch):
    monkeypatch.setenv("AIRFLOW_VAR_AIRFLOW_RAY_DEPLOYMENT", "staging01")
    assert deployment.deployment_id() == "staging01"


def test_the_first_use_creates_it_and_later_ones_read_it(monkeypatch):
    stored: dict[str, str] = {}
    monkeypatch.setattr(deployment, "_read", lambda: stored.get("id"))
    monkeypatch.setattr(deployment, "_write", lambda value: stored.setdefault("id", value))
    made = deployment.deployment_id()
    assert len(made) == 12 and made.isalnum() and stored["id"] == made
    deployment.deployment_id.cache_clear()
    assert deployment.deployment_id() == made


def test_two_first_tasks_at_once_both_go_on_with_what_the_db_kept(monkeypatch):
    reads = iter([None, "keptbyother"])
    written: list[str] = []
    monkeypatch.setattr(deployment, "_read", lambda: next(reads))
    monkeypatch.setattr(deployment, "_write", written.append)
    assert deployment.deployment_id() == "keptbyother"
    assert len(written) == 1 and written[0] != "keptbyother"


@pytest.mark.parametrize("bad", ["has space", "with_underscore", "x" * 33, ""])
def test_a_value_that_cannot_name_an_actor_is_refused_with_the_fix(monkeypatch, bad):
    monkeypatch.setenv("AIRFLOW_VAR_AIRFLOW_RAY_DEPLOYMENT", bad)
    monkeypatch.setattr(deployment, "_write", lambda value: None)
    with pytest.raises(ValueError, match=r"airflow_ray_deployment.*letters or digits"):
        deployment.deployment_id()


def test_owners_of_one_deployment_share_a_scope_that_no_other_deployment_starts_with():
    staging = deployment_scope("airflow_ray_owner_staging01_0123456789")
    assert staging == "airflow_ray_owner_staging01_"
    assert "airflow_ray_owner_staging01_fedcba9876".startswith(staging)
    assert not "airflow_ray_owner_staging012_0123456789".startswith(staging)
    assert not "airflow_ray_owner_prod_0123456789".startswith(staging)


def test_outside_a_task_without_a_metadata_db_the_error_says_what_to_set(monkeypatch, tmp_path):
    from airflow_ray.exceptions import RayConfigurationError

    monkeypatch.delenv("AIRFLOW_VAR_AIRFLOW_RAY_DEPLOYMENT", raising=False)

    def no_table(*args, **kwargs):
        raise RuntimeError("(sqlite3.OperationalError) no such table: variable\n[SQL: SELECT ...]")

    monkeypatch.setattr("airflow.models.variable.Variable.get", no_table)
    with pytest.raises(
        RayConfigurationError, match=r"no such table: variable.*AIRFLOW_VAR_AIRFLOW_RAY_DEPLOYMENT"
    ):
        deployment.deployment_id()
