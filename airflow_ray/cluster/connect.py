"""Bounded, explained connections to a Ray cluster.

Ray retries an unreachable or unauthorized address for minutes without saying why. Every call
here either succeeds or raises :class:`~airflow_ray.exceptions.RayConnectionError` within the
given time, with a message naming what was tried and the likely fix.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from airflow_ray.cluster.address import AddressKind
from airflow_ray.exceptions import RayConnectionError

log = logging.getLogger(__name__)

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


# What an HTTP/2 client sends first: the connection preface and an empty SETTINGS frame. A gRPC
# server (Ray's GCS, Ray Client's server) answers with its own SETTINGS frame at once; an HTTP/1
# server (a dashboard, any web server) answers with an HTTP/1 status line, "HTTP/1.1 400 ...".
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def check_speaks_grpc(host: str, port: int, *, where: str, timeout: float = 2.0) -> None:
    """Fail at once when ``host:port`` answers, but not as a gRPC server: a dashboard, any web server.

    Ray's GCS and Ray Client servers speak gRPC over HTTP/2, whose server must answer a client's
    preface with a SETTINGS frame. Ray would retry any other server until the connect timeout and
    then report no more than a timeout. A server that says nothing within ``timeout`` passes: the
    connect that follows is bounded by its own deadline.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(_HTTP2_PREFACE)
            reply = sock.recv(64)
    except OSError:
        return
    # A frame header: 3 bytes of length, then the type; SETTINGS is 0x4.
    if not reply or (len(reply) >= 4 and reply[3] == 0x04):
        return
    if reply.startswith(b"HTTP/"):
        status = reply.splitlines()[0].decode("latin-1")
        said = f"answers HTTP ({status!r})"
    else:
        said = f"answers, but not in HTTP/2 (it sent {reply[:32]!r})"
    raise RayConnectionError(
        f"{host}:{port} of {where} {said}, not Ray's gRPC: it is another service, such as a web "
        f"server or a Ray dashboard, not a cluster's GCS or Ray Client port. For a dashboard's Jobs "
        f"API make the address http://{host}:{port}; for a driver connection give the GCS address "
        f"(host:6379 by default) or Ray Client's (ray://host:10001)."
    )


def check_client(address: str, *, where: str, timeout: float) -> None:
    """Ask the Ray Client server at ``address`` (``ray://host:port``) for a ping, once.

    Ray's own client retries a refused token for its whole connect timeout and then reports a
    timeout; the server's first answer already says what is wrong.
    """
    from airflow_ray.version_compat import ClientPingRefused, client_ping

    try:
        client_ping(address.removeprefix("ray://"), min(timeout, 10.0))
    except ClientPingRefused as err:
        if err.unauthenticated:
            raise RayConnectionError(
                f"The Ray Client server of {where} refused us: {err.details} ({_AUTH_FIX})."
            ) from err
        # Anything else (not ready yet, overloaded): the bounded connect that follows decides.


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


