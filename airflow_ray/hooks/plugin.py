"""``RayPlugin``: what the Ray provider adds to Airflow's API server.

- On the Airflow versions whose connection test endpoint refuses the ``port: 0`` that the UI
  posts for a connection saved without a port, the *Test* button works for ``ray`` connections
  through :class:`~airflow_ray.hooks.connection_test.ConnectionTestMiddleware` (a workaround of
  its own module, installed only there).
- ``GET <base>/airflow-ray/readme``: the README of the installed version, served by the API
  server itself (the Providers page links the package's Documentation URL, set in setup.py).

Both are plain ASGI: importing this module (every Airflow process loads plugins) imports no Ray.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin

from airflow_ray.hooks.connection_test import ConnectionTestMiddleware, Receive, Scope, Send
from airflow_ray.version_compat import connection_test_refuses_port_zero

URL_PREFIX = "/airflow-ray"
README_PATH = f"{URL_PREFIX}/readme"


def readme_text() -> str:
    """The README of the installed airflow-ray (its package description)."""
    from importlib.metadata import metadata

    info: Any = metadata("airflow-ray")  # an email.message.Message: the body is the description
    return str(info.get_payload() or info.get("Description") or "airflow-ray: no README in its metadata.")


async def readme_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Serves the README as plain text at ``/airflow-ray/readme``."""
    if scope["type"] != "http":
        return
    found = scope.get("path", "").rstrip("/").endswith("/readme")
    body = readme_text().encode() if found else b"Not found: see /airflow-ray/readme\n"
    await send(
        {
            "type": "http.response.start",
            "status": 200 if found else 404,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body if scope.get("method") != "HEAD" else b""})


def root_middlewares(airflow_version: str | None = None) -> list[dict[str, Any]]:
    """The API server's root middlewares this plugin adds: only the workarounds that this
    Airflow (``airflow_version``, else the installed one) needs."""
    if not connection_test_refuses_port_zero(airflow_version):
        return []
    return [{"middleware": ConnectionTestMiddleware, "name": "airflow-ray connection test"}]


class RayPlugin(AirflowPlugin):
    """Registered through the provider info's ``plugins``."""

    name = "airflow_ray"
    fastapi_apps = [{"app": readme_app, "url_prefix": URL_PREFIX, "name": "airflow-ray README"}]
    fastapi_root_middlewares = root_middlewares()
