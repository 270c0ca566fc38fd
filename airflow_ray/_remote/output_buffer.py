"""``OutputBuffer``: one call's output, held by the owner actor until its Airflow task reads it.

The owner actor lives on the head node and holds the output of every call it follows, for as
long as the call is followed and up to ``FINISHED_CALL_TTL`` after it ends (a retry that
reconnects reads it again from the start). A chatty callable must not grow the head's memory
without end, so each call keeps only its newest :data:`OUTPUT_BUFFER_BYTES`: the oldest chunks
are dropped, and a reader that had not read them gets one marker line instead, saying how many
lines and bytes it missed.

Offsets are what :meth:`OutputBuffer.read` hands out: chunk counts since the call started, so a
dropped chunk never shifts a reader's place.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from itertools import islice

OUTPUT_BUFFER_BYTES = 4 * 1024 * 1024
"""The most output (UTF-8 bytes) one call keeps. The Airflow task reads new output about once a
second, so this only bounds what a reader that fell behind, or a retry that reconnects and reads
from the start, can still get; a hundred calls in flight hold at most 400 MiB of the head's
memory."""

_MARKS = 16  # offsets handed out whose position is remembered (one or two readers per call)


class OutputBuffer:
    """The newest output of one call, read from offsets.

    :param limit: the most UTF-8 bytes kept (:data:`OUTPUT_BUFFER_BYTES`).
    """

    def __init__(self, limit: int = OUTPUT_BUFFER_BYTES) -> None:
        self.limit = limit
        # (text, its bytes, and the lines and bytes it stands for: more than the text where a
        # chunk too large to keep whole was cut at append)
        self._chunks: deque[tuple[str, int, int, int]] = deque()
        self._first = 0  # offset of the oldest chunk kept
        self._kept = 0  # bytes of the chunks kept
        self._dropped = (0, 0)  # lines and bytes before the oldest chunk kept
        self._written = (0, 0)  # lines and bytes written in all
        # Where in the output (lines, bytes) each recently handed-out offset stood, so that a
        # reader whose place was dropped is told exactly what it missed.
        self._marks: OrderedDict[int, tuple[int, int]] = OrderedDict()

    @property
    def end(self) -> int:
        """The offset after the newest chunk."""
        return self._first + len(self._chunks)

    def __len__(self) -> int:
        return self.end

    def append(self, text: str) -> None:
        """Add a chunk of output; drop the oldest chunks while more than ``limit`` is kept."""
        data = text.encode("utf-8", "surrogatepass")
        lines, size = text.count("\n"), len(data)
        if size > self.limit:
            # One chunk larger than the whole buffer: keep its newest lines, from a line start.
            tail = data[size - self.limit // 2 :]
            cut = tail.find(b"\n") + 1
            kept = (
                tail[cut:].decode("utf-8", "ignore")
                if 0 < cut < len(tail)
                else tail.decode("utf-8", "ignore")
            )
            gone = data[: size - len(kept.encode("utf-8", "surrogatepass"))]
            text = marker(gone.count(b"\n"), len(gone), self.limit) + kept
        self._chunks.append((text, len(text.encode("utf-8", "surrogatepass")), lines, size))
        self._kept += self._chunks[-1][1]
        self._written = (self._written[0] + lines, self._written[1] + size)
        while self._kept > self.limit and len(self._chunks) > 1:
            _, kept_size, lines, size = self._chunks.popleft()
            self._kept -= kept_size
            self._first += 1
            self._dropped = (self._dropped[0] + lines, self._dropped[1] + size)

    def read(self, offset: int) -> tuple[list[str], int]:
        """The chunks from ``offset`` on, and the offset to read from next.

        ``offset`` is 0 or one that an earlier read returned. When the chunks from there were
        dropped, the first chunk returned is a marker line saying how many lines and bytes.
        """
        start = max(offset, 0)
        if start < self._first:
            seen = (0, 0) if start == 0 else self._marks.get(start, (0, 0))
            missed = (self._dropped[0] - seen[0], self._dropped[1] - seen[1])
            chunks = [marker(*missed, self.limit), *(chunk[0] for chunk in self._chunks)]
        else:
            chunks = [chunk[0] for chunk in islice(self._chunks, start - self._first, None)]
        end = self.end
        self._marks[end] = self._written
        self._marks.move_to_end(end)
        while len(self._marks) > _MARKS:
            self._marks.popitem(last=False)
        return chunks, end


def marker(lines: int, size: int, limit: int) -> str:
    """The line that stands where output was dropped."""
    return (
        f"[airflow-ray] {lines} line(s), {_human(size)}, of this task's output were dropped here: "
        f"the Ray cluster keeps only the newest {_human(limit)} of a task's output for Airflow to read.\n"
    )


def _human(size: int) -> str:
    if size < 1024:
        return f"{size} bytes"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KiB"
    return f"{size / 1024**2:.1f} MiB"
