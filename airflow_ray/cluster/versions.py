"""Which Ray and Python versions a cluster may run, and the errors that say so before a task runs.

Through the Jobs API the Airflow worker speaks only HTTP, so the cluster's Ray image can be
upgraded apart from Airflow's: clusters of Ray :data:`OLDEST_RAY` to :data:`NEWEST_RAY` are
supported (``make test`` hands results over on the oldest and the newest). Python is another
matter: callables and results travel pickled, and pickled code does not cross Python minor
versions, so the cluster's Python must be the worker's ``major.minor``. A driver connection is
stricter still: Ray itself wants the same Ray and Python versions on both sides.
"""

from __future__ import annotations

import platform

from airflow_ray.exceptions import RayConfigurationError

OLDEST_RAY = (2, 46)
NEWEST_RAY = (2, 60)
WINDOW = f"{OLDEST_RAY[0]}.{OLDEST_RAY[1]} to {NEWEST_RAY[0]}.{NEWEST_RAY[1]}"


def release(version: str) -> tuple[int, int] | None:
    """``(major, minor)`` of a version such as ``2.46.0`` or ``3.0.0rc1``; ``None`` if unreadable."""
    parts = version.strip().split(".")
    try:
        return int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or "x")
    except (IndexError, ValueError):
        return None


def worker_python() -> str:
    """This interpreter's ``major.minor``, which the cluster's must equal."""
    return ".".join(platform.python_version_tuple()[:2])


def check_cluster_ray(version: str, where: str) -> None:
    """Refuse a cluster whose Ray (from its dashboard's ``/api/version``) is outside the window."""
    found = release(version)
    if found is not None and OLDEST_RAY <= found <= NEWEST_RAY:
        return
    from airflow_ray import __version__

    raise RayConfigurationError(
        f"The Ray cluster of {where} runs Ray {version}; airflow-ray {__version__} runs tasks on "
        f"clusters of Ray {WINDOW} through the Jobs API (this Airflow worker runs Ray "
        f"{_our_ray()}). Run the cluster on a Ray in that window (its image, e.g. "
        f"rayproject/ray:2.60.0-py{worker_python().replace('.', '')}), or install the airflow-ray "
        f"release that supports Ray {version}."
    )


def python_mismatch(cluster_python: str, interpreter: str, where: str, job: str) -> RayConfigurationError:
    """The error of a job whose entrypoint found another Python minor version than the worker's."""
    ours = worker_python()
    return RayConfigurationError(
        f"The Ray job {job} was refused before it ran: the cluster of {where} runs Python "
        f"{cluster_python} ({interpreter}) and this Airflow worker Python {platform.python_version()}. "
        f"Callables and results travel pickled, and pickled code does not cross Python minor "
        f"versions: run the cluster on Python {ours} (Ray's images say it in their tag, e.g. "
        f"rayproject/ray:2.60.0-py{ours.replace('.', '')}), or name a Python {ours} interpreter "
        f"with Ray in the connection's extra field python."
    )


def driver_mismatch(message: str, where: str) -> RayConfigurationError:
    """Ray's own "Version mismatch" on ``ray.init``, said as the Jobs API's checks say it."""
    detail = " ".join(line.strip() for line in message.splitlines()[1:] if line.strip())
    return RayConfigurationError(
        f"The Ray cluster of {where} cannot take this Airflow worker as a driver: a driver needs "
        f"the cluster's own Ray and Python versions ({detail}). Install the cluster's Ray version "
        f"on the worker, or reach the cluster through its dashboard (the Jobs API transport, an "
        f"http://head:8265 address), which runs tasks on clusters of Ray {WINDOW} with the same "
        f"Python minor version."
    )


def _our_ray() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ray")
    except PackageNotFoundError:
        return "none"
