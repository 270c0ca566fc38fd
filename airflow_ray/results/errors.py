"""How failures of checkpoint reads and writes that ran in the cluster reach the user."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from airflow_ray._remote.protocol import is_refusal
from airflow_ray.exceptions import RayCheckpointIntegrityError


@contextlib.contextmanager
def checkpoint_refusals() -> Iterator[None]:
    """Turn a checkpoint the cluster refused (it does not match its manifest) into
    :class:`~airflow_ray.exceptions.RayCheckpointIntegrityError`."""
    try:
        yield
    except ValueError as err:
        if is_refusal(err):
            raise RayCheckpointIntegrityError(str(err)) from err
        raise
