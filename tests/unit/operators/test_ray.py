from __future__ import annotations

import pendulum
import pytest
from airflow.sdk import DAG

from airflow_ray.decorators.ray import _RayDecoratedOperator, ray_task
from airflow_ray.exceptions import RayConfigurationError
from airflow_ray.operators.lines import LineLogger
from airflow_ray.operators.ray import RayPythonOperator

TEMPLATED = {
    "op_args",
    "op_kwargs",
    "num_cpus",
    "num_gpus",
    "memory",
    "ray_resources",
    "runtime_env",
    "ray_remote_args",
    "checkpoint",
    "checkpoint_conn_id",
    "checkpoint_bucket",
    "checkpoint_prefix",
}


def test_template_fields_cover_every_ray_argument():
    assert TEMPLATED <= set(RayPythonOperator.template_fields)
    assert TEMPLATED <= set(_RayDecoratedOperator.template_fields)


def test_constructor_only_stores():
    with DAG("unit", schedule=None, start_date=pendulum.datetime(2026, 1, 1)):
        op = RayPythonOperator(
            task_id="t",
            python_callable=len,
            num_cpus="{{ params.cpus }}",
            resources={"tpu": 1},
            runtime_env={"pip": ["x"]},
            ray_conn_id="ray_other",
        )
    assert (op.num_cpus, op.ray_resources, op.runtime_env, op.ray_conn_id) == (
        "{{ params.cpus }}",
        {"tpu": 1},
        {"pip": ["x"]},
        "ray_other",
    )
    assert not op.is_async


def test_decorator_builds_the_ray_operator():
    with DAG("unit_deco", schedule=None, start_date=pendulum.datetime(2026, 1, 1)):

        @ray_task(num_cpus=2, num_gpus=1)
        def train(rows: int) -> int:
            return rows

        output = train(5)
    op = output.operator
    assert isinstance(op, RayPythonOperator)
    assert (op.num_cpus, op.num_gpus, list(op.op_args)) == (2, 1, [5])
    assert op.custom_operator_name == "@task.ray"


def context(**values):
    base = {"ds": "2026-01-01", "run_id": "r1", "ti": object(), "dag_run": object(), "var": object()}
    return {**base, **values}


def make(fn, **kwargs):
    return RayPythonOperator(task_id="t", python_callable=fn, **kwargs)


def test_only_shippable_context_reaches_a_kwargs_callable():
    op = make(lambda **kw: kw, op_kwargs={"x": 1})
    kwargs = op.determine_kwargs(context(x=1))
    assert kwargs == {"ds": "2026-01-01", "run_id": "r1", "x": 1}


def test_named_context_values_are_passed():
    op = make(lambda ds, x: None, op_kwargs={"x": 2})
    assert op.determine_kwargs(context(x=2)) == {"ds": "2026-01-01", "x": 2}


def test_asking_for_a_live_object_is_an_error_naming_it():
    op = make(lambda ti, dag_run: None)
    with pytest.raises(RayConfigurationError, match="ti, dag_run"):
        op.determine_kwargs(context())


def test_user_kwargs_win_over_context_names():
    op = make(lambda ti: ti, op_kwargs={"ti": "mine"})
    assert op.determine_kwargs(context(ti="mine")) == {"ti": "mine"}


def test_params_become_a_plain_dict():
    class ParamsLike(dict):
        def dump(self):
            return {"rows": 3}

    op = make(lambda params: params)
    assert op.determine_kwargs(context(params=ParamsLike())) == {"params": {"rows": 3}}
    assert type(op.determine_kwargs(context(params=ParamsLike()))["params"]) is dict


class RecordingLog:
    def __init__(self):
        self.lines = []

    def info(self, fmt, line):
        self.lines.append(fmt % line)


def test_line_logger_joins_split_chunks_and_flushes_the_tail():
    log = RecordingLog()
    lines = LineLogger(log)
    lines.write("par")
    lines.write("tial\nwhole\r\nnext")
    assert log.lines == ["partial", "whole"]
    lines.close()
    assert log.lines == ["partial", "whole", "next"]


def test_checkpoint_source_is_the_old_name_of_checkpoint_conn_id():
    with DAG("unit_ckpt", schedule=None, start_date=pendulum.datetime(2026, 1, 1)):
        op = RayPythonOperator(task_id="t", python_callable=len, checkpoint=True, checkpoint_source="aws_s3")
        with pytest.raises(RayConfigurationError, match="checkpoint_source='a' and checkpoint_conn_id='b'"):
            RayPythonOperator(task_id="u", python_callable=len, checkpoint_source="a", checkpoint_conn_id="b")
    assert op.checkpoint_conn_id == "aws_s3"


@pytest.mark.parametrize(
    ("value", "expected"),
    [(True, True), (False, False), (None, False), ("True", True), ("false", False), ("1", True), ("", False)],
)
def test_checkpoint_flag_may_be_templated(value, expected):
    from airflow_ray.arguments import flag

    assert flag("checkpoint", value) is expected


def test_a_checkpoint_flag_that_is_not_a_boolean_is_named():
    from airflow_ray.arguments import flag

    with pytest.raises(RayConfigurationError, match="checkpoint='maybe' is not a boolean"):
        flag("checkpoint", "maybe")
