"""Bounded, explained connections to a Ray cluster.

Ray retries an unreachable or unauthorized address for minutes without saying why. Every call
here either succeeds or raises :class:`~airflow_ray.exceptions.RayConnectionError` within the
given time, with a message naming what was tried and the likely fix.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
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


def _run_bounded(fn: Callable[[], Any], timeout: float) -> tuple[bool, Any, BaseException | None]:
    """Run ``fn`` in a daemon thread; return ``(finished, result, error)`` after ``timeout`` at most.

    A daemon thread, not a ``ThreadPoolExecutor``: Ray may retry forever inside ``fn``, and an
    executor's worker would then keep the process alive at exit.
    """
    outcome: dict[str, Any] = {}

    def _target() -> None:
        try:
            outcome["result"] = fn()
        except BaseException as err:  # noqa: BLE001 - handed to the calling thread
            outcome["error"] = err

    thread = threading.Thread(target=_target, name="airflow-ray-connect", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        return False, None, None
    return True, outcome.get("result"), outcome.get("error")


def check_gcs(gcs_address: str, *, where: str, timeout: float) -> str:
    """Make one authenticated round trip to the cluster's GCS; return its session name."""
    from ray.exceptions import AuthenticationError

    from airflow_ray.version_compat import gcs_session_name

    finished, session, error = _run_bounded(lambda: gcs_session_name(gcs_address, timeout), timeout)
    if finished and error is None:
        return str(session)
    if isinstance(error, AuthenticationError):
        raise RayConnectionError(
            f"The Ray cluster of {where} refused our token (InvalidAuthToken): {_AUTH_FIX}."
        ) from error
    reason = f"{type(error).__name__}: {error}" if error is not None else "no answer"
    raise RayConnectionError(
        f"The service at {gcs_address} of {where} did not answer as a Ray GCS within "
        f"{timeout:.0f} s ({reason}). Check the address and port: a Ray head's GCS port is 6379 "
        f"by default; Ray Client's is 10001 (use ray://host:10001)."
    ) from error


def init_bounded(init_kwargs: dict[str, Any], *, where: str, timeout: float) -> None:
    """Call ``ray.init(**init_kwargs)``; raise if it has not returned within ``timeout`` seconds."""
    import ray

    finished, _, error = _run_bounded(lambda: ray.init(**init_kwargs), timeout)
    if not finished:
        raise RayConnectionError(
            f"Connecting to the Ray cluster of {where} did not finish within {timeout:.0f} s. "
            f"The cluster may be overloaded, behind a firewall, or expecting a token ({_AUTH_FIX}); "
            f"raise [ray] connect_timeout if it is only slow."
        )
    if error is None:
        return
    if isinstance(error, ray.exceptions.AuthenticationError):
        raise RayConnectionError(f"The Ray cluster of {where} refused our token: {_AUTH_FIX}.") from error
    raise RayConnectionError(
        f"Connecting to the Ray cluster of {where} failed: {type(error).__name__}: {error}"
    ) from error
