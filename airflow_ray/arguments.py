"""Operator arguments and connection fields that may arrive templated, hence as text.

Each helper turns one into the value we use, or raises
:class:`~airflow_ray.exceptions.RayConfigurationError` naming the field and the bad value.
"""

from __future__ import annotations

import json
from typing import Any

from airflow_ray.exceptions import RayConfigurationError


def json_object(value: Any, what: str) -> dict[str, Any]:
    """A dict that may arrive as JSON text (templated, or a connection's extra); ``{}`` for nothing.

    :param what: how the message names the field, e.g. ``resources`` or
        ``connection 'ray_default' field runtime_env``.
    """
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise RayConfigurationError(
                f"{what} is not valid JSON ({err}), so not a JSON object: {value!r}."
            ) from err
    if not isinstance(value, dict):
        raise RayConfigurationError(
            f"{what} must be a dict (a JSON object), got {type(value).__name__}: {value!r}."
        )
    return dict(value)


def non_negative(name: str, value: Any) -> float | None:
    """A number of resources; ``None`` (or text that renders empty) for Ray's default."""
    if value is None or (isinstance(value, str) and value.strip() in ("", "None")):
        return None
    if isinstance(value, bool):
        number = -1.0
    else:
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = -1.0
    if number < 0:
        raise RayConfigurationError(
            f"{name}={value!r} is not a non-negative number; pass a number such as 2 or 0.5 "
            f"(a Jinja template must render to one)."
        )
    return number


def flag(name: str, value: Any) -> bool:
    """A boolean argument that may arrive templated, as text."""
    if isinstance(value, bool) or value is None:
        return bool(value)
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off", "", "none"):
        return False
    raise RayConfigurationError(f"{name}={value!r} is not a boolean; pass True or False.")


def conn_ids(value: Any, what: str = "airflow_conn_ids") -> list[str]:
    """Connection ids that may arrive templated: a list, or text of ids separated by commas.

    Empty ids are left out, so that a template may render to nothing, e.g.
    ``"{{ params.aws_conn_id if params.path.startswith('s3://') else '' }}"``.
    """
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple, set, frozenset)):
        raise RayConfigurationError(
            f"{what} must be a list of Airflow connection ids, got {type(value).__name__}: {value!r}."
        )
    ids: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise RayConfigurationError(
                f"{what} must hold connection ids as text, got {type(item).__name__}: {item!r} "
                f"(in {value!r})."
            )
        if item.strip() and item.strip() not in ids:
            ids.append(item.strip())
    return ids
