"""The entrypoint of a Ray job submitted by the Jobs API transport: a driver inside the cluster.

The Airflow worker never connects to Ray in that mode: it uploads this package (as a
``py_modules`` entry of the job's runtime_env) and a pickled request (its ``working_dir``), and
runs ``python -m airflow_ray._remote.job_entry``. The request is plain data: ``command`` (a key
of :data:`COMMANDS`), ``owner`` (``name``, ``namespace``, ``keep_runs``, ``pin_ttl``) and
``arguments``. This driver finds or creates the owner actor, does what the request asks through
it exactly as the driver transport does from the Airflow worker, and prints the answer to the
job's log:

- what the callable prints, as it is produced, after a ``begin`` record; a line of it that starts
  with ``@`` or ``\\`` gets a ``\\`` in front (:func:`unescape` takes it off), so that no line the
  callable prints can read as a record, whatever it prints;
- one record per answer: ``<MARK> {"event": ..., ...}`` on a line of its own (JSON; bytes travel
  base64-encoded).

Everything before ``begin`` (Ray's own start-up lines) is not the callable's output.
"""

from __future__ import annotations

import base64
import json
import pickle
import signal
import sys
import time
from typing import Any

from airflow_ray._remote import pins
from airflow_ray._remote.protocol import CallState, PollReply, Producer, Returned

MARK = "@@airflow-ray@@"
PAYLOAD_NAME = "payload.pkl"
_POLL_INTERVAL = 0.5
_WAIT_NOTICE = 15.0  # seconds between notices that the task still waits for resources


def record(event: str, **values: Any) -> str:
    """One answer line of the job's log."""
    return f"{MARK} {json.dumps({'event': event, **values})}"


def parse_record(line: str) -> dict[str, Any] | None:
    """The answer on ``line``, or ``None`` when it is output."""
    if not line.startswith(MARK + " "):
        return None
    document: dict[str, Any] = json.loads(line[len(MARK) + 1 :])
    return document


def escape(line: str) -> str:
    """A line of the callable's output as the job's log carries it: never a record."""
    return "\\" + line if line.startswith(("@", "\\")) else line


def unescape(line: str) -> str:
    """A line of the callable's output as it printed it (the inverse of :func:`escape`)."""
    return line[1:] if line.startswith("\\") else line


