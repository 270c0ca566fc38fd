"""The ``[ray]`` section of the Airflow configuration, read through small helpers.

Every option is declared in :mod:`airflow_ray.get_provider_info` (so ``airflow config list``
shows it) and can be set in ``airflow.cfg`` or as ``AIRFLOW__RAY__<OPTION>``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from airflow_ray.exceptions import RayConfigurationError

SECTION = "ray"
DEFAULT_CONNECT_TIMEOUT = 30.0


def _get(option: str) -> str | None:
    from airflow.sdk.configuration import conf

    value = conf.get(SECTION, option, fallback=None)
    if value is None or str(value).strip() == "":
        return None
    return str(value).strip()


def _airflow_home() -> Path:
    from airflow.sdk.configuration import conf

    home = conf.get("core", "airflow_home", fallback=None) or os.environ.get("AIRFLOW_HOME")
    return Path(home or Path.home() / "airflow").expanduser()


def embedded_dir() -> Path:
    """Directory that holds the embedded local cluster's state (default ``$AIRFLOW_HOME/ray``)."""
    value = _get("embedded_dir")
    return Path(value).expanduser() if value else _airflow_home() / "ray"


def _positive_float(option: str, default: float | None) -> float | None:
    value = _get(option)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not (math.isfinite(number) and number > 0):
        raise RayConfigurationError(
            f"[{SECTION}] {option} = {value!r} is not a positive number; "
            f"set AIRFLOW__{SECTION.upper()}__{option.upper()} to a number greater than 0."
        )
    return number


def _positive_int(option: str, default: int | None) -> int | None:
    number = _positive_float(option, default)
    if number is None:
        return None
    if not float(number).is_integer():
        raise RayConfigurationError(
            f"[{SECTION}] {option} = {_get(option)!r} is not a whole number; "
            f"set AIRFLOW__{SECTION.upper()}__{option.upper()} to a whole number such as 3."
        )
    return int(number)


def _non_negative_int(option: str, default: int) -> int:
    value = _get(option)
    if value is None:
        return default
    if not value.strip().isdigit():
        raise RayConfigurationError(
            f"[{SECTION}] {option} = {value!r} is not a whole number of 0 or more; "
            f"set AIRFLOW__{SECTION.upper()}__{option.upper()} to a number such as {default}."
        )
    return int(value)


def connect_timeout() -> float:
    """Seconds a connection to a cluster may take before it fails (default 30)."""
    timeout = _positive_float("connect_timeout", DEFAULT_CONNECT_TIMEOUT)
    assert timeout is not None
    return timeout


def embedded_num_cpus() -> int | None:
    """CPUs the embedded head offers (default: every CPU of the machine)."""
    return _positive_int("embedded_num_cpus", None)


def embedded_object_store_memory() -> int | None:
    """Bytes of object store of the embedded head (default: Ray's, 30% of RAM)."""
    return _positive_int("embedded_object_store_memory", None)


DEFAULT_KEEP_RUNS = 3
DEFAULT_PIN_TTL = 24 * 3600.0


def keep_runs() -> int:
    """How many newest runs of each DAG keep their results pinned in the cluster (default 3)."""
    value = _positive_int("keep_runs", DEFAULT_KEEP_RUNS)
    assert value is not None
    return value


def pin_ttl() -> float:
    """Seconds after which a pinned result is released whatever happens (default one day)."""
    value = _positive_float("pin_ttl", DEFAULT_PIN_TTL)
    assert value is not None
    return value


DEFAULT_ORPHAN_TIMEOUT = 900.0


def orphan_timeout() -> float:
    """Seconds after which the owner stops a Ray task that nobody follows any more (its Airflow
    task process died and no retry reconnected to it). Default 15 minutes: more than Airflow's
    default heartbeat timeout and retry delay (5 minutes each), so that a retry finds it running."""
    value = _positive_float("orphan_timeout", DEFAULT_ORPHAN_TIMEOUT)
    assert value is not None
    return value


DEFAULT_INLINE_MAX_BYTES = 64 * 1024


def inline_max_bytes() -> int:
    """With RayXComBackend: results up to this size that Airflow's serializer can store stay in
    the XCom row itself, as with Airflow's own backend (default 64 KB; 0: always a reference)."""
    return _non_negative_int("inline_max_bytes", DEFAULT_INLINE_MAX_BYTES)


def checkpoint_conn_id() -> str:
    """The AWS connection of checkpoints (default ``aws_default``)."""
    return _get("checkpoint_conn_id") or "aws_default"


def checkpoint_bucket() -> str | None:
    """The configured checkpoint bucket, if any."""
    return _get("checkpoint_bucket")


def checkpoint_prefix() -> str:
    """Key prefix of checkpoints in the bucket (default ``airflow-ray``)."""
    value = _get("checkpoint_prefix")
    return "airflow-ray" if value is None else value


def checkpoint_retention_days() -> float | None:
    """Days ``airflow-ray checkpoints prune`` keeps checkpoints; ``None``: keep them."""
    return _positive_float("checkpoint_retention_days", None)


DEFAULT_JOBS_INLINE_MAX_BYTES = 1024 * 1024


def jobs_inline_max_bytes() -> int:
    """Through the Jobs API: the largest pickled result that travels to a plain consumer (1 MB)."""
    value = _positive_int("jobs_inline_max_bytes", DEFAULT_JOBS_INLINE_MAX_BYTES)
    assert value is not None
    return value


def schedule_timeout() -> float | None:
    """Seconds a Ray task may wait to start (for a free node, or one the autoscaler launches)
    before it is cancelled and fails; ``None`` (the default): no limit."""
    return _positive_float("schedule_timeout", None)
