"""Where a ``ray`` connection points: the embedded head, an existing cluster, or Ray Client."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from airflow_ray.exceptions import RayConfigurationError

GCS_DEFAULT_PORT = 6379
CLIENT_DEFAULT_PORT = 10001
DASHBOARD_DEFAULT_PORT = 8265
HTTPS_DEFAULT_PORT = 443  # Ray's dashboard serves no TLS itself: https:// is an ingress or a proxy
CLIENT_SCHEME = "ray://"
DASHBOARD_SCHEMES = ("http://", "https://")


class AddressKind(enum.Enum):
    """How the hook reaches the cluster."""

    EMBEDDED = "embedded"
    """A persistent Ray head on this machine that airflow_ray starts and reuses."""
    AUTO = "auto"
    """Ray's own discovery of a cluster started on this machine with ``ray start``."""
    GCS = "gcs"
    """A running cluster reached directly at its GCS ``host:port``."""
    CLIENT = "client"
    """A remote cluster reached over Ray Client (``ray://host:port``)."""
    DASHBOARD = "dashboard"
    """A cluster's dashboard (``http(s)://host:8265``), whose Jobs API runs the tasks."""


@dataclass(frozen=True)
class ClusterAddress:
    """A parsed cluster address.

    >>> ClusterAddress.parse("ray://head.example:10001")
    ClusterAddress(kind=<AddressKind.CLIENT: 'client'>, host='head.example', port=10001)
    """

    kind: AddressKind
    host: str | None = None
    port: int | None = None
    secure: bool = False
    path: str = ""
    """A dashboard's path below its host, ``/ray`` for ``https://host/ray/`` (an ingress's)."""

    @classmethod
    def parse(cls, address: str | None, port: int | None = None) -> ClusterAddress:
        """Parse the connection's address field and optional port field.

        Accepted: empty or ``local`` (embedded head), ``auto``, ``host``, ``host:port``,
        ``ray://host`` and ``ray://host:port``, ``http(s)://host[:port][/path]``. A port inside the
        address wins over ``port``; a ``port`` of 0 means none (Airflow's UI tests a connection
        saved without a port with 0). A dashboard without a port is on 8265 over ``http://`` and
        on 443 over ``https://`` (TLS is an ingress's or a proxy's, not the dashboard's).
        """
        text = (address or "").strip()
        if text.lower() in ("", "local", "embedded"):
            return cls(AddressKind.EMBEDDED)
        if text.lower() == "auto":
            return cls(AddressKind.AUTO)
        kind = AddressKind.GCS
        secure = False
        if text.lower().startswith(CLIENT_SCHEME):
            kind = AddressKind.CLIENT
            text = text[len(CLIENT_SCHEME) :]
        elif text.lower().startswith(DASHBOARD_SCHEMES):
            kind = AddressKind.DASHBOARD
            secure = text.lower().startswith("https://")
            text = text.split("://", 1)[1]
        elif "://" in text:
            raise RayConfigurationError(
                f"Ray address {address!r} has an unknown scheme; use 'http://host:8265' for a "
                f"cluster's dashboard (the Jobs API), 'host:6379' for its GCS address, "
                f"'ray://host:10001' for Ray Client, 'auto', or leave it empty for the embedded "
                f"local cluster."
            )
        path = ""
        if kind is AddressKind.DASHBOARD:
            text, _, rest = text.partition("/")
            rest = rest.split("#", 1)[0].split("?", 1)[0].strip("/")
            path = f"/{rest}" if rest else ""
        host, _, port_text = text.rstrip("/").rpartition(":") if ":" in text else (text, "", "")
        if port_text:
            port = _parse_port(port_text, address)
        elif port:
            port = _parse_port(str(port), address)
        else:
            port = {
                AddressKind.CLIENT: CLIENT_DEFAULT_PORT,
                AddressKind.DASHBOARD: HTTPS_DEFAULT_PORT if secure else DASHBOARD_DEFAULT_PORT,
            }.get(kind, GCS_DEFAULT_PORT)
        host = host.strip("[]")
        if not host or "/" in host or " " in host:
            raise RayConfigurationError(
                f"Ray address {address!r} has no valid host; expected 'host:port' or 'ray://host:port'."
            )
        return cls(kind, host, port, secure, path)

    @property
    def is_embedded(self) -> bool:
        return self.kind is AddressKind.EMBEDDED

    @property
    def dashboard_url(self) -> str:
        """The dashboard's base URL (a ``DASHBOARD`` address; else its host on port 8265)."""
        if self.kind is AddressKind.DASHBOARD:
            return f"{'https' if self.secure else 'http'}://{self.host}:{self.port}{self.path}"
        return f"http://{self.host}:{DASHBOARD_DEFAULT_PORT}"

    def ray_init_address(self) -> str:
        """The value to pass to ``ray.init(address=...)``."""
        if self.kind is AddressKind.AUTO:
            return "auto"
        if self.kind is AddressKind.CLIENT:
            return f"{CLIENT_SCHEME}{self.host}:{self.port}"
        if self.kind is AddressKind.GCS:
            return f"{self.host}:{self.port}"
        if self.kind is AddressKind.DASHBOARD:
            raise RayConfigurationError(
                f"{self.dashboard_url} is a Ray dashboard, reached through the Jobs API, not a "
                f"driver connection: give the connection the GCS address (host:6379) to connect "
                f"as a driver."
            )
        raise RayConfigurationError("the embedded cluster's address is known only once it runs")

    def __str__(self) -> str:
        if self.kind is AddressKind.EMBEDDED:
            return "local (embedded cluster)"
        if self.kind is AddressKind.DASHBOARD:
            return self.dashboard_url
        return self.ray_init_address()


def _parse_port(text: str, address: str | None) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise RayConfigurationError(
            f"Ray address {address!r} has an invalid port {text!r}; use a number from 1 to 65535."
        )
    return port
