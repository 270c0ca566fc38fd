"""``RayHook``: a ``ray`` connection -> a transport to its Ray cluster."""

from __future__ import annotations

import enum
import time
from contextvars import ContextVar
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
    from airflow_ray.cluster.local import EmbeddedCluster, EmbeddedHead
    from airflow_ray.cluster.probe import ClusterSummary
    from airflow_ray.cluster.transport import Transport

DEFAULT_NAMESPACE = "airflow"

connection_under_test: ContextVar[str | None] = ContextVar("connection_under_test", default=None)
"""The id of the connection that Airflow's API server is testing, when it is.

The server tests a connection under a random temporary id (it exports the connection as
``AIRFLOW_CONN_<random>`` and builds the hook with that id); the plugin of this provider sees
the request and sets the user's id here, so that ``test_connection`` can name it.
"""


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
    python: str = "python"
    verify: bool | str = True
    headers: dict[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_connection(cls, conn: Any, name: str | None = None) -> RayConnectionSettings:
        """:param name: how errors name the connection (default: its id)."""
        extra = conn.extra_dejson if conn is not None else {}
        conn_id = name or str(getattr(conn, "conn_id", "?"))
        return cls(
            address=ClusterAddress.parse(getattr(conn, "host", None), getattr(conn, "port", None)),
            namespace=str(extra.get("namespace") or getattr(conn, "schema", None) or DEFAULT_NAMESPACE),
            token=(getattr(conn, "password", None) or None),
            runtime_env=json_object(extra.get("runtime_env"), f"connection {conn_id!r} field runtime_env"),
            init_kwargs=json_object(extra.get("init_kwargs"), f"connection {conn_id!r} field init_kwargs"),
            transport=TransportKind.parse(extra.get("transport"), conn_id),
            dashboard_url=(str(extra["dashboard_url"]).rstrip("/") if extra.get("dashboard_url") else None),
            python=_interpreter(extra.get("python"), conn_id),
            verify=_verify(extra.get("verify"), conn_id),
            headers=_headers(extra.get("headers"), conn_id),
        )

    @property
    def uses_jobs_api(self) -> bool:
        """Whether tasks run through the Jobs API: asked for, or the address is a dashboard's."""
        if self.transport is TransportKind.AUTO:
            return self.address.kind is AddressKind.DASHBOARD
        return self.transport is TransportKind.JOBS


def _verify(value: Any, conn_id: str) -> bool | str:
    """The connection's ``verify`` extra: check the dashboard's TLS certificate against the
    system's CAs (default), a CA bundle (its path), or not at all (false)."""
    if value is None or value == "" or value is True:
        return True
    if value is False or (isinstance(value, str) and value.strip().lower() in ("false", "no", "0")):
        return False
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "1"):
        return True
    if not isinstance(value, str):
        raise RayConfigurationError(
            f"Connection {conn_id!r} field verify={value!r} is neither true, false nor the path of "
            f"a CA bundle: give the PEM file of the CA that signed the dashboard's certificate (such "
            f"as /etc/ssl/certs/company-ca.pem), or false to skip the check."
        )
    return value.strip()


def _headers(value: Any, conn_id: str) -> dict[str, str]:
    """The connection's ``headers`` extra: HTTP headers sent with every Jobs API call (an
    authenticating proxy's)."""
    headers = json_object(value, f"connection {conn_id!r} field headers")
    bad = [name for name, text in headers.items() if not isinstance(text, str) or not name.strip()]
    if bad:
        raise RayConfigurationError(
            f"Connection {conn_id!r} field headers must map header names to text values, as "
            f'{{"X-Auth-Request-Token": "..."}}; these are not: {", ".join(map(repr, bad))}.'
        )
    return {str(name).strip(): str(text) for name, text in headers.items()}