class _DropExpected(logging.Filter):
    """Drops Ray's warning that its SIGTERM handler is not set: ``ray.init`` runs in our bounded
    thread on purpose, and Airflow's task runner handles SIGTERM itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("SIGTERM handler is not set")


def ray_logs_to_python_logging() -> None:
    """Send the ``ray`` logger's records through Python logging, each at its own level.

    Ray gives its logger a handler that writes to stderr, and Airflow's task runner logs every
    stderr line at ERROR: Ray's driver chatter ("Connecting to existing Ray cluster ...") would
    show as red errors. ``ray.init`` sets the logger's level and formats only the handlers it
    finds, so once they are gone its records reach Airflow's handlers like any other library's.
    """
    logger = logging.getLogger("ray")
    logger.handlers.clear()
    logger.propagate = True
    # The warning is logged by a child logger; a filter on "ray" does not see propagated records.
    worker = logging.getLogger("ray._private.worker")
    if not any(isinstance(f, _DropExpected) for f in worker.filters):
        worker.addFilter(_DropExpected())


# Ray Client's proxy forks a server of its own for each client, and now and then that process dies
# in the fork (a gRPC poller race, ray-project/ray#63202: a few percent of connections, more under
# load). Each try gets a fresh server, so a try that met it is worth another.
_CLIENT_SERVER_DIED = "Starting Ray client server failed"
_CLIENT_SERVER_TRIES = 3


def _client_server_died(error: BaseException) -> bool:
    return isinstance(error, ConnectionAbortedError) and _CLIENT_SERVER_DIED in str(error)


def init_bounded(init_kwargs: dict[str, Any], *, where: str, timeout: float) -> None:
    """Call ``ray.init(**init_kwargs)``; raise if it has not returned within ``timeout`` seconds.

    A Ray Client connection whose server died as the proxy started it is tried again, up to
    three times in all, within the same ``timeout``. Ray's own log records go through Python
    logging at their own levels (:func:`ray_logs_to_python_logging`).
    """
    import ray

    ray_logs_to_python_logging()
    deadline = time.monotonic() + timeout
    for attempt in range(1, _CLIENT_SERVER_TRIES + 1):
        finished, _, error = _run_bounded(lambda: ray.init(**init_kwargs), _left(deadline))
        if not finished:
            raise RayConnectionError(
                f"Connecting to the Ray cluster of {where} did not finish within {timeout:.0f} s. "
                f"The cluster may be overloaded, behind a firewall, or expecting a token "
                f"({_AUTH_FIX}); raise [ray] connect_timeout if it is only slow."
            )
        if error is None:
            return
        # A failed ray.init can leave half of a connection behind (a Ray Client session whose
        # server did not start, a node object without its GCS client), on which the next ray.init
        # in this process trips: drop it, so that the next try or task connects afresh.
        with contextlib.suppress(Exception):
            ray.shutdown()
        if _client_server_died(error) and attempt < _CLIENT_SERVER_TRIES and _left(deadline) > 1:
            log.warning(
                "The Ray Client server of %s died as it started (ray-project/ray#63202); "
                "trying again (%d of %d)",
                where,
                attempt + 1,
                _CLIENT_SERVER_TRIES,
            )
            continue
        break
    assert error is not None
    if isinstance(error, ray.exceptions.AuthenticationError):
        raise RayConnectionError(f"The Ray cluster of {where} refused our token: {_AUTH_FIX}.") from error
    if isinstance(error, RuntimeError) and str(error).startswith("Version mismatch"):
        from airflow_ray.cluster.versions import driver_mismatch

        raise driver_mismatch(str(error), where) from error
    tries = f" ({attempt} tries)" if attempt > 1 else ""
    raise RayConnectionError(
        f"Connecting to the Ray cluster of {where} failed{tries}: {type(error).__name__}: {error}"
    ) from error


# Ray keeps one driver connection per process, and a driver presents the token it finds in the
# environment for as long as it is connected (version_compat.use_ray_token). Deciding whether to
# connect, disconnecting and connecting are done under this lock, so that two threads of one
# process (an API server's, a triggerer's) never interleave them.
_DRIVER_LOCK = threading.RLock()


def ensure_driver(
    address: str,
    kind: AddressKind,
    *,
    token: str | None,
    namespace: str,
    init_kwargs: dict[str, Any],
    where: str,
    timeout: float,
) -> bool:
    """Make this process a driver of the cluster at ``address`` in ``namespace``, unless it is one.

    What the process is connected to is asked of Ray (:func:`~airflow_ray.version_compat.driver_identity`),
    never remembered here. Ray allows one driver connection per process: a process that is a
    driver of another cluster (or namespace, or with another token) is disconnected first, but
    only when it holds no object references there, which disconnecting would break (a value
    being resolved, a result not yet handed over). Otherwise this raises, naming both.

    :param init_kwargs: ``ray.init`` keywords other than the address and namespace; they apply
        when this call connects, and a driver that is already connected keeps its own.
    :returns: whether this call connected (``False``: the process was a driver there already).
    :raises RayConnectionError: the process holds references in another cluster, or
        connecting failed (see :func:`attach`).
    """
    import ray

    from airflow_ray.version_compat import driver_address, driver_identity

    with _DRIVER_LOCK:
        current = driver_identity()
        if current is not None:
            wanted = driver_address(address)
            if (
                current.address == wanted
                and current.namespace == namespace
                and (token is None or current.token == token)
            ):
                return False
            if current.references:
                import gc

                gc.collect()  # references only a cycle keeps alive are not in use
                current = driver_identity()
            if current is not None and current.references:
                differs = "namespace" if current.address == wanted else "cluster"
                raise RayConnectionError(
                    f"This process is a Ray driver of the cluster at {current.address} (namespace "
                    f"{current.namespace!r}) and holds {current.references} object reference(s) "
                    f"there, so it cannot become a driver of {where} (namespace {namespace!r}), "
                    f"another {differs}: Ray allows one driver connection per process, and "
                    f"disconnecting would break those references. Give the tasks that need both "
                    f"the same connection, use transport 'jobs' for one of them (it needs no "
                    f"driver), or run them in separate processes (each Airflow task runs in its "
                    f"own outside dag.test())."
                )
            if current is not None:
                log.info(
                    "This process is a Ray driver of the cluster at %s (namespace %r), holding no "
                    "object there; disconnecting it to connect to %s",
                    current.address,
                    current.namespace,
                    where,
                )
                ray.shutdown()
        attach(
            address,
            kind,
            token=token,
            init_kwargs={**init_kwargs, "namespace": namespace},
            where=where,
            timeout=timeout,
        )
        return True


def attach(
    address: str,
    kind: AddressKind,
    *,
    token: str | None,
    init_kwargs: dict[str, Any],
    where: str,
    timeout: float,
) -> None:
    """Make this process a driver of the cluster at ``address``, or fail with the reason.

    Each check answers within seconds when it can: nothing listening, an HTTP server where a
    gRPC one should be, a refused token. Only then is ``ray.init`` called, within what is left of
    ``timeout``.

    :param address: what ``ray.init`` takes: ``host:port``, ``ray://host:port`` or ``auto``.
    :param kind: the kind of address (an embedded head's is a GCS address).
    :param token: the cluster's token; ``None`` leaves Ray's own discovery in place.
    :param init_kwargs: ``ray.init`` keywords other than the address.
    """
    from airflow_ray.version_compat import use_ray_token

    deadline = time.monotonic() + timeout
    with _DRIVER_LOCK:
        use_ray_token(token)
        _attach(address, kind, init_kwargs=init_kwargs, where=where, deadline=deadline)


def _attach(
    address: str, kind: AddressKind, *, init_kwargs: dict[str, Any], where: str, deadline: float
) -> None:
    if kind in (AddressKind.GCS, AddressKind.CLIENT, AddressKind.EMBEDDED):
        host, _, port = address.removeprefix("ray://").rpartition(":")
        check_port(host, int(port), where=where, timeout=_left(deadline))
        check_speaks_grpc(host, int(port), where=where, timeout=min(_left(deadline), 2.0))
    if kind in (AddressKind.GCS, AddressKind.EMBEDDED):
        check_gcs(address, where=where, timeout=_left(deadline))
    if kind is AddressKind.CLIENT:
        check_client(address, where=where, timeout=_left(deadline))
    init_bounded({"address": address, **init_kwargs}, where=where, timeout=_left(deadline))


def _left(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.5)
