"""The example DAGs of dags/: they parse cheaply, and each runs end to end on small data."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.dagrun import run_dag, task_states, xcom, xcom_row

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
# Small enough for a two-core machine, large enough for accuracy to mean something.
SMALL = {"rows": 50_000, "rounds": 10, "actors": 2, "cpus_per_actor": 1}

# Parses each DAG file in turn, as Airflow's DAG processor does (the folder on sys.path), with
# every way of reading a connection made to fail, and notes what each file made Python import.
PARSE_PROBE = """
import json, sys
from pathlib import Path

reads = []

def refuse(conn_id, *args, **kwargs):
    reads.append(conn_id)
    raise RuntimeError(f"connection {conn_id!r} read while parsing")

from airflow.sdk import BaseHook
from airflow.sdk.execution_time import context
from airflow.models.connection import Connection
BaseHook.get_connection = classmethod(lambda cls, conn_id: refuse(conn_id))
context._get_connection = refuse
Connection.get_connection_from_secrets = classmethod(lambda cls, conn_id: refuse(conn_id))

from airflow.dag_processing.dagbag import BundleDagBag
folder = Path(sys.argv[1])
heavy = ("ray", "xgboost", "xgboost_ray", "boto3", "botocore", "sklearn")
report = {}
for path in sorted(folder.glob("*.py")):
    bag = BundleDagBag(dag_folder=str(path), bundle_path=folder, bundle_name="dags-folder")
    report[path.name] = {
        "dags": sorted(bag.dag_ids),
        "errors": [str(error) for error in bag.import_errors.values()],
        "heavy": sorted(m for m in heavy if m in sys.modules),
        "connections_read": list(reads),
    }
print(json.dumps(report))
"""


def test_every_dag_parses_without_importing_ray_or_reading_a_connection(airflow_db):
    result = subprocess.run(
        [sys.executable, "-c", PARSE_PROBE, str(REPO / "dags")],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        check=True,
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    clean = {"errors": [], "heavy": [], "connections_read": []}
    for name, parsed in report.items():
        assert {key: parsed[key] for key in clean} == clean, name
    assert {name: parsed["dags"] for name, parsed in report.items() if parsed["dags"]} == {
        "deploy_higgs_model.py": ["deploy_higgs_model"],
        "example_ray_jobs.py": ["example_ray_jobs"],
        "example_ray_pipeline.py": ["example_ray_pipeline"],
        "xgboost_higgs.py": ["xgboost_higgs"],
        "xgboost_higgs_taskflow.py": ["xgboost_higgs_taskflow"],
        "xgboost_tune.py": ["xgboost_tune"],
    }


@pytest.fixture(scope="module")
def example_dags(airflow_db):
    """The DAGs folder parsed as Airflow parses it (the folder on sys.path for the helpers)."""
    from airflow.dag_processing.dagbag import BundleDagBag

    folder = airflow_db / "dags"
    bag = BundleDagBag(dag_folder=str(folder), bundle_path=folder, bundle_name="dags-folder")
    assert bag.import_errors == {}
    return bag


@pytest.fixture(scope="module")
def signal(example_dags) -> float:
    """The accuracy the generated data's signal allows (its Bayes rate)."""
    from higgs_data import generate_higgs, signal_accuracy

    accuracy = signal_accuracy(generate_higgs(SMALL["rows"], seed=42))
    assert accuracy is not None
    return accuracy


def assert_near_the_signal(accuracy: float, signal: float, below: float = 0.04) -> None:
    # A few rounds on 35k rows come close to the Bayes rate; nothing can beat it by more than
    # the noise of 10k test rows.
    assert signal - below <= accuracy <= signal + 0.02, (accuracy, signal)


@pytest.fixture(scope="module")
def classic_run(ray_cluster, example_dags):
    return run_dag(example_dags.get_dag("xgboost_higgs"), conf=SMALL)


