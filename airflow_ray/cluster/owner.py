"""The owner actor: submits Ray tasks, streams their output, and owns their results.

Ray frees an object when the process that owns it exits, and the Airflow task process is a Ray
driver that exits when the task ends. So the tasks are submitted by a detached, named, async
actor that lives in the cluster: it owns every result, keeps the ones pinned for XCom under
their XCom key, and releases them on request, after a newer run of the same DAG, or after a TTL.

The actor never blocks on ``ray.get``: it awaits, so many tasks from many Airflow workers are in
flight at once. Like :mod:`~airflow_ray.cluster.remote_call` this module is shipped to the
cluster by value and imports only the standard library and Ray.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import sys
import time
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from airflow_ray.cluster.remote_call import run_streaming

OWNER_NAME = "airflow_ray_owner"
_FINISHED_CALL_TTL = 600.0
_SWEEP_INTERVAL = 30.0


def pin_key(dag_id: str, run_id: str, task_id: str, map_index: int | None, key: str) -> str:
    """The key a result is pinned under: its XCom's identity."""
    return f"{dag_id}/{run_id}/{task_id}/{-1 if map_index is None else map_index}/{key}"


@dataclass
class _Call:
    """One submitted task, as the actor follows it."""

    generator: Any
    pin: bool
    producer: dict[str, Any]
    output: list[str] = field(default_factory=list)
    state: str = "running"  # running | done | failed
    error: tuple[str, Any, str] | None = None  # ("callable", pickled, traceback) / ("ray", None, message)
    meta: dict[str, Any] | None = None
    result: Any = None  # ObjectRef of the return value, or {key: ObjectRef}
    finished_at: float = 0.0
    changed: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class _Pin:
    ref: Any
    producer: dict[str, Any]
    meta: dict[str, Any]
    created: float


