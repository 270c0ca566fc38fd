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
import codecs
import importlib.util
import inspect
import json
import logging
import os
import pickle
import queue
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from airflow_ray._remote.protocol import ExceptionRecipe, Failure, Output, Returned, fill_slots, ref_slot

__all__ = ["FLUSH_INTERVAL", "describe", "pickle_exception", "ref_slot", "run_streaming"]

FLUSH_INTERVAL = 0.2
MIN_FLUSH_GAP = 0.01
_MAX_CHUNK = 256 * 1024
_READER_GRACE = 2.0
_PRUNE_AT = 64  # output calls in flight before the sender forgets those that have run


class _Sink(queue.SimpleQueue[str]):
    """Output waiting to be sent; a put wakes the sender."""

    def __init__(self, wake: threading.Event) -> None:
        super().__init__()
        self.wake = wake

    def put(self, item: str, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self.wake.set()


class _FdCapture:
    """While open, what the process writes to its file descriptors 1 and 2 goes into ``sink``
    as well as where it went before (the Ray worker's log files).

    Captured below Python (``print``, logging's stream handlers, C libraries and child processes
    alike), so ``sys.stdout`` and ``sys.stderr`` stay the objects the user's code sees. Both
    descriptors share one pipe, which keeps their lines in the order they were written; a reader
    thread forwards what arrives. The reader never writes to 1 or 2 itself: that would feed its
    own pipe.
    """

    _FDS = (1, 2)

    def __init__(self, sink: queue.SimpleQueue[str]) -> None:
        self._sink = sink
        self._saved: dict[int, int] = {}
        self._reader: threading.Thread | None = None

    def __enter__(self) -> _FdCapture:
        _flush_std_streams()
        read_end, write_end = os.pipe()
        echo = os.dup(1)  # the reader's own copy: it outlives the capture if a child keeps the pipe
        self._saved = {fd: os.dup(fd) for fd in self._FDS}
        for fd in self._FDS:
            os.dup2(write_end, fd)
        os.close(write_end)
        self._reader = threading.Thread(
            target=self._forward, args=(read_end, echo), name="airflow-ray-output", daemon=True
        )
        self._reader.start()
        return self

    def _forward(self, read_end: int, echo: int) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        try:
            while True:
                try:
                    data = os.read(read_end, _MAX_CHUNK)
                except InterruptedError:
                    continue
                except OSError:
                    break
                if not data:
                    break
                try:
                    os.write(echo, data)
                except OSError:
                    pass  # the worker's log file is not ours to fail on
                text = decoder.decode(data)
                if text:
                    self._sink.put(text)
            text = decoder.decode(b"", final=True)
            if text:
                self._sink.put(text)
        finally:
            os.close(read_end)
            os.close(echo)

    def __exit__(self, *exc: object) -> None:
        _flush_std_streams()
        for fd, saved in self._saved.items():
            os.dup2(saved, fd)  # closes the pipe's write end that fd held
            os.close(saved)
        # The reader ends once the pipe has no writer left. A child process of the callable that
        # still runs keeps one: its later output then goes on to the worker's log only.
        if self._reader is not None:
            self._reader.join(_READER_GRACE)


def _flush_std_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass  # a closed or replaced stream is the user's


class _CapturedLogHandler(logging.Handler):
    """Writes each record, as ``LEVEL name: message``, to descriptor 2: into the capture, in
    order with what was printed around it (the operator reads the prefix back as the level)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = (self.format(record) + "\n").encode("utf-8", "replace")
            while data:
                data = data[os.write(2, data) :]
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


# Keys of a connection's extra whose values Airflow's log masker hides too.
_SENSITIVE = ("password", "passwd", "secret", "token", "private_key", "api_key", "apikey", "authorization")


def connection_secrets(environ: dict[str, str]) -> list[str]:
    """The secrets of the connections in ``environ`` (``AIRFLOW_CONN_<ID>`` as JSON): passwords
    and sensitive values of their extras, longest first."""
    found: set[str] = set()

    def collect(node: Any, sensitive: bool) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                collect(value, sensitive or any(word in str(key).lower() for word in _SENSITIVE))
        elif isinstance(node, list):
            for value in node:
                collect(value, sensitive)
        elif sensitive and isinstance(node, str) and len(node) >= 4:
            found.add(node)

    for name, value in environ.items():
        if not name.startswith("AIRFLOW_CONN_"):
            continue
        try:
            document = json.loads(value)
        except ValueError:
            continue
        if isinstance(document, dict):
            extra = document.get("extra")
            if isinstance(extra, str):
                try:
                    extra = json.loads(extra)
                except ValueError:
                    extra = {}
            collect({"password": document.get("password"), "extra": extra}, False)
    return sorted(found, key=len, reverse=True)


def masked(text: str, secrets: list[str]) -> str:
    """``text`` with each of ``secrets`` replaced by ``***``, as Airflow masks its task logs."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def _dumps(value: Any) -> bytes:
    """``value`` pickled as Ray pickles it (cloudpickle: classes of the DAG file travel by value)."""
    try:
        import ray.cloudpickle as cloudpickle
    except ImportError:  # only in unit tests without Ray
        return pickle.dumps(value)
    return bytes(cloudpickle.dumps(value))


def pickle_exception(error: BaseException) -> bytes | None:
    """The exception, pickled so that the Airflow side gets it back as its own class, or ``None``.

    Pickle rebuilds an exception by calling its class with ``error.args``, which fails for a
    class whose ``__init__`` takes other arguments. When that round trip fails here, what is sent
    is a recipe instead (:func:`~.protocol.rebuild_exception`: the class, ``args`` and the
    attributes that pickle), which builds the exception without calling ``__init__``.
    """
    try:
        data = _dumps(error)
        pickle.loads(data)  # the round trip the Airflow side will make
        return data
    except Exception:  # noqa: BLE001 - any failure means: try the recipe
        pass
    state = {}
    for name, attribute in getattr(error, "__dict__", {}).items():
        try:
            _dumps(attribute)
        except Exception:  # noqa: BLE001 - an attribute that cannot travel stays behind
            continue
        state[name] = attribute
    try:
        data = _dumps(ExceptionRecipe(type(error), tuple(error.args), state))
        pickle.loads(data)
        return data
    except Exception:  # noqa: BLE001 - the Airflow side gets the traceback and the class name
        return None


def _type_name(value: Any) -> str:
    kind = type(value)
    return f"{kind.__module__}.{kind.__qualname__}".removeprefix("builtins.")


def describe(value: Any) -> dict[str, Any]:
    """A small, readable description of a value: type, size in bytes, shape, rows, columns."""
    meta: dict[str, Any] = {"type": _type_name(value)}
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
            meta.update(size_bytes=_pickled_size(value))
            if isinstance(value, (list, tuple, dict, set, str)):
                meta["length"] = len(value)
    except UnstorableResultError:
        raise
    except Exception:  # noqa: BLE001 - a description is best effort, never a failure
        meta.setdefault("size_bytes", None)
    return meta


class UnstorableResultError(TypeError):
    """The callable returned a value that Ray cannot store (it does not pickle)."""


def _pickled_size(value: Any) -> int:
    """The size of ``value`` pickled (buffers out of band, not copied).

    :raises UnstorableResultError: naming the type that does not pickle, with Ray's pickler either.
    """
    sizes: list[int] = []

    def count(buffer: Any) -> None:
        sizes.append(buffer.raw().nbytes)

    try:
        head = pickle.dumps(value, protocol=5, buffer_callback=count)
    except Exception:  # noqa: BLE001 - cloudpickle takes lambdas, local classes, ...
        sizes.clear()
        try:
            import ray.cloudpickle as cloudpickle

            head = cloudpickle.dumps(value, protocol=5, buffer_callback=count)
        except Exception as err:  # noqa: BLE001 - whatever fails here fails Ray's store too
            raise UnstorableResultError(
                f"The callable returned a {_type_name(value)} that cannot be stored in Ray: {err}. "
                f"Return plain data (numbers, strings, lists, dicts, arrays, DataFrames); open files, "
                f"locks, sockets, clients and sessions must stay inside the callable."
            ) from None
    return len(head) + sum(sizes)


def missing_packages(names: list[str]) -> list[str]:
    """Which of the importable package ``names`` this Python lacks."""
    return [name for name in names if importlib.util.find_spec(name) is None]


class _OutputSender(threading.Thread):
    """Sends captured output to the owner actor while the callable holds the task's own thread.

    A streaming task's items can only be yielded by the thread that runs the task, which is busy
    with the callable; so output goes to ``owner.output.remote(call_id, seq, text)`` from here.
    An async actor runs one caller's calls in no set order (two lines 10 ms apart were seen
    swapped), so each chunk carries its number and the owner puts them back in order.
    """

    def __init__(
        self, report: tuple[Any, str], sink: queue.SimpleQueue[str], wake: threading.Event, secrets: list[str]
    ) -> None:
        super().__init__(name="airflow-ray-output-sender", daemon=True)
        self._owner, self._call_id = report
        self._sink = sink
        self._wake = wake
        self._secrets = secrets
        self._done = threading.Event()
        self._sent = 0  # chunks sent: the number of the next one
        self._pending: list[Any] = []  # refs of the calls not known to have run yet

    def run(self) -> None:
        # done is read before each wait and after it: finish() sets it, then wake, so the last
        # send never waits out a FLUSH_INTERVAL (a trivial task took 0.2 s more when it did).
        while not self._done.is_set():
            if self._wake.wait(FLUSH_INTERVAL) and not self._done.is_set():
                time.sleep(MIN_FLUSH_GAP)  # the rest of a line written in parts
            self._wake.clear()
            self._send_pending()
        self._send_pending()

    def _send_pending(self) -> None:
        text = _drain(self._sink, 0)
        while text:
            try:
                ref = self._owner.output.remote(self._call_id, self._sent, masked(text, self._secrets))
            except Exception:  # noqa: BLE001 - output is best effort; the callable's result is not
                pass
            else:
                self._sent += 1  # a number that was never sent would hold back all after it
                if ref is not None:
                    self._pending.append(ref)
            text = _drain(self._sink, 0)
        if len(self._pending) >= _PRUNE_AT:
            import ray

            _, self._pending = ray.wait(self._pending, num_returns=len(self._pending), timeout=0)

    def finish(self, timeout: float = 30.0) -> None:
        """Send what is left, and return once the owner has taken all of it (so that what the
        task yields after comes after it)."""
        self._done.set()
        self._wake.set()
        self.join()
        if self._pending:
            import ray

            try:
                ray.get(self._pending, timeout=timeout)
            except Exception:  # noqa: BLE001 - as above: the result still goes back
                pass


def run_streaming(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    split_dict: bool = False,
    *inputs: Any,
    requires: tuple[tuple[str, str], ...] = (),
    environ: dict[str, str] | None = None,
    report: tuple[Any, str],
) -> Iterator[Any]:
    """Run ``fn(*args, **kwargs)`` and stream its output; the Ray task body.

    :param requires: ``(package, what needs it)`` pairs checked before the callable runs: a
        missing package fails the task at once instead of after the callable's work.
    :param environ: environment variables set only while the callable runs (the Airflow
        connections its task names); what they were before is put back after it.
    :param report: ``(owner actor, call id)``: the callable's output goes to
        ``owner.output.remote(call_id, text)`` while it runs. The callable runs on this task's
        own thread (the worker's main thread, where libraries may install signal handlers), so
        the generator cannot yield while it runs: its items are the start, then the end.
    """
    lacking = missing_packages([package for package, _ in requires])
    if lacking:
        needs = {package: why for package, why in requires}
        error = ModuleNotFoundError(
            "; ".join(f"{needs[name]} needs the Python package {name!r}" for name in lacking)
            + f", which the Ray node {_node()} lacks: install it in the cluster's Python environment "
            f"(for botocore: pip install boto3), or add it to the task's runtime_env "
            f"(runtime_env={{'pip': [...]}}). The callable did not run."
        )
        yield Failure(
            pickle_exception(error), f"{type(error).__name__}: {error}\n", "ModuleNotFoundError"
        ).to_wire()
        return
    yield Output("").to_wire()  # tells the caller that the task has a worker and runs
    # What the callable prints never carries the secrets of the connections it was given.
    secrets = connection_secrets(environ or {})
    if inputs:
        args, kwargs = fill_slots(args, inputs), fill_slots(kwargs, inputs)
    wake = threading.Event()
    sink = _Sink(wake)
    outcome: dict[str, Any] = {}

    def _call() -> None:
        try:
            value = fn(*args, **kwargs)
            if inspect.iscoroutine(value):
                value = asyncio.run(value)
            outcome["value"] = value
        except BaseException as error:  # noqa: BLE001 - everything goes back to Airflow
            if getattr(error, "ray_terminate_msg", None) is not None:
                # Ray's SIGTERM handler: this worker stops with its node or cluster. That is not
                # the callable's failure; the worker exits as Ray means it to (below), and the
                # Airflow side reports the task failed outside the callable.
                outcome["stopped"] = error
                return
            outcome["error"] = error
            # Drop this wrapper's own frame: the traceback starts in the user's code.
            outcome["traceback"] = "".join(
                traceback.format_exception(
                    type(error), error, error.__traceback__ and error.__traceback__.tb_next
                )
            )

    root = logging.getLogger()
    saved_level = root.level
    handler = _CapturedLogHandler()
    capture = _FdCapture(sink).__enter__()
    saved_environ = {name: os.environ.get(name) for name in environ or {}}
    os.environ.update(environ or {})
    # Records of INFO and above reach the task log at their level (the operator reads the
    # handler's "LEVEL name: message" prefix). A root level left at its default is lowered to
    # INFO for the call; a level the user's code sets meanwhile is kept.
    root.addHandler(handler)
    lowered = root.level > logging.INFO or root.level == logging.NOTSET
    if lowered:
        root.setLevel(logging.INFO)
    # Output goes out as soon as it is written (at most every MIN_FLUSH_GAP), so that what a
    # callable printed just before its process dies (os._exit, a segfault, the memory monitor)
    # has reached the owner.
    sender = _OutputSender(report, sink, wake, secrets)
    try:
        sender.start()
        _call()  # on the thread Ray runs the task on: the worker's main thread
    finally:
        capture.__exit__()
        root.removeHandler(handler)
        if lowered and root.level == logging.INFO:
            root.setLevel(saved_level)
        for name, before in saved_environ.items():
            if before is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = before
        sender.finish(timeout=2.0 if "stopped" in outcome else 30.0)
    if "stopped" in outcome:
        raise outcome["stopped"]
    text = _drain(sink, 0)
    while text:
        yield Output(masked(text, secrets)).to_wire()
        text = _drain(sink, 0)
    if "error" in outcome:
        error = outcome["error"]
        shown = masked(outcome["traceback"], secrets)
        yield Failure(pickle_exception(error), shown, _type_name(error)).to_wire()
        return
    value = outcome["value"]
    split = split_dict and isinstance(value, dict) and all(isinstance(key, str) for key in value)
    try:
        if split:
            returned = Returned(describe(value), {key: describe(item) for key, item in value.items()})
        else:
            returned = Returned(describe(value))
    except UnstorableResultError as error:
        text = f"{type(error).__name__}: {error}\n"
        yield Failure(pickle_exception(error), text, "TypeError").to_wire()
        return
    yield returned.to_wire()
    if split:
        for item in value.values():  # noqa: UP028 - Ray sends into the generator; a dict iterator cannot take it
            yield item
        return
    yield value


def _node() -> str:
    try:
        import ray

        return str(ray.util.get_node_ip_address())
    except Exception:  # noqa: BLE001 - only for the message
        return "running the task"
