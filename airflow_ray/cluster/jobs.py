"""The Jobs API transport: each task is a Ray job; the Airflow worker speaks only HTTP.

The cluster needs nothing but ``ray[default]``: every job carries :mod:`airflow_ray._remote` as
a ``py_modules`` package and its request (the pickled callable and arguments) as its
``working_dir``, and runs :mod:`airflow_ray._remote.job_entry`. That entrypoint is a driver
inside the cluster: it submits through the owner actor exactly as the driver transport does, so
results are owned and pinned the same way, and inputs are resolved inside the cluster by pin key.

The worker follows the job's log: what the callable prints, then the answer records.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import io
import logging
import time
import uuid
import zipfile
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from airflow_ray._remote.job_entry import PAYLOAD_NAME, parse_record, unescape
from airflow_ray._remote.protocol import CallError, CallState, ErrorKind, PollReply, Returned
from airflow_ray.cluster.jobs_api import AsyncJobsClient, JobsClient, JobsEndpoint, JobStatus, is_terminal
from airflow_ray.cluster.transport import (
    Call,
    Input,
    OwnedResults,
    TaskSpec,
    raise_call_error,
)
from airflow_ray.cluster.versions import python_mismatch, worker_python
from airflow_ray.exceptions import (
    AirflowRayError,
    RayConfigurationError,
    RayInputsMissingError,
    RayResultTooLargeError,
    RayTaskFailedError,
)

if TYPE_CHECKING:
    from airflow_ray.hooks.ray import RayHook

log = logging.getLogger(__name__)
T = TypeVar("T")

ENTRYPOINT_MODULE = "airflow_ray._remote.job_entry"
POLL_INTERVAL = 0.25
# The records that answer a task's job: its end, or why it could not run.
ANSWERS = ("end", "infeasible", "unscheduled", "too_big")
LOG_TAIL_LINES = 20
# Seconds before a log tail that was refused or broke at once is opened again (the whole log is read meanwhile).
TAIL_RETRY = 5.0
# Characters of a job's log past which it is followed over the Jobs API's tail, not read whole at
# each poll: a short log is read faster whole (Ray's tail is a second or two behind the file).
TAIL_AFTER = 64 * 1024
# A job that cannot even start its entrypoint (a runtime_env that fails to build) ends on its own.
_ANSWER_TIMEOUT = 600.0


@dataclass
class LogReader:
    """Reads a job's log as it grows: the callable's output and the entrypoint's answer records.

    Lines before the ``begin`` record are Ray's own start-up output, not the callable's; the last
    lines of either kind are kept in ``tail`` to explain a job that ended without an answer.
    """

    offset: int = 0
    began: bool = False
    partial: str = ""
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=LOG_TAIL_LINES))
    records: list[dict[str, Any]] = field(default_factory=list)

    def feed(self, logs: str, final: bool = False) -> list[str]:
        """Output lines (with their newline) in the part of the whole log ``logs`` not seen yet."""
        return self.add(logs[self.offset :], final)

    def add(self, text: str, final: bool = False) -> list[str]:
        """Output lines (with their newline) in ``text``, the log's next characters."""
        self.offset += len(text)
        *lines, self.partial = (self.partial + text).split("\n")
        if final and self.partial:
            lines, self.partial = [*lines, self.partial], ""
        output = []
        for line in lines:
            record = parse_record(line)
            if record is not None:
                self.began = self.began or record["event"] == "begin"
                self.records.append(record)
                continue
            if self.began:
                line = unescape(line)
                output.append(line + "\n")
            self.tail.append(line)
        return output

    def answer(self, *events: str) -> dict[str, Any] | None:
        """The first record of one of ``events`` (default: those that answer a task's job)."""
        wanted = events or ANSWERS
        return next((r for r in self.records if r["event"] in wanted), None)


