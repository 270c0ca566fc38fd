"""Every Airflow- and Ray-version difference, and every use of a private Ray API, in one place."""

from __future__ import annotations

import os
from typing import Any

# Airflow 3.3's crash-safe reconnect: the Ray task's id is kept in the task state store, and a
# retry after the worker died follows that task instead of starting it again.
from airflow.sdk.bases.resumablejobmixin import ResumableJobMixin

__all__ = ["ResumableJobMixin", "gcs_session_name", "use_ray_token"]

RAY_AUTH_MODE_ENV = "RAY_AUTH_MODE"
RAY_AUTH_TOKEN_ENV = "RAY_AUTH_TOKEN"
RAY_AUTH_TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"


def use_ray_token(token: str | None) -> None:
    """Make this process present ``token`` to Ray (token authentication, on by default since 2.5x).

    Ray reads the token from the environment and caches it in C++; the cache must be reset when a
    process (``dag.test()`` runs every task in one) moves between clusters with different tokens.
    ``None`` leaves Ray's own discovery (``~/.ray/auth_token``) in place.
    """
    if token is None:
        return
    os.environ[RAY_AUTH_MODE_ENV] = "token"
    os.environ[RAY_AUTH_TOKEN_ENV] = token
    os.environ.pop(RAY_AUTH_TOKEN_PATH_ENV, None)
    from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def gcs_session_name(gcs_address: str, timeout: float) -> str:
    """Ask the GCS at ``gcs_address`` for its session name: a cheap, authenticated round trip.

    Raises ``ray.exceptions.AuthenticationError`` for a wrong or missing token and another
    exception when no GCS answers within ``timeout`` seconds.
    """
    from ray._raylet import GcsClient  # type: ignore[attr-defined]

    client: Any = GcsClient(address=gcs_address)
    value = client.internal_kv_get(b"session_name", b"session", timeout=timeout)
    return value.decode() if value else ""
