"""Streamed output of a Ray task, as task-log records."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


class LineLogger:
    """Turns streamed chunks of output into one task-log record per line."""

    def __init__(self, log: Any) -> None:
        self._log = log
        self._partial = ""

    def write(self, text: str) -> None:
        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            self._log.info("%s", line.rstrip("\r"))

    def close(self) -> None:
        if self._partial:
            self._log.info("%s", self._partial)
            self._partial = ""

    @classmethod
    @contextlib.contextmanager
    def to(cls, log: Any) -> Iterator[LineLogger]:
        """A line logger whose last partial line is logged when the block ends."""
        lines = cls(log)
        try:
            yield lines
        finally:
            lines.close()
