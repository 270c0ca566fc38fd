"""Running a DAG for real in this process: ``dag.test()`` on the test SQLite metadata DB."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from airflow.sdk import DAG


def run_dag(dag: DAG, conf: dict[str, Any] | None = None) -> Any:
    """Serialize ``dag`` to the metadata DB (it lives in a test file, not the DAGs folder) and run it.

    :return: the finished DagRun.
    """
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(dag_folder="/nonexistent")
    bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)
    return dag.test(run_conf=conf)


def task_states(dag_run: Any) -> dict[str, str]:
    """``{"task_id" or "task_id[i]": state}`` of a finished run."""
    from airflow.utils.session import create_session

    with create_session() as session:
        from airflow.models.dagrun import DagRun

        run = session.get(DagRun, dag_run.id)
        return {
            (ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"): str(ti.state)
            for ti in run.get_task_instances(session=session)
        }


def xcom(dag_run: Any, task_id: str, map_index: int = -1, key: str = "return_value") -> Any:
    """The value a task of the run pushed, fetched from the Ray cluster where it is kept there."""
    from airflow_ray._remote.protocol import UNCHANGED, map_tree
    from airflow_ray.results.resolve import materialize
    from airflow_ray.xcom.reference import RayXComReference, is_reference_json

    def fetch(node: Any) -> Any:
        return materialize(RayXComReference.from_json(node)) if is_reference_json(node) else UNCHANGED

    return map_tree(xcom_row(dag_run, task_id, map_index, key), fetch)


def xcom_row(dag_run: Any, task_id: str, map_index: int = -1, key: str = "return_value") -> Any:
    """What the XCom row of a task of the run holds (the metadata DB's JSON, deserialized)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = (
            session.query(XComModel)
            .filter_by(
                dag_id=dag_run.dag_id,
                run_id=dag_run.run_id,
                task_id=task_id,
                map_index=map_index,
                key=key,
            )
            .one()
        )
        return XComModel.deserialize_value(row)


T = TypeVar("T")


def with_peak_growth(run: Callable[[], T]) -> tuple[T, int]:
    """``run()``'s result, and how many bytes this process's resident memory grew at its peak
    (sampled every 20 ms): the Airflow worker's, since ``dag.test()`` runs every task here."""
    import psutil

    me = psutil.Process()
    baseline = me.memory_info().rss
    peak = [baseline]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], me.memory_info().rss)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        return run(), peak[0] - baseline
    finally:
        done.set()
        sampler.join()
