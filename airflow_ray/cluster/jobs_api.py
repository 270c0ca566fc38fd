"""The Ray Jobs REST API of a cluster's dashboard, over HTTP only (``httpx``, Airflow's own client).

No Ray code and no GCS connection: what the Airflow worker (and the triggerer) needs to submit a
job, follow its log, stop it, and upload the packages its runtime_env names. Every call is
bounded, and every failure is a :class:`~airflow_ray.exceptions.RayConnectionError` that names the
connection and says what to fix.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from airflow_ray.exceptions import RayConnectionError

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0
UPLOAD_TIMEOUT = 300.0
_AUTH_FIX = (
    "put the cluster's token (`ray get-auth-token` on the head node) in the connection's password field"
)


class JobStatus(str, enum.Enum):
    """A Ray job's status as the Jobs API reports it (Ray's ``JobStatus``, read without Ray)."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    STOPPED = "STOPPED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"

    def is_terminal(self) -> bool:
        return self in (JobStatus.STOPPED, JobStatus.SUCCEEDED, JobStatus.FAILED)

    @classmethod
    def of(cls, info: dict[str, Any]) -> JobStatus | None:
        """The status in a job's info document; ``None`` for one this module does not know
        (a newer Ray's), which is taken as not ended."""
        try:
            return cls(info.get("status"))
        except ValueError:
            return None


def is_terminal(info: dict[str, Any] | None) -> bool:
    """Whether the job whose info document this is has ended (``None``: it is gone)."""
    if info is None:
        return True
    status = JobStatus.of(info)
    return status is not None and status.is_terminal()


@dataclass(frozen=True)
class JobsEndpoint:
    """Where a cluster's Jobs API answers, and how to authenticate.

    :param url: the dashboard's base URL, ``http(s)://host:8265``.
    :param where: how errors name the connection.
    """

    url: str
    where: str
    token: str | None = field(default=None, repr=False)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def job_url(self, submission_id: str) -> str:
        """The job's page in the dashboard."""
        return f"{self.url}/#/jobs/{submission_id}"


def _timeout(read: float = READ_TIMEOUT) -> Any:
    import httpx

    return httpx.Timeout(read, connect=CONNECT_TIMEOUT)


def _check(endpoint: JobsEndpoint, response: Any, what: str) -> Any:
    """The response, or the error that explains it."""
    if response.status_code < 400:
        return response
    body = response.text.strip()[:500]
    if response.status_code == 401:
        raise RayConnectionError(
            f"The Ray cluster of {endpoint.where} requires a token ({what}: {body}): {_AUTH_FIX}."
        )
    if response.status_code == 403:
        raise RayConnectionError(
            f"The Ray cluster of {endpoint.where} refused our token ({what}): {_AUTH_FIX}."
        )
    raise RayConnectionError(
        f"The Ray Jobs API of {endpoint.where} answered {response.status_code} to {what}: {body}"
    )


def _unreachable(endpoint: JobsEndpoint, err: Exception, what: str) -> RayConnectionError:
    return RayConnectionError(
        f"Cannot reach the Ray Jobs API of {endpoint.where} at {endpoint.url} ({what}: "
        f"{type(err).__name__}: {err}). Check that the cluster runs with its dashboard "
        f"(`ray start --head --dashboard-host=0.0.0.0`) and that the address is the dashboard's, "
        f"such as http://head:8265."
    )


def _json(endpoint: JobsEndpoint, response: Any, what: str) -> Any:
    try:
        return response.json()
    except ValueError as err:
        raise RayConnectionError(
            f"{endpoint.url} of {endpoint.where} did not answer as a Ray dashboard ({what} gave "
            f"{response.text.strip()[:200]!r}). Point the connection at the dashboard's port (8265 "
            f"by default), not at the GCS (6379) or Ray Client (10001)."
        ) from err


