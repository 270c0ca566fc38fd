"""Waiting on an event with a generous deadline, instead of a fixed sleep or a wall-clock bound.

A loaded machine (two cores, a second CPU-bound process beside the tests) makes everything
slower; what a test checks is that the event happens, and in what order, not how fast.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T], timeout: float, what: str | Callable[[], str], every: float = 0.5
) -> T:
    """Poll ``condition()`` until it returns something true; that value.

    :param what: what was waited for (or a function saying it, with logs), for the failure message.
    :raises AssertionError: ``timeout`` seconds passed first.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what() if callable(what) else what}")
        time.sleep(every)


def wait_until_still(count: Callable[[], int], quiet: float, timeout: float, what: str) -> int:
    """Poll ``count()`` until it has not changed for ``quiet`` seconds; its last value.

    :raises AssertionError: it still changed after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    last, since = count(), time.monotonic()
    while time.monotonic() - since < quiet:
        assert time.monotonic() < deadline, f"{what} still changed after {timeout:.0f} s ({last})"
        time.sleep(0.2)
        now = count()
        if now != last:
            last, since = now, time.monotonic()
    return last
