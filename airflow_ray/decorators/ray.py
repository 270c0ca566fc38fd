"""``@task.ray`` / ``ray_task``: the TaskFlow form of :class:`~airflow_ray.operators.ray.RayPythonOperator`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk.bases.decorator import DecoratedOperator, task_decorator_factory

from airflow_ray.operators.ray import RayPythonOperator

if TYPE_CHECKING:
    from airflow.sdk.bases.decorator import TaskDecorator


class _RayDecoratedOperator(DecoratedOperator, RayPythonOperator):
    """The operator behind ``@task.ray``."""

    template_fields: Sequence[str] = RayPythonOperator.template_fields
    template_fields_renderers = RayPythonOperator.template_fields_renderers
    custom_operator_name: str = "@task.ray"
    # DecoratedOperator comes first in the MRO and has its own versions of these.
    is_async = RayPythonOperator.is_async
    determine_kwargs = RayPythonOperator.determine_kwargs

    def __init__(
        self, *, python_callable: Callable[..., Any], op_args: Any, op_kwargs: Any, **kwargs: Any
    ) -> None:
        kwargs_to_upstream = {
            "python_callable": python_callable,
            "op_args": op_args,
            "op_kwargs": op_kwargs,
        }
        super().__init__(
            kwargs_to_upstream=kwargs_to_upstream,
            python_callable=python_callable,
            op_args=op_args,
            op_kwargs=op_kwargs,
            **kwargs,
        )


def ray_task(
    python_callable: Callable[..., Any] | None = None,
    multiple_outputs: bool | None = None,
    **kwargs: Any,
) -> TaskDecorator:
    """Turn a function into a task that runs on Ray.

    Takes the arguments of :class:`~airflow_ray.operators.ray.RayPythonOperator`
    (``num_cpus``, ``num_gpus``, ``memory``, ``resources``, ``runtime_env``, ``ray_remote_args``,
    ``ray_conn_id``, ``airflow_conn_ids`` ...) and any operator argument.

    .. code-block:: python

        @task.ray(num_cpus=2)
        def train(rows: int) -> float: ...

    :param python_callable: the function to decorate.
    :param multiple_outputs: push each key of a returned dict as its own XCom.
    """
    return task_decorator_factory(
        python_callable=python_callable,
        multiple_outputs=multiple_outputs,
        decorated_operator_class=_RayDecoratedOperator,
        **kwargs,
    )