def _interpreter(value: Any, conn_id: str) -> str:
    """The connection's ``python`` extra: the interpreter of the Jobs API's entrypoint."""
    if value is None or value == "":
        return "python"
    text = str(value).strip()
    if not text or any(c.isspace() for c in text) or not isinstance(value, str):
        raise RayConfigurationError(
            f"Connection {conn_id!r} field python={value!r} is not an interpreter: give the path of "
            f"the Python that Ray runs on in the cluster, such as /opt/ray-env/bin/python (or leave it "
            f"empty for the `python` on the cluster's PATH)."
        )
    return text


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
    ``namespace``, ``runtime_env`` (JSON, the default of every task), ``init_kwargs`` (JSON,
    more ``ray.init`` keywords), ``transport``, ``dashboard_url`` and ``python`` (the interpreter
    that runs a Jobs API task's entrypoint in the cluster; default: ``python`` on its PATH).

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

    @property
    def conn_name(self) -> str:
        """The connection's id as its user knows it (not the API server's temporary test id)."""
        return connection_under_test.get() or self.ray_conn_id

    @cached_property
    def settings(self) -> RayConnectionSettings:
        """The connection's settings; a missing ``ray_default`` means the embedded cluster."""
        try:
            conn = self.get_connection(self.ray_conn_id)
        except AirflowNotFoundException as err:
            if self.ray_conn_id != self.default_conn_name:
                raise RayConfigurationError(
                    f"The Ray connection {self.conn_name!r} does not exist. Create it (type 'ray'), "
                    f"or drop ray_conn_id to use {self.default_conn_name!r}, which defaults to the "
                    f"embedded local cluster."
                ) from err
            return RayConnectionSettings(address=ClusterAddress.parse(None))
        return RayConnectionSettings.from_connection(conn, self.conn_name)

    @property
    def connect_timeout(self) -> float:
        if self._connect_timeout is not None:
            return self._connect_timeout
        from airflow_ray import config

        return config.connect_timeout()

    def describe(self, address: str | None = None) -> str:
        """How errors name this connection: its id and address."""
        return f"connection {self.conn_name!r} (address {address or self.settings.address})"

    def get_conn(self) -> Any:
        """Make this process a Ray driver of the connection's cluster and return ``ray``.

        Ray allows one driver connection per process, and Ray itself says what that is: a process
        already connected there (``dag.test()`` runs every task of a DAG in one) stays connected;
        one connected elsewhere is moved over only when it holds nothing there, and otherwise
        gets a :class:`~airflow_ray.exceptions.RayConnectionError` naming both clusters
        (``airflow_ray.cluster.connect.ensure_driver``).
        """
        import ray

        from airflow_ray.cluster import connect

        settings = self.settings
        # Starting the embedded cluster has its own deadline; the connect timeout starts after it.
        address, token = self._resolve_address(settings)
        init_kwargs = dict(settings.init_kwargs)
        namespace = str(init_kwargs.pop("namespace", None) or settings.namespace)
        # The callable's output is streamed into the task log by the operator; Ray's own
        # asynchronous forwarding would print it a second time, late.
        init_kwargs.setdefault("log_to_driver", False)
        where = self.describe(address)
        if connect.ensure_driver(
            address,
            settings.address.kind,
            token=token,
            namespace=namespace,
            init_kwargs=init_kwargs,
            where=where,
            timeout=self.connect_timeout,
        ):
            self.log.info("Connected to the Ray cluster of %s", where)
        return ray

    def _resolve_address(self, settings: RayConnectionSettings) -> tuple[str, str | None]:
        if settings.address.is_embedded:
            from airflow_ray.cluster.local import EmbeddedCluster

            cluster = EmbeddedCluster.from_config()
            head = self._embedded_head(cluster)
            return head.gcs_address, cluster.token()
        return settings.address.ray_init_address(), settings.token

    def _embedded_head(self, cluster: EmbeddedCluster) -> EmbeddedHead:
        """The running embedded head, started first (and said so in the log) when none runs."""
        head = cluster.status()
        if head is not None:
            return head
        self.log.info(
            "Starting the embedded Ray cluster (state %s); this takes about 10 s, once ...", cluster.state_dir
        )
        started = time.monotonic()
        head = cluster.ensure_running()
        self.log.info(
            "The embedded Ray cluster runs at %s (%.1f s)", head.gcs_address, time.monotonic() - started
        )
        return head

    def test_connection(self) -> tuple[bool, str]:
        """Report whether the cluster answers and what it offers; Airflow's Test button calls this.

        It runs in Airflow's API server, which must stay what it is: it never becomes a Ray driver
        (a driver's process is ended by Ray's core once its cluster stops) and never starts the
        embedded cluster. A driver connection is probed from a child process under the connect
        timeout, a Jobs API connection over HTTP, and the embedded cluster is only looked at.
        """
        name = self.conn_name
        token: str | None
        try:
            settings = self.settings
            if settings.address.is_embedded:
                from airflow_ray.cluster.local import EmbeddedCluster

                cluster = EmbeddedCluster.from_config()
                head = cluster.status()
                if head is None:
                    return True, (
                        f"Connection {name!r} uses the embedded Ray cluster of this machine, which "
                        f"does not run now (state {cluster.state_dir}). The first Ray task starts it "
                        f"(about 10 s), or start it now with `airflow-ray local start`."
                    )
                address, token = head.gcs_address, cluster.token()
                where = f"the embedded Ray cluster at {head.gcs_address} (pid {head.pid})"
            if settings.uses_jobs_api:
                from airflow_ray.cluster.jobs_api import JobsClient

                endpoint = self.jobs_endpoint(start=False)
                version = JobsClient(endpoint).version()
                return True, (
                    f"Connection {name!r}: Ray {version.get('ray_version')} answers at {endpoint.url} "
                    f"(Jobs API)."
                )
            if not settings.address.is_embedded:
                self._check_driver_address()
                address, token = settings.address.ray_init_address(), settings.token
                where = str(settings.address)
            summary = self._probe(address, settings.address.kind, token)
        except Exception as err:  # noqa: BLE001 - the UI shows any failure as a message
            return False, str(err)
        return True, f"Connection {name!r}: connected to Ray {summary.ray_version} at {where}: {summary}."

    def _probe(self, address: str, kind: AddressKind, token: str | None) -> ClusterSummary:
        from airflow_ray.cluster.probe import probe

        settings = self.settings
        return probe(
            address,
            kind,
            token=token,
            namespace=settings.namespace,
            init_kwargs=settings.init_kwargs,
            where=self.describe(address),
            timeout=self.connect_timeout,
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
        self._check_driver_address()
        from airflow_ray.cluster.driver import DriverTransport

        return DriverTransport(self, namespace)

    def _check_driver_address(self) -> None:
        if self.settings.address.kind is AddressKind.DASHBOARD:
            raise RayConfigurationError(
                f"Connection {self.conn_name!r} asks for transport 'driver' but its address "
                f"{self.settings.address} is a dashboard's: give it the cluster's GCS address "
                f"(host:6379), or use transport 'jobs'."
            )

    def jobs_endpoint(self, start: bool = True) -> JobsEndpoint:
        """Where the cluster's Jobs API answers.

        :param start: start the embedded cluster if it does not run (a triggerer only reads).
        """
        from airflow_ray import config
        from airflow_ray.cluster.jobs_api import JobsEndpoint

        settings = self.settings
        if settings.address.is_embedded:
            from airflow_ray.cluster.local import EmbeddedCluster
            from airflow_ray.exceptions import EmbeddedClusterError

            cluster = EmbeddedCluster.from_config()
            head = self._embedded_head(cluster) if start else cluster.status()
            if head is None:
                raise EmbeddedClusterError(
                    f"The embedded Ray cluster of {self.describe()} does not run "
                    f"(state {cluster.state_dir}): start it with `airflow-ray local start`, or let "
                    f"the first Ray task start it."
                )
            cluster.wait_for_dashboard(head)
            return JobsEndpoint(head.dashboard_url, self.describe(head.dashboard_url), cluster.token())
        url = settings.dashboard_url or settings.address.dashboard_url
        return JobsEndpoint(
            url,
            self.describe(url),
            settings.token,
            verify=settings.verify,
            extra_headers=settings.headers,
            retry_for=config.connect_timeout(),
        )
