"""What of the Airflow context a callable running in Ray can be given: values that pickle and
mean the same inside a Ray worker, never the live objects of the Airflow worker process."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from airflow_ray.exceptions import RayConfigurationError

# Context values that can be pickled and mean the same inside a Ray worker. The others (ti,
# dag_run, task, conf, macros, ...) are live objects of the Airflow worker process.
SHIPPABLE_CONTEXT_KEYS = frozenset(
    {
        "data_interval_end",
        "data_interval_start",
        "ds",
        "ds_nodash",
        "expanded_ti_count",
        "logical_date",
        "map_index_template",
        "params",
        "prev_data_interval_end_success",
        "prev_data_interval_start_success",
        "prev_end_date_success",
        "prev_start_date_success",
        "run_id",
        "task_instance_key_str",
        "templates_dict",
        "test_mode",
        "ts",
        "ts_nodash",
        "ts_nodash_with_tz",
    }
)


def shippable_context(
    fn: Callable[..., Any], op_kwargs: Mapping[str, Any], context: Mapping[str, Any]
) -> dict[str, Any]:
    """The context values (and ``op_kwargs``) that ``fn`` may be called with in Ray.

    :raises RayConfigurationError: ``fn`` names a context value that lives in the Airflow worker
        (``ti``, ``dag_run`` ...); the message says how to template what it needs instead.
    """
    user_keys = set(op_kwargs)
    signature = inspect.signature(fn)
    unshippable = [
        name
        for name in signature.parameters
        if name in context and name not in user_keys and name not in SHIPPABLE_CONTEXT_KEYS
    ]
    if unshippable:
        raise RayConfigurationError(
            f"The callable {fn.__name__!r} asks for the context value(s) "
            f"{', '.join(unshippable)}, which live in the Airflow worker and cannot be sent to "
            f"Ray. Template what you need into op_kwargs instead, e.g. "
            f"op_kwargs={{'value': \"{{{{ ti.xcom_pull(task_ids='...') }}}}\"}}."
        )
    return {
        key: _plain(key, value)
        for key, value in context.items()
        if key in user_keys or key in SHIPPABLE_CONTEXT_KEYS
    }


def _plain(key: str, value: Any) -> Any:
    """``params`` is a ParamsDict bound to the DAG; Ray gets its plain values."""
    if key == "params" and hasattr(value, "dump"):
        return dict(value.dump())
    return value
