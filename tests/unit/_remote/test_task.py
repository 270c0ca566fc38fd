"""The task body, run here as a plain generator: its protocol and its output capture."""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import subprocess
import sys
import threading
import time

import pytest

from airflow_ray._remote import task as remote_call
from tests.unit._remote.streams import CALL_ID, FakeOwner, stream, worker_streams


def events(fn, *args, **kwargs):
    with worker_streams():
        return stream(fn, args, kwargs)


def test_output_then_return_marker_then_value():
    def work(n):
        for i in range(n):
            print(f"line {i}")
        logging.getLogger("user").info("logged %s", n)
        return {"n": n}

    result = events(work, 3)
    assert result[-2][0] == "return" and result[-1] == {"n": 3}
    assert (
        result[-2][1]["type"] == "dict" and result[-2][1]["length"] == 1 and result[-2][1]["size_bytes"] > 0
    )
    output = "".join(e[1] for e in result[:-2])
    assert all(e[0] == "output" for e in result[:-2])
    assert output == "line 0\nline 1\nline 2\nINFO user: logged 3\n"


def test_output_reaches_the_owner_while_the_callable_runs():
    release, returned = threading.Event(), threading.Event()

    def waits_for_the_test():
        print("first", flush=True)
        released = release.wait(timeout=120)
        print("second", flush=True)
        returned.set()
        return released

    owner, items = FakeOwner(), []
    with worker_streams():
        generator = remote_call.run_streaming(waits_for_the_test, (), {}, report=(owner, CALL_ID))
        assert next(generator) == ("output", "")  # at once: the task has a worker
        # The callable runs on the thread that takes the next item, as in a Ray worker.
        taker = threading.Thread(target=lambda: items.extend(generator))
        taker.start()
        deadline = time.monotonic() + 30
        while "first\n" not in "".join(owner.texts) and time.monotonic() < deadline:
            time.sleep(0.05)
        # "first" arrived while the callable still ran: it returns only once released, below.
        assert "first\n" in "".join(owner.texts) and not returned.is_set()
        release.set()
        taker.join(timeout=60)
    assert items[-1] is True and "second\n" in "".join(owner.texts)


def test_streams_and_logging_are_left_as_they_are():
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    with worker_streams():
        streams = sys.stdout, sys.stderr
        seen = []

        def work():
            seen.append((sys.stdout, sys.stderr))
            print("x", file=sys.stderr)

        output = "".join(e[1] for e in stream(work, (), {})[:-2])
        assert seen == [streams] and (sys.stdout, sys.stderr) == streams
    assert output == "x\n"
    assert root.level == level and root.handlers == handlers


def test_what_c_code_and_child_processes_write_is_captured_too():
    def work():
        os.write(1, b"from C\n")
        subprocess.run(
            [sys.executable, "-c", "import sys; print('child out'); print('child err', file=sys.stderr)"],
            check=True,
        )

    output = "".join(e[1] for e in events(work)[:-2])
    assert output == "from C\nchild out\nchild err\n"


def test_a_child_process_that_outlives_the_callable_does_not_hold_the_task():
    def work():
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        print("started")

    started = time.monotonic()
    result = events(work)
    assert time.monotonic() - started < 10
    assert result[-1] is None and "started\n" in "".join(e[1] for e in result[:-2])


class CustomError(Exception):
    pass


def test_exception_travels_pickled_with_a_traceback_starting_in_user_code():
    def user_function():
        raise CustomError("no good")

    *_, last = events(user_function)
    kind, pickled, traceback_text, type_name = last
    assert kind == "error" and type_name == f"{__name__}.CustomError"
    error = pickle.loads(pickled)
    assert isinstance(error, CustomError) and str(error) == "no good"
    assert "in user_function" in traceback_text
    assert "airflow_ray/_remote/task.py" not in traceback_text
    assert traceback_text.rstrip().endswith("CustomError: no good")


def test_unpicklable_exception_sends_the_traceback_and_its_class_name_only():
    class Unpicklable(Exception):
        pass

    def fail():
        raise Unpicklable(threading.Lock())  # its args cannot travel, however it is pickled

    *_, (kind, pickled, traceback_text, type_name) = events(fail)
    assert kind == "error" and pickled is None and "Unpicklable" in traceback_text
    assert type_name.endswith("Unpicklable")


def test_an_exception_whose_reduce_fails_is_rebuilt_from_its_args():
    class Unreducible(Exception):
        def __reduce__(self):
            raise TypeError("cannot pickle this")

    def fail():
        raise Unreducible("x")

    *_, (_, pickled, _, _) = events(fail)
    error = pickle.loads(pickled)
    assert type(error).__name__ == "Unreducible" and error.args == ("x",)