def test_classic_pipeline_trains_on_ray_and_reaches_the_accuracy_the_signal_allows(
    classic_run, signal, capfd
):
    assert task_states(classic_run) == {
        **dict.fromkeys(["load", "split", "train", "evaluate", "checkpoint_configured"], "success"),
        "checkpoint_model": "skipped",  # no checkpoint bucket configured
    }
    metrics = xcom(classic_run, "evaluate")
    assert metrics["test_rows"] == 10_000
    assert_near_the_signal(metrics["accuracy"], signal)
    assert metrics["auc"] > 0.8
    # Results stay in the cluster: the metadata DB holds references to the data and the model.
    assert xcom_row(classic_run, "load")["rows"] == 50_000
    assert xcom_row(classic_run, "split", key="train")["rows"] == 35_000
    assert xcom_row(classic_run, "train")["type"] == "xgboost.core.Booster"


def test_classic_pipeline_logs_the_data_it_uses_and_each_round(ray_cluster, example_dags, signal, capfd):
    capfd.readouterr()
    dag_run = run_dag(example_dags.get_dag("xgboost_higgs"), conf={**SMALL, "rounds": 4})
    assert task_states(dag_run)["evaluate"] == "success"
    out = capfd.readouterr().out
    assert "No HIGGS path configured: generating 50,000 HIGGS-shaped rows (seed 42)" in out
    rounds = re.findall(r"round (\d+)/4  valid-logloss \d\.\d+  valid-error \d\.\d+", out)
    assert rounds == ["1", "2", "3", "4"]
    assert out.index("round 4/4") < out.index("Trained 4 rounds on 35,000 rows")
    assert re.search(r"Test accuracy 0\.\d{4}, AUC 0\.\d{4} on 10,000 held-out rows", out)


def test_taskflow_pipeline_gives_the_same_model_quality(classic_run, ray_cluster, example_dags, signal):
    dag_run = run_dag(example_dags.get_dag("xgboost_higgs_taskflow"), conf=SMALL)
    assert task_states(dag_run) == {
        **dict.fromkeys(["load", "split", "train", "evaluate", "checkpoint_configured"], "success"),
        "checkpoint_model": "skipped",
    }
    metrics = xcom(dag_run, "evaluate")
    assert_near_the_signal(metrics["accuracy"], signal)
    assert metrics["accuracy"] == pytest.approx(xcom(classic_run, "evaluate")["accuracy"], abs=0.005)


def test_with_a_checkpoint_bucket_the_model_is_saved_to_s3_and_loads_without_airflow(
    ray_cluster, example_dags, checkpoints
):
    import pickle

    import numpy as np
    import xgboost

    dag_run = run_dag(example_dags.get_dag("xgboost_higgs"), conf={**SMALL, "rows": 20_000, "rounds": 3})
    assert set(task_states(dag_run).values()) == {"success"}, task_states(dag_run)
    [saved] = xcom_row(dag_run, "checkpoint_model")
    folder = f"pipelines/xgboost_higgs/{dag_run.run_id}/train/-1/return_value/"
    assert saved["uri"] == f"s3://{checkpoints.name}/{folder}value.pkl"
    model = pickle.loads(checkpoints.read(folder + "value.pkl"))
    assert isinstance(model, xgboost.Booster)
    assert model.num_boosted_rounds() == 3
    scores = model.predict(xgboost.DMatrix(np.zeros((2, 28)), feature_names=model.feature_names))
    assert scores.shape == (2,) and ((0 < scores) & (scores < 1)).all()


def test_tune_searches_with_asha_and_evaluates_the_best_model(ray_cluster, example_dags, signal, capfd):
    capfd.readouterr()
    conf = {"rows": 50_000, "rounds": 8, "samples": 4, "actors": 1, "cpus_per_actor": 1}
    dag_run = run_dag(example_dags.get_dag("xgboost_tune"), conf=conf)
    assert task_states(dag_run) == dict.fromkeys(["load", "split", "tune", "evaluate"], "success")
    result = xcom(dag_run, "evaluate")
    assert set(result["config"]) == {"max_depth", "min_child_weight", "subsample", "eta"}
    assert_near_the_signal(result["accuracy"], signal, below=0.05)
    assert xcom_row(dag_run, "tune", key="model")["type"] == "xgboost.core.Booster"
    out = capfd.readouterr().out
    assert "AsyncHyperBandScheduler" in out
    assert f"Best configuration {result['config']}: test accuracy {result['accuracy']:.4f}" in out
