"""Submitting a callable to Ray and following it: output lines, result, failure, cancel."""

from __future__ import annotations

import logging
import os
import pickle
import sys
import sysconfig
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from airflow_ray.exceptions import RayConfigurationError, RayTaskFailedError, RemoteCallableError

_BY_VALUE_MODULES = (
    "airflow_ray.cluster.remote_call",
    "airflow_ray.cluster.owner",
    "airflow_ray.checkpoint.formats",
)
_POLL_INTERVAL = 0.5


@dataclass
class TaskResources:
    """What one Ray task asks the scheduler for; see ``ray.remote`` for each field."""

    num_cpus: float | None = None
    num_gpus: float | None = None
    memory: int | None = None
    resources: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_arguments(
        cls,
        *,
        num_cpus: Any = None,
        num_gpus: Any = None,
        memory: Any = None,
        resources: Any = None,
    ) -> TaskResources:
        """Validate (possibly templated, hence string) values and convert them to numbers."""
        memory_value = _number("memory", memory)
        return cls(
            num_cpus=_number("num_cpus", num_cpus),
            num_gpus=_number("num_gpus", num_gpus),
            memory=None if memory_value is None else int(memory_value),
            resources={
                str(k): _number(f"resources[{k!r}]", v) or 0.0
                for k, v in as_mapping("resources", resources).items()
            },
        )

    def as_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if self.num_cpus is not None:
            options["num_cpus"] = self.num_cpus
        if self.num_gpus is not None:
            options["num_gpus"] = self.num_gpus
        if self.memory is not None:
            options["memory"] = self.memory
        if self.resources:
            options["resources"] = dict(self.resources)
        return options

    def demand(self) -> dict[str, float]:
        """The request in the units of ``ray.nodes()`` resources (CPU, GPU, memory, custom)."""
        demand = {"CPU": 1.0 if self.num_cpus is None else self.num_cpus}
        if self.num_gpus:
            demand["GPU"] = self.num_gpus
        if self.memory:
            demand["memory"] = float(self.memory)
        demand.update(self.resources)
        return {name: amount for name, amount in demand.items() if amount}


def _number(name: str, value: Any) -> float | None:
    if value is None or (isinstance(value, str) and value.strip() in ("", "None")):
        return None
    if isinstance(value, bool):
        number = -1.0
    else:
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = -1.0
    if number < 0:
        raise RayConfigurationError(
            f"{name}={value!r} is not a non-negative number; pass a number such as 2 or 0.5 "
            f"(a Jinja template must render to one)."
        )
    return number


