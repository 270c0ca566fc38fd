"""What crosses between the Airflow worker and the Ray cluster: typed here, plain data on the wire.

A class shipped by value is a different class on the other side, so nothing in this module is
sent as itself: each type has ``to_wire()`` (tuples, dicts, strings, numbers, bytes) and a
``from_wire()`` that rebuilds it, and both sides use this one module to do so.

- :class:`Producer`: the identity of one XCom (DAG, run, task, map index, key). It owns the key a
  result is pinned under, the folder of its checkpoint and how errors name it.
- Events a running task sends, in order: :class:`Output` (what the callable printed), then
  :class:`Failure` or :class:`Returned` (followed by the value itself, or one value per key of a
  split dict).
- :class:`PollReply`: what the owner actor answers about a call (:class:`CallState`, output,
  and at the end a :class:`CallError` or the :class:`Returned` description).
- Input slots: where a value already in the cluster goes in a task's arguments.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

NO_MAP_INDEX = -1
RETURN_VALUE = "return_value"


@dataclass(frozen=True)
class Producer:
    """The XCom a result belongs to: ``key`` of ``task_id`` (``map_index``) in ``run_id`` of ``dag_id``,
    as made by try ``try_number`` of the task instance (0: not tied to a try).

    A result is pinned under a key that names the try which submitted it, so that a copy started
    by an earlier try (an orphan of a killed worker) can never replace what a later try's XCom
    row describes.
    """

    dag_id: str
    run_id: str
    task_id: str
    map_index: int = NO_MAP_INDEX
    key: str = RETURN_VALUE
    try_number: int = 0

    @classmethod
    def from_wire(cls, document: Any) -> Producer:
        if isinstance(document, Producer):
            return document
        return cls(
            str(document["dag_id"]),
            str(document["run_id"]),
            str(document["task_id"]),
            NO_MAP_INDEX if document.get("map_index") is None else int(document["map_index"]),
            str(document.get("key") or RETURN_VALUE),
            int(document.get("try_number") or 0),
        )

    def to_wire(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "dag_id": self.dag_id,
            "run_id": self.run_id,
            "task_id": self.task_id,
            "map_index": self.map_index,
            "key": self.key,
        }
        if self.try_number:
            document["try_number"] = self.try_number
        return document

    def with_key(self, key: str) -> Producer:
        """The same task instance's XCom ``key`` (a split dict pins each key on its own)."""
        return replace(self, key=key)

    def with_try(self, try_number: int) -> Producer:
        return replace(self, try_number=try_number)

    @property
    def task_instance(self) -> tuple[str, str, str, int]:
        """The task instance whose XComs these are, whatever the key and the try."""
        return (self.dag_id, self.run_id, self.task_id, self.map_index)

    @property
    def pin_key(self) -> str:
        """The key the owner actor keeps the result under."""
        base = f"{self.dag_id}/{self.run_id}/{self.task_id}/{self.map_index}/{self.key}"
        return f"{base}@{self.try_number}" if self.try_number else base

    def folder_parts(self) -> list[str]:
        """The parts of its checkpoint folder, below the configured prefix."""
        return [self.dag_id, self.run_id, self.task_id, str(self.map_index), self.key]

    def describe(self) -> str:
        """How errors and logs name it: ``XCom 'k' of task 't' (map index 2) in run 'r' of DAG 'd'``."""
        index = f" (map index {self.map_index})" if self.map_index >= 0 else ""
        return (
            f"XCom {self.key!r} of task {self.task_id!r}{index} in run {self.run_id!r} of DAG {self.dag_id!r}"
        )


# -- events of a running task --------------------------------------------------------------


class EventKind(str, enum.Enum):
    OUTPUT = "output"
    ERROR = "error"
    RETURN = "return"


class Output(NamedTuple):
    """Text the callable printed or logged."""

    text: str

    def to_wire(self) -> tuple[str, str]:
        return (EventKind.OUTPUT.value, self.text)


class Failure(NamedTuple):
    """The callable raised: its exception pickled (``None`` when it cannot be; see
    :func:`~airflow_ray._remote.task.pickle_exception`), its traceback, and its class's name."""

    pickled: bytes | None
    traceback: str
    type_name: str | None = None

    def to_wire(self) -> tuple[str, bytes | None, str, str | None]:
        return (EventKind.ERROR.value, self.pickled, self.traceback, self.type_name)


class Returned(NamedTuple):
    """The callable returned. ``meta`` describes the value (type, size, shape ...); for a dict
    split into one XCom per key, ``parts`` holds each key's description, in the order in which
    the values follow."""

    meta: dict[str, Any]
    parts: dict[str, dict[str, Any]] | None = None

    def to_wire(self) -> tuple[str, dict[str, Any]]:
        meta = dict(self.meta)
        if self.parts is not None:
            meta.update(split_keys=list(self.parts), split_meta=dict(self.parts))
        return (EventKind.RETURN.value, meta)

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> Returned:
        meta = dict(meta)
        keys = meta.pop("split_keys", None)
        parts = meta.pop("split_meta", None)
        if keys is None:
            return cls(meta)
        return cls(meta, {key: dict(parts[key]) for key in keys})


Event = Output | Failure | Returned


