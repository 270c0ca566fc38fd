"""Bounded, explained connections to a Ray cluster.

Ray retries an unreachable or unauthorized address for minutes without saying why. Every call
here either succeeds or raises :class:`~airflow_ray.exceptions.RayConnectionError` within the
given time, with a message naming what was tried and the likely fix.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

from airflow_ray.exceptions import RayConnectionError

_AUTH_FIX = (
    "put the cluster's token (`ray get-auth-token` on the head node) in the connection's password field"
)


def check_port(host: str, port: int, *, where: str, timeout: float) -> None:
    """Fail fast when nothing listens at ``host:port``.

    :param where: how to name the target in the error, e.g. ``connection 'ray_default' (...)``.
    """
    try:
        with socket.create_connection((host, port), timeout=min(timeout, 5.0)):
            return
    except OSError as err:
        raise RayConnectionError(
            f"Cannot reach the Ray cluster of {where}: nothing answers at {host}:{port} ({err}). "
            f"Check that the cluster is running and that the connection's address and port are "
            f"right; leave the address empty to use the embedded local cluster."
        ) from err


def check_gcs(gcs_address: str, *, where: str, timeout: float) -> str:
    """Make one authenticated round trip to the cluster's GCS; return its session name."""
    from ray.exceptions import AuthenticationError

    from airflow_ray.version_compat import gcs_session_name

    try:
        return gcs_session_name(gcs_address, timeout)
    except AuthenticationError as err:
        raise RayConnectionError(
            f"The Ray cluster of {where} refused our token (InvalidAuthToken): {_AUTH_FIX}."
        ) from err
    except Exception as err:
        raise RayConnectionError(
            f"The service at {gcs_address} of {where} did not answer as a Ray GCS within "
            f"{timeout:.0f} s ({type(err).__name__}: {err}). Check the address and port: a Ray "
            f"head's GCS port is 6379 by default, Ray Client's is 10001 (use ray://host:10001)."
        ) from err


def init_bounded(init_kwargs: dict[str, Any], *, where: str, timeout: float) -> None:
    """Call ``ray.init(**init_kwargs)``; raise if it has not returned within ``timeout`` seconds.

    ``ray.init`` runs in a daemon thread: a ``ThreadPoolExecutor`` would keep the process alive
    at exit while Ray retries forever.
    """
    import ray

    outcome: dict[str, BaseException | None] = {}

    def _init() -> None:
        try:
            ray.init(**init_kwargs)
            outcome["error"] = None
        except BaseException as err:  # noqa: BLE001 - handed to the calling thread below
            outcome["error"] = err

    thread = threading.Thread(target=_init, name="airflow-ray-connect", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise RayConnectionError(
            f"Connecting to the Ray cluster of {where} did not finish within {timeout:.0f} s. "
            f"The cluster may be overloaded, behind a firewall, or expecting a token ({_AUTH_FIX}); "
            f"raise [ray] connect_timeout if it is only slow."
        )
    error = outcome.get("error")
    if error is None:
        return
    if isinstance(error, ray.exceptions.AuthenticationError):
        raise RayConnectionError(f"The Ray cluster of {where} refused our token: {_AUTH_FIX}.") from error
    raise RayConnectionError(
        f"Connecting to the Ray cluster of {where} failed: {type(error).__name__}: {error}"
    ) from error
