"""``ConnectionTestMiddleware``: a workaround for Airflow's connection test refusing ``port: 0``.

Airflow's UI posts a stored connection's port to ``/api/v2/connections/test`` as
``Number(port)``, which is ``0`` for a connection saved without a port (the usual ``ray``
connection: the port lives in the Address). From 3.3.1 on (apache/airflow#69957) the endpoint
answers 400 ("The host or port to test differs from the stored connection") because 0 is not
the stored NULL; apache/airflow#73298 fixes that upstream. On the versions that need it
(:func:`airflow_ray.version_compat.connection_test_refuses_port_zero`) the plugin installs this
middleware, which drops that ``port: 0`` from ``ray`` connections' test requests, so the stored
connection is tested as it is, and hands the user's connection id to
``RayHook.test_connection`` (:data:`~airflow_ray.hooks.ray.connection_under_test`): the
endpoint tests a copy under a random temporary id, and the message should name the connection
the user clicked. Delete this module when no supported Airflow refuses ``port: 0``
(``tests/integration/test_connection_ui.py`` fails then).

Plain ASGI: importing this module (every Airflow process loads plugins) imports nothing.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

TEST_PATH = "/api/v2/connections/test"
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
