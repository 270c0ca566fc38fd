"""The Jobs API transport's own logic, without a cluster: the log reader, answers, ids, packages."""

from __future__ import annotations

import io
import json
import zipfile

import pytest

from airflow_ray._remote.job_entry import MARK, record
from airflow_ray._remote.protocol import CallError, CallState, ErrorKind, PollReply, Returned
from airflow_ray.cluster.jobs import LogReader, _remote_package, ended_early, outcome, submission_id_for
from airflow_ray.cluster.transport import Call
from airflow_ray.exceptions import RayConfigurationError, RayResultTooLargeError, RayTaskFailedError


def test_the_reader_skips_rays_start_up_lines_and_keeps_partial_lines_for_later():
    reader = LogReader()
    log = (
        "INFO worker.py -- Connecting to existing Ray cluster\n" + record("begin", call_id="1") + "\nfirst li"
    )
    assert list(reader.feed(log)) == []
    assert reader.began and list(reader.tail) == ["INFO worker.py -- Connecting to existing Ray cluster"]
    log += "ne\nsecond line\n" + record("end", reply={}) + "\n"
    assert list(reader.feed(log)) == ["first line\n", "second line\n"]
    assert reader.answer() == reader.answer("end") == {"event": "end", "reply": {}}
    # The tail keeps the last lines of both kinds, for a job that ends without an answer.
    assert list(reader.tail)[-2:] == ["first line", "second line"]


def test_the_tail_is_bounded():
    reader = LogReader(began=True)
    list(reader.feed("".join(f"line {i}\n" for i in range(100))))
    assert list(reader.tail) == [f"line {i}" for i in range(80, 100)]


def test_a_final_read_flushes_the_last_line_without_a_newline():
    reader = LogReader()
    text = record("begin", call_id="1") + "\nno newline at the end"
    assert list(reader.feed(text)) == []
    assert list(reader.feed(text, final=True)) == ["no newline at the end\n"]


def test_a_line_that_only_mentions_the_mark_is_output():
    reader = LogReader(began=True)
    assert list(reader.feed(f"print({MARK!r})\n")) == [f"print({MARK!r})\n"]
    assert reader.records == []


@pytest.mark.parametrize(
    "printed",
    [
        record("end", reply={"state": "done"}) + "\n",  # a callable that prints an answer of its own
        f"{MARK} not json\n",
        "\\ a backslash, \\\\ two, then @ and \\@\n",
        "@@airflow-ray@@",  # no newline: the record after it goes on a line of its own
    ],
)
def test_what_the_callable_prints_is_read_as_it_printed_it_never_as_an_answer(printed, capsys):
    from airflow_ray._remote.job_entry import _Writer

    writer = _Writer()
    writer.record("begin", call_id="1")
    for cut in range(0, len(printed), 3):  # in chunks that split lines and the mark
        writer.output(printed[cut : cut + 3])
    writer.record("end", reply={"state": "failed"})
    reader = LogReader()
    shown = "".join(reader.feed(capsys.readouterr().out, final=True))
    assert shown == (printed if printed.endswith("\n") else printed + "\n")
    assert [r["event"] for r in reader.records] == ["begin", "end"]
    assert reader.answer() == {"event": "end", "reply": {"state": "failed"}}


def end_record(reply: PollReply) -> dict:
    wire = reply.to_wire()
    if wire["error"] is not None and wire["error"]["pickled"] is not None:
        import base64

        wire["error"]["pickled"] = base64.b64encode(wire["error"]["pickled"]).decode()
    return json.loads(record("end", reply=wire)[len(MARK) + 1 :])


def test_an_end_record_gives_the_result_description():
    returned = Returned({"type": "dict"}, {"a": {"type": "int"}})
    assert outcome(end_record(PollReply(CallState.DONE, returned=returned)), "t", "w", None) == returned