class CodedError(Exception):
    """An exception whose ``__init__`` takes other arguments than its ``args``: pickle cannot
    rebuild it by calling the class."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.lock = threading.Lock()  # an attribute that cannot travel


def test_an_exception_with_its_own_init_is_rebuilt_as_itself():
    def fail():
        raise CodedError(7, "bad row")

    with pytest.raises(TypeError):
        pickle.loads(pickle.dumps(CodedError(7, "bad row")))  # what the plain round trip does
    *_, (kind, pickled, _, type_name) = events(fail)
    assert kind == "error" and type_name.endswith("CodedError")
    error = pickle.loads(pickled)
    assert type(error) is CodedError and str(error) == "7: bad row" and error.code == 7
    assert not hasattr(error, "lock")


def test_a_result_that_cannot_be_stored_fails_the_task_naming_its_type():
    def returns_a_lock():
        print("made it")
        return {"lock": threading.Lock()}

    *output, (kind, pickled, _, type_name) = events(returns_a_lock)
    assert kind == "error" and type_name == "TypeError"
    error = pickle.loads(pickled)
    assert isinstance(error, TypeError) and "cannot be stored in Ray" in str(error)
    assert "_thread.lock" in str(error) and "dict" in str(error)
    assert "made it" in "".join(text for _, text in output)


def test_a_result_only_cloudpickle_can_store_is_fine():
    pytest.importorskip("ray")
    result = events(lambda: lambda x: x + 1)
    assert result[-2][0] == "return" and result[-1](1) == 2


def test_a_missing_package_fails_before_the_callable_runs():
    ran = []
    result = stream(
        lambda: ran.append(1),
        (),
        {},
        requires=(("json", "JSON"), ("no_such_package_here", "Checkpointing the result")),
    )
    (kind, pickled, _, type_name) = result[-1]
    assert kind == "error" and type_name == "ModuleNotFoundError" and not ran
    error = pickle.loads(pickled)
    assert isinstance(error, ModuleNotFoundError)
    assert "Checkpointing the result needs the Python package 'no_such_package_here'" in str(error)
    assert "json" not in str(error).split("needs")[0]


def test_coroutine_functions_are_awaited():
    async def compute(x):
        await asyncio.sleep(0.01)
        return x + 1

    assert events(compute, 1)[-1] == 2


@pytest.mark.parametrize("exit_error", [SystemExit(3), KeyboardInterrupt()])
def test_base_exceptions_are_reported_not_swallowed(exit_error):
    def leave():
        raise exit_error

    assert events(leave)[-1][0] == "error"


def test_inputs_fill_their_slots_and_dicts_split():
    def pair(a, b, c):
        return {"sum": a + b["x"][0], "c": c}

    args = (remote_call.ref_slot(0),)
    kwargs = {"b": {"x": [remote_call.ref_slot(1)]}, "c": remote_call.ref_slot(0)}
    with worker_streams():
        result = stream(pair, args, kwargs, True, 10, 5)
    kind, meta = result[-3]
    assert kind == "return" and meta["split_keys"] == ["sum", "c"]
    assert meta["split_meta"]["sum"]["type"] == "int"
    assert result[-2:] == [15, 10]


def test_describe_numpy_without_copying():
    import numpy as np

    meta = remote_call.describe(np.zeros((3, 4), dtype=np.float32))
    assert meta == {"type": "numpy.ndarray", "size_bytes": 48, "shape": [3, 4], "dtype": "float32"}


def test_with_an_owner_to_report_to_the_callable_runs_on_the_tasks_own_thread():
    import signal

    owner = FakeOwner()

    def work():
        signal.signal(signal.SIGTERM, signal.getsignal(signal.SIGTERM))  # main thread only
        print("printed")
        logging.getLogger("user").warning("logged")
        return threading.current_thread() is threading.main_thread()

    with worker_streams():
        result = list(remote_call.run_streaming(work, (), {}, report=(owner, CALL_ID)))
    assert result[0] == ("output", "") and result[1][0] == "return" and result[2] is True
    assert "".join(owner.texts) == "printed\nWARNING user: logged\n"


def test_a_worker_stopped_by_ray_exits_instead_of_reporting_the_callables_failure():
    owner = FakeOwner()

    def work():
        print("before the stop")
        stop = SystemExit(1)
        stop.ray_terminate_msg = "The process receives a SIGTERM."  # as Ray's SIGTERM handler raises it
        raise stop

    with worker_streams(), pytest.raises(SystemExit) as raised:
        list(remote_call.run_streaming(work, (), {}, report=(owner, CALL_ID)))
    assert raised.value.ray_terminate_msg == "The process receives a SIGTERM."
    assert "".join(owner.texts) == "before the stop\n"


def test_a_callable_that_calls_sys_exit_fails_as_the_callable():
    def work():
        sys.exit(3)

    *_, last = events(work)
    kind, pickled, traceback_text, type_name = last
    assert kind == "error" and type_name == "SystemExit" and "SystemExit: 3" in traceback_text
    assert pickle.loads(pickled).code == 3
