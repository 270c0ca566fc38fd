"""The owner actor's body: submits Ray tasks, follows their output, and owns their results.

Ray frees an object when the process that owns it exits, and the Airflow task process is a Ray
driver that exits when the task ends. So the tasks are submitted by a detached, named, async
actor that lives in the cluster: it owns every result, keeps the ones pinned for XCom under
their :class:`~.protocol.Producer`'s key, and releases them on request, after a newer run of the
same DAG, or after a TTL. Inputs arrive as pin keys and are resolved here, inside the cluster.

The actor never blocks on ``ray.get`` and never polls: it awaits, so many tasks from many Airflow
workers are in flight at once. Each call keeps only its newest output
(:mod:`~airflow_ray._remote.output_buffer`). Its creation and lookup live on the driver side, in
:mod:`airflow_ray.cluster.owner`.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from airflow_ray._remote.output_buffer import OutputBuffer
from airflow_ray._remote.protocol import (
    CallError,
    CallState,
    ErrorKind,
    Failure,
    Output,
    PollReply,
    Producer,
    Returned,
    parse_event,
)
from airflow_ray._remote.task import run_streaming

FINISHED_CALL_TTL = 600.0
SWEEP_INTERVAL = 30.0


@dataclass
class _Call:
    """One submitted task, as the actor follows it."""

    generator: Any
    producer: Producer | None  # where to pin the result; None: the caller takes it
    orphan_timeout: float | None = None  # cancel it when nobody asked about it for this long
    output: OutputBuffer = field(default_factory=OutputBuffer)
    state: CallState = CallState.RUNNING
    error: CallError | None = None
    returned: Returned | None = None
    result: Any = None  # ObjectRef of the return value, or {key: ObjectRef} for a split dict
    finished_at: float = 0.0
    seen_at: float = field(default_factory=time.monotonic)  # last asked about (poll, take, ...)
    started: bool = False  # the task sent its first event: it has a worker
    stop_reason: str | None = None  # why the owner cancelled it
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    next_output: int = 0  # the number of the output chunk to append next
    early: dict[int, str] = field(default_factory=dict)  # chunks that came before their turn


@dataclass
class _Pin:
    ref: Any
    producer: Producer
    meta: dict[str, Any]
    created: float


class OwnerActor:
    """The body of the detached owner actor."""

    def __init__(self, keep_runs: int, pin_ttl: float) -> None:
        self._calls: dict[str, _Call] = {}
        self._pins: dict[str, _Pin] = {}
        self._keep_runs = keep_runs
        self._pin_ttl = pin_ttl
        self._next_id = 0
        self._sweeper: asyncio.Task[None] | None = None
        self._sweep_wake: asyncio.Event | None = None  # set: look at the calls' timeouts again
        self._run: Any = None
        # The newest try of each task instance that submitted here: an older try's call is
        # stopped, and its result never pinned (see Producer.try_number).
        self._newest_try: dict[tuple[str, str, str, int], int] = {}

    def configure(self, keep_runs: int, pin_ttl: float) -> None:
        """Apply the current ``[ray]`` retention settings (the actor outlives config changes)."""
        self._keep_runs = keep_runs
        self._pin_ttl = pin_ttl

    # -- running tasks ----------------------------------------------------------------------

    async def submit(
        self,
        fn: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        inputs: list[Any],
        options: dict[str, Any],
        producer: dict[str, Any] | None,
        split_dict: bool,
        orphan_timeout: float | None = None,
        requires: list[tuple[str, str]] | None = None,
        environ: dict[str, str] | None = None,
    ) -> str:
        """Start ``fn`` as a Ray task and return the call id to poll.

        :param inputs: what the ``ref_slot`` markers in ``args``/``kwargs`` stand for: a pin key
            (resolved here) or ``[ObjectRef]``. They are passed as top-level task arguments, so
            Ray resolves them in the worker, zero-copy where it can.
        :param options: Ray task options. Ray does not retry the task unless they say so
            (``max_retries``): retries are Airflow's.
        :param producer: pin the result under this XCom (each value of a dict result under its
            own key with ``split_dict``); ``None``: the caller takes the result. A call of an
            earlier try of the same task instance that still runs is stopped.
        :param orphan_timeout: stop the task when nobody polled it for this many seconds (its
            Airflow worker died and no retry came back for it).
        :param requires: ``(package, what needs it)`` that the task checks before the callable.
        :param environ: environment variables the task sets only while the callable runs.
        :raises LookupError: naming the pin keys that are not held here.
        """
        import ray

        missing = [item for item in inputs if isinstance(item, str) and item not in self._pins]
        if missing:
            raise LookupError(f"not pinned by this owner: {', '.join(missing)}")
        refs = [self._pins[item].ref if isinstance(item, str) else item[0] for item in inputs]
        pin = None if producer is None else Producer.from_wire(producer)
        if pin is not None and pin.try_number:
            self._supersede(pin)
        self._ensure_sweeper()
        if self._run is None:
            # Ray's overloads of remote() type no required keyword-only parameter (report).
            self._run = ray.remote(run_streaming)  # type: ignore[arg-type]
        remote = self._run.options(**{"max_retries": 0, **options}, num_returns="streaming")
        self._next_id += 1
        call_id = f"{self._next_id}-{time.time_ns()}"
        generator = remote.remote(
            fn,
            args,
            kwargs,
            split_dict,
            *refs,
            requires=tuple(tuple(r) for r in requires or ()),
            environ=environ or {},
            report=(ray.get_runtime_context().current_actor, call_id),
        )
        call = _Call(generator, pin, orphan_timeout)
        self._calls[call_id] = call
        if orphan_timeout and self._sweep_wake is not None:
            self._sweep_wake.set()  # its timeout may be shorter than the sweeper's current wait
        asyncio.get_running_loop().create_task(self._follow(call))
        return call_id

    def _supersede(self, producer: Producer) -> None:
        """Record ``producer``'s try as its task instance's newest; stop the calls of older tries."""
        instance = producer.task_instance
        if self._newest_try.get(instance, 0) >= producer.try_number:
            return
        self._newest_try[instance] = producer.try_number
        for call in self._calls.values():
            old = call.producer
            if (
                call.state is CallState.RUNNING
                and old is not None
                and old.task_instance == instance
                and old.try_number < producer.try_number
            ):
                self._stop(call, f"try {producer.try_number} of the task started over")

    async def _follow(self, call: _Call) -> None:
        import ray

        try:
            async for ref in call.generator:
                event = parse_event(await ref)
                call.started = True
                if isinstance(event, Output):
                    if event.text:
                        call.output.append(event.text)
                    call.changed.set()
                elif isinstance(event, Failure):
                    call.error = CallError(
                        ErrorKind.CALLABLE, event.traceback, event.pickled, event.type_name
                    )
                    break
                else:
                    call.returned = event
                    refs = await _last_refs(call.generator, 1 if event.parts is None else len(event.parts))
                    call.result = (
                        refs[0] if event.parts is None else dict(zip(event.parts, refs, strict=True))
                    )
                    if unmeasured(event):
                        call.returned = with_stored_sizes(event, _stored_sizes(refs))
                    break
            else:
                call.error = CallError(ErrorKind.TASK, "the task ended without a result")
        except ray.exceptions.TaskCancelledError:
            call.error = CallError(ErrorKind.TASK, f"the task was cancelled{_because(call.stop_reason)}")
        except ray.exceptions.OutOfMemoryError as err:
            call.error = CallError(ErrorKind.TASK, out_of_memory(err))
        except ray.exceptions.RayError as err:
            call.error = CallError(ErrorKind.TASK, f"{type(err).__name__}: {err}")
        if call.error is None and call.producer is not None:
            newest = self._newest_try.get(call.producer.task_instance, 0)
            if call.producer.try_number < newest:
                # A late copy (of a try whose worker died) never replaces a newer try's result.
                call.error = CallError(
                    ErrorKind.TASK,
                    f"its result came after try {newest} of the task had started over, and was dropped",
                )
            else:
                self._pin_result(call)
        call.state = CallState.FAILED if call.error else CallState.DONE
        call.finished_at = time.time()
        call.changed.set()

    def _pin_result(self, call: _Call) -> None:
        assert call.returned is not None and call.producer is not None
        now = time.time()
        if call.returned.parts is not None:
            for key, ref in call.result.items():
                self.pin(call.producer.with_key(key), ref, call.returned.parts[key], now)
        else:
            self.pin(call.producer, call.result, call.returned.meta, now)
        self._apply_retention(call.producer.dag_id)

    def pin(self, producer: Producer, ref: Any, meta: dict[str, Any], created: float) -> None:
        if producer.try_number:
            # What earlier tries of the task instance pinned is no XCom's any more.
            for key in [
                k
                for k, p in self._pins.items()
                if p.producer.task_instance == producer.task_instance
                and 0 < p.producer.try_number < producer.try_number
            ]:
                del self._pins[key]
        self._pins[producer.pin_key] = _Pin(ref, producer, meta, created)

    async def output(self, call_id: str, seq: int, text: str) -> None:
        """Chunk ``seq`` (0, 1, ...) of what the task of ``call_id`` printed or logged, sent while
        its callable runs. This actor runs the calls in no set order: a chunk that comes before
        the ones numbered below it waits for them."""
        call = self._calls.get(call_id)
        if call is None:
            return
        call.early[seq] = text
        while call.next_output in call.early:
            chunk = call.early.pop(call.next_output)
            call.next_output += 1
            if chunk:
                call.output.append(chunk)
        call.changed.set()

    async def poll(self, call_id: str, offset: int, timeout: float) -> dict[str, Any]:
        """A :class:`~.protocol.PollReply` (wire form): output chunks from ``offset`` on, waiting
        up to ``timeout`` s for something new."""
        call = self._calls.get(call_id)
        if call is None:
            return PollReply(CallState.UNKNOWN, offset=offset).to_wire()
        call.seen_at = time.monotonic()
        if offset >= call.output.end and call.state is CallState.RUNNING:
            call.changed.clear()
            try:
                await asyncio.wait_for(call.changed.wait(), timeout)
            except TimeoutError:
                pass
        output, end = call.output.read(offset)
        return PollReply(call.state, output, end, call.error, call.returned, call.started).to_wire()

    async def take(self, call_id: str) -> list[Any]:
        """The result of a finished call, as ``[ref]`` (or ``[{key: ref}]``), and forget the call."""
        call = self._calls.pop(call_id, None)
        return [None if call is None else call.result]

    async def cancel(self, call_id: str) -> bool:
        call = self._calls.get(call_id)
        if call is None or call.state is not CallState.RUNNING:
            return False
        self._stop(call, None)
        return True

    def _stop(self, call: _Call, reason: str | None) -> None:
        import ray

        call.stop_reason = reason
        ray.cancel(call.generator, force=True)

    # -- pins -------------------------------------------------------------------------------

    async def get(self, key: str) -> list[Any] | None:
        """``[ref]`` of a pinned object, or ``None`` when nothing is pinned under ``key``."""
        pin = self._pins.get(key)
        return None if pin is None else [pin.ref]

    async def held(self, keys: list[str]) -> list[str]:
        """Which of ``keys`` are pinned here."""
        return [key for key in keys if key in self._pins]

    async def list_pins(self, dag_id: str | None = None, run_id: str | None = None) -> list[dict[str, Any]]:
        return [
            {"pin": key, "created": pin.created, **pin.producer.to_wire(), "meta": pin.meta}
            for key, pin in self._pins.items()
            if (dag_id is None or pin.producer.dag_id == dag_id)
            and (run_id is None or pin.producer.run_id == run_id)
        ]

    async def release(self, keys: list[str]) -> int:
        return sum(self._pins.pop(key, None) is not None for key in keys)

    async def release_matching(self, dag_id: str | None = None, run_id: str | None = None) -> int:
        keys = [pin["pin"] for pin in await self.list_pins(dag_id, run_id)]
        return await self.release(keys)

    def _apply_retention(self, dag_id: str) -> None:
        """Keep the pins of the newest ``keep_runs`` runs of ``dag_id`` (by first pin)."""
        first_pin: dict[str, float] = {}
        for pin in self._pins.values():
            if pin.producer.dag_id == dag_id:
                run = pin.producer.run_id
                first_pin[run] = min(first_pin.get(run, pin.created), pin.created)
        stale = set(sorted(first_pin, key=first_pin.__getitem__)[: max(len(first_pin) - self._keep_runs, 0)])
        for key in [
            k for k, p in self._pins.items() if p.producer.dag_id == dag_id and p.producer.run_id in stale
        ]:
            del self._pins[key]

    def _ensure_sweeper(self) -> None:
        if self._sweeper is None or self._sweeper.done():
            self._sweep_wake = asyncio.Event()
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever(self._sweep_wake))

    async def _sweep_forever(self, wake: asyncio.Event) -> None:
        while True:
            try:
                await asyncio.wait_for(wake.wait(), self._sweep_interval())
            except TimeoutError:
                pass
            wake.clear()
            self.sweep()
            self.stop_orphans()

    def _sweep_interval(self) -> float:
        """Often enough to stop an orphan within a third of its timeout past it."""
        timeouts = [c.orphan_timeout for c in self._calls.values() if c.orphan_timeout and not c.finished_at]
        return max(min([SWEEP_INTERVAL, *(t / 3 for t in timeouts)]), 0.5)

    def stop_orphans(self, now: float | None = None) -> list[str]:
        """Stop the running calls nobody asked about for longer than their ``orphan_timeout``."""
        now = time.monotonic() if now is None else now
        stopped = []
        for call_id, call in self._calls.items():
            if (
                call.state is CallState.RUNNING
                and call.orphan_timeout
                and call.stop_reason is None
                and now - call.seen_at > call.orphan_timeout
            ):
                self._stop(
                    call,
                    f"nobody followed it for {call.orphan_timeout:g} s ([ray] orphan_timeout): "
                    f"its Airflow task process had died and no retry reconnected to it",
                )
                stopped.append(call_id)
        return stopped

    def sweep(self, now: float | None = None) -> int:
        """Release pins older than the TTL and forget finished calls nobody took."""
        now = time.time() if now is None else now
        expired = [key for key, pin in self._pins.items() if now - pin.created > self._pin_ttl]
        for key in expired:
            del self._pins[key]
        for call_id in [
            c
            for c, call in self._calls.items()
            if call.finished_at and now - call.finished_at > FINISHED_CALL_TTL
        ]:
            del self._calls[call_id]
        live = {p.producer.task_instance for p in self._pins.values()} | {
            c.producer.task_instance for c in self._calls.values() if c.producer is not None
        }
        for instance in [i for i in self._newest_try if i not in live]:
            del self._newest_try[instance]
        return len(expired)


async def _last_refs(generator: Any, count: int) -> list[Any]:
    """The ObjectRefs of the generator's last ``count`` items, without fetching their values.

    Awaiting an item that is not reported yet would pull its value onto this actor's node (Ray's
    async iteration awaits the object); a result stays on the node that made it until a consumer
    needs it. These are the task's last items, and a streaming task has reported all its items
    once it has finished: so await its completion (a small object, or the task's error), after
    which each ``__anext__`` hands the reported ref over without awaiting its value.
    """
    await generator.completed()
    return [await generator.__anext__() for _ in range(count)]


def _stored_sizes(refs: list[Any]) -> list[int | None]:
    """The bytes that Ray stores for each of ``refs`` (the serialized value and Ray's header of
    about 250 bytes), or ``None`` where Ray does not say.

    Exact, and nothing is read or pickled again: this actor owns the objects, so Ray's own
    record of their size is in this process (``get_local_object_locations`` makes no RPC).
    """
    import ray.experimental

    try:
        found = ray.experimental.get_local_object_locations(refs)
    except Exception:  # noqa: BLE001 - a size is best effort (as the task's describe), never a failure
        return [None] * len(refs)
    sizes: list[int | None] = []
    for ref in refs:
        size = found.get(ref, {}).get("object_size")
        sizes.append(size if isinstance(size, int) and size > 0 else None)
    return sizes


def unmeasured(returned: Returned) -> bool:
    """Whether the task left a size of ``returned`` for this actor to fill in."""
    metas = [returned.meta, *(returned.parts or {}).values()]
    return any(meta.get("size_bytes") is None for meta in metas)


def with_stored_sizes(returned: Returned, sizes: list[int | None]) -> Returned:
    """``returned`` with each ``size_bytes`` that the task left unmeasured (``None``) set to the
    size Ray knows of the stored object.

    What each size means: the task's ``nbytes`` is exact for the data of a numpy array or an
    Arrow table, and an estimate for a pandas DataFrame (``memory_usage(deep=False)``: the
    contents of object columns are not counted); a bytes value's length is exact. Ray's size,
    used here for any value the task did not measure (it cannot, short of pickling the value a
    second time), is exact for what the object store holds: the pickled value with its framing
    and Ray's header of about 250 bytes. A split dict's own size, when unmeasured, is the sum of
    its values' (its keys are not stored).
    """
    if returned.parts is None:
        (size,) = sizes
        meta = (
            returned.meta
            if returned.meta.get("size_bytes") is not None
            else {**returned.meta, "size_bytes": size}
        )
        return Returned(meta)
    parts = {
        key: meta if meta.get("size_bytes") is not None else {**meta, "size_bytes": size}
        for (key, meta), size in zip(returned.parts.items(), sizes, strict=True)
    }
    meta = returned.meta
    if meta.get("size_bytes") is None:
        known = [part["size_bytes"] for part in parts.values() if isinstance(part.get("size_bytes"), int)]
        meta = {**meta, "size_bytes": sum(known) if len(known) == len(parts) else None}
    return Returned(meta, parts)


def _because(reason: str | None) -> str:
    return f": {reason}" if reason else ""


def out_of_memory(error: BaseException) -> str:
    """What a task killed by Ray's memory monitor tells the Airflow user."""
    return (
        f"Ray's memory monitor killed it because its node ran out of memory. Ray said: {error}\n"
        f"Reserve the memory the callable needs, memory=<bytes> on the task (Ray then only runs "
        f"it on a node with that much unreserved), use less (smaller batches, fewer copies), or "
        f"run it on a bigger node. Ray does not retry it: Airflow's retries apply."
    )
