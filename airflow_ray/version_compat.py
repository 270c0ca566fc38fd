"""Every Airflow- and Ray-version difference, and every use of a private Ray API, in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

# Airflow 3.3's crash-safe reconnect: the Ray task's id is kept in the task state store, and a
# retry after the worker died follows that task instead of starting it again.
from airflow.sdk.bases.resumablejobmixin import ResumableJobMixin

__all__ = [
    "ClientPingRefused",
    "DriverIdentity",
    "ResumableJobMixin",
    "client_ping",
    "driver_address",
    "driver_identity",
    "gcs_session_name",
    "use_ray_token",
]

RAY_AUTH_MODE_ENV = "RAY_AUTH_MODE"
RAY_AUTH_TOKEN_ENV = "RAY_AUTH_TOKEN"
RAY_AUTH_TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"


def use_ray_token(token: str | None) -> None:
    """Make this process present ``token`` to Ray (token authentication, on by default since 2.5x).

    Process-wide on purpose, and for the driver-connect path only
    (:func:`airflow_ray.cluster.connect.ensure_driver`, under its lock): a Ray driver reads its
    token from the environment and caches it in C++, and goes on reading that cache for as long
    as it is connected, so the token must stay in place after ``ray.init``. HTTP callers (the
    Jobs API, the triggerer, the API server) send it as a header instead and never come here.
    ``None`` leaves Ray's own discovery (``~/.ray/auth_token``) in place.
    """
    if token is None:
        return
    os.environ[RAY_AUTH_MODE_ENV] = "token"
    os.environ[RAY_AUTH_TOKEN_ENV] = token
    os.environ.pop(RAY_AUTH_TOKEN_PATH_ENV, None)
    from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


@dataclass(frozen=True)
class DriverIdentity:
    """What this process is a Ray driver of, as Ray itself knows it."""

    address: str
    """The GCS address (``host:port``) of a native driver, ``ray://host:port`` through Ray Client."""
    namespace: str
    token: str
    """The token this process presents to Ray (empty: none)."""
    references: int
    """Object references this process holds in that cluster (what disconnecting would break)."""


def driver_identity() -> DriverIdentity | None:
    """What this process is a Ray driver of, or ``None`` when it is none; asked of Ray, not kept."""
    import ray

    if not ray.is_initialized():
        return None
    from ray._raylet import AuthenticationTokenLoader  # type: ignore[attr-defined]

    token = AuthenticationTokenLoader.instance().get_raw_token()
    if ray.util.client.ray.is_connected():
        worker: Any = ray.util.client.ray.get_context().client_worker
        return DriverIdentity(
            address="ray://" + str(worker._conn_str).removeprefix("ray://"),
            namespace=str(ray.get_runtime_context().namespace),
            token=token,
            references=sum(1 for count in worker.reference_count.values() if count > 0),
        )
    core_worker: Any = ray._private.worker.global_worker.core_worker  # type: ignore[attr-defined]
    return DriverIdentity(
        address=str(ray.get_runtime_context().gcs_address),
        namespace=str(ray.get_runtime_context().namespace),
        token=token,
        references=len(core_worker.get_all_reference_counts()),
    )


def driver_address(address: str) -> str:
    """``address`` (``host:port``, ``auto`` or ``ray://host:port``) as :func:`driver_identity`
    reports it once this process is connected there (Ray resolves ``auto`` and ``localhost``)."""
    if address.startswith("ray://"):
        return address
    from ray._private.services import canonicalize_bootstrap_address

    return canonicalize_bootstrap_address(address) or address


def gcs_session_name(gcs_address: str, timeout: float) -> str:
    """Ask the GCS at ``gcs_address`` for its session name: a cheap, authenticated round trip.

    Raises ``ray.exceptions.AuthenticationError`` for a wrong or missing token and another
    exception when no GCS answers within ``timeout`` seconds.
    """
    from ray._raylet import GcsClient  # type: ignore[attr-defined]

    client: Any = GcsClient(address=gcs_address)
    value = client.internal_kv_get(b"session_name", b"session", timeout=timeout)
    return value.decode() if value else ""


class ClientPingRefused(Exception):
    """The Ray Client server answered a ping with an error.

    :param unauthenticated: whether it refused our token (or its absence).
    :param details: the server's own words.
    """

    def __init__(self, unauthenticated: bool, details: str) -> None:
        super().__init__(details)
        self.unauthenticated = unauthenticated
        self.details = details


def client_ping(host_port: str, timeout: float) -> None:
    """Ping the Ray Client server at ``host:port`` once, as Ray's client does before connecting.

    Raises :class:`ClientPingRefused` when the server answers with an error; returns when it
    answers the ping, and also when it does not answer at all within ``timeout`` seconds (the
    caller's connect is bounded by its own deadline). The token comes from :func:`use_ray_token`.
    """
    import grpc
    from ray._private.grpc_utils import init_grpc_channel
    from ray.core.generated import ray_client_pb2, ray_client_pb2_grpc

    messages: Any = ray_client_pb2  # generated protobuf module: no type stubs
    channel = init_grpc_channel(host_port, asynchronous=False)
    try:
        stub = ray_client_pb2_grpc.RayletDriverStub(channel)
        request = messages.ClusterInfoRequest(type=messages.ClusterInfoType.PING)
        stub.ClusterInfo(request, timeout=timeout)
    except grpc.RpcError as err:
        code = err.code()
        if code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE):
            return
        raise ClientPingRefused(code == grpc.StatusCode.UNAUTHENTICATED, err.details() or str(code)) from err
    finally:
        channel.close()


def connection_test_refuses_port_zero(airflow_version: str | None = None) -> bool:
    """Whether Airflow's connection test endpoint refuses the ``port: 0`` its own UI posts.

    The UI posts a connection saved without a port with ``port: Number(null)``, which is 0.
    apache/airflow#69957 (in 3.3.1 through its backport #70010) made the endpoint answer 400 when
    the port differs from the stored one, and 0 is not the stored NULL; apache/airflow#73298
    (merged to main on 2026-09-17, after 3.3.2 was cut: the installed 3.3.2 still refuses) fixes
    it, so 3.4.0 does not. 3.3.0 and any later 3.3.x count as needing the workaround: which of
    them carry the check or the fix is not known here, and dropping ``port: 0`` from a ``ray``
    connection's test is harmless where it is not needed.

    :param airflow_version: the version to answer for; the installed Airflow's by default.
    """
    from packaging.version import Version

    if airflow_version is None:
        from airflow import __version__ as installed

        airflow_version = str(installed)
    release = Version(airflow_version).release[:2]
    return (3, 3) <= release < (3, 4)
