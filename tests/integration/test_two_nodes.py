"""A two-node Ray cluster on this machine (a head node and a worker node with a custom resource):
where the owner actor lives and where results' bytes are, read from Ray itself."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pendulum
import pytest
from airflow.sdk import DAG, task

from airflow_ray.operators.ray import RayPythonOperator
from tests.integration.clusters import NodeCluster
from tests.integration.dagrun import run_dag, task_states

pytestmark = pytest.mark.integration

START = pendulum.datetime(2026, 1, 1, tz="UTC")
CONN_ID = "ray_two_nodes"
RESULT_MB = 300
SAMPLES: dict[str, Any] = {}


@pytest.fixture(scope="module")
def two_nodes(ray_cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeCluster]:
    cluster = NodeCluster.start(
        tmp_path_factory.mktemp("two-nodes"),
        head_cpus=1,
        head_store_mb=200,
        workers=[{"num_cpus": 2, "resources": {"worker_node": 4}, "store_mb": 700}],
    )
    os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = json.dumps(cluster.connection())
    try:
        yield cluster
    finally:
        del os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"]
        cluster.stop()


def _nodes() -> dict[str, dict[str, Any]]:
    """``{"head" | "worker": {"id", "store_used"}}``: each node's id and object store bytes in use."""
    import ray
    from ray._private.internal_api import node_stats

    found = {}
    for node in ray.nodes():
        if not node["Alive"]:
            continue
        stats = node_stats(node["NodeManagerAddress"], node["NodeManagerPort"], include_memory_info=False)
        role = "head" if "node:__internal_head__" in node["Resources"] else "worker"
        found[role] = {"id": node["NodeID"], "store_used": int(stats.store_stats.object_store_bytes_used)}
    return found


def _owner() -> dict[str, Any]:
    """The owner actor's node and resident memory."""
    import ray

    from airflow_ray.hooks.ray import RayHook

    def where(actor: Any) -> dict[str, Any]:
        import psutil
        import ray

        return {
            "node": ray.get_runtime_context().get_node_id(),
            "rss": psutil.Process().memory_info().rss,
        }

    owner = RayHook(CONN_ID).get_transport().owner  # connects this process; creates the owner
    return ray.get(owner.__ray_call__.remote(where))


def make_result(megabytes: int) -> Any:
    import numpy as np

    return np.ones(megabytes * 1024 * 1024 // 8)


def consume(array: Any) -> dict[str, Any]:
    import ray

    return {"nbytes": int(array.nbytes), "node": ray.get_runtime_context().get_node_id()}


def test_results_stay_on_the_node_that_made_them_and_the_owner_on_the_head(two_nodes: NodeCluster):
    on_worker = {"resources": {"worker_node": 1}}

    @task
    def sample(label: str) -> None:
        owner = _owner()
        SAMPLES[label] = {"nodes": _nodes(), "owner": owner}

    with DAG("t_two_nodes", schedule=None, start_date=START) as dag:
        before = sample.override(task_id="before")("before")
        produce = RayPythonOperator(
            task_id="produce",
            python_callable=make_result,
            op_args=[RESULT_MB],
            ray_conn_id=CONN_ID,
            ray_remote_args=on_worker,
        )
        after = sample.override(task_id="after")("after")
        use = RayPythonOperator(
            task_id="consume",
            python_callable=consume,
            op_args=[produce.output],
            ray_conn_id=CONN_ID,
            ray_remote_args=on_worker,
        )
        before >> produce >> after >> use
    dag_run = run_dag(dag)
    assert task_states(dag_run) == {
        "before": "success",
        "produce": "success",
        "after": "success",
        "consume": "success",
    }
    first, then = SAMPLES["before"], SAMPLES["after"]
    head, worker = then["nodes"]["head"], then["nodes"]["worker"]
    grown = {
        role: then["nodes"][role]["store_used"] - first["nodes"][role]["store_used"] for role in then["nodes"]
    }
    owner_growth = then["owner"]["rss"] - first["owner"]["rss"]
    print(
        f"{RESULT_MB} MB result made on the worker node: object store growth head {grown['head'] / 2**20:.1f} MB, "
        f"worker {grown['worker'] / 2**20:.1f} MB; owner actor RSS growth {owner_growth / 2**20:.1f} MB"
    )
    # The owner lives on the head node; the result's bytes stayed on the worker node.
    assert then["owner"]["node"] == head["id"]
    assert grown["worker"] >= RESULT_MB * 2**20
    assert grown["head"] < 10 * 2**20
    assert owner_growth < 50 * 2**20
    from tests.integration.dagrun import xcom

    assert xcom(dag_run, "consume") == {"nbytes": RESULT_MB * 2**20, "node": worker["id"]}


def test_a_new_owner_is_always_placed_on_the_head_node(two_nodes: NodeCluster):
    import ray

    from airflow_ray.cluster.owner import owner_name
    from airflow_ray.hooks.ray import RayHook

    hook = RayHook(CONN_ID)
    transport = hook.get_transport()
    head = _nodes()["head"]["id"]
    for _ in range(3):
        ray.kill(transport.owner)
        del transport.__dict__["owner"]  # the cached actor handle: the next use creates one
        owner = transport.owner
        assert _owner()["node"] == head
        # The new actor holds the owner's name: a task process that looks it up finds this one.
        named = ray.get_actor(owner_name(), namespace=hook.settings.namespace)
        assert named._actor_id == owner._actor_id
