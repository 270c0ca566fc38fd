"""RayXComBackend in real Airflow runs: results stay in the cluster, references in the DB."""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import pendulum
import pytest
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG, task

from airflow_ray.exceptions import RayObjectLostError
from airflow_ray.operators.ray import RayPythonOperator
from airflow_ray.results.resolve import materialize
from airflow_ray.xcom.backend import RayXComBackend
from airflow_ray.xcom.reference import RayXComReference
from tests.integration.dagrun import run_dag, task_states, with_peak_growth, xcom, xcom_row
from tests.integration.waiting import wait_until

pytestmark = pytest.mark.integration

START = pendulum.datetime(2026, 1, 1, tz="UTC")
MB = 1024 * 1024


def make_array(mb: int) -> np.ndarray:
    return np.arange(mb * MB // 8, dtype=np.float64)


def checksum(array: np.ndarray) -> list:
    return [float(array[0]), float(array[-1]), int(array.size), bool(array.flags.writeable)]


def test_reference_is_small_readable_and_names_the_producer(ray_cluster):
    import pandas as pd
    import pyarrow as pa

    def frame():
        return pd.DataFrame({f"a_fairly_long_column_name_{i}": range(1000) for i in range(100)})

    with DAG("x_reference", schedule=None, start_date=START) as dag:
        RayPythonOperator(task_id="array", python_callable=make_array, op_args=[16])
        RayPythonOperator(
            task_id="table", python_callable=lambda: pa.table({"a": [1, 2, 3], "b": ["x", "y", "z"]})
        )
        RayPythonOperator(task_id="frame", python_callable=frame)
    dag_run = run_dag(dag)
    assert set(task_states(dag_run).values()) == {"success"}

    row = xcom_row(dag_run, "array")
    assert len(json.dumps(row)) < 1024
    assert row["type"] == "numpy.ndarray" and row["dtype"] == "float64"
    assert row["size_bytes"] == 16 * MB and row["size"] == "16.0 MB" and row["shape"] == [2 * MB]
    assert row["producer"] == {
        "dag_id": "x_reference",
        "run_id": dag_run.run_id,
        "task_id": "array",
        "map_index": -1,
        "key": "return_value",
        "try_number": 1,
    }
    table = xcom_row(dag_run, "table")
    assert table["type"] == "pyarrow.lib.Table" and table["rows"] == 3 and table["columns"] == ["a", "b"]
    wide = xcom_row(dag_run, "frame")
    assert len(json.dumps(wide)) < 1024
    assert wide["type"] == "pandas.DataFrame" and wide["rows"] == 1000 and wide["columns_total"] == 100
    assert np.array_equal(xcom(dag_run, "array"), make_array(16))


def test_mixed_dag_ray_python_bash_ray(ray_cluster, capfd):
    with DAG("x_mixed", schedule=None, start_date=START) as dag:
        produced = RayPythonOperator(task_id="produce", python_callable=make_array, op_args=[8])

        @task
        def plain_sum(array) -> float:
            assert isinstance(array, np.ndarray), type(array)
            return float(array.sum())

        total = plain_sum(produced.output)
        bash = BashOperator(
            task_id="bash", bash_command="echo 'size={{ ti.xcom_pull(task_ids=\"produce\") | length }}'"
        )

        @task.ray
        def combine(array, total: float) -> list:
            return [float(array.sum()) == total, *checksum(array)]

        combined = combine(produced.output, total)
        produced >> bash >> combined
    dag_run = run_dag(dag)
    assert set(task_states(dag_run).values()) == {"success"}, task_states(dag_run)
    out = capfd.readouterr().out
    assert f"size={MB}" in out
    assert xcom_row(dag_run, "plain_sum") == float(make_array(8).sum())  # a plain value, stored as usual
    # The Ray consumer got the array from the object store: read-only, zero-copy.
    assert xcom(dag_run, "combine") == [True, 0.0, float(MB - 1), MB, False]
    assert "1 input(s) handed over inside the cluster" in out


def test_templated_xcom_pull_hands_over_the_object(ray_cluster, capfd):
    with DAG("x_template", schedule=None, start_date=START) as dag:
        produced = RayPythonOperator(task_id="produce", python_callable=make_array, op_args=[4])
        consumed = RayPythonOperator(
            task_id="consume",
            python_callable=lambda array, label: [label, *checksum(array)],
            op_kwargs={
                "array": "{{ ti.xcom_pull(task_ids='produce') }}",
                "label": "{{ params.get('x', 'L') }}",
            },
        )
        produced >> consumed
    dag_run = run_dag(dag)
    assert xcom(dag_run, "consume") == ["L", 0.0, float(MB / 2 - 1), MB // 2, False]
    assert "1 input(s) handed over inside the cluster" in capfd.readouterr().out


def test_multiple_outputs_and_mapped_tasks_get_a_reference_each(ray_cluster):
    with DAG("x_multi", schedule=None, start_date=START) as dag:

        @task.ray(multiple_outputs=True)
        def split() -> dict:
            return {"train": make_array(2), "test": make_array(1)}

        @task.ray
        def size(array) -> int:
            return int(array.size)

        parts = split()
        size.override(task_id="train_size")(parts["train"])
        size.override(task_id="test_size")(parts["test"])

        @task.ray
        def scaled(factor: int):
            return make_array(1) * factor

        scaled.expand(factor=[1, 2, 3])
    dag_run = run_dag(dag)
    assert set(task_states(dag_run).values()) == {"success"}, task_states(dag_run)
    train, test = xcom_row(dag_run, "split", key="train"), xcom_row(dag_run, "split", key="test")
    assert train["producer"]["key"] == "train" and train["size_bytes"] == 2 * MB
    assert test["producer"]["key"] == "test" and test["size_bytes"] == MB
    assert xcom(dag_run, "train_size") == 2 * MB // 8 and xcom(dag_run, "test_size") == MB // 8
    rows = [xcom_row(dag_run, "scaled", i) for i in range(3)]
    assert [r["producer"]["map_index"] for r in rows] == [0, 1, 2]
    assert [float(xcom(dag_run, "scaled", i)[-1]) for i in range(3)] == [
        float(MB // 8 - 1) * f for f in (1, 2, 3)
    ]


def test_values_pushed_by_plain_tasks_reach_ray_tasks(ray_cluster):
    with DAG("x_plain_in", schedule=None, start_date=START) as dag:

        @task
        def config() -> dict:
            return {"rows": 5, "name": "plain"}

        @task.ray
        def use(cfg: dict) -> str:
            return f"{cfg['name']}:{cfg['rows']}"

        use(config())
    dag_run = run_dag(dag)
    assert xcom_row(dag_run, "config") == {"rows": 5, "name": "plain"}
    assert xcom(dag_run, "use") == "plain:5"


def test_two_gigabytes_pass_without_touching_the_worker_memory(ray_cluster):
    """The Airflow worker (this process runs every task) stays flat while 2 GB move between tasks."""

    def big() -> np.ndarray:
        return np.ones(2 * 1024 * MB // 8, dtype=np.float64)

    with DAG("x_big", schedule=None, start_date=START) as dag:
        produced = RayPythonOperator(task_id="produce", python_callable=big)
        RayPythonOperator(
            task_id="consume", python_callable=lambda a: float(a.sum()), op_args=[produced.output]
        )

    dag_run, grown_bytes = with_peak_growth(lambda: run_dag(dag))
    assert task_states(dag_run) == {"produce": "success", "consume": "success"}
    assert xcom_row(dag_run, "produce")["size_bytes"] == 2 * 1024 * MB
    assert xcom(dag_run, "consume") == float(2 * 1024 * MB // 8)
    grown = grown_bytes / MB
    assert grown < 200, f"the worker grew by {grown:.0f} MB while 2 GB passed"


def test_purge_releases_the_pin_and_a_released_object_is_a_clear_error(ray_cluster):
    with DAG("x_purge", schedule=None, start_date=START) as dag:
        RayPythonOperator(task_id="produce", python_callable=make_array, op_args=[1])
    dag_run = run_dag(dag)
    row = xcom_row(dag_run, "produce")
    reference = RayXComReference.from_json(row)
    assert np.array_equal(materialize(reference), make_array(1))

    class Row:
        value = row

    RayXComBackend.purge(Row())
    with pytest.raises(RayObjectLostError) as info:
        materialize(reference)
    message = str(info.value)
    assert "XCom 'return_value' of task 'produce'" in message and dag_run.run_id in message
    assert "'x_purge'" in message and "Clear that task" in message


def pinned_runs(dag_id: str) -> set[str]:

    from airflow_ray.hooks.ray import RayHook

    return {pin["run_id"] for pin in RayHook().get_transport().list_pins(dag_id)}


def test_only_the_newest_runs_stay_pinned_and_the_cli_releases_the_rest(ray_cluster, monkeypatch):
    import subprocess
    import sys

    monkeypatch.setenv("AIRFLOW__RAY__KEEP_RUNS", "2")
    with DAG("x_keep", schedule=None, start_date=START) as dag:
        RayPythonOperator(task_id="produce", python_callable=make_array, op_args=[1])
    runs = [run_dag(dag).run_id for _ in range(4)]
    assert pinned_runs("x_keep") == set(runs[-2:])

    listing = subprocess.run(
        [sys.executable, "-m", "airflow_ray.cli", "pins", "list", "--dag", "x_keep"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "2 pinned object(s), 2.0 MB" in listing.stdout
    assert f"x_keep  {runs[-1]}  produce  return_value  numpy.ndarray  1.0 MB" in listing.stdout
    released = subprocess.run(
        [sys.executable, "-m", "airflow_ray.cli", "pins", "release", "--dag", "x_keep", "--run", runs[-1]],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "Released 1 pinned object(s)" in released.stdout
    assert pinned_runs("x_keep") == {runs[-2]}


def test_pins_expire_after_the_ttl(ray_cluster, monkeypatch):
    import ray

    from airflow_ray.hooks.ray import RayHook

    with DAG("x_ttl", schedule=None, start_date=START) as dag:
        RayPythonOperator(task_id="produce", python_callable=make_array, op_args=[1])
    run_dag(dag)
    assert len(pinned_runs("x_ttl")) == 1
    monkeypatch.setenv("AIRFLOW__RAY__PIN_TTL", "0.5")
    owner = RayHook().get_transport().owner  # picks up the new TTL
    time.sleep(1.0)
    assert ray.get(owner.sweep.remote()) >= 1
    assert pinned_runs("x_ttl") == set()


def test_a_dead_owner_gives_the_consumer_a_clear_error(ray_cluster, capfd):
    import ray

    from airflow_ray.hooks.ray import RayHook

    with DAG("x_lost_src", schedule=None, start_date=START) as source:
        RayPythonOperator(task_id="produce", python_callable=make_array, op_args=[1])
    source_run = run_dag(source)
    ray.kill(RayHook().get_transport().owner)  # everything it owned is gone with it

    pull = "{{ ti.xcom_pull(dag_id='x_lost_src', task_ids='produce', run_id='" + source_run.run_id + "') }}"
    with DAG("x_lost_dst", schedule=None, start_date=START) as consumer:
        RayPythonOperator(task_id="consume", python_callable=lambda a: a.size, op_kwargs={"a": pull})

        @task
        def plain(value) -> int:
            return len(value)

        plain(pull)
    consumer_run = run_dag(consumer)
    assert task_states(consumer_run) == {"consume": "failed", "plain": "failed"}
    out = capfd.readouterr().out
    expected = f"The XCom 'return_value' of task 'produce' in run '{source_run.run_id}' of DAG 'x_lost_src' is no longer"
    assert out.count(expected) >= 2, out[-4000:]
    assert "Clear that task to compute it again" in out
    # A new owner takes over for new work.
    with DAG("x_after_loss", schedule=None, start_date=START) as after:
        RayPythonOperator(task_id="produce", python_callable=make_array, op_args=[1])
    assert task_states(run_dag(after)) == {"produce": "success"}


class Opaque:
    """A small value that Airflow's own XCom serializer does not know."""

    def __init__(self, n: int) -> None:
        self.n = n


def test_small_results_stay_in_the_xcom_row_as_with_airflows_own_backend(ray_cluster, capfd):
    def metrics() -> dict:
        return {"accuracy": 0.93, "auc": 0.97, "rounds": 20}

    with DAG("x_inline", schedule=None, start_date=START) as dag:
        small = RayPythonOperator(task_id="metrics", python_callable=metrics)
        big = RayPythonOperator(task_id="big", python_callable=lambda: b"x" * (128 * 1024))
        opaque = RayPythonOperator(task_id="opaque", python_callable=lambda: Opaque(3))
        split = RayPythonOperator(
            task_id="split",
            python_callable=lambda: {"summary": [1, 2, 3], "array": make_array(1)},
            multiple_outputs=True,
        )

        @task.ray
        def in_ray(m: dict, n: Opaque, summary: list) -> list:
            return [m["accuracy"], n.n, sum(summary)]

        @task
        def in_airflow(m: dict) -> float:
            return m["auc"]

        in_ray(small.output, opaque.output, split.output["summary"])
        in_airflow(small.output)
        big >> split
    dag_run = run_dag(dag)
    assert set(task_states(dag_run).values()) == {"success"}, task_states(dag_run)
    # Readable in the XCom tab, as Airflow's own backend stores it.
    assert xcom_row(dag_run, "metrics") == {"accuracy": 0.93, "auc": 0.97, "rounds": 20}
    assert xcom_row(dag_run, "split", key="summary") == [1, 2, 3]
    # Too big, or a type Airflow's serializer does not know: a reference.
    assert xcom_row(dag_run, "big")["size_bytes"] == 128 * 1024
    assert xcom_row(dag_run, "opaque")["type"].endswith("Opaque")
    assert xcom_row(dag_run, "split", key="array")["shape"] == [MB // 8]
    assert xcom(dag_run, "in_ray") == [0.93, 3, 6]
    assert xcom(dag_run, "in_airflow") == 0.97
    assert "Returned value was: {'accuracy': 0.93" in capfd.readouterr().out


def test_a_task_queued_behind_busy_resources_says_what_it_waits_for(
    ray_cluster, capfd, monkeypatch, tmp_path
):
    import threading

    import ray

    from airflow_ray.cluster.driver import WaitNotice
    from airflow_ray.hooks.ray import RayHook

    RayHook().get_conn()
    total = int(ray.cluster_resources()["CPU"])
    started, release = tmp_path / "started", tmp_path / "release"

    @ray.remote(num_cpus=total)
    def occupy(started: str, release: str) -> None:
        import os

        open(started, "w").close()
        deadline = time.monotonic() + 600
        while not os.path.exists(release) and time.monotonic() < deadline:
            time.sleep(0.2)

    # Every CPU stays busy until the queued task has said what it waits for, however long that takes.
    noticed = threading.Event()
    tick = WaitNotice.tick

    def noting_tick(self: WaitNotice, *args: Any, **kwargs: Any) -> None:
        before = self.next
        tick(self, *args, **kwargs)
        if self.next != before:
            noticed.set()

    monkeypatch.setattr(WaitNotice, "tick", noting_tick)

    def release_once_noticed() -> None:
        noticed.wait(timeout=300)
        release.touch()

    busy = occupy.remote(str(started), str(release))
    wait_until(started.exists, 120, "the Ray task that occupies every CPU did not start")
    threading.Thread(target=release_once_noticed, daemon=True).start()
    with DAG("x_waits", schedule=None, start_date=START) as dag:
        RayPythonOperator(task_id="queued", python_callable=lambda: 1, num_cpus=1)
    try:
        dag_run = run_dag(dag)
    finally:
        release.touch()
        ray.cancel(busy, force=True)
    assert noticed.is_set()
    assert task_states(dag_run) == {"queued": "success"}
    out = capfd.readouterr().out
    assert "Ray task x_waits.queued has not started after 1" in out, out[-3000:]
    assert "free in the cluster now" in out