class OwnerActor:
    """The body of the detached owner actor (created by :func:`get_owner`)."""

    def __init__(self, keep_runs: int, pin_ttl: float) -> None:
        self._calls: dict[str, _Call] = {}
        self._pins: dict[str, _Pin] = {}
        self._keep_runs = keep_runs
        self._pin_ttl = pin_ttl
        self._next_id = 0
        self._sweeper: asyncio.Task[None] | None = None
        self._run: Any = None

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
        refs: list[Any],
        options: dict[str, Any],
        pin: bool,
        producer: dict[str, Any],
        split_dict: bool,
    ) -> str:
        """Start ``fn`` as a Ray task and return the call id to poll.

        ``refs`` are ObjectRefs of inputs, passed as top-level arguments so that Ray resolves them
        in the worker. With ``pin``, the result is kept under its XCom key (``producer``; each
        value of a dict result under its own key with ``split_dict``).
        """
        import ray

        self._ensure_sweeper()
        if self._run is None:
            self._run = ray.remote(run_streaming)
        remote = self._run.options(**options, num_returns="streaming")
        generator = remote.remote(fn, args, kwargs, split_dict, *refs)
        self._next_id += 1
        call_id = f"{self._next_id}-{time.time_ns()}"
        call = _Call(generator=generator, pin=pin, producer=producer)
        self._calls[call_id] = call
        asyncio.get_running_loop().create_task(self._follow(call))
        return call_id

    async def _follow(self, call: _Call) -> None:
        import ray

        try:
            async for ref in call.generator:
                event = await ref
                kind = event[0]
                if kind == "output":
                    call.output.append(event[1])
                elif kind == "error":
                    call.error = ("callable", event[1], event[2])
                    break
                elif kind == "return":
                    call.meta = event[1]
                    if event[1].get("split_keys") is not None:
                        call.result = {
                            key: await call.generator.__anext__() for key in event[1]["split_keys"]
                        }
                    else:
                        call.result = await call.generator.__anext__()
                    break
                call.changed.set()
            else:
                call.error = ("ray", None, "the task ended without a result")
        except ray.exceptions.TaskCancelledError:
            call.error = ("ray", None, "the task was cancelled")
        except ray.exceptions.RayError as err:
            call.error = ("ray", None, f"{type(err).__name__}: {err}")
        if call.error is None and call.pin:
            self._pin_result(call)
        call.state = "failed" if call.error else "done"
        call.finished_at = time.time()
        call.changed.set()

    def _pin_result(self, call: _Call) -> None:
        assert call.meta is not None
        now = time.time()
        if isinstance(call.result, dict):
            for key, ref in call.result.items():
                producer = {**call.producer, "key": key}
                self._pins[pin_key(**producer)] = _Pin(ref, producer, call.meta["split_meta"][key], now)
        else:
            self._pins[pin_key(**call.producer)] = _Pin(call.result, call.producer, call.meta, now)
        self._apply_retention(call.producer["dag_id"])

    async def poll(self, call_id: str, offset: int, timeout: float) -> dict[str, Any]:
        """Output chunks from ``offset`` on, waiting up to ``timeout`` s for something new."""
        call = self._calls.get(call_id)
        if call is None:
            return {"state": "unknown", "output": [], "offset": offset}
        if offset >= len(call.output) and call.state == "running":
            call.changed.clear()
            try:
                await asyncio.wait_for(call.changed.wait(), timeout)
            except asyncio.TimeoutError:
                pass
        reply: dict[str, Any] = {
            "state": call.state,
            "output": call.output[offset:],
            "offset": len(call.output),
        }
        if call.state != "running":
            reply["error"] = call.error
            reply["meta"] = call.meta
        return reply

    async def take(self, call_id: str) -> list[Any]:
        """The result of a finished call, as ``[ref]`` (or ``[{key: ref}]``), and forget the call."""
        call = self._calls.pop(call_id, None)
        return [None if call is None else call.result]

    async def cancel(self, call_id: str) -> bool:
        import ray

        call = self._calls.get(call_id)
        if call is None or call.state != "running":
            return False
        ray.cancel(call.generator, force=True)
        return True

    # -- pins -------------------------------------------------------------------------------

    async def get(self, key: str) -> list[Any] | None:
        """``[ref]`` of a pinned object, or ``None`` when nothing is pinned under ``key``."""
        pin = self._pins.get(key)
        return None if pin is None else [pin.ref]

    async def list_pins(self, dag_id: str | None = None, run_id: str | None = None) -> list[dict[str, Any]]:
        return [
            {"pin": key, "created": pin.created, **pin.producer, "meta": pin.meta}
            for key, pin in self._pins.items()
            if (dag_id is None or pin.producer["dag_id"] == dag_id)
            and (run_id is None or pin.producer["run_id"] == run_id)
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
            if pin.producer["dag_id"] == dag_id:
                run = pin.producer["run_id"]
                first_pin[run] = min(first_pin.get(run, pin.created), pin.created)
        stale = sorted(first_pin, key=first_pin.__getitem__)[: max(len(first_pin) - self._keep_runs, 0)]
        for key in [
            k
            for k, p in self._pins.items()
            if p.producer["dag_id"] == dag_id and p.producer["run_id"] in stale
        ]:
            del self._pins[key]

    def _ensure_sweeper(self) -> None:
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(_SWEEP_INTERVAL)
            self.sweep()

    def sweep(self) -> int:
        """Release pins older than the TTL and forget finished calls nobody took."""
        now = time.time()
        expired = [key for key, pin in self._pins.items() if now - pin.created > self._pin_ttl]
        for key in expired:
            del self._pins[key]
        for call_id in [
            c
            for c, call in self._calls.items()
            if call.finished_at and now - call.finished_at > _FINISHED_CALL_TTL
        ]:
            del self._calls[call_id]
        return len(expired)


@cache
def owner_name() -> str:
    """The owner actor's name, which carries a fingerprint of the code it runs.

    A detached actor keeps the code it was created with for as long as it lives; after an
    upgrade of airflow-ray the new code gets an owner of its own, and references made before
    the upgrade still find theirs by name.
    """
    from airflow_ray.cluster import remote_call

    digest = hashlib.sha1()
    for module in (sys.modules[__name__], remote_call):
        digest.update(inspect.getsource(module).encode())
    return f"{OWNER_NAME}_{digest.hexdigest()[:10]}"


def find_owner(name: str, namespace: str) -> Any | None:
    """The owner actor called ``name`` in ``namespace``, or ``None`` when it is gone."""
    import ray

    try:
        return ray.get_actor(name, namespace=namespace)
    except ValueError:
        return None


def all_owners(namespace: str) -> list[Any]:
    """Every owner actor in ``namespace``: this code's and those of earlier versions still alive."""
    import ray

    names = [
        a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if a["namespace"] == namespace
    ]
    owners = [find_owner(name, namespace) for name in names if name.startswith(OWNER_NAME)]
    return [owner for owner in owners if owner is not None]


def get_owner(namespace: str, keep_runs: int, pin_ttl: float) -> Any:
    """The cluster's owner actor in ``namespace`` for this code, created on first use."""
    import ray

    actor_class = ray.remote(OwnerActor)
    owner: Any = actor_class.options(
        name=owner_name(),
        namespace=namespace,
        lifetime="detached",
        get_if_exists=True,
        num_cpus=0,
        max_restarts=0,
        max_concurrency=1000,
    ).remote(keep_runs, pin_ttl)
    ray.get(owner.configure.remote(keep_runs, pin_ttl))
    return owner
