"""The Ray Jobs REST API of a cluster's dashboard, over HTTP only (``httpx``, Airflow's own client).

No Ray code and no GCS connection: what the Airflow worker (and the triggerer) needs to submit a
job, follow its log, stop it, and upload the packages its runtime_env names. Every call is
bounded, and every failure is a :class:`~airflow_ray.exceptions.RayConnectionError` that names the
connection and says what to fix.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from airflow_ray.exceptions import RayConnectionError

log = logging.getLogger(__name__)
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0
UPLOAD_TIMEOUT = 300.0
# An ingress or a proxy answers these while the dashboard behind it restarts.
RETRY_STATUSES = frozenset({502, 503, 504})
# A dashboard that has never answered this client is tried again only this long: a wrong address
# fails within seconds, while one that answered and went away (a restarting proxy) gets the
# whole ``retry_for``.
FIRST_CONTACT_RETRY = 2.0
BACKOFF_FIRST = 0.25
BACKOFF_MAX = 5.0
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
    verify: bool | str = True
    """Check the dashboard's TLS certificate: against the system's CAs, a CA bundle (its path),
    or not at all."""
    extra_headers: dict[str, str] = field(default_factory=dict, repr=False)
    """Sent with every call (an authenticating proxy's)."""
    retry_for: float = 30.0
    """How long a call is tried again while the dashboard (or the proxy before it) is away."""

    def headers(self) -> dict[str, str]:
        token = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return {**self.extra_headers, **token}

    def tls(self) -> bool | ssl.SSLContext:
        """What httpx's ``verify`` takes; a CA bundle that cannot be read fails here, naming it."""
        if isinstance(self.verify, bool):
            return self.verify
        try:
            return ssl.create_default_context(cafile=self.verify)
        except (OSError, ssl.SSLError) as err:
            raise RayConnectionError(
                f"The CA bundle {self.verify!r} of {self.where} (connection field verify) cannot be "
                f"read as PEM certificates ({err}): give the path of the PEM file of the CA that "
                f"signed the dashboard's certificate, readable by the Airflow worker and triggerer."
            ) from err

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
    proxy = (
        "; or, if a proxy or an ingress before the dashboard authenticates requests, give the "
        "headers it asks for in the connection's `headers` extra"
    )
    if response.status_code == 401:
        raise RayConnectionError(
            f"The Ray cluster of {endpoint.where} requires a token ({what}: {body}): {_AUTH_FIX}{proxy}."
        )
    if response.status_code == 403:
        raise RayConnectionError(
            f"The Ray cluster of {endpoint.where} refused our token ({what}: {body}): {_AUTH_FIX}{proxy}."
        )
    raise RayConnectionError(
        f"The Ray Jobs API of {endpoint.where} answered {response.status_code} to {what}: {body}"
    )


def _tls_failure(err: BaseException) -> ssl.SSLError | None:
    """The TLS error under an httpx error (a certificate not trusted, a handshake refused)."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _untrusted(endpoint: JobsEndpoint, err: ssl.SSLError, what: str) -> RayConnectionError:
    if isinstance(err, ssl.SSLCertVerificationError):
        reason = f"its certificate is not trusted ({getattr(err, 'verify_message', None) or err})"
    else:
        reason = f"the TLS handshake failed ({getattr(err, 'reason', None) or err})"
    return RayConnectionError(
        f"HTTPS to {endpoint.url} of {endpoint.where} failed ({what}): {reason}. If the dashboard's "
        f"certificate is signed by a private CA, set the connection's `verify` extra to the path of "
        f"that CA's PEM bundle (or to false to skip the check, not advised)."
    )


class _Retries:
    """When to try a call again: a 502/503/504 or a dropped connection, with exponential
    backoff and jitter, within the endpoint's ``retry_for`` (or :data:`FIRST_CONTACT_RETRY` for
    a connection error before the dashboard ever answered)."""

    def __init__(self, endpoint: JobsEndpoint) -> None:
        self.endpoint = endpoint
        self.started = time.monotonic()
        self.waited = 0.0
        self.tries = 1

    def wait(self, failure: Any, answered_before: bool, what: str) -> float | None:
        """Seconds to wait before the next try, or ``None`` when time is up."""
        limit = self.endpoint.retry_for
        if isinstance(failure, BaseException) and not answered_before:
            limit = min(limit, FIRST_CONTACT_RETRY)
        wait = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (self.tries - 1)) * random.uniform(0.5, 1.0)
        if max(time.monotonic() - self.started, self.waited) + wait > limit:
            return None
        self.tries += 1
        self.waited += wait
        cause = f"answered {failure.status_code}" if not isinstance(failure, BaseException) else repr(failure)
        log.warning(
            "The Ray Jobs API of %s %s (%s); trying again in %.1f s", self.endpoint.where, cause, what, wait
        )
        return wait


def _retryable(err: Exception, idempotent: bool) -> bool:
    import httpx

    if isinstance(err, (httpx.ConnectError, httpx.ConnectTimeout)):
        return True  # the request never reached the dashboard
    # The request may have reached it: tried again only when doing so twice does no harm.
    return idempotent and isinstance(err, (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError))


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


class _Tries:
    """What both clients do after one try of a call."""

    endpoint: JobsEndpoint
    _answered = False  # whether the dashboard has answered this client once

    def _settle(self, retries: _Retries, outcome: Any, idempotent: bool, what: str) -> float | None:
        """``None`` when ``outcome`` (a response) is the call's answer, else the seconds to wait
        before the next try.

        :raises RayConnectionError: when the call cannot succeed (TLS refused, the request may
            have reached the dashboard and is not safe to send again, or time is up).
        """
        import httpx

        if isinstance(outcome, httpx.HTTPError):
            tls = _tls_failure(outcome)
            if tls is not None:
                raise _untrusted(self.endpoint, tls, what) from outcome
            if not _retryable(outcome, idempotent):
                raise _unreachable(self.endpoint, outcome, what) from outcome
        elif outcome.status_code not in RETRY_STATUSES:
            self._answered = True
            return None
        wait = retries.wait(outcome, self._answered, what)
        if wait is None and isinstance(outcome, Exception):
            raise _unreachable(self.endpoint, outcome, what) from outcome
        return wait


class JobsClient(_Tries):
    """Blocking calls, for the Airflow worker."""

    def __init__(self, endpoint: JobsEndpoint) -> None:
        import httpx

        self.endpoint = endpoint
        self._http = httpx.Client(
            base_url=endpoint.url, headers=endpoint.headers(), timeout=_timeout(), verify=endpoint.tls()
        )

    def _call(self, method: str, path: str, what: str, idempotent: bool = True, **kwargs: Any) -> Any:
        import httpx

        retries = _Retries(self.endpoint)
        while True:
            outcome: Any
            try:
                outcome = self._http.request(method, path, **kwargs)
            except httpx.HTTPError as err:
                outcome = err
            wait = self._settle(retries, outcome, idempotent, what)
            if wait is None:
                return outcome
            time.sleep(wait)

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
        submission_id = request.get("submission_id")
        what = f"submitting job {submission_id}"
        response = self._call("POST", "/api/jobs/", what, idempotent=False, json=request)
        if (
            response.status_code == 400
            and submission_id
            and "already exists" in response.text
            and (self.info(str(submission_id)) or {}).get("entrypoint") == request.get("entrypoint")
        ):
            # A try that a proxy's 502/504 answered reached the dashboard after all.
            return str(submission_id)
        return str(_json(self.endpoint, _check(self.endpoint, response, what), what)["submission_id"])

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


class AsyncJobsClient(_Tries):
    """Non-blocking calls, for the triggerer's event loop."""

    def __init__(self, endpoint: JobsEndpoint) -> None:
        import httpx

        self.endpoint = endpoint
        self._http = httpx.AsyncClient(
            base_url=endpoint.url, headers=endpoint.headers(), timeout=_timeout(), verify=endpoint.tls()
        )

    async def _call(self, method: str, path: str, what: str) -> Any:
        import httpx

        retries = _Retries(self.endpoint)
        while True:
            outcome: Any
            try:
                outcome = await self._http.request(method, path)
            except httpx.HTTPError as err:
                outcome = err
            wait = self._settle(retries, outcome, True, what)
            if wait is None:
                return outcome
            await asyncio.sleep(wait)

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

    async def log_tail(self, submission_id: str, skip: int) -> AsyncIterator[str]:
        """The job's log as it grows, from its start less its first ``skip`` characters, over
        the Jobs API's own tail (the websocket ``/api/jobs/<id>/logs/tail`` that
        ``ray job logs --follow`` reads). Text as :meth:`logs` reads it, so ``skip`` counts the
        same characters. It ends once the job has ended and all its log is sent.

        :raises RayConnectionError: the dashboard (or a proxy before it) refused the websocket,
            or it broke; the caller reads the whole log instead.
        """
        import aiohttp  # a dependency of ray[default], which the package requires

        what = f"following the log of job {submission_id}"
        tls = self.endpoint.tls()
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT)
        try:
            async with (
                aiohttp.ClientSession(headers=self.endpoint.headers(), timeout=timeout) as session,
                session.ws_connect(
                    f"{self.endpoint.url}/api/jobs/{submission_id}/logs/tail",
                    ssl=tls if isinstance(tls, ssl.SSLContext) else bool(tls),
                    # Pings keep a quiet job's websocket open through a proxy's read timeout.
                    heartbeat=20.0,
                ) as websocket,
            ):
                async for message in websocket:
                    if message.type is aiohttp.WSMsgType.ERROR:
                        raise RayConnectionError(f"{what} broke: {websocket.exception()!r}")
                    if message.type is not aiohttp.WSMsgType.TEXT:
                        continue
                    text: str = message.data
                    if skip:
                        text, skip = text[skip:], max(0, skip - len(text))
                    if text:
                        yield text
        except aiohttp.WSServerHandshakeError as err:
            raise RayConnectionError(
                f"The Ray Jobs API of {self.endpoint.where} answered {err.status} to {what}: {err.message}"
            ) from err
        except (aiohttp.ClientError, TimeoutError) as err:
            raise _unreachable(self.endpoint, err, what) from err

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