def encode_bytes(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def decode_bytes(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


class _Writer:
    """Writes output and records to stdout, a record always on a line of its own."""

    def __init__(self) -> None:
        self._at_line_start = True

    def output(self, text: str) -> None:
        if text:
            # Escaped line by line; a chunk may end in the middle of a line, whose start was
            # escaped with the chunk before.
            lines = text.split("\n")
            escaped = [escape(line) if i or self._at_line_start else line for i, line in enumerate(lines)]
            sys.stdout.write("\n".join(escaped))
            sys.stdout.flush()
            self._at_line_start = text.endswith("\n")

    def record(self, event: str, **values: Any) -> None:
        prefix = "" if self._at_line_start else "\n"
        sys.stdout.write(prefix + record(event, **values) + "\n")
        sys.stdout.flush()
        self._at_line_start = True


Request = dict[str, Any]


def _owner(spec: dict[str, Any]) -> Any:
    return pins.get_owner(spec["name"], spec["namespace"], spec["keep_runs"], spec["pin_ttl"])


def run(request: Request, out: _Writer) -> None:
    """Submit the callable through the owner and follow it to its end."""
    import ray

    from airflow_ray._remote import autoscaling
    from airflow_ray._remote.placement import unmet

    args = request["arguments"]
    nodes = ray.nodes()
    # The autoscaler is asked only when no live node fits: the common case costs nothing more.
    scaler = autoscaling.read() if unmet(args["demand"], nodes) is not None else None
    shortfall = autoscaling.unreachable(args["demand"], nodes, scaler)
    if shortfall is not None:
        out.record("infeasible", demand=args["demand"], largest=shortfall, autoscaled=scaler is not None)
        return
    owner = _owner(request["owner"])
    current, namespace = request["owner"]["name"], request["owner"]["namespace"]
    inputs = [pins.submit_input(key, made_by, current, namespace) for key, made_by in args["inputs"]]
    keys = [item for item in inputs if isinstance(item, str)]
    missing = sorted(set(keys) - set(ray.get(owner.held.remote(keys)))) if keys else []
    if missing:
        # The Airflow side restores them from their checkpoints and submits again.
        out.record("missing", pins=missing)
        return
    call_id = ray.get(
        owner.submit.remote(
            args["fn"],
            args["args"],
            args["kwargs"],
            inputs,
            args["options"],
            args["producer"],
            args["split"],
            request["owner"].get("orphan_timeout"),
            args.get("requires"),
            args.get("environ"),
        )
    )

    def stop(signum: int, frame: Any) -> None:
        # Stopping the job (the Airflow task was killed or marked failed) stops the Ray task too.
        ray.get(owner.cancel.remote(call_id), timeout=10)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    out.record("begin", call_id=call_id)
    offset = 0
    check = autoscaling.StartCheck(
        args["demand"], args.get("schedule_timeout"), -1 if scaler is None else scaler.current
    )
    notice = check.since + _WAIT_NOTICE
    while True:
        reply = PollReply.from_wire(ray.get(owner.poll.remote(call_id, offset, _POLL_INTERVAL)))
        for text in reply.output:
            out.output(text)
        offset = reply.offset
        if reply.state.is_terminal():
            break
        if reply.started:
            continue
        largest = check.never()
        if largest is not None:
            ray.get(owner.cancel.remote(call_id), timeout=10)
            out.record("infeasible", demand=args["demand"], largest=largest, autoscaled=True)
            return
        if check.timed_out():
            ray.get(owner.cancel.remote(call_id), timeout=10)
            out.record("unscheduled", demand=args["demand"], timeout=check.timeout, pending=check.pending())
            return
        if time.monotonic() > notice:
            notice = time.monotonic() + _WAIT_NOTICE
            free = {k: round(v, 2) for k, v in ray.available_resources().items() if "node:" not in k}
            setting_up = " or for Ray to set up its runtime_env" if args["options"].get("runtime_env") else ""
            launching = check.pending()
            launching = (
                f"; the cluster's autoscaler is launching nodes of type: {launching}" if launching else ""
            )
            out.output(
                f"The Ray task has not started after {check.elapsed():.0f} s: it waits for "
                f"the resources it asked for{setting_up} (free in the cluster now: {free}){launching}\n"
            )
    wire = reply.to_wire()
    if wire["error"] is not None:
        wire["error"]["pickled"] = encode_bytes(wire["error"]["pickled"])
    if reply.state is CallState.DONE and args["producer"] is None:
        # Not kept in the cluster (no Ray XCom backend): the value itself travels, if it is small.
        result = ray.get(owner.take.remote(call_id))[0]
        value = (
            {key: ray.get(ref) for key, ref in result.items()}
            if isinstance(result, dict)
            else ray.get(result)
        )
        data = _dumps(value)
        if len(data) > args["max_bytes"]:
            out.record("too_big", size=len(data))
            return
        wire["value"] = encode_bytes(data)
    else:
        owner.take.remote(call_id)
        if reply.state is CallState.DONE and reply.returned is not None and args.get("small_bytes"):
            wire["small"] = _small_values(owner, Producer.from_wire(args["producer"]), reply.returned, args)
    out.record("end", reply=wire)


def _small_values(owner: Any, producer: Producer, returned: Returned, args: dict[str, Any]) -> dict[str, str]:
    """``{pin key: pickled value}`` of the results no larger than ``small_bytes``: the Airflow
    side may keep them in the XCom row itself, without a job to fetch them."""
    import ray

    limit = args["small_bytes"]
    parts = returned.parts if returned.parts is not None else {producer.key: returned.meta}
    small = {}
    for key, meta in parts.items():
        size = meta.get("size_bytes")
        if not isinstance(size, int) or size > limit:
            continue
        pin = producer.with_key(key).pin_key
        held = ray.get(owner.get.remote(pin))
        if held is not None:
            data = _dumps(ray.get(held[0]))
            if len(data) <= 2 * limit:
                small[pin] = encode_bytes(data) or ""
    return small


def _dumps(value: Any) -> bytes:
    import ray.cloudpickle as cloudpickle

    return bytes(cloudpickle.dumps(value))


def held(request: Request, out: _Writer) -> None:
    """Which pin keys are held, by the owner that made them or by this code's owner."""
    current, namespace = request["owner"]["name"], request["owner"]["namespace"]
    found = [
        key
        for key, made_by in request["arguments"]["pins"]
        if pins.pinned_ref(key, made_by, current, namespace) is not None
    ]
    out.record("answer", value=found)


def fetch(request: Request, out: _Writer) -> None:
    """The values pinned under keys, as one list, when together small enough to travel through
    the log; with ``release``, the pins are released after, whatever the answer."""
    import ray

    args, owner = request["arguments"], request["owner"]
    pairs = [(key, made_by) for key, made_by in args["pins"]]
    try:
        values = []
        for key, made_by in pairs:
            ref = pins.pinned_ref(key, made_by, owner["name"], owner["namespace"])
            if ref is None:
                out.record("missing", pin=key)
                return
            values.append(ray.get(ref))
        data = _dumps(values)
        if len(data) > args["max_bytes"]:
            out.record("too_big", size=len(data))
        else:
            out.record("value", data=encode_bytes(data))
    finally:
        if args.get("release"):
            pins.release(pairs, owner["namespace"])


def release(request: Request, out: _Writer) -> None:
    pairs = [(key, made_by) for key, made_by in request["arguments"]["pins"]]
    out.record("answer", value=pins.release(pairs, request["owner"]["namespace"]))


def list_pins(request: Request, out: _Writer) -> None:
    args, owner = request["arguments"], request["owner"]
    out.record(
        "answer", value=pins.list_pins(owner["namespace"], owner["name"], args["dag_id"], args["run_id"])
    )


def release_matching(request: Request, out: _Writer) -> None:
    args, owner = request["arguments"], request["owner"]
    released = pins.release_matching(owner["namespace"], owner["name"], args["dag_id"], args["run_id"])
    out.record("answer", value=released)


COMMANDS = {
    "run": run,
    "held": held,
    "fetch": fetch,
    "release": release,
    "list_pins": list_pins,
    "release_matching": release_matching,
}


def main(path: str = PAYLOAD_NAME, python: str | None = None) -> int:
    """Run the request pickled at ``path``.

    :param python: the Airflow worker's Python ``major.minor``; another one here is refused
        before anything is unpickled (pickled code does not cross minor versions).
    """
    import logging
    import platform

    if python is not None and ".".join(platform.python_version_tuple()[:2]) != python:
        _Writer().record(
            "python_mismatch", python=platform.python_version(), interpreter=sys.executable, wanted=python
        )
        return 3
    try:
        import ray
    except ModuleNotFoundError as err:
        # The Jobs API ran the entrypoint with a `python` that is not Ray's (the cluster's PATH
        # finds another one): say which, so that the Airflow side can say how to fix it.
        _Writer().record(
            "no_ray",
            python=sys.executable,
            version=platform.python_version(),
            error=str(err),
        )
        return 3

    with open(path, "rb") as payload:
        request: Request = pickle.load(payload)
    started = time.monotonic()
    # Ray's own lines go to stderr at WARNING and above only: the log is the callable's.
    ray.init(
        address="auto",
        namespace=request["owner"]["namespace"],
        log_to_driver=False,
        logging_level=logging.WARNING,
    )
    out = _Writer()
    out.record("connected", seconds=round(time.monotonic() - started, 3))
    COMMANDS[request["command"]](request, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
