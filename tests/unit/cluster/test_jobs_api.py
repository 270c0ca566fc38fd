"""The Jobs REST API client over a mock HTTP transport: statuses, errors that say what to fix."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import httpx
import pytest

from airflow_ray.cluster.jobs_api import AsyncJobsClient, JobsClient, JobsEndpoint, JobStatus, is_terminal
from airflow_ray.exceptions import RayConnectionError

ENDPOINT = JobsEndpoint("http://head:8265", "connection 'ray_jobs'", "secret-token")


def client(handler: Callable[[httpx.Request], httpx.Response]) -> JobsClient:
    jobs = JobsClient(ENDPOINT)
    jobs._http = httpx.Client(
        base_url=ENDPOINT.url, headers=ENDPOINT.headers(), transport=httpx.MockTransport(handler)
    )
    return jobs


@pytest.mark.parametrize(
    ("status", "terminal"),
    [("PENDING", False), ("RUNNING", False), ("STOPPED", True), ("SUCCEEDED", True), ("FAILED", True)],
)
def test_a_status_knows_whether_it_is_terminal(status, terminal):
    assert JobStatus(status).is_terminal() is terminal
    assert is_terminal({"status": status}) is terminal


def test_a_job_that_is_gone_has_ended_and_an_unknown_status_has_not():
    assert is_terminal(None)
    assert JobStatus.of({"status": "SOMETHING_NEWER"}) is None and not is_terminal(
        {"status": "SOMETHING_NEWER"}
    )


def test_requests_carry_the_token_and_read_the_job():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/api/jobs/gone":
            return httpx.Response(404, text="Job gone does not exist")
        if request.url.path.endswith("/logs"):
            return httpx.Response(200, json={"logs": "line 1\n"})
        if request.url.path.endswith("/stop"):
            return httpx.Response(200, json={"stopped": True})
        return httpx.Response(200, json={"status": "RUNNING", "submission_id": "j1"})

    jobs = client(handler)
    assert jobs.info("j1") == {"status": "RUNNING", "submission_id": "j1"}
    assert jobs.info("gone") is None
    assert jobs.logs("j1") == "line 1\n"
    assert jobs.stop("j1") is True
    assert {request.headers["Authorization"] for request in seen} == {"Bearer secret-token"}
    assert [request.method for request in seen] == ["GET", "GET", "GET", "POST"]


@pytest.mark.parametrize(
    ("code", "body", "expected"),
    [
        (401, "Unauthorized", "requires a token"),
        (403, "Forbidden", "refused our token"),
        (500, "Internal error: the GCS is down", "answered 500 to reading job j1: Internal error"),
    ],
)
def test_an_http_error_names_the_connection_and_the_fix(code, body, expected):
    jobs = client(lambda request: httpx.Response(code, text=body))
    with pytest.raises(RayConnectionError) as raised:
        jobs.info("j1")
    message = str(raised.value)
    assert expected in message and "connection 'ray_jobs'" in message
    assert "secret-token" not in message
    if code in (401, 403):
        assert "`ray get-auth-token`" in message


def test_something_that_is_not_a_dashboard_is_named_as_such():
    jobs = client(lambda request: httpx.Response(200, text="<html>Grafana</html>"))
    with pytest.raises(RayConnectionError, match="did not answer as a Ray dashboard") as raised:
        jobs.version()
    assert "8265" in str(raised.value)
    jobs = client(lambda request: httpx.Response(200, json={"version": "1"}))
    with pytest.raises(RayConnectionError, match="is not a Ray dashboard"):
        jobs.version()


def test_an_unreachable_dashboard_says_how_to_run_one():
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(RayConnectionError) as raised:
        client(refuse).submit({"submission_id": "j1"})
    message = str(raised.value)
    assert "Cannot reach the Ray Jobs API of connection 'ray_jobs' at http://head:8265" in message
    assert "ConnectError: connection refused" in message and "--dashboard-host" in message


def test_a_submission_sends_the_request_and_returns_the_id():
    sent: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(200, json={"submission_id": "j1", "job_id": None})

    assert client(handler).submit({"entrypoint": "python -m x", "submission_id": "j1"}) == "j1"
    assert sent == [{"entrypoint": "python -m x", "submission_id": "j1"}]


def test_packages_are_looked_up_and_uploaded_under_their_uri():
    paths: list[tuple[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append((request.method, request.url.path))
        return httpx.Response(404 if request.method == "GET" else 200)

    jobs = client(handler)
    assert jobs.package_exists("gcs://_ray_pkg_abc.zip") is False
    jobs.upload_package("gcs://_ray_pkg_abc.zip", b"zip")
    assert paths == [
        ("GET", "/api/packages/gcs/_ray_pkg_abc.zip"),
        ("PUT", "/api/packages/gcs/_ray_pkg_abc.zip"),
    ]


def test_the_async_client_reads_the_same_way():
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/jobs/gone":
            return httpx.Response(404)
        if request.url.path.endswith("/logs"):
            return httpx.Response(200, json={"logs": "out\n"})
        return httpx.Response(200, json={"status": "STOPPED"})

    async def run() -> list:
        jobs = AsyncJobsClient(ENDPOINT)
        jobs._http = httpx.AsyncClient(
            base_url=ENDPOINT.url, headers=ENDPOINT.headers(), transport=httpx.MockTransport(handler)
        )
        try:
            return [await jobs.info("j1"), await jobs.info("gone"), await jobs.logs("j1")]
        finally:
            await jobs.close()

    assert asyncio.run(run()) == [{"status": "STOPPED"}, None, "out\n"]
