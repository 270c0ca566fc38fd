"""What runs inside the Ray worker: the callable, its output streamed back as it is produced.

The task is a Ray streaming generator. It yields the events of
:mod:`airflow_ray._remote.protocol`, as wire tuples, in order:

- :class:`~.protocol.Output` for what the callable printed or logged, every ``FLUSH_INTERVAL``
  seconds while it runs;
- then either :class:`~.protocol.Failure` (the exception pickled, and the remote traceback), or
  :class:`~.protocol.Returned` followed by the return value itself as the generator's last
  item, so the caller can keep that value in the cluster without fetching it. With
  ``split_dict`` and a dict result, each value follows as an item of its own, in key order.

Inputs that are already in the cluster arrive as extra positional task arguments (so Ray
resolves them here, zero-copy where it can); :func:`~.protocol.ref_slot` markers in ``args``
and ``kwargs`` say where each one goes.
"""

from __future__ import annotations

import asyncio
import inspect
import io
import logging
import pickle
import queue
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from airflow_ray._remote.protocol import Failure, Output, Returned, fill_slots, ref_slot

__all__ = ["FLUSH_INTERVAL", "describe", "ref_slot", "run_streaming"]

FLUSH_INTERVAL = 0.2
_MAX_CHUNK = 256 * 1024


class _StreamTee(io.TextIOBase):
    """A text stream that writes through to ``target`` and copies everything into ``sink``."""

    def __init__(self, target: Any, sink: queue.SimpleQueue[str]) -> None:
        self._target = target
        self._sink = sink

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if text:
            self._sink.put(text)
            try:
                self._target.write(text)
            except (OSError, ValueError):
                pass  # the worker's log file is not ours to fail on
        return len(text)

    def flush(self) -> None:
        try:
            self._target.flush()
        except (OSError, ValueError):
            pass

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"


class _QueueLogHandler(logging.Handler):
    def __init__(self, sink: queue.SimpleQueue[str]) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self._sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._sink.put(self.format(record) + "\n")
        except Exception:  # noqa: BLE001 - logging must never break the callable
            self.handleError(record)


def _drain(sink: queue.SimpleQueue[str], wait: float) -> str:
    parts: list[str] = []
    try:
        parts.append(sink.get(timeout=wait) if wait > 0 else sink.get_nowait())
        size = len(parts[0])
        while size < _MAX_CHUNK:
            part = sink.get_nowait()
            parts.append(part)
            size += len(part)
    except queue.Empty:
        pass
    return "".join(parts)


def _pickled_exception(error: BaseException) -> bytes | None:
    """The exception, pickled by the same pickler Ray uses, or ``None`` if it cannot be."""
    try:
        import ray.cloudpickle as cloudpickle

        return cloudpickle.dumps(error)
    except Exception:  # noqa: BLE001 - any pickling failure means: send the traceback only
        try:
            return pickle.dumps(error)
        except Exception:  # noqa: BLE001 - same
            return None


def describe(value: Any) -> dict[str, Any]:
    """A small, readable description of a value: type, size in bytes, shape, rows, columns."""
    kind = type(value)
    meta: dict[str, Any] = {"type": f"{kind.__module__}.{kind.__qualname__}".removeprefix("builtins.")}
    try:
        if hasattr(value, "nbytes") and hasattr(value, "shape") and hasattr(value, "dtype"):  # numpy
            meta.update(size_bytes=int(value.nbytes), shape=list(value.shape), dtype=str(value.dtype))
        elif hasattr(value, "num_rows") and hasattr(value, "column_names"):  # pyarrow Table / RecordBatch
            meta.update(
                size_bytes=int(value.nbytes), rows=int(value.num_rows), columns=list(value.column_names)
            )
        elif hasattr(value, "memory_usage") and hasattr(value, "columns"):  # pandas DataFrame
            meta.update(
                size_bytes=int(value.memory_usage(index=True, deep=False).sum()),
                rows=len(value),
                columns=[str(c) for c in value.columns],
            )
        elif isinstance(value, (bytes, bytearray, memoryview)):
            meta.update(size_bytes=len(value))
        else:
            sizes: list[int] = []
            head = pickle.dumps(value, protocol=5, buffer_callback=lambda buf: sizes.append(buf.raw().nbytes))
            meta.update(size_bytes=len(head) + sum(sizes))
            if isinstance(value, (list, tuple, dict, set, str)):
                meta["length"] = len(value)
    except Exception:  # noqa: BLE001 - a description is best effort, never a failure
        meta.setdefault("size_bytes", None)
    return meta


def run_streaming(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    split_dict: bool = False,
    *inputs: Any,
) -> Iterator[Any]:
    """Run ``fn(*args, **kwargs)`` and stream its output; the Ray task body."""
    if inputs:
        args, kwargs = fill_slots(args, inputs), fill_slots(kwargs, inputs)
    sink: queue.SimpleQueue[str] = queue.SimpleQueue()
    outcome: dict[str, Any] = {}

    def _call() -> None:
        try:
            value = fn(*args, **kwargs)
            if inspect.iscoroutine(value):
                value = asyncio.run(value)
            outcome["value"] = value
        except BaseException as error:  # noqa: BLE001 - everything goes back to Airflow
            outcome["error"] = error
            # Drop this wrapper's own frame: the traceback starts in the user's code.
            outcome["traceback"] = "".join(
                traceback.format_exception(
                    type(error), error, error.__traceback__ and error.__traceback__.tb_next
                )
            )

    saved_stdout, saved_stderr = sys.stdout, sys.stderr
    root = logging.getLogger()
    saved_level = root.level
    handler = _QueueLogHandler(sink)
    sys.stdout = _StreamTee(saved_stdout, sink)
    sys.stderr = _StreamTee(saved_stderr, sink)
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    try:
        worker = threading.Thread(target=_call, name="airflow-ray-callable", daemon=True)
        worker.start()
        while worker.is_alive():
            worker.join(FLUSH_INTERVAL)
            text = _drain(sink, 0)
            while text:
                yield Output(text).to_wire()
                text = _drain(sink, 0)
    finally:
        sys.stdout, sys.stderr = saved_stdout, saved_stderr
        root.removeHandler(handler)
        root.setLevel(saved_level)
    text = _drain(sink, 0)
    while text:
        yield Output(text).to_wire()
        text = _drain(sink, 0)
    if "error" in outcome:
        yield Failure(_pickled_exception(outcome["error"]), outcome["traceback"]).to_wire()
        return
    value = outcome["value"]
    if split_dict and isinstance(value, dict) and all(isinstance(key, str) for key in value):
        yield Returned(describe(value), {key: describe(item) for key, item in value.items()}).to_wire()
        for item in value.values():  # noqa: UP028 - Ray sends into the generator; a dict iterator cannot take it
            yield item
        return
    yield Returned(describe(value)).to_wire()
    yield value