def as_mapping(name: str, value: Any) -> Mapping[str, Any]:
    """A dict argument that may arrive as JSON text (templated); ``{}`` for nothing."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        import json

        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise RayConfigurationError(f"{name}={value!r} is not a JSON object: {err}") from err
    if not isinstance(value, Mapping):
        raise RayConfigurationError(f"{name}={value!r} must be a dict, got {type(value).__name__}.")
    return value


def check_feasible(resources: TaskResources, *, where: str) -> None:
    """Fail at once when no node of the connected cluster could ever run the task.

    Ray would otherwise keep an infeasible task pending forever with only a warning.
    """
    import ray

    demand = resources.demand()
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    if any(all(node["Resources"].get(k, 0.0) >= v for k, v in demand.items()) for node in nodes):
        return
    largest = {k: max((node["Resources"].get(k, 0.0) for node in nodes), default=0.0) for k in demand}
    raise RayConfigurationError(
        f"No node of the Ray cluster of {where} can run a task asking for {_fmt(demand)}; the "
        f"largest node offers {_fmt(largest)}. Lower the task's request (num_cpus, num_gpus, memory, "
        f"resources) or add a node that has it."
    )


def _fmt(resources: Mapping[str, float]) -> str:
    return ", ".join(f"{name}={amount:g}" for name, amount in sorted(resources.items()))


@cache
def _installed_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    roots = {paths[key] for key in ("purelib", "platlib", "stdlib", "platstdlib")}
    return tuple(os.path.join(os.path.realpath(root), "") for root in roots)


def _outside_environment(module: Any) -> bool:
    """Whether a module was loaded from outside the interpreter's installed packages.

    DAG files, modules beside them and test files are imported under names that a Ray worker
    cannot import, so their functions must travel by value.
    """
    filename = getattr(module, "__file__", None)
    if not filename:
        return False
    return not os.path.realpath(filename).startswith(_installed_roots())


# Modules already looked at, so that each task pays only for modules imported since the last.
_seen_modules: set[str] = set()


def register_by_value() -> None:
    """Make Ray ship our remote-call module and every user module by value, not by name."""
    import ray.cloudpickle as cloudpickle

    for name, module in list(sys.modules.items()):
        if name in _seen_modules or module is None:
            continue
        _seen_modules.add(name)
        if name == "__main__":
            continue
        registered = name in _BY_VALUE_MODULES or (
            not name.startswith("airflow_ray") and _outside_environment(module)
        )
        if registered:
            try:
                cloudpickle.register_pickle_by_value(module)
            except ValueError:
                continue  # a module object not (or no longer) in sys.modules under its name


@dataclass
class RemoteCall:
    """A callable running as a Ray task submitted by the owner actor; :meth:`follow` streams it."""

    name: str
    owner: Any
    call_id: str

    def follow(self, on_output: Callable[[str], None], log: logging.Logger | Any) -> dict[str, Any]:
        """Pass output to ``on_output`` as it arrives; return the description of the result.

        :param log: where the remote traceback of a failed callable is logged.
        :raises: the callable's own exception, re-raised, when it failed;
            :class:`RemoteCallableError` when that exception cannot be rebuilt here;
            :class:`RayTaskFailedError` when the task failed outside the callable.
        """
        import ray

        offset = 0
        while True:
            # A short long-poll returns to Python between calls, so that signal handlers
            # (Airflow's execution_timeout, SIGTERM) run while a long task is silent.
            try:
                reply = ray.get(self.owner.poll.remote(self.call_id, offset, _POLL_INTERVAL))
            except ray.exceptions.RayActorError as err:
                raise RayTaskFailedError(
                    f"The owner actor of Ray task {self.name} died while the task ran: {err}"
                ) from err
            for text in reply["output"]:
                on_output(text)
            offset = reply["offset"]
            if reply["state"] == "running":
                continue
            if reply["state"] == "done":
                return dict(reply["meta"])
            error = reply.get("error") or ("ray", None, "the owner actor lost track of it")
            if error[0] == "callable":
                _raise_remote_error(self.name, error[1], error[2], log)
            raise RayTaskFailedError(f"The Ray task {self.name} failed outside the callable: {error[2]}")

    def take(self) -> Any:
        """The result's ObjectRef (or ``{key: ObjectRef}``); the owner forgets the call."""
        import ray

        return ray.get(self.owner.take.remote(self.call_id))[0]

    def forget(self) -> None:
        """Let the owner drop the call (its result stays only where it was pinned)."""
        self.owner.take.remote(self.call_id)

    def cancel(self) -> None:
        """Stop the task, killing its worker process (a callable cannot be interrupted softly)."""
        import ray

        try:
            ray.get(self.owner.cancel.remote(self.call_id), timeout=10)
        except (ray.exceptions.RayError, TimeoutError) as err:
            logging.getLogger(__name__).warning("Could not cancel Ray task %s: %s", self.name, err)


def _raise_remote_error(name: str, pickled: bytes | None, remote_traceback: str, log: Any) -> None:
    import ray.cloudpickle as cloudpickle

    log.error("The callable failed in Ray task %s:\n%s", name, remote_traceback)
    error: BaseException | None = None
    if pickled is not None:
        try:
            error = cloudpickle.loads(pickled)
        except Exception:  # noqa: BLE001 - an exception class that is not importable here
            error = None
    if isinstance(error, BaseException):
        raise error from RemoteCallableError(f"Remote traceback of Ray task {name}:\n{remote_traceback}")
    raise RemoteCallableError(f"The callable failed in Ray task {name}:\n{remote_traceback}")


def submit(
    owner: Any,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    name: str,
    options: dict[str, Any],
    inputs: list[Any] | None = None,
    pin: bool = False,
    producer: dict[str, Any] | None = None,
    split_dict: bool = False,
) -> RemoteCall:
    """Have ``owner`` start ``fn(*args, **kwargs)`` as a Ray task with ``options``.

    :param inputs: ObjectRefs that ``ref_slot`` markers in ``args``/``kwargs`` stand for.
    :param pin: keep the result pinned under its XCom key, ``producer`` (each value of a dict
        result under its own key with ``split_dict``).
    """
    import ray

    register_by_value()
    task_options = {**options, "name": name}
    try:
        call_id = ray.get(
            owner.submit.remote(
                fn,
                tuple(args),
                dict(kwargs),
                list(inputs or []),
                task_options,
                pin,
                producer or {},
                split_dict,
            )
        )
    except (TypeError, ValueError, pickle.PicklingError) as err:
        raise RayConfigurationError(
            f"Task {name} cannot be sent to Ray: {err}. Check ray_remote_args {options!r}, and pass "
            f"values that pickle (no open files, locks, clients or database sessions), or create "
            f"them inside the callable."
        ) from err
    except ray.exceptions.RayTaskError as err:
        raise RayConfigurationError(f"Ray refused task {name} with options {options!r}: {err}") from err
    return RemoteCall(name, owner, call_id)
