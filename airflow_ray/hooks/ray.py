"""``RayHook``: a ``ray`` connection -> a transport to its Ray cluster."""

from __future__ import annotations

import enum
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
    from airflow_ray.cluster.jobs_api import JobsEndpoint
    from airflow_ray.cluster.transport import Transport

# What this process is connected to. Ray keeps one global connection per process; dag.test()
# runs every task of a DAG in one process, so a hook reuses that connection when it is to the
# same cluster and replaces it otherwise.
_connected: tuple[str, str, str, str] | None = None

DEFAULT_NAMESPACE = "airflow"


class TransportKind(str, enum.Enum):
    """How tasks reach the cluster: the connection's ``transport`` extra field."""

    AUTO = "auto"
    """The Jobs API for a dashboard address (``http(s)://``), else a driver."""
    DRIVER = "driver"
    """This process becomes a Ray driver (it needs network reach to every node)."""
    JOBS = "jobs"
    """Each task is a Ray job submitted over HTTP to the cluster's dashboard."""

    @classmethod
    def parse(cls, value: Any, conn_id: str) -> TransportKind:
        text = str(value or "auto").strip().lower()
        try:
            return cls(text)
        except ValueError:
            raise RayConfigurationError(
                f"Connection {conn_id!r} field transport={value!r} is not one of auto, driver, jobs."
            ) from None


@dataclass(frozen=True)
class RayConnectionSettings:
    """The fields of a ``ray`` connection, validated."""

    address: ClusterAddress
    namespace: str = DEFAULT_NAMESPACE
    token: str | None = field(default=None, repr=False)
    runtime_env: dict[str, Any] = field(default_factory=dict)
    init_kwargs: dict[str, Any] = field(default_factory=dict)
    transport: TransportKind = TransportKind.AUTO
    dashboard_url: str | None = None

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
            transport=TransportKind.parse(extra.get("transport"), conn_id),
            dashboard_url=(str(extra["dashboard_url"]).rstrip("/") if extra.get("dashboard_url") else None),
        )

    @property
    def uses_jobs_api(self) -> bool:
        """Whether tasks run through the Jobs API: asked for, or the address is a dashboard's."""
        if self.transport is TransportKind.AUTO:
            return self.address.kind is AddressKind.DASHBOARD
        return self.transport is TransportKind.JOBS


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
        if self.settings.uses_jobs_api:
            from airflow_ray.cluster.jobs_api import JobsClient

            try:
                endpoint = self.jobs_endpoint()
                version = JobsClient(endpoint).version()
            except Exception as err:  # noqa: BLE001 - the UI shows any failure as a message
                return False, str(err)
            return True, f"Ray {version.get('ray_version')} answers at {endpoint.url} (Jobs API)."
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
        """How tasks of this connection run: :class:`~airflow_ray.cluster.jobs.JobsTransport` (each
        task a Ray job, over HTTP) or :class:`~airflow_ray.cluster.driver.DriverTransport` (this
        process becomes a Ray driver on first use).

        :param namespace: the owner actors' namespace, if not the connection's (a reference
            records the one it was made in).
        """
        if self.settings.uses_jobs_api:
            from airflow_ray.cluster.jobs import JobsTransport

            return JobsTransport(self, namespace)
        if self.settings.address.kind is AddressKind.DASHBOARD:
            raise RayConfigurationError(
                f"Connection {self.ray_conn_id!r} asks for transport 'driver' but its address "
                f"{self.settings.address} is a dashboard's: give it the cluster's GCS address "
                f"(host:6379), or use transport 'jobs'."
            )
        from airflow_ray.cluster.driver import DriverTransport

        return DriverTransport(self, namespace)

    def jobs_endpoint(self, start: bool = True) -> JobsEndpoint:
        """Where the cluster's Jobs API answers.

        :param start: start the embedded cluster if it does not run (a triggerer only reads).
        """
        from airflow_ray.cluster.jobs_api import JobsEndpoint

        settings = self.settings
        if settings.address.is_embedded:
            from airflow_ray.cluster.local import EmbeddedCluster
            from airflow_ray.exceptions import EmbeddedClusterError

            cluster = EmbeddedCluster.from_config()
            head = cluster.ensure_running() if start else cluster.status()
            if head is None:
                raise EmbeddedClusterError(
                    f"The embedded Ray cluster of {self.describe()} does not run "
                    f"(state {cluster.state_dir}): start it with `airflow-ray local start`."
                )
            cluster.wait_for_dashboard(head)
            return JobsEndpoint(head.dashboard_url, self.describe(head.dashboard_url), cluster.token())
        url = settings.dashboard_url or settings.address.dashboard_url
        return JobsEndpoint(url, self.describe(url), settings.token)


def _left(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.5)
