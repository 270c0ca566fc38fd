"""What :class:`~airflow_ray.triggers.ray.RayJobTrigger` sends back to its task: typed events.

Airflow carries a trigger's event as JSON from the triggerer to the worker that resumes the task
(the ``event`` argument of ``execute_complete``). Each kind of event is a record here with
``to_wire()`` and a ``from_wire()`` that checks what it reads, as the Amazon provider's
``validate_execute_complete_event`` checks its events: a malformed or unknown event is an
:class:`~airflow_ray.exceptions.AirflowRayError` that shows what was received, never a ``KeyError``.

Every event carries a :class:`Resume`: what the task recorded when it submitted the job (its call
id and name, whether the result is pinned and kept, the try), which it needs to finish or fail.
The same record is what a try stores in the task state store for a retry to reconnect.

- :class:`JobAnswered`: the job's entrypoint answered (the result's description, or the error).
- :class:`JobEnded`: the job ended without an answer (stopped from outside, its runtime_env or
  entrypoint failed, its node died, or it is gone): its status and the end of its log.
- :class:`FollowFailed`: the trigger could not follow the job (the Jobs API failed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_ray.exceptions import AirflowRayError

if TYPE_CHECKING:
    from airflow_ray.cluster.transport import Call


def _shown(document: Any) -> str:
    text = repr(document)
    return text if len(text) <= 500 else text[:500] + "..."


def _malformed(document: Any, why: str) -> AirflowRayError:
    return AirflowRayError(
        f"The Ray job trigger sent an event that this version of airflow-ray cannot read ({why}): "
        f"{_shown(document)}. Clear the task to run it again; if the triggerer runs another "
        f"airflow-ray version than the workers, install the same version on both."
    )


def _field(document: dict[str, Any], name: str, kind: type | tuple[type, ...], optional: bool = False) -> Any:
    value = document.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, kind):
        raise _malformed(document, f"its {name!r} is {type(value).__name__}, not {_kinds(kind)}")
    return value


def _kinds(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


@dataclass(frozen=True)
class Resume:
    """What a try recorded when it submitted its Ray task: enough to find the call again and
    finish it, in the process that resumes after a deferral or in a retry after the worker died.

    :param call_id: the call's id (the Ray job's, through the Jobs API).
    :param name: the Ray task's name.
    :param pinned: the owner actor pins the result (to keep it, or to checkpoint it from there).
    :param keep: the result stays in the cluster: the XCom holds references to it.
    :param try_number: the try that submitted it (0: not recorded); its result is pinned under it.
    """

    call_id: str
    name: str
    pinned: bool = False
    keep: bool = False
    try_number: int = 0

    @property
    def call(self) -> Call:
        from airflow_ray.cluster.transport import Call

        return Call(self.name, self.call_id)

    def to_wire(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "name": self.name,
            "pinned": self.pinned,
            "keep": self.keep,
            "try": self.try_number,
        }

    @classmethod
    def from_wire(cls, document: Any) -> Resume:
        """:raises AirflowRayError: ``document`` is no record of a submitted call."""
        if not isinstance(document, dict):
            raise _malformed(document, f"the recorded call is {type(document).__name__}, not a dict")
        for key in ("call_id", "name"):
            if not isinstance(document.get(key), str):
                raise _malformed(document, f"the recorded call lacks the task's {key!r}")
        return cls(
            document["call_id"],
            document["name"],
            bool(document.get("pinned")),
            bool(document.get("keep")),
            int(document.get("try") or 0),
        )


def _resume(document: dict[str, Any]) -> Resume:
    resume = _field(document, "resume", dict)
    for key in ("call_id", "name"):
        if not isinstance(resume.get(key), str):
            raise _malformed(document, f"its 'resume' lacks the task's {key!r}")
    return Resume.from_wire(resume)


@dataclass(frozen=True)
class JobAnswered:
    """The job's entrypoint answered: ``record`` is its ``end`` (or ``infeasible``,
    ``unscheduled``, ``too_big``) record, read by :func:`airflow_ray.cluster.jobs.outcome`."""

    status: ClassVar[str] = "answered"
    resume: Resume
    record: dict[str, Any]

    def to_wire(self) -> dict[str, Any]:
        return {"status": self.status, "resume": self.resume.to_wire(), "record": self.record}

    @classmethod
    def from_wire(cls, document: dict[str, Any]) -> JobAnswered:
        record = _field(document, "record", dict)
        if not isinstance(record.get("event"), str):
            raise _malformed(document, "its 'record' names no event")
        return cls(_resume(document), record)


@dataclass(frozen=True)
class JobEnded:
    """The job ended without an answer.

    :param info: the job's status document from the Jobs API (``status``, ``message``,
        ``error_type``), ``None`` when the job is gone.
    :param log_tail: the last lines of the job's log.
    :param records: what the entrypoint recorded before it ended (e.g. that its interpreter has
        no Ray).
    """

    status: ClassVar[str] = "ended"
    resume: Resume
    info: dict[str, Any] | None
    log_tail: list[str] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)

    def to_wire(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "resume": self.resume.to_wire(),
            "info": self.info,
            "log_tail": self.log_tail,
            "records": self.records,
        }

    @classmethod
    def from_wire(cls, document: dict[str, Any]) -> JobEnded:
        tail = _field(document, "log_tail", list, optional=True) or []
        records = _field(document, "records", list, optional=True) or []
        if not all(isinstance(line, str) for line in tail) or not all(isinstance(r, dict) for r in records):
            raise _malformed(
                document, "its 'log_tail' or 'records' holds something else than lines or records"
            )
        return cls(
            _resume(document), _field(document, "info", dict, optional=True), list(tail), list(records)
        )


@dataclass(frozen=True)
class FollowFailed:
    """The trigger could not follow the job: ``message`` says why."""

    status: ClassVar[str] = "error"
    resume: Resume
    message: str

    def to_wire(self) -> dict[str, Any]:
        return {"status": self.status, "resume": self.resume.to_wire(), "message": self.message}

    @classmethod
    def from_wire(cls, document: dict[str, Any]) -> FollowFailed:
        return cls(_resume(document), _field(document, "message", str))


JobEvent = JobAnswered | JobEnded | FollowFailed
_KINDS: dict[str, type[JobAnswered] | type[JobEnded] | type[FollowFailed]] = {
    kind.status: kind for kind in (JobAnswered, JobEnded, FollowFailed)
}


def event_from_wire(document: Any) -> JobEvent:
    """The event that ``document`` (what ``execute_complete`` received) carries.

    :raises AirflowRayError: it is not an event of :class:`RayJobTrigger`; the message shows it.
    """
    if not isinstance(document, dict):
        raise _malformed(document, f"it is {type(document).__name__}, not a dict")
    kind = _KINDS.get(document.get("status"))  # type: ignore[arg-type]
    if kind is None:
        raise _malformed(document, f"its status {document.get('status')!r} is not one of {sorted(_KINDS)}")
    return kind.from_wire(document)