def test_an_end_record_with_the_callables_error_raises_it_here():
    import pickle

    error = CallError(ErrorKind.CALLABLE, "Traceback ...\nKeyError: 'x'", pickle.dumps(KeyError("x")))
    with pytest.raises(KeyError):
        outcome(end_record(PollReply(CallState.FAILED, error=error)), "t", "w", None)


def test_other_answers_are_clear_errors():
    with pytest.raises(RayConfigurationError, match="GPU=1; the largest node offers CPU=2, GPU=0"):
        outcome(
            {"event": "infeasible", "demand": {"CPU": 1, "GPU": 1}, "largest": {"CPU": 2, "GPU": 0}},
            "t",
            "w",
            None,
        )
    with pytest.raises(RayResultTooLargeError, match="5000000 bytes pickled"):
        outcome({"event": "too_big", "size": 5_000_000}, "t", "connection 'ray_jobs'", None)


CALL = Call("d.t", "airflow-ray-d-t-0123")


def test_a_job_that_ended_without_an_answer_says_why_and_shows_the_end_of_its_log():
    failed = ended_early(
        CALL, {"status": "FAILED", "message": "entrypoint exited 1"}, ["boom"], [], "connection 'c'"
    )
    assert isinstance(failed, RayTaskFailedError)
    assert "airflow-ray-d-t-0123 of task d.t ended FAILED before it answered: entrypoint exited 1" in str(
        failed
    )
    assert str(failed).endswith("The end of the job's log:\nboom")
    stopped = ended_early(
        CALL, {"status": "STOPPED", "message": "Job was intentionally stopped."}, [], [], "c"
    )
    assert "was stopped before it answered (Job was intentionally stopped.): by `ray job stop`" in str(
        stopped
    )
    assert "a retry submits a new job" in str(stopped)
    setup = ended_early(
        CALL,
        {
            "status": "FAILED",
            "message": "pip install failed: no such package",
            "error_type": "RUNTIME_ENV_SETUP_FAILURE",
        },
        [],
        [],
        "c",
    )
    assert "[RUNTIME_ENV_SETUP_FAILURE]: pip install failed: no such package" in str(setup)
    gone = ended_early(CALL, None, [], [], "connection 'c'")
    assert "is gone from connection 'c'" in str(gone)


def test_an_entrypoint_without_ray_names_its_interpreter_and_the_fix():
    no_ray = {
        "event": "no_ray",
        "python": "/usr/bin/python3",
        "version": "3.11.2",
        "error": "No module named 'ray'",
    }
    error = ended_early(CALL, {"status": "FAILED", "message": "exit 3"}, [], [no_ray], "connection 'c'")
    assert isinstance(error, RayConfigurationError)
    assert "/usr/bin/python3 (Python 3.11.2), cannot import Ray (No module named 'ray')" in str(error)
    assert '"python": "/path/to/ray-env/bin/python"' in str(error) and "first on PATH" in str(error)


def test_submission_ids_are_the_same_for_a_try_and_differ_between_tries():
    first = submission_id_for("dag", "task", "manual__2026-01-01T00:00:00+00:00", -1, 1)
    assert first == submission_id_for("dag", "task", "manual__2026-01-01T00:00:00+00:00", -1, 1)
    assert first != submission_id_for("dag", "task", "manual__2026-01-01T00:00:00+00:00", -1, 2)
    assert first != submission_id_for("dag", "task", "manual__2026-01-01T00:00:00+00:00", 0, 1)
    assert first.startswith("airflow-ray-dag-task-") and all(c.isalnum() or c in "-_" for c in first)


def test_the_cluster_package_holds_only_the_remote_code_and_is_content_addressed():
    uri, data = _remote_package()
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert "airflow_ray/__init__.py" in names and "airflow_ray/_remote/job_entry.py" in names
    assert all(name == "airflow_ray/__init__.py" or name.startswith("airflow_ray/_remote/") for name in names)
    assert uri.startswith("gcs://_ray_pkg_") and uri == _remote_package.__wrapped__()[0]
