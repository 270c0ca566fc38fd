"""An in-memory cluster behind the :class:`~airflow_ray.cluster.transport.Transport` protocol.

Each task runs in this process as it is submitted: its input slots are filled from the pins,
its result is pinned under ``spec.pin`` or kept for :meth:`FakeTransport.take`. Everything a
caller asks is recorded, so that tests can say what was submitted, fetched and released.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from airflow_ray._remote.protocol import CallState, Producer, Returned, fill_slots
from airflow_ray.cluster.transport import Call, Input, TaskSpec
from airflow_ray.exceptions import RayInputsMissingError
from airflow_ray.xcom.reference import RayXComReference

_ABSENT = object()


class FakeTransport:
    """One cluster of one connection: ``submit`` raises :class:`RayInputsMissingError` for
    inputs the cluster does not hold, as both transports do.

    :param releases_copied: whether :meth:`release_copied` releases (the driver's) or leaves the
        pins to retention (the Jobs API's).
    """

    def __init__(
        self,
        conn_id: str = "ray_fake",
        *,
        releases_copied: bool = True,
        namespace: str = "fake_ns",
        owner: str = "fake_owner",
    ) -> None:
        self.conn_id = conn_id
        self._releases_copied = releases_copied
        self._namespace = namespace
        self._owner = owner
        self.pins: dict[str, Any] = {}
        self.submitted: list[TaskSpec] = []
        self.asked_missing: list[list[Input]] = []
        self.fetched: list[Input] = []
        self.released: list[Input] = []
        self.forgotten: list[Call] = []
        self.cancelled: list[Call] = []
        self.small_asked: list[tuple[dict[str, Input], int]] = []
        self._results: dict[str, tuple[Any, BaseException | None]] = {}
        # Which embedded cluster it reaches (None: a cluster by address).
        self.holder: str | None = None

    @property
    def namespace(self) -> str:
        return self._namespace

    @property
    def owner_name(self) -> str:
        return self._owner

    # -- running tasks ---------------------------------------------------------------------

    def submit(self, spec: TaskSpec) -> Call:
        gone = [item.pin for item in spec.inputs if item.pin not in self.pins]
        if gone:
            raise RayInputsMissingError(f"Inputs {gone} are not in the cluster", gone)
        self.submitted.append(spec)
        call = Call(spec.name, f"call-{len(self.submitted)}")
        try:
            inputs = tuple(self.pins[item.pin] for item in spec.inputs)
            value = spec.fn(*fill_slots(spec.args, inputs), **fill_slots(spec.kwargs, inputs))
        except Exception as err:  # the task failed: follow() raises it
            self._results[call.call_id] = (None, err)
            return call
        if spec.pin is not None:
            self.pins[spec.pin.pin_key] = value
            value = None
        self._results[call.call_id] = (value, None)
        return call

    def follow(self, call: Call, on_output: Callable[[str], None], log: Any) -> Returned:
        value, error = self._results[call.call_id]
        if error is not None:
            raise error
        return Returned({"type": type(value).__name__})

    def state(self, call: Call) -> CallState:
        return CallState.DONE if call.call_id in self._results else CallState.UNKNOWN

    def link(self, call: Call) -> str | None:
        return None

    def job_id(self, call: Call) -> str | None:
        return None

    def answered(self, call: Call, answer: dict[str, Any], log: Any) -> Returned:
        return Returned(dict(answer.get("meta") or {}))

    def take(self, call: Call) -> Any:
        return self._results.pop(call.call_id)[0]

    def forget(self, call: Call) -> None:
        self.forgotten.append(call)
        self._results.pop(call.call_id, None)

    def small_results(self, call: Call, pinned: dict[str, Input], max_bytes: int) -> dict[str, Any]:
        self.small_asked.append((dict(pinned), max_bytes))
        return {key: self.pins[item.pin] for key, item in pinned.items() if item.pin in self.pins}

    def cancel(self, call: Call) -> None:
        self.cancelled.append(call)

    # -- results kept in the cluster -------------------------------------------------------

    def missing(self, inputs: list[Input]) -> list[Input]:
        self.asked_missing.append(list(inputs))
        return [item for item in inputs if item.pin not in self.pins]

    def fetch(self, item: Input) -> Any:
        self.fetched.append(item)
        if item.pin not in self.pins:
            raise LookupError(item.pin)
        return self.pins[item.pin]

    def release(self, inputs: list[Input]) -> int:
        self.released.extend(inputs)
        return sum(self.pins.pop(item.pin, _ABSENT) is not _ABSENT for item in inputs)

    def fetch_and_release(self, inputs: list[Input]) -> list[Any]:
        try:
            return [self.fetch(item) for item in inputs]
        finally:
            self.release(inputs)

    def release_copied(self, inputs: list[Input]) -> None:
        if self._releases_copied:
            self.release(inputs)

    def list_pins(self, dag_id: str | None = None, run_id: str | None = None) -> list[dict[str, Any]]:
        return [{"pin": pin} for pin in self.pins]

    def release_matching(self, dag_id: str | None = None, run_id: str | None = None) -> int:
        count = len(self.pins)
        self.pins.clear()
        return count

    # -- for tests -------------------------------------------------------------------------

    def reference(
        self, producer: Producer, value: Any = _ABSENT, checkpoint: dict[str, Any] | None = None
    ) -> RayXComReference:
        """A reference to ``producer``'s result in this cluster, pinned with ``value`` if given."""
        if value is not _ABSENT:
            self.pins[producer.pin_key] = value
        return RayXComReference(
            self.conn_id, self.namespace, self.owner_name, producer, {"type": "?"}, checkpoint
        )


def producer(task_id: str = "make", key: str = "return_value", map_index: int = -1) -> Producer:
    return Producer("dag", "manual__2026-12-06", task_id, map_index, key)
