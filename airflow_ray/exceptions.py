"""Errors raised by airflow_ray.

Every message says what failed, shows the value that made it fail, and says what to do.
"""

from __future__ import annotations

from airflow.sdk.exceptions import AirflowException


class AirflowRayError(AirflowException):
    """Base class of every error raised by airflow_ray."""


class RayConfigurationError(AirflowRayError, ValueError):
    """A connection field, operator argument or ``[ray]`` setting has a value we cannot use."""


class RayConnectionError(AirflowRayError, ConnectionError):
    """The Ray cluster named by a connection could not be reached or refused us."""


class EmbeddedClusterError(AirflowRayError):
    """The embedded local Ray head could not be started, found or stopped."""


class RayTaskFailedError(AirflowRayError):
    """The Ray task running the callable failed outside the callable (worker crash, OOM, cancel)."""


class RayScheduleTimeoutError(RayTaskFailedError):
    """A Ray task did not start within ``[ray] schedule_timeout`` (no node for it came up)."""


class RemoteCallableError(AirflowRayError):
    """The callable raised inside Ray and its exception could not be re-raised as itself.

    The remote traceback is part of the message.
    """


class RayObjectLostError(AirflowRayError):
    """An XCom reference points to an object that is no longer in the Ray cluster."""


class RayInputsMissingError(RayObjectLostError):
    """Inputs of a Ray task were not in the cluster when its job started.

    :param pins: their pin keys (the caller restores them from their checkpoints).
    """

    def __init__(self, message: str, pins: list[str]) -> None:
        super().__init__(message)
        self.pins = pins


class RayResultTooLargeError(AirflowRayError):
    """A result too large to travel to a task that is not a Ray task through the Jobs API."""


class RayCheckpointError(AirflowRayError):
    """A checkpoint could not be written to, found in or read from S3."""


class RayCheckpointIntegrityError(RayCheckpointError):
    """A checkpoint does not match its manifest (or may not be unpickled from where it is).

    It is refused, never loaded.
    """
