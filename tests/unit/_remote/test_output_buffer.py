"""Each call's output is bounded: the oldest chunks go, and a reader is told what it missed."""

from __future__ import annotations

import re

from airflow_ray._remote.output_buffer import OUTPUT_BUFFER_BYTES, OutputBuffer


def missed(chunk: str) -> tuple[int, str]:
    """The lines and the size a marker line reports."""
    found = re.fullmatch(
        r"\[airflow-ray\] (\d+) line\(s\), (.+?), of this task's output were dropped here: .*\n", chunk
    )
    assert found, chunk
    return int(found[1]), found[2]


def test_the_bound_has_a_reason_and_is_the_default():
    assert OutputBuffer().limit == OUTPUT_BUFFER_BYTES == 4 * 1024 * 1024


def test_output_under_the_bound_reads_back_whole_from_any_offset():
    buffer = OutputBuffer(limit=100)
    for text in ("a\n", "b\n", "c\n"):
        buffer.append(text)
    assert buffer.read(0) == (["a\n", "b\n", "c\n"], 3)
    assert buffer.read(2) == (["c\n"], 3)
    assert buffer.read(3) == ([], 3)
    assert buffer.read(1 << 62) == ([], 3)  # the driver's "only the state, please"


def test_the_oldest_chunks_are_dropped_and_a_reader_from_the_start_gets_one_marker():
    buffer = OutputBuffer(limit=100)
    for n in range(30):
        buffer.append(f"line {n:02d}\n")  # 8 bytes each
    chunks, end = buffer.read(0)
    assert end == 30 and len(buffer) == 30
    kept = chunks[1:]
    assert kept == [f"line {n:02d}\n" for n in range(18, 30)]  # 12 x 8 = 96 bytes <= 100
    assert missed(chunks[0]) == (18, "144 bytes")
    assert "keeps only the newest 100 bytes" in chunks[0]


def test_a_reader_that_fell_behind_is_told_only_what_it_had_not_read():
    buffer = OutputBuffer(limit=100)
    for n in range(5):
        buffer.append(f"line {n:02d}\n")
    _, offset = buffer.read(0)
    assert offset == 5
    for n in range(5, 40):
        buffer.append(f"line {n:02d}\n")
    chunks, end = buffer.read(offset)
    assert end == 40
    assert chunks[1:] == [f"line {n:02d}\n" for n in range(28, 40)]
    assert missed(chunks[0]) == (23, "184 bytes")  # lines 5 to 27; the first five it had read
    assert buffer.read(end) == ([], 40)  # and nothing more once it caught up


def test_a_reader_whose_place_is_kept_gets_no_marker():
    buffer = OutputBuffer(limit=100)
    for n in range(20):
        buffer.append(f"line {n:02d}\n")
    assert buffer.read(18) == (["line 18\n", "line 19\n"], 20)


def test_one_chunk_larger_than_the_bound_keeps_its_newest_lines_from_a_line_start():
    buffer = OutputBuffer(limit=1000)
    buffer.append("".join(f"row {n:04d}\n" for n in range(1000)))  # 9 bytes a line
    (chunk,), end = buffer.read(0)
    assert end == 1
    marker, rest = chunk.split("\n", 1)
    lines, size = missed(marker + "\n")
    kept = rest.splitlines()
    assert kept[-1] == "row 0999" and kept[0] == f"row {1000 - len(kept):04d}"
    assert lines == 1000 - len(kept) and size == f"{9 * lines / 1024:.1f} KiB"
    assert len(chunk.encode()) <= 1000


def test_sizes_count_utf8_bytes():
    buffer = OutputBuffer(limit=10)
    buffer.append("é" * 4 + "\n")  # 9 bytes
    buffer.append("ü" * 4 + "\n")  # 9 more: the first goes
    chunks, _ = buffer.read(0)
    assert missed(chunks[0]) == (1, "9 bytes") and chunks[1:] == ["ü" * 4 + "\n"]
