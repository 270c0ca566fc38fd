"""``RayPlugin``: what the Ray provider adds to Airflow's API server.

- The UI's *Test* button works for ``ray`` connections. The UI posts a stored connection's port
  as ``Number(port)``, which is ``0`` for one saved without a port (the usual ``ray``
  connection: the port lives in the Address), and Airflow 3.3.2's test endpoint answers 400
  ("The host or port to test differs from the stored connection") because 0 is not the stored
  NULL (fixed upstream by apache/airflow#73298). For ``ray`` connections this middleware drops
  that ``port: 0`` from the request, so the stored connection is tested as it is.
- The test endpoint tests a copy of the connection under a random temporary id; the middleware
  hands the user's id to ``RayHook.test_connection`` (:data:`~airflow_ray.hooks.ray.connection_under_test`)
  so that its message names the connection the user clicked.
- ``GET <base>/airflow-ray/readme``: the README of the installed version, served by the API
  server itself (the Providers page links the package's Documentation URL, set in setup.py).

Both are plain ASGI: importing this module (every Airflow process loads plugins) imports nothing.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from airflow.plugins_manager import AirflowPlugin

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

TEST_PATH = "/api/v2/connections/test"
URL_PREFIX = "/airflow-ray"
README_PATH = f"{URL_PREFIX}/readme"
_MAX_BODY = 1024 * 1024


def rewrite_test_request(body: bytes) -> tuple[bytes, str | None]:
    """The body of a connection test request, with a ``ray`` connection's ``port: 0`` dropped.

    :return: the body to pass on, and the tested ``ray`` connection's id (``None`` for another
        type, or a body that is not a JSON object: Airflow answers those itself).
    """
    try:
        data = json.loads(body)
    except ValueError:
        return body, None
    if not isinstance(data, dict) or data.get("conn_type") != "ray":
        return body, None
    conn_id = data.get("connection_id")
    if data.get("port") == 0:
        # 0 is what the UI makes of "no port" (Number(null)); no Ray service listens on port 0.
        del data["port"]
        body = json.dumps(data).encode()
    return body, conn_id if isinstance(conn_id, str) else None


class ConnectionTestMiddleware:
    """Lets Airflow's connection test endpoint test ``ray`` connections as the UI posts them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not (
            scope["type"] == "http"
            and scope.get("method") == "POST"
            and scope.get("path", "").endswith(TEST_PATH)
        ):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                await self.app(scope, _replay([message], receive), send)
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if not message.get("more_body") or size > _MAX_BODY:
                break
        if message.get("more_body"):  # too large to be a connection: Airflow answers it
            await self.app(scope, _replay([{**message, "body": b"".join(chunks)}], receive), send)
            return
        body, conn_id = rewrite_test_request(b"".join(chunks))
        headers = [
            (name, value) for name, value in scope.get("headers", []) if name.lower() != b"content-length"
        ]
        scope = {**scope, "headers": [*headers, (b"content-length", str(len(body)).encode())]}
        request = {"type": "http.request", "body": body, "more_body": False}
        if conn_id is None:
            await self.app(scope, _replay([request], receive), send)
            return
        from airflow_ray.hooks.ray import connection_under_test

        token = connection_under_test.set(conn_id)
        try:
            await self.app(scope, _replay([request], receive), send)
        finally:
            connection_under_test.reset(token)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A ``receive`` that yields ``messages`` first, then the client's own."""
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed


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


class RayPlugin(AirflowPlugin):
    """Registered through the provider info's ``plugins``."""

    name = "airflow_ray"
    fastapi_apps = [{"app": readme_app, "url_prefix": URL_PREFIX, "name": "airflow-ray README"}]
    fastapi_root_middlewares = [
        {"middleware": ConnectionTestMiddleware, "name": "airflow-ray connection test"}
    ]
