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


# -- dashboards as deployed: a path, a private CA, a proxy's headers, retries ----------------


def retrying_client(
    handler, retry_for: float = 10.0, sleeps: list | None = None, monkeypatch=None
) -> JobsClient:
    endpoint = JobsEndpoint(
        "https://ray.example.com:443/ray", "connection 'ray_ingress'", "secret-token",
        extra_headers={"X-Auth-Request-Token": "proxy-secret"}, retry_for=retry_for,
    )  # fmt: skip
    jobs = JobsClient(endpoint)
    jobs._http = httpx.Client(
        base_url=endpoint.url, headers=endpoint.headers(), transport=httpx.MockTransport(handler)
    )
    return jobs


@pytest.fixture
def slept(monkeypatch) -> list[float]:
    """The waits between tries, taken at once."""
    waits: list[float] = []
    monkeypatch.setattr("airflow_ray.cluster.jobs_api.time.sleep", waits.append)
    return waits


def test_calls_keep_the_path_and_send_the_proxys_headers_with_the_token(slept):
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ray_version": "2.60.0"})

    retrying_client(handler).version()
    assert str(seen[0].url) == "https://ray.example.com/ray/api/version"
    assert seen[0].headers["X-Auth-Request-Token"] == "proxy-secret"
    assert seen[0].headers["Authorization"] == "Bearer secret-token"
    assert "proxy-secret" not in repr(JobsEndpoint("u", "w", extra_headers={"X": "proxy-secret"}))


def test_a_proxy_answering_503_while_the_dashboard_restarts_is_tried_again_with_growing_waits(slept):
    answers = iter([503, 502, 504, 200])

    def handler(request: httpx.Request) -> httpx.Response:
        status = next(answers)
        return httpx.Response(status, json={"submission_id": "j", "status": "RUNNING"})

    assert retrying_client(handler).info("j") == {"submission_id": "j", "status": "RUNNING"}
    assert len(slept) == 3
    assert all(0 < wait <= 5 for wait in slept) and slept[2] > slept[0]


def test_a_proxy_that_stays_down_gives_its_answer_once_the_time_is_up(slept):
    client = retrying_client(lambda request: httpx.Response(502, text="Bad Gateway"), retry_for=3)
    with pytest.raises(RayConnectionError, match="answered 502 to reading job j: Bad Gateway"):
        client.info("j")
    assert 0 < sum(slept) <= 3


def test_a_dashboard_never_reached_fails_within_seconds_and_one_that_answered_before_is_waited_for(slept):
    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused")

    with pytest.raises(RayConnectionError, match="Cannot reach the Ray Jobs API"):
        retrying_client(refused, retry_for=30).info("j")
    assert sum(slept) <= 2  # FIRST_CONTACT_RETRY, not the 30 s of retry_for
    slept.clear()

    calls = iter(["ok", "refused", "refused", "refused", "refused", "ok"])

    def restarting(request: httpx.Request) -> httpx.Response:
        if next(calls) == "refused":
            raise httpx.ConnectError("Connection refused")
        return httpx.Response(200, json={"submission_id": "j", "status": "RUNNING"})

    client = retrying_client(restarting, retry_for=30)
    client.info("j")  # it answered once
    assert client.info("j")["status"] == "RUNNING"  # the proxy restarted in between
    assert len(slept) == 4


def test_a_submission_whose_answer_was_lost_is_not_sent_twice(slept):
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.method)
        raise httpx.ReadError("Connection reset by peer")

    with pytest.raises(RayConnectionError):
        retrying_client(handler).submit({"submission_id": "j", "entrypoint": "python -m x"})
    assert sent == ["POST"] and slept == []


def test_a_submission_retried_after_a_504_that_had_reached_the_dashboard_is_the_same_job(slept):
    answers = iter(
        [
            httpx.Response(504, text="Gateway Timeout"),
            httpx.Response(
                400, text="Job with submission_id j already exists. Please use a different submission_id."
            ),
            httpx.Response(
                200, json={"submission_id": "j", "status": "PENDING", "entrypoint": "python -m x"}
            ),
        ]
    )
    client = retrying_client(lambda request: next(answers))
    assert client.submit({"submission_id": "j", "entrypoint": "python -m x"}) == "j"


def test_a_certificate_signed_by_an_unknown_ca_fails_at_once_saying_to_set_verify(slept):
    import ssl

    def handler(request: httpx.Request) -> httpx.Response:
        try:
            raise ssl.SSLCertVerificationError(
                1, "certificate verify failed: unable to get local issuer certificate"
            )
        except ssl.SSLError as err:
            raise httpx.ConnectError("TLS failed") from err

    with pytest.raises(RayConnectionError, match="verify` extra to the path of that CA's PEM bundle"):
        retrying_client(handler).version()
    assert slept == []


def test_a_ca_bundle_that_cannot_be_read_is_named(tmp_path):
    bundle = tmp_path / "not-a-ca.pem"
    bundle.write_text("not a certificate")
    for path in (bundle, tmp_path / "missing.pem"):
        endpoint = JobsEndpoint("https://ray.example.com", "connection 'ray_ingress'", verify=str(path))
        with pytest.raises(RayConnectionError, match=f"The CA bundle '{path}'.*connection field verify"):
            JobsClient(endpoint)


def test_the_triggerers_client_is_tried_again_too(monkeypatch):
    answers = iter([503, 200])

    async def no_wait(seconds: float) -> None:
        return None

    monkeypatch.setattr("airflow_ray.cluster.jobs_api.asyncio.sleep", no_wait)
    endpoint = JobsEndpoint("http://head:8265", "connection 'ray_jobs'", retry_for=10)
    jobs = AsyncJobsClient(endpoint)
    jobs._http = httpx.AsyncClient(
        base_url=endpoint.url,
        transport=httpx.MockTransport(
            lambda request: httpx.Response(next(answers), json={"status": "RUNNING"})
        ),
    )
    assert asyncio.run(jobs.info("j")) == {"status": "RUNNING"}
