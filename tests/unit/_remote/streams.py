"""Helpers of the tests of what runs in the cluster."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any


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


class FakeOwner:
    """Stands for the owner actor of a call: keeps what the task sends to ``output.remote``."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.output = self

    def remote(self, call_id: str, seq: int, text: str) -> None:
        assert call_id == CALL_ID
        assert seq == len(self.texts)  # numbered in the order sent
        self.texts.append(text)


CALL_ID = "1-test"


def stream(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], *rest: Any, **options: Any) -> list[Any]:
    """The task body's items, run here, with the output it sent to its owner first (as
    ``("output", text)`` items, as the owner shows them to a poll)."""
    owner = FakeOwner()
    from airflow_ray._remote import task

    items = list(task.run_streaming(fn, args, kwargs, *rest, report=(owner, CALL_ID), **options))
    return [("output", text) for text in owner.texts] + items