def parse_event(wire: Any) -> Event:
    """The typed event of a wire tuple sent by :mod:`airflow_ray._remote.task`."""
    kind = EventKind(wire[0])
    if kind is EventKind.OUTPUT:
        return Output(wire[1])
    if kind is EventKind.ERROR:
        return Failure(wire[1], wire[2], wire[3] if len(wire) > 3 else None)
    return Returned.from_meta(wire[1])


def rebuild_exception(
    kind: type[BaseException], args: tuple[Any, ...], state: dict[str, Any]
) -> BaseException:
    """An exception of class ``kind`` with these ``args`` and attributes, built without calling
    its ``__init__`` (which may take other arguments than ``args``)."""
    error = kind.__new__(kind, *args)
    error.args = args
    error.__dict__.update(state)
    return error


@dataclass(frozen=True)
class ExceptionRecipe:
    """Pickles as a call of :func:`rebuild_exception`: unpickling it gives the exception itself."""

    kind: type[BaseException]
    args: tuple[Any, ...]
    state: dict[str, Any]

    def __reduce__(self) -> tuple[Any, ...]:
        return (rebuild_exception, (self.kind, self.args, self.state))


# -- calls, as the owner actor follows them -------------------------------------------------


class CallState(str, enum.Enum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    UNKNOWN = "unknown"  # the owner has no such call (it was taken, or the owner is a new one)

    def is_terminal(self) -> bool:
        return self is not CallState.RUNNING


class ErrorKind(str, enum.Enum):
    CALLABLE = "callable"  # the callable raised; the exception and its traceback travel
    TASK = "task"  # the Ray task failed outside the callable (worker died, cancelled, OOM)


@dataclass(frozen=True)
class CallError:
    kind: ErrorKind
    message: str  # the remote traceback for CALLABLE, Ray's explanation for TASK
    pickled: bytes | None = None
    type_name: str | None = None  # the qualified name of the callable's exception class

    def to_wire(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "message": self.message,
            "pickled": self.pickled,
            "type_name": self.type_name,
        }

    @classmethod
    def from_wire(cls, document: dict[str, Any]) -> CallError:
        return cls(
            ErrorKind(document["kind"]),
            str(document["message"]),
            document.get("pickled"),
            document.get("type_name"),
        )


@dataclass(frozen=True)
class PollReply:
    """Output from the offset asked for on, and the outcome once the call has ended."""

    state: CallState
    output: list[str] = field(default_factory=list)
    offset: int = 0
    error: CallError | None = None
    returned: Returned | None = None
    started: bool = True  # False while the task waits for a worker (resources, placement)

    def to_wire(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "output": self.output,
            "offset": self.offset,
            "error": None if self.error is None else self.error.to_wire(),
            "returned": None if self.returned is None else self.returned.to_wire()[1],
            "started": self.started,
        }

    @classmethod
    def from_wire(cls, document: dict[str, Any]) -> PollReply:
        error, returned = document.get("error"), document.get("returned")
        return cls(
            CallState(document["state"]),
            list(document["output"]),
            int(document["offset"]),
            None if error is None else CallError.from_wire(error),
            None if returned is None else Returned.from_meta(returned),
            bool(document.get("started", True)),
        )


# -- checkpoint refusals -------------------------------------------------------------------


class CheckpointRefusedError(ValueError):
    """A checkpoint failed verification (or may not be unpickled from where it is); never loaded."""


def is_refusal(error: BaseException) -> bool:
    """Whether ``error`` is a :class:`CheckpointRefusedError`, also as rebuilt on the other side
    (a class shipped by value is a different class object there: it is recognised by name)."""
    wanted = f"{__name__}.{CheckpointRefusedError.__qualname__}"
    return any(f"{kind.__module__}.{kind.__qualname__}" == wanted for kind in type(error).__mro__)


# -- inputs already in the cluster ---------------------------------------------------------

_SLOT_MARK = "\x00airflow_ray.input\x00"
UNCHANGED: Any = object()


def ref_slot(index: int) -> tuple[str, int]:
    """What stands in an argument for the task's ``index``-th input (a value in the cluster)."""
    return (_SLOT_MARK, index)


def slot_index(value: Any) -> int | None:
    if isinstance(value, tuple) and len(value) == 2 and value[0] == _SLOT_MARK:
        return int(value[1])
    return None


def map_tree(value: Any, fn: Callable[[Any], Any]) -> Any:
    """``value`` with each node of its lists, tuples and dicts for which ``fn`` returns something
    other than :data:`UNCHANGED` replaced by that (which is not walked into)."""
    replaced = fn(value)
    if replaced is not UNCHANGED:
        return replaced
    if isinstance(value, list):
        return [map_tree(item, fn) for item in value]
    if isinstance(value, tuple):
        return tuple(map_tree(item, fn) for item in value)
    if isinstance(value, dict):
        return {key: map_tree(item, fn) for key, item in value.items()}
    return value


def fill_slots(value: Any, inputs: tuple[Any, ...]) -> Any:
    """``value`` with every :func:`ref_slot` replaced by its input."""

    def fill(node: Any) -> Any:
        index = slot_index(node)
        return UNCHANGED if index is None else inputs[index]

    return map_tree(value, fill)
