"""RayPythonOperator and @task.ray in real Airflow runs on a real (embedded) Ray cluster."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta
from pathlib import Path

import pendulum
import pytest
from airflow.sdk import DAG, task

from airflow_ray.operators.ray import RayPythonOperator
from tests.integration.dagrun import run_dag, task_states, xcom
from tests.integration.waiting import wait_until_still

pytestmark = pytest.mark.integration

START = pendulum.datetime(2026, 1, 1, tz="UTC")


def assigned_resources() -> dict:
    import ray

    return ray.get_runtime_context().get_assigned_resources()


def test_resources_are_honoured(ray_cluster, capfd):
    with DAG("t_resources", schedule=None, start_date=START, params={"cpus": 2}) as dag:
        RayPythonOperator(
            task_id="two_cpus", python_callable=assigned_resources, num_cpus="{{ params.cpus }}"
        )
        RayPythonOperator(
            task_id="custom",
            python_callable=assigned_resources,
            num_cpus=0.5,
            ray_remote_args={"max_retries": 0},
        )
    dag_run = run_dag(dag)
    assert task_states(dag_run) == {"two_cpus": "success", "custom": "success"}
    assert xcom(dag_run, "two_cpus") == {"CPU": 2.0}
    assert xcom(dag_run, "custom") == {"CPU": 0.5}


def echo(label, day, rows, pulled, run):
    return {"args": [label, day], "kwargs": {"rows": rows, "pulled": pulled, "run": run}}


def test_templates_render_in_every_field(ray_cluster):
    with DAG("t_templates", schedule=None, start_date=START, params={"rows": 42, "label": "x"}) as dag:
        first = RayPythonOperator(task_id="first", python_callable=lambda: {"n": 7})
        second = RayPythonOperator(
            task_id="second",
            python_callable=echo,
            op_args=["{{ params.label }}", "{{ ds }}"],
            op_kwargs={
                "rows": "{{ params.rows }}",
                "pulled": "{{ ti.xcom_pull(task_ids='first')['n'] }}",
                "run": "{{ run_id }}",
            },
            num_cpus="{{ params.rows // 42 }}",
            runtime_env={"env_vars": {"LABEL": "{{ params.label }}"}},
        )
        first >> second
    dag_run = run_dag(dag)
    assert task_states(dag_run) == {"first": "success", "second": "success"}
    result = xcom(dag_run, "second")
    assert result["args"] == ["x", dag_run.logical_date.strftime("%Y-%m-%d")]
    assert result["kwargs"] == {"rows": "42", "pulled": "7", "run": dag_run.run_id}


def env_and_types(value, rows):
    import os

    return {
        "label": os.environ.get("LABEL"),
        "value_type": type(value).__name__,
        "rows_type": type(rows).__name__,
    }


def test_native_rendering_and_runtime_env(ray_cluster):
    with DAG(
        "t_native",
        schedule=None,
        start_date=START,
        params={"rows": 42, "label": "native"},
        render_template_as_native_obj=True,
    ) as dag:
        RayPythonOperator(
            task_id="native",
            python_callable=env_and_types,
            op_kwargs={"value": "{{ [1, 2] }}", "rows": "{{ params.rows }}"},
            runtime_env={"env_vars": {"LABEL": "{{ params.label }}"}},
        )
    dag_run = run_dag(dag)
    assert xcom(dag_run, "native") == {"label": "native", "value_type": "list", "rows_type": "int"}


def slow_printer(ticks: int) -> int:
    import logging

    for tick in range(ticks):
        print(f"tick {tick}", flush=True)
        time.sleep(1.0)
    logging.getLogger("user.code").info("logged through logging")
    return ticks


def test_output_streams_into_the_task_log_while_running(ray_cluster, capfd):
    with DAG("t_stream", schedule=None, start_date=START) as dag:
        RayPythonOperator(task_id="printer", python_callable=slow_printer, op_args=[3])
    dag_run = run_dag(dag)
    assert task_states(dag_run) == {"printer": "success"}
    out = capfd.readouterr().out
    stamps = {}
    for line in out.splitlines():
        match = re.match(r"(\S+Z) \[info\s*\] (tick \d)\s", line)
        if match:
            stamps[match.group(2)] = datetime.fromisoformat(match.group(1).replace("Z", "+00:00"))
    assert sorted(stamps) == ["tick 0", "tick 1", "tick 2"], out[-3000:]
    # Logged as they were printed, a second apart, not all at once when the task ended.
    assert (stamps["tick 2"] - stamps["tick 0"]).total_seconds() > 1.5
    # A logging record is logged at its level, the level printed once.
    assert re.search(r"\[info\s*\] user\.code: logged through logging", out), out[-3000:]
    assert "INFO user.code" not in out


def fast_printer(lines: int) -> int:
    for line in range(lines):
        print(f"fast line {line}", flush=True)
        time.sleep(0.005)
    return lines


def test_fast_output_reaches_the_task_log_in_the_order_it_was_printed(ray_cluster, capfd):
    # Sent to the (async) owner actor chunk by chunk while the callable runs: Ray runs an async
    # actor's calls in no set order, and the owner puts the chunks back in order.
    with DAG("t_fast_output", schedule=None, start_date=START) as dag:
        RayPythonOperator(task_id="printer", python_callable=fast_printer, op_args=[600])
    dag_run = run_dag(dag)
    assert task_states(dag_run) == {"printer": "success"}
    shown = [int(n) for n in re.findall(r"\] fast line (\d+)\s", capfd.readouterr().out)]
    assert shown == list(range(600))


def installs_a_signal_handler() -> str:
    import signal
    import sys
    import threading

    # What libraries such as a training framework do: only possible on the main thread.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    signal.signal(signal.SIGTERM, previous)
    print("handler installed on the main thread", flush=True)
    print("written to stderr", file=sys.stderr, flush=True)
    return threading.current_thread().name


def test_a_callable_that_installs_a_signal_handler_runs_and_its_output_reaches_the_task_log(
    ray_cluster, capfd
):
    with DAG("t_signal", schedule=None, start_date=START) as dag:
        RayPythonOperator(task_id="signals", python_callable=installs_a_signal_handler)
    dag_run = run_dag(dag)
    out = capfd.readouterr().out
    assert task_states(dag_run) == {"signals": "success"}, out[-3000:]
    assert xcom(dag_run, "signals") == "MainThread"
    assert "handler installed on the main thread" in out and "written to stderr" in out


class DataError(ValueError):
    pass


def explode(rows):
    def inner():
        raise DataError(f"bad rows {rows}")

    inner()


def test_failing_callable_fails_the_task_with_the_remote_traceback(ray_cluster, capfd):
    with DAG("t_fail", schedule=None, start_date=START) as dag:
        RayPythonOperator(task_id="explode", python_callable=explode, op_args=[13])
    dag_run = run_dag(dag)
    assert task_states(dag_run) == {"explode": "failed"}
    out = capfd.readouterr().out
    assert "The callable failed in Ray task t_fail.explode" in out
    traceback_text = out[out.index("The callable failed in Ray task") :]
    assert "in explode\n    inner()" in traceback_text
    assert "DataError: bad rows 13" in traceback_text
    assert "_remote/task.py" not in traceback_text.split("DataError: bad rows 13")[0]


def fail_first_try(marker: str) -> str:
    path = Path(marker)
    if not path.exists():
        path.write_text("tried")
        raise RuntimeError("first try fails")
    return "second try"


def test_airflow_retry_reruns_the_callable(ray_cluster, tmp_path):
    with DAG("t_retry", schedule=None, start_date=START) as dag:
        RayPythonOperator(
            task_id="flaky",
            python_callable=fail_first_try,
            op_args=[str(tmp_path / "marker")],
            retries=1,
            retry_delay=timedelta(seconds=0),
        )
    dag_run = run_dag(dag)
    assert task_states(dag_run) == {"flaky": "success"}
    assert xcom(dag_run, "flaky") == "second try"


def test_mapped_tasks_classic_and_taskflow(ray_cluster):
    with DAG("t_mapped", schedule=None, start_date=START) as dag:
        RayPythonOperator.partial(task_id="square", python_callable=lambda x: x * x, num_cpus=1).expand(
            op_args=[[1], [2], [3]]
        )

        @task.ray(num_cpus=0.5)
        def add(x: int, y: int) -> int:
            return x + y

        add.partial(y=100).expand(x=[1, 2])
    dag_run = run_dag(dag)
    states = task_states(dag_run)
    assert states == {
        "square[0]": "success",
        "square[1]": "success",
        "square[2]": "success",
        "add[0]": "success",
        "add[1]": "success",
    }
    assert [xcom(dag_run, "square", i) for i in range(3)] == [1, 4, 9]
    assert [xcom(dag_run, "add", i) for i in range(2)] == [101, 102]


def test_taskflow_chain_closure_and_context(ray_cluster):
    factor = 3  # captured by the closure below and shipped with it

    with DAG("t_taskflow", schedule=None, start_date=START, params={"base": 5}) as dag:

        @task.ray(num_cpus=1)
        def produce(params=None, ds=None) -> dict:
            return {"value": params["base"] * factor, "ds": ds}

        @task.ray
        def consume(item: dict, **context) -> str:
            return f"{item['value']}@{item['ds']}|{context['run_id']}|{'ti' in context}"

        consume(produce())
    dag_run = run_dag(dag)
    assert task_states(dag_run) == {"produce": "success", "consume": "success"}
    ds = dag_run.logical_date.strftime("%Y-%m-%d")
    assert xcom(dag_run, "consume") == f"15@{ds}|{dag_run.run_id}|False"


def test_asking_for_a_live_context_object_is_a_clear_error(ray_cluster, capfd):
    with DAG("t_live_ctx", schedule=None, start_date=START) as dag:
        RayPythonOperator(task_id="wants_ti", python_callable=lambda ti: ti.task_id)
    dag_run = run_dag(dag)
    assert task_states(dag_run) == {"wants_ti": "failed"}
    out = capfd.readouterr().out
    assert "asks for the context value(s) ti" in out


def test_unschedulable_request_fails_fast_with_a_clear_error(ray_cluster, capfd):
    with DAG("t_gpu", schedule=None, start_date=START) as dag:
        RayPythonOperator(task_id="gpu", python_callable=assigned_resources, num_gpus=1)
    started = time.monotonic()
    dag_run = run_dag(dag)
    # Failed as soon as Ray said no node can run it; it would otherwise wait in Ray's queue for ever.
    assert time.monotonic() - started < 120
    assert task_states(dag_run) == {"gpu": "failed"}
    out = capfd.readouterr().out
    assert "can run a task asking for CPU=1, GPU=1" in out
    assert "GPU=0" in out
    # Ray's read-only stand-in for an autoscaler on a head started without one is not taken for one.
    assert "its autoscaler can launch" not in out


TICKS = 80  # 20 s, well past the execution_timeout


def tick_then_mark(marker: str) -> None:
    for _ in range(TICKS):
        with open(marker + ".ticks", "a") as out:
            out.write("tick\n")
        time.sleep(0.25)
    Path(marker + ".finished").write_text("x")


def test_execution_timeout_cancels_the_ray_task(ray_cluster, tmp_path):
    marker = str(tmp_path / "task")
    with DAG("t_timeout", schedule=None, start_date=START) as dag:
        RayPythonOperator(
            task_id="slow",
            python_callable=tick_then_mark,
            op_args=[marker],
            # Long enough for a worker to start on a loaded machine.
            execution_timeout=timedelta(seconds=8),
        )
    dag_run = run_dag(dag)
    assert task_states(dag_run) == {"slow": "failed"}
    ticks = Path(marker + ".ticks")
    assert ticks.exists()
    # The Ray task stops ticking (cancelled) instead of ticking on to its end and marking it.
    wait_until_still(
        lambda: ticks.read_text().count("tick"), quiet=5, timeout=120, what="the Ray task's ticks"
    )
    assert not Path(marker + ".finished").exists(), "the Ray task ran on after the Airflow task failed"
    assert ticks.read_text().count("tick") < TICKS
