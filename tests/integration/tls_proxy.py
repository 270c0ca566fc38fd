"""A TLS reverse proxy under a path prefix, with an authenticating header, as an ingress puts one
before a Ray dashboard: ``https://127.0.0.1:<port>/ray/...`` to ``<upstream>/...``.

Run as its own process (so a test can stop and restart it while a task is followed)::

    python -m tests.integration.tls_proxy --port P --upstream http://127.0.0.1:8265 \\
        --prefix /ray --cert server.pem --key server.key --header X-Auth-Request-Token=secret

It answers 401 to a request without the header, 404 outside the prefix, and 502 when the
upstream does not answer, as nginx and oauth2-proxy do.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripts.ports import free_ports
from scripts.ray_only_cluster import stop_session
from tests.integration.waiting import wait_until

HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
    "transfer-encoding", "upgrade", "host", "content-length",
}  # fmt: skip


def app(upstream: str, prefix: str, header: tuple[str, str]) -> Any:
    import httpx
    from starlette.applications import Starlette
    from starlette.background import BackgroundTask
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response, StreamingResponse
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocket

    client = httpx.AsyncClient(base_url=upstream, timeout=httpx.Timeout(None, connect=5))

    async def forward(request: Request) -> Response:
        name, value = header
        if request.headers.get(name) != value:
            return PlainTextResponse(f"proxy: {name} missing or wrong", status_code=401)
        path = request.url.path
        if not (path == prefix or path.startswith(prefix + "/")):
            return PlainTextResponse(f"proxy: nothing at {path}", status_code=404)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        upstream_request = client.build_request(
            request.method,
            path[len(prefix) :] or "/",
            params=request.query_params,
            headers=headers,
            content=await request.body(),
        )
        try:
            # Streamed through as it arrives, as an ingress does (a followed log never ends).
            answer = await client.send(upstream_request, stream=True)
        except httpx.HTTPError as err:
            return PlainTextResponse(f"proxy: upstream {upstream} did not answer: {err!r}", status_code=502)
        kept = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP}
        return StreamingResponse(
            answer.aiter_raw(),
            status_code=answer.status_code,
            headers=kept,
            background=BackgroundTask(answer.aclose),
        )

    async def forward_websocket(socket: WebSocket) -> None:
        import asyncio

        import aiohttp

        name, value = header
        path = socket.url.path
        if socket.headers.get(name) != value or not path.startswith(prefix + "/"):
            await socket.close(code=1008)  # refused at the handshake: the client sees a 403
            return
        headers = {k: v for k, v in socket.headers.items() if k.lower() in ("authorization",)}
        url = upstream.replace("http", "ws", 1) + path[len(prefix) :]
        async with aiohttp.ClientSession() as session:
            try:
                upstream_socket = await session.ws_connect(url, headers=headers)
            except aiohttp.WSServerHandshakeError as err:
                await socket.close(code=1011, reason=f"upstream answered {err.status}")
                return
            await socket.accept()

            async def down() -> None:
                async for message in upstream_socket:
                    if message.type is aiohttp.WSMsgType.TEXT:
                        await socket.send_text(message.data)

            async def up() -> None:
                while True:
                    message = await socket.receive()
                    if message["type"] == "websocket.disconnect":
                        return

            tasks = [asyncio.create_task(down()), asyncio.create_task(up())]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                task.cancel()
            await upstream_socket.close()
            with contextlib.suppress(RuntimeError):
                await socket.close()

    methods = ["GET", "POST", "PUT", "DELETE", "HEAD"]
    return Starlette(
        routes=[
            Route("/{path:path}", forward, methods=methods),
            WebSocketRoute("/{path:path}", forward_websocket),
        ]
    )


@dataclass
class TlsProxy:
    """A running proxy process; :meth:`restart` stops it and starts it again on the same port."""

    port: int
    arguments: list[str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(cls, upstream: str, prefix: str, cert: Path, key: Path, header: str, log: Path) -> TlsProxy:
        (port,) = free_ports(1)
        arguments = [
            f"--port={port}", f"--upstream={upstream}", f"--prefix={prefix}",
            f"--cert={cert}", f"--key={key}", f"--header={header}",
        ]  # fmt: skip
        proxy = cls(port, arguments, log)
        proxy._run()
        return proxy

    def _run(self) -> None:
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.integration.tls_proxy", *self.arguments],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        process = self.process

        def listening() -> bool:
            assert process.poll() is None, self.log.read_text()[-3000:]
            return b"Uvicorn running" in self.log.read_bytes().split(b"proxy process")[-1]

        wait_until(listening, 60, lambda: self.log.read_text()[-3000:], every=0.1)

    def stop(self) -> None:
        if self.process is not None:
            stop_session(self.process, 10)
            self.process = None

    def restart(self, down_for: float) -> None:
        import time

        self.stop()
        time.sleep(down_for)  # the outage: what a client sees while the proxy restarts
        self._run()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--header", required=True, help="NAME=VALUE that every request must carry")
    args = parser.parse_args()
    name, _, value = args.header.partition("=")
    import uvicorn

    print("proxy process", flush=True)
    uvicorn.run(
        app(args.upstream, args.prefix.rstrip("/"), (name, value)),
        host="127.0.0.1",
        port=args.port,
        ssl_certfile=args.cert,
        ssl_keyfile=args.key,
        log_level="info",
        access_log=False,
    )


if __name__ == "__main__":
    main()