async def follow_log(
    client: AsyncJobsClient,
    submission_id: str,
    reader: LogReader,
    emit: Callable[[str], None],
    poll_interval: float,
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Follow a job until its entrypoint answers or the job ends: the answer record (``None``
    when it ended without one) and the job's last info document (``None``: the job is gone).

    Output lines go to ``emit`` as they arrive. A short log is read whole at each poll: the answer
    is seen within ``poll_interval`` of being written. Once the log is longer than
    :data:`TAIL_AFTER`, the rest comes over the Jobs API's tail
    (:meth:`~.AsyncJobsClient.log_tail`), each byte once however long the job prints; Ray's tail
    reads the file every second or two and ends seconds after the job, so once the job has ended,
    the rest of the log (the answer, written just before) is read at once from the whole log: a
    long log crosses the network about twice, not at every poll. A dashboard or proxy that
    refuses the tail or breaks it at once leaves the log read whole at each poll, and the tail is
    tried again after :data:`TAIL_RETRY` (one that served longer is opened again at once). The
    job's status is read every ``poll_interval``.
    """
    arrived: list[str] = []
    wake = asyncio.Event()
    tail: asyncio.Task[None] | None = None
    retry_at = opened_at = 0.0
    breaks = 0  # of the tail; the first is logged at INFO, the next ones at DEBUG
    info: dict[str, Any] | None = None

    async def pump(skip: int) -> None:
        async for text in client.log_tail(submission_id, skip):
            arrived.append(text)
            wake.set()

    def take() -> None:
        texts = arrived[:]
        arrived.clear()
        wake.clear()
        for text in texts:
            for line in reader.add(text):
                emit(line)

    async def close() -> None:
        if tail is not None:
            tail.cancel()
            await asyncio.gather(tail, return_exceptions=True)

    try:
        while True:
            take()
            record = reader.answer()
            if record is not None:
                return record, info
            info = await client.info(submission_id)
            final = is_terminal(info)
            if tail is not None and tail.done():
                take()
                failure = None if tail.cancelled() else tail.exception()
                if failure is None and final:
                    # The tail ends once the job has ended and all its log is sent.
                    for line in reader.add("", final=True):
                        emit(line)
                    return reader.answer(), info
                (log.debug if breaks else log.info)(
                    "Following the log of Ray job %s over its tail failed (%s): reading its "
                    "whole log instead, and opening the tail again in %.0f s",
                    submission_id,
                    failure or "closed while the job runs",
                    TAIL_RETRY,
                )
                breaks += 1
                # A tail that served a while (cut by a proxy) is opened again at once; one refused
                # or closed at once is left for a while.
                lived = time.monotonic() - opened_at
                tail, retry_at = None, time.monotonic() + (0.0 if lived > TAIL_RETRY else TAIL_RETRY)
            running = JobStatus.of(info or {}) is JobStatus.RUNNING
            if tail is None and running and reader.offset >= TAIL_AFTER and time.monotonic() >= retry_at:
                tail, opened_at = asyncio.create_task(pump(reader.offset)), time.monotonic()
            elif tail is None or final:
                await close()
                tail = None
                arrived.clear()  # the whole log has it from reader.offset on
                if info is not None:
                    for line in reader.feed(await client.logs(submission_id), final=final):
                        emit(line)
                record = reader.answer()
                if record is not None or final:
                    return record, info
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(wake.wait(), poll_interval)
    finally:
        await close()


def outcome(record: dict[str, Any], name: str, where: str, log: Any) -> Returned:
    """What an ``end`` (or ``infeasible``) record means: the result's description, or the error."""
    from airflow_ray._remote.job_entry import decode_bytes
    from airflow_ray.cluster.resources import infeasible, not_started

    if record["event"] == "infeasible":
        raise infeasible(
            record["demand"], record["largest"], where, autoscaled=bool(record.get("autoscaled"))
        )
    if record["event"] == "unscheduled":
        raise not_started(
            name, record["demand"], float(record["timeout"]), record.get("pending") or "", where
        )
    if record["event"] == "too_big":
        raise RayResultTooLargeError(
            f"The result of Ray task {name} is {record['size']} bytes pickled, more than the "
            f"[ray] jobs_inline_max_bytes that travel back through the Jobs API of {where}. Keep "
            f"results in the cluster with the Ray XCom backend (RayXComBackend), or raise "
            f"[ray] jobs_inline_max_bytes."
        )
    wire = dict(record["reply"])
    if wire.get("error") is not None:
        wire["error"] = {**wire["error"], "pickled": decode_bytes(wire["error"]["pickled"])}
    reply = PollReply.from_wire(wire)
    if reply.state is CallState.DONE and reply.returned is not None:
        return reply.returned
    raise_call_error(name, reply.error or CallError(ErrorKind.TASK, "the owner actor lost track of it"), log)


def ended_early(
    call: Call, info: dict[str, Any] | None, tail: list[str], records: list[dict[str, Any]], where: str
) -> AirflowRayError:
    """The error of a job that ended without an answer: why, in words, and the end of its log.

    :param info: the job's info document (``None``: the job is gone).
    :param tail: the last lines of its log.
    :param records: what its entrypoint recorded before it ended.
    """
    mismatch = next((r for r in records if r.get("event") == "python_mismatch"), None)
    if mismatch is not None:
        return python_mismatch(
            str(mismatch.get("python")), str(mismatch.get("interpreter")), where, call.call_id
        )
    no_ray = next((r for r in records if r.get("event") == "no_ray"), None)
    if no_ray is not None:
        return RayConfigurationError(
            f"The Ray job {call.call_id} of task {call.name} could not run: the interpreter that ran "
            f"its entrypoint, {no_ray.get('python')} (Python {no_ray.get('version')}), cannot import "
            f"Ray ({no_ray.get('error')}). The Jobs API of {where} runs the entrypoint with the "
            f"`python` on the PATH of the cluster's `ray start` (or the connection's extra field "
            f"python), and that is not the interpreter Ray runs on. Start the cluster with Ray's "
            f"environment first on PATH (activate it, or `PATH=/path/to/ray-env/bin:$PATH ray start "
            f"...`), or name Ray's interpreter in the connection's extra field python, e.g. "
            f'{{"python": "/path/to/ray-env/bin/python"}}.'
        )
    lines = "\n".join(tail[-LOG_TAIL_LINES:]) or "(empty)"
    if info is None:
        what = f"is gone from {where} (deleted, or the cluster lost its job table when its head restarted)"
    else:
        status = JobStatus.of(info)
        message = str(info.get("message") or "").strip() or "no message"
        error_type = f" [{info['error_type']}]" if info.get("error_type") else ""
        if status is JobStatus.STOPPED:
            what = (
                f"was stopped before it answered ({message}): by `ray job stop`, the dashboard, "
                f"POST /api/jobs/{call.call_id}/stop, or with its node"
            )
        else:
            what = f"ended {info.get('status')} before it answered{error_type}: {message}"
    return RayTaskFailedError(
        f"The Ray job {call.call_id} of task {call.name} {what}. The task fails; a retry submits "
        f"a new job. The end of the job's log:\n{lines}"
    )


def run_coroutine(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to its end from blocking code: on this thread, or on a thread of its
    own when this one runs an event loop already (a notebook's)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="airflow-ray-follow") as pool:
        return pool.submit(asyncio.run, coroutine).result()


@cache
def _remote_package() -> tuple[str, bytes]:
    """:mod:`airflow_ray._remote` as a ``py_modules`` zip (``airflow_ray/_remote/*.py``), and
    its content-addressed ``gcs://`` URI (so each version is uploaded once)."""
    from airflow_ray import _remote

    folder = Path(_remote.__file__).parent
    files = {"airflow_ray/__init__.py": b'"""airflow-ray: the part that runs in the Ray cluster."""\n'}
    for source in sorted(folder.glob("*.py")):
        files[f"airflow_ray/_remote/{source.name}"] = source.read_bytes()
    return _zip(files)


def _zip(files: dict[str, bytes]) -> tuple[str, bytes]:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            archive.writestr(info, data)
    data = buffer.getvalue()
    return f"gcs://_ray_pkg_{hashlib.sha1(data).hexdigest()}.zip", data


def submission_id_for(*parts: Any) -> str:
    """A job id that is the same for the same task-instance try (so a retry can find its job)."""
    readable = "-".join(str(part) for part in parts[:2])
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in readable)[:60]
    return f"airflow-ray-{safe}-{hashlib.sha1(repr(parts).encode()).hexdigest()[:16]}"


class JobsTransport(OwnedResults):
    """Runs tasks as Ray jobs on the cluster whose dashboard the connection names.

    :param hook: the hook of the ``ray`` connection; nothing is read until first use.
    """

    def __init__(self, hook: RayHook, namespace: str | None = None) -> None:
        super().__init__(hook, namespace)
        self._answers: dict[str, dict[str, Any]] = {}

    @cached_property
    def endpoint(self) -> JobsEndpoint:
        return self.hook.jobs_endpoint()

    @cached_property
    def client(self) -> JobsClient:
        from airflow_ray.cluster.versions import check_cluster_ray

        client = JobsClient(self.endpoint)
        # Fails in seconds with the cause: nothing there, no dashboard, a bad token, a Ray outside
        # the versions supported.
        check_cluster_ray(str(client.version().get("ray_version")), self.endpoint.where)
        return client

    # -- submitting jobs --------------------------------------------------------------------

    def _owner_spec(self) -> dict[str, Any]:
        from airflow_ray import config

        return {
            "name": self.owner_name,
            "namespace": self.namespace,
            "keep_runs": config.keep_runs(),
            "pin_ttl": config.pin_ttl(),
            "orphan_timeout": config.orphan_timeout(),
        }

    def _upload(self, uri: str, data: bytes) -> None:
        if not self.client.package_exists(uri):
            self.client.upload_package(uri, data)

    def _start(self, command: str, arguments: dict[str, Any], submission_id: str, name: str) -> str:
        """Submit a job running ``command``; reuse the job if ``submission_id`` exists already."""
        import ray.cloudpickle as cloudpickle

        from airflow_ray.cluster.byvalue import register_by_value

        existing = self.client.info(submission_id)
        if existing is not None and JobStatus.of(existing) in (JobStatus.STOPPED, JobStatus.FAILED):
            # It ended without running this try's task (a job that ran it succeeds, whatever the
            # callable did): submitting again must run it, not follow what ended. Under a new id:
            # Ray does not reuse an id at once, even after the old job is deleted.
            again = f"{submission_id}-again-{uuid.uuid4().hex[:8]}"
            log.info(
                "Ray job %s of %s exists already and ended %s: submitting it again as %s",
                submission_id,
                name,
                existing.get("status"),
                again,
            )
            submission_id = again
        elif existing is not None:
            log.info(
                "Ray job %s of %s exists already (%s): following it",
                submission_id,
                name,
                existing.get("status"),
            )
            return submission_id
        register_by_value()
        request = {"command": command, "owner": self._owner_spec(), "arguments": arguments}
        try:
            payload = cloudpickle.dumps(request)
        except (TypeError, ValueError, AttributeError) as err:
            raise RayConfigurationError(
                f"Task {name} cannot be sent to Ray: {err}. Pass values that pickle (no open files, "
                f"locks, clients or database sessions), or create them inside the callable."
            ) from err
        remote_uri, remote_zip = _remote_package()
        payload_uri, payload_zip = _zip({PAYLOAD_NAME: payload})
        self._upload(remote_uri, remote_zip)
        self._upload(payload_uri, payload_zip)
        return self.client.submit(
            {
                "entrypoint": self.entrypoint(PAYLOAD_NAME, worker_python()),
                "submission_id": submission_id,
                "runtime_env": {"py_modules": [remote_uri], "working_dir": payload_uri},
                "metadata": {"airflow_ray": name[:200]},
                # The entrypoint only waits: the callable's own task reserves the resources.
                "entrypoint_num_cpus": 0,
            }
        )

    def entrypoint(self, *arguments: str) -> str:
        """The job's shell command: :mod:`airflow_ray._remote.job_entry` run by the connection's
        ``python`` (default: the ``python`` on the cluster's PATH)."""
        import shlex

        return shlex.join([self.hook.settings.python, "-m", ENTRYPOINT_MODULE, *arguments])

    def _look(self, submission_id: str, reader: LogReader) -> tuple[dict[str, Any] | None, bool, list[str]]:
        """One look at a job: its status (``None``: no such job), whether it has ended, and the
        output lines of its log that ``reader`` has not seen yet."""
        info = self.client.info(submission_id)
        if info is None:
            return None, True, []
        final = is_terminal(info)
        return info, final, list(reader.feed(self.client.logs(submission_id), final=final))

    def submit(self, spec: TaskSpec) -> Call:
        from airflow_ray import config

        options = self.task_options(spec)
        arguments = {
            "fn": spec.fn,
            "args": tuple(spec.args),
            "kwargs": dict(spec.kwargs),
            "inputs": [[item.pin, item.owner] for item in spec.inputs],
            "options": options,
            "producer": None if spec.pin is None else spec.pin.to_wire(),
            "split": spec.split,
            "requires": spec.requires,
            "environ": spec.environ,
            "demand": spec.resources.demand(),
            "schedule_timeout": config.schedule_timeout(),
            "max_bytes": config.jobs_inline_max_bytes(),
            "small_bytes": spec.small_bytes,
        }
        submission_id = spec.submission_id or f"airflow-ray-{uuid.uuid4().hex}"
        call = Call(spec.name, self._start("run", arguments, submission_id, spec.name))
        self._until_started(call)
        return call

    def _until_started(self, call: Call) -> None:
        """Wait until the job's entrypoint has handed the callable to the owner (or could not).

        It checks the inputs there, in the same job: those the cluster lost raise
        :class:`RayInputsMissingError`, for the caller to restore them and submit again.
        """
        reader = LogReader()
        deadline = time.monotonic() + _ANSWER_TIMEOUT
        while time.monotonic() < deadline:
            _, final, _ = self._look(call.call_id, reader)
            missing = reader.answer("missing")
            if missing is not None:
                raise RayInputsMissingError(
                    f"Inputs of Ray task {call.name} are no longer in the cluster: {missing['pins']}",
                    list(missing["pins"]),
                )
            if final or reader.began or reader.answer("infeasible", "end") is not None:
                return
            time.sleep(POLL_INTERVAL / 2)

    def missing(self, inputs: list[Input]) -> list[Input]:
        if not inputs:
            return []
        held = set(self._ask("held", {"pins": [[item.pin, item.owner] for item in inputs]})["value"])
        return [item for item in inputs if item.pin not in held]

    # -- following --------------------------------------------------------------------------

    def follow(self, call: Call, on_output: Callable[[str], None], log: Any) -> Returned:
        reader = LogReader()

        async def follow() -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
            client = AsyncJobsClient(self.endpoint)
            try:
                return await follow_log(client, call.call_id, reader, on_output, POLL_INTERVAL)
            finally:
                await client.close()

        record, info = run_coroutine(follow())
        if record is not None:
            return self.answered(call, record, log)
        raise ended_early(call, info, list(reader.tail), reader.records, self.hook.describe())

    def answered(self, call: Call, record: dict[str, Any], log: Any) -> Returned:
        """What the answer ``record`` of ``call`` (read by the triggerer) means; kept for :meth:`take`."""
        self._answers[call.call_id] = record
        return outcome(record, call.name, self.hook.describe(), log)

    def state(self, call: Call) -> CallState:
        reader = LogReader()
        info, final, _ = self._look(call.call_id, reader)
        if info is None:
            return CallState.UNKNOWN
        record = reader.answer()
        if record is not None:
            done = record["event"] == "end" and record["reply"]["state"] == CallState.DONE.value
            return CallState.DONE if done else CallState.FAILED
        return CallState.FAILED if final else CallState.RUNNING

    def link(self, call: Call) -> str | None:
        return self.endpoint.job_url(call.call_id)

    def job_id(self, call: Call) -> str | None:
        return call.call_id

    def take(self, call: Call) -> Any:
        from airflow_ray._remote.job_entry import decode_bytes

        record = self._answers.pop(call.call_id)
        data = decode_bytes(record["reply"].get("value"))
        if data is None:
            raise RayTaskFailedError(f"The Ray job of task {call.name} sent no value back.")
        import pickle

        return pickle.loads(data)

    def small_results(self, call: Call, pinned: dict[str, Input], max_bytes: int) -> dict[str, Any]:
        import pickle

        from airflow_ray._remote.job_entry import decode_bytes

        # The job sent them with its answer (job_entry.run): no second job to fetch them.
        record = self._answers.get(call.call_id) or {}
        sent = (record.get("reply") or {}).get("small") or {}
        return {
            key: pickle.loads(decode_bytes(sent[item.pin]) or b"")
            for key, item in pinned.items()
            if item.pin in sent
        }

    def forget(self, call: Call) -> None:
        self._answers.pop(call.call_id, None)

    def cancel(self, call: Call) -> None:
        from airflow_ray.exceptions import RayConnectionError

        try:
            self.client.stop(call.call_id)
        except RayConnectionError as err:
            log.warning("Could not stop Ray job %s of task %s: %s", call.call_id, call.name, err)

    # -- results kept in the cluster --------------------------------------------------------

    def _ask(self, command: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """Run a short job and return its answer record (the job is deleted afterwards)."""
        submission_id = f"airflow-ray-{command.replace('_', '-')}-{uuid.uuid4().hex[:12]}"
        self._start(command, arguments, submission_id, command)
        reader = LogReader()
        deadline = time.monotonic() + _ANSWER_TIMEOUT
        try:
            while time.monotonic() < deadline:
                info, final, _ = self._look(submission_id, reader)
                record = reader.answer("answer", "value", "too_big", "missing")
                if record is not None:
                    return record
                if final:
                    call = Call(command, submission_id)
                    raise ended_early(call, info, list(reader.tail), reader.records, self.hook.describe())
                time.sleep(POLL_INTERVAL / 2)
            raise RayTaskFailedError(
                f"The Ray job {submission_id} ({command}) did not answer within {_ANSWER_TIMEOUT:.0f} s."
            )
        finally:
            self.client.delete(submission_id)

    def fetch(self, item: Input) -> Any:
        return self._fetch([item], release=False)[0]

    def fetch_and_release(self, inputs: list[Input]) -> list[Any]:
        return self._fetch(inputs, release=True) if inputs else []

    def _fetch(self, inputs: list[Input], release: bool) -> list[Any]:
        """The values of ``inputs``, fetched by one job (which releases them after, with ``release``)."""
        import pickle

        from airflow_ray import config
        from airflow_ray._remote.job_entry import decode_bytes

        limit = config.jobs_inline_max_bytes()
        pairs = [[item.pin, item.owner] for item in inputs]
        record = self._ask("fetch", {"pins": pairs, "max_bytes": limit, "release": release})
        if record["event"] == "missing":
            raise LookupError(record["pin"])
        if record["event"] == "too_big":
            what = (
                f"The value pinned as {inputs[0].pin!r} is"
                if len(inputs) == 1
                else f"The values pinned as {[item.pin for item in inputs]} are together"
            )
            raise RayResultTooLargeError(
                f"{what} {record['size']} bytes pickled, more than the {limit} bytes "
                f"([ray] jobs_inline_max_bytes) that travel to a task that is not a Ray task through "
                f"the Jobs API of {self.hook.describe()}. Consume it in a Ray task (@task.ray), give "
                f"its producer checkpoint=True so that it is read from S3, or raise "
                f"[ray] jobs_inline_max_bytes."
            )
        data = decode_bytes(record["data"])
        assert data is not None
        values: list[Any] = pickle.loads(data)
        return values

    def release_copied(self, inputs: list[Input]) -> None:
        """Left to retention: each release is a Ray job of its own here."""

    def release(self, inputs: list[Input]) -> int:
        if not inputs:
            return 0
        return int(self._ask("release", {"pins": [[item.pin, item.owner] for item in inputs]})["value"])

    def list_pins(self, dag_id: str | None = None, run_id: str | None = None) -> list[dict[str, Any]]:
        value: list[dict[str, Any]] = self._ask("list_pins", {"dag_id": dag_id, "run_id": run_id})["value"]
        return value

    def release_matching(self, dag_id: str | None = None, run_id: str | None = None) -> int:
        return int(self._ask("release_matching", {"dag_id": dag_id, "run_id": run_id})["value"])
