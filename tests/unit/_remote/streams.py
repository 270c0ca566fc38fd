"""Helpers of the tests of what runs in the cluster."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def worker_streams() -> Iterator[None]:
    """``sys.stdout`` and ``sys.stderr`` written straight to descriptors 1 and 2, line-buffered, as
    in a Ray worker. Set inside a test, not by a fixture: pytest puts its own capture streams back
    between a test's phases, and those write around the descriptors."""
    saved = sys.stdout, sys.stderr
    with open(1, "w", buffering=1, closefd=False) as out, open(2, "w", buffering=1, closefd=False) as err:
        sys.stdout, sys.stderr = out, err
        try:
            yield
        finally:
            sys.stdout, sys.stderr = saved
