"""Streamed output of a Ray task, as task-log records."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from typing import Any

# A record of the callable's own logging, as the Ray task formats it: "<LEVEL> <logger>: <message>"
# (``_remote/task.py``). Its level becomes the task-log record's, so that it is printed once.
_LEVELLED = re.compile(r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL) (\S+: .*)$", re.DOTALL)


def log_line(log: Any, line: str) -> None:
    """Log one line of a Ray task's output: a logging record at its own level, without the
    level in its text; anything else (``print``) at INFO."""
    match = _LEVELLED.match(line)
    if match is None:
        log.info("%s", line)
        return
    log.log(logging.getLevelName(match.group(1)), "%s", match.group(2))


class LineLogger:
    """Turns streamed chunks of output into one task-log record per line."""

    def __init__(self, log: Any) -> None:
        self._log = log
        self._partial = ""

    def write(self, text: str) -> None:
        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            log_line(self._log, line.rstrip("\r"))

    def close(self) -> None:
        if self._partial:
            log_line(self._log, self._partial)
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
