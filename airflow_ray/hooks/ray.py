"""``RayHook``: a ``ray`` connection -> a transport to its Ray cluster."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from airflow_ray.arguments import json_object
from airflow_ray.cluster.address import AddressKind, ClusterAddress
from airflow_ray.exceptions import RayConfigurationError

if TYPE_CHECKING:
    from airflow_ray.cluster.transport import Transport

# What this process is connected to. Ray keeps one global connection per process; dag.test()
# runs every task of a DAG in one process, so a hook reuses that connection when it is to the
# same cluster and replaces it otherwise.
_connected: tuple[str, str, str, str] | None = None

DEFAULT_NAMESPACE = "airflow"


@dataclass(frozen=True)
class RayConnectionSettings:
    """The fields of a ``ray`` connection, validated."""

    address: ClusterAddress
    namespace: str = DEFAULT_NAMESPACE
    token: str | None = field(default=None, repr=False)
    runtime_env: dict[str, Any] = field(default_factory=dict)
    init_kwargs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_connection(cls, conn: Any) -> RayConnectionSettings:
        extra = conn.extra_dejson if conn is not None else {}
        conn_id = getattr(conn, "conn_id", "?")
        return cls(
            address=ClusterAddress.parse(getattr(conn, "host", None), getattr(conn, "port", None)),
            namespace=str(extra.get("namespace") or getattr(conn, "schema", None) or DEFAULT_NAMESPACE),
            token=(getattr(conn, "password", None) or None),
            runtime_env=json_object(extra.get("runtime_env"), f"connection {conn_id!r} field runtime_env"),
            init_kwargs=json_object(extra.get("init_kwargs"), f"connection {conn_id!r} field init_kwargs"),
        )


class RayHook(BaseHook):
    """Connect to the Ray cluster of a ``ray`` connection.

    The connection's *Address* (host field) says which cluster:

    - empty or ``local``: the embedded local cluster, started on first use and kept running for
      later tasks (its state lives in ``[ray] embedded_dir``). This is also what a missing
      ``ray_default`` connection means, so nothing needs setting up on one machine;
    - ``host:6379`` (or host plus the port field): an existing cluster's GCS address;
    - ``auto``: the cluster started on this machine with ``ray start``;
    - ``ray://host:10001``: a remote cluster through Ray Client.

    The password field holds the cluster's token (Ray's token authentication). Extra fields:
    ``namespace``, ``runtime_env`` (JSON, the default of every task) and ``init_kwargs`` (JSON,
    more ``ray.init`` keywords).

    Nothing is read or connected until :meth:`get_conn` (or a call of the transport that
    :meth:`get_transport` returns) needs it.

    :param ray_conn_id: the connection id (default ``ray_default``).
    :param connect_timeout: seconds before connecting fails (default ``[ray] connect_timeout``, 30).
    """

    conn_name_attr = "ray_conn_id"
    default_conn_name = "ray_default"
    conn_type = "ray"
    hook_name = "Ray"

    def __init__(self, ray_conn_id: str = default_conn_name, *, connect_timeout: float | None = None) -> None:
        super().__init__()
        self.ray_conn_id = ray_conn_id
        self._connect_timeout = connect_timeout

    @cached_property
    def settings(self) -> RayConnectionSettings:
        """The connection's settings; a missing ``ray_default`` means the embedded cluster."""
        try:
            conn = self.get_connection(self.ray_conn_id)
        except AirflowNotFoundException as err:
            if self.ray_conn_id != self.default_conn_name:
                raise RayConfigurationError(
                    f"The Ray connection {self.ray_conn_id!r} does not exist. Create it (type 'ray'), "
                    f"or drop ray_conn_id to use {self.default_conn_name!r}, which defaults to the "
                    f"embedded local cluster."
                ) from err
            return RayConnectionSettings(address=ClusterAddress.parse(None))
        return RayConnectionSettings.from_connection(conn)

    @property
    def connect_timeout(self) -> float:
        if self._connect_timeout is not None:
            return self._connect_timeout
        from airflow_ray import config

        return config.connect_timeout()

    def describe(self, address: str | None = None) -> str:
        """How errors name this connection: its id and address."""
        return f"connection {self.ray_conn_id!r} (address {address or self.settings.address})"

    def get_conn(self) -> Any:
        """Connect this process to the cluster (reusing a connection to it) and return ``ray``."""
        global _connected
        import ray

        from airflow_ray.cluster import connect
        from airflow_ray.version_compat import use_ray_token

        settings = self.settings
        deadline = time.monotonic() + self.connect_timeout
        address, token = self._resolve_address(settings)
        key = (address, settings.namespace, token or "", json.dumps(settings.init_kwargs, sort_keys=True))
        if ray.is_initialized() and _connected == key:
            return ray
        if ray.is_initialized():
            ray.shutdown()
            _connected = None
        where = self.describe(address)
        use_ray_token(token)
        kind = settings.address.kind
        if kind in (AddressKind.GCS, AddressKind.CLIENT, AddressKind.EMBEDDED):
            host, _, port = address.removeprefix("ray://").rpartition(":")
            connect.check_port(host, int(port), where=where, timeout=_left(deadline))
        if kind in (AddressKind.GCS, AddressKind.EMBEDDED):
            connect.check_gcs(address, where=where, timeout=_left(deadline))
        init_kwargs: dict[str, Any] = {
            "address": address,
            "namespace": settings.namespace,
            # The callable's output is streamed into the task log by the operator; Ray's own
            # asynchronous forwarding would print it a second time, late.
            "log_to_driver": False,
            **settings.init_kwargs,
        }
        connect.init_bounded(init_kwargs, where=where, timeout=_left(deadline))
        _connected = key
        self.log.info("Connected to the Ray cluster of %s", where)
        return ray

    def _resolve_address(self, settings: RayConnectionSettings) -> tuple[str, str | None]:
        if settings.address.is_embedded:
            from airflow_ray.cluster.local import EmbeddedCluster

            cluster = EmbeddedCluster.from_config()
            head = cluster.ensure_running()
            return head.gcs_address, cluster.token()
        return settings.address.ray_init_address(), settings.token

    def test_connection(self) -> tuple[bool, str]:
        """Reach the cluster and report what it offers."""
        try:
            ray = self.get_conn()
            resources = ray.cluster_resources()
            nodes = [node for node in ray.nodes() if node.get("Alive")]
        except Exception as err:  # noqa: BLE001 - the UI shows any failure as a message
            return False, str(err)
        return True, (
            f"Connected to Ray {ray.__version__} at {self.settings.address}: {len(nodes)} node(s), "
            f"{resources.get('CPU', 0):g} CPU, {resources.get('GPU', 0):g} GPU."
        )

    def get_transport(self, namespace: str | None = None) -> Transport:
        """How tasks of this connection run: :class:`~airflow_ray.cluster.driver.DriverTransport`
        (this process becomes a Ray driver on first use).

        :param namespace: the owner actors' namespace, if not the connection's (a reference
            records the one it was made in).
        """
        from airflow_ray.cluster.driver import DriverTransport

        return DriverTransport(self, namespace)


def _left(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.5)
