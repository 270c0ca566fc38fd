"""Every Airflow- and Ray-version difference, and every use of a private Ray API, in one place."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

# Airflow 3.3's crash-safe reconnect: the Ray task's id is kept in the task state store, and a
# retry after the worker died follows that task instead of starting it again.
from airflow.sdk.bases.resumablejobmixin import ResumableJobMixin

__all__ = ["ClientPingRefused", "ResumableJobMixin", "client_ping", "gcs_session_name", "use_ray_token"]

RAY_AUTH_MODE_ENV = "RAY_AUTH_MODE"
RAY_AUTH_TOKEN_ENV = "RAY_AUTH_TOKEN"
RAY_AUTH_TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"


def use_ray_token(token: str | None) -> None:
    """Make this process present ``token`` to Ray (token authentication, on by default since 2.5x).

    Ray reads the token from the environment and caches it in C++; the cache must be reset when a
    process (``dag.test()`` runs every task in one) moves between clusters with different tokens.
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


@contextlib.contextmanager
def ray_token_for_a_moment(token: str) -> Iterator[None]:
    """Present ``token`` to Ray inside the block only; then the process's token is what it was.

    A process that is already a Ray driver of one cluster (``dag.test()`` runs every task in
    one) and checks on another would otherwise go on presenting the other cluster's token, and
    every call to its own cluster would fail authentication.
    """
    names = (RAY_AUTH_MODE_ENV, RAY_AUTH_TOKEN_ENV, RAY_AUTH_TOKEN_PATH_ENV)
    saved = {name: os.environ.get(name) for name in names}
    use_ray_token(token)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()


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