class JobsClient:
    """Blocking calls, for the Airflow worker."""

    def __init__(self, endpoint: JobsEndpoint) -> None:
        import httpx

        self.endpoint = endpoint
        self._http = httpx.Client(base_url=endpoint.url, headers=endpoint.headers(), timeout=_timeout())

    def _call(self, method: str, path: str, what: str, **kwargs: Any) -> Any:
        import httpx

        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as err:
            raise _unreachable(self.endpoint, err, what) from err
        return response

    def version(self) -> dict[str, Any]:
        """The cluster's Ray version; fails within seconds when nothing (or no dashboard) answers."""
        response = _check(self.endpoint, self._call("GET", "/api/version", "asking its version"), "version")
        document = _json(self.endpoint, response, "/api/version")
        if not isinstance(document, dict) or "ray_version" not in document:
            raise RayConnectionError(
                f"{self.endpoint.url} of {self.endpoint.where} is not a Ray dashboard: /api/version "
                f"answered {document!r}."
            )
        return document

    def package_exists(self, uri: str) -> bool:
        response = self._call("GET", _package_path(uri), "looking up a package")
        if response.status_code == 404:
            return False
        _check(self.endpoint, response, f"looking up package {uri}")
        return True

    def upload_package(self, uri: str, data: bytes) -> None:
        what = f"uploading package {uri} ({len(data)} bytes)"
        _check(
            self.endpoint,
            self._call("PUT", _package_path(uri), what, content=data, timeout=_timeout(UPLOAD_TIMEOUT)),
            what,
        )

    def submit(self, request: dict[str, Any]) -> str:
        what = f"submitting job {request.get('submission_id')}"
        response = _check(self.endpoint, self._call("POST", "/api/jobs/", what, json=request), what)
        return str(_json(self.endpoint, response, what)["submission_id"])

    def info(self, submission_id: str) -> dict[str, Any] | None:
        """The job's status document, ``None`` when there is no such job."""
        response = self._call("GET", f"/api/jobs/{submission_id}", f"reading job {submission_id}")
        if response.status_code == 404:
            return None
        document: dict[str, Any] = _json(
            self.endpoint, _check(self.endpoint, response, f"reading job {submission_id}"), "job info"
        )
        return document

    def logs(self, submission_id: str) -> str:
        what = f"reading the log of job {submission_id}"
        response = _check(self.endpoint, self._call("GET", f"/api/jobs/{submission_id}/logs", what), what)
        return str(_json(self.endpoint, response, what).get("logs", ""))

    def stop(self, submission_id: str) -> bool:
        what = f"stopping job {submission_id}"
        response = _check(self.endpoint, self._call("POST", f"/api/jobs/{submission_id}/stop", what), what)
        return bool(_json(self.endpoint, response, what).get("stopped", False))

    def delete(self, submission_id: str) -> None:
        self._call("DELETE", f"/api/jobs/{submission_id}", f"deleting job {submission_id}")

    def close(self) -> None:
        self._http.close()


class AsyncJobsClient:
    """Non-blocking calls, for the triggerer's event loop."""

    def __init__(self, endpoint: JobsEndpoint) -> None:
        import httpx

        self.endpoint = endpoint
        self._http = httpx.AsyncClient(base_url=endpoint.url, headers=endpoint.headers(), timeout=_timeout())

    async def _call(self, method: str, path: str, what: str) -> Any:
        import httpx

        try:
            response = await self._http.request(method, path)
        except httpx.HTTPError as err:
            raise _unreachable(self.endpoint, err, what) from err
        return response

    async def info(self, submission_id: str) -> dict[str, Any] | None:
        response = await self._call("GET", f"/api/jobs/{submission_id}", f"reading job {submission_id}")
        if response.status_code == 404:
            return None
        document: dict[str, Any] = _json(
            self.endpoint, _check(self.endpoint, response, f"reading job {submission_id}"), "job info"
        )
        return document

    async def logs(self, submission_id: str) -> str:
        what = f"reading the log of job {submission_id}"
        response = _check(
            self.endpoint, await self._call("GET", f"/api/jobs/{submission_id}/logs", what), what
        )
        return str(_json(self.endpoint, response, what).get("logs", ""))

    async def stop(self, submission_id: str) -> bool:
        what = f"stopping job {submission_id}"
        response = _check(
            self.endpoint, await self._call("POST", f"/api/jobs/{submission_id}/stop", what), what
        )
        return bool(_json(self.endpoint, response, what).get("stopped", False))

    async def close(self) -> None:
        await self._http.aclose()


def _package_path(uri: str) -> str:
    protocol, _, name = uri.partition("://")
    return f"/api/packages/{protocol}/{name}"
