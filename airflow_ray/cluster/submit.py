"""Submitting a callable to Ray and following it: output lines, result, failure, cancel."""

from __future__ import annotations

import logging
import os
import pickle
import sys
import sysconfig
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from airflow_ray.exceptions import RayConfigurationError, RayTaskFailedError, RemoteCallableError

_REMOTE_CALL_MODULE = "airflow_ray.cluster.remote_call"
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
                for k, v in _mapping("resources", resources).items()
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


def _mapping(name: str, value: Any) -> Mapping[str, Any]:
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
        registered = name == _REMOTE_CALL_MODULE or (
            not name.startswith("airflow_ray") and _outside_environment(module)
        )
        if registered:
            try:
                cloudpickle.register_pickle_by_value(module)
            except ValueError:
                continue  # a module object not (or no longer) in sys.modules under its name


@cache
def _remote_run() -> Any:
    import ray

    from airflow_ray.cluster import remote_call

    return ray.remote(remote_call.run_streaming)


@dataclass
class RemoteCall:
    """A callable running as a Ray task; iterate :meth:`follow` to stream its output."""

    name: str
    _generator: Any

    def follow(self, on_output: Callable[[str], None], log: logging.Logger | Any) -> Any:
        """Pass output to ``on_output`` as it arrives; return the callable's result ObjectRef.

        :param log: where the remote traceback of a failed callable is logged.

        :raises: the callable's own exception, re-raised, when it failed;
            :class:`RemoteCallableError` when that exception cannot be rebuilt here;
            :class:`RayTaskFailedError` when the task failed outside the callable.
        """
        import ray

        try:
            for event in self._events():
                kind = event[0]
                if kind == "output":
                    on_output(event[1])
                elif kind == "error":
                    _raise_remote_error(self.name, event[1], event[2], log)
                elif kind == "return":
                    return next(self._generator)
        except ray.exceptions.TaskCancelledError as err:
            raise RayTaskFailedError(f"The Ray task {self.name} was cancelled.") from err
        except ray.exceptions.RayError as err:
            raise RayTaskFailedError(
                f"The Ray task {self.name} failed outside the callable: {type(err).__name__}: {err}"
            ) from err
        raise RayTaskFailedError(f"The Ray task {self.name} ended without a result.")

    def _events(self) -> Iterator[tuple[Any, ...]]:
        import ray

        # Waiting in short slices returns to Python between them, so that signal handlers
        # (Airflow's execution_timeout, SIGTERM) run while a long task is silent.
        while True:
            ready, _ = ray.wait([self._generator], timeout=_POLL_INTERVAL)
            if not ready:
                continue
            try:
                ref = next(self._generator)
            except StopIteration:
                return
            yield ray.get(ref)

    def cancel(self) -> None:
        """Stop the task, killing its worker process (a callable cannot be interrupted softly)."""
        import ray

        try:
            ray.cancel(self._generator, force=True)
        except (ray.exceptions.RayError, TypeError, ValueError) as err:
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
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    name: str,
    options: dict[str, Any],
) -> RemoteCall:
    """Start ``fn(*args, **kwargs)`` as a Ray task with ``options`` (``.options()`` keywords)."""
    register_by_value()
    task_options = {**options, "num_returns": "streaming", "name": name}
    try:
        remote = _remote_run().options(**task_options)
    except (TypeError, ValueError) as err:
        raise RayConfigurationError(f"Ray refused the options {options!r} of task {name}: {err}") from err
    try:
        generator = remote.remote(fn, tuple(args), dict(kwargs))
    except (TypeError, pickle.PicklingError) as err:
        raise RayConfigurationError(
            f"The callable or arguments of task {name} cannot be sent to Ray: {err}. Pass values "
            f"that pickle (no open files, locks, clients or database sessions), or create them "
            f"inside the callable."
        ) from err
    return RemoteCall(name, generator)
