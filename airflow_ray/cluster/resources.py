"""What one Ray task asks the scheduler for, and whether any node could ever give it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_ray.arguments import json_object, non_negative
from airflow_ray.exceptions import RayConfigurationError, RayScheduleTimeoutError

if TYPE_CHECKING:
    from airflow_ray._remote.autoscaling import Autoscaler


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
        memory_value = non_negative("memory", memory)
        return cls(
            num_cpus=non_negative("num_cpus", num_cpus),
            num_gpus=non_negative("num_gpus", num_gpus),
            memory=None if memory_value is None else int(memory_value),
            resources={
                str(k): non_negative(f"resources[{k!r}]", v) or 0.0
                for k, v in json_object(resources, "resources").items()
            },
        )

    def as_options(self) -> dict[str, Any]:
        """The keywords of Ray's ``.options()`` that ask for these resources."""
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


# Moving bytes between S3 and the object store waits on the network, not on a CPU: reserving
# none lets such a task run beside the tasks that wait for it.
IO_TASK = TaskResources(num_cpus=0)


def check_feasible(
    resources: TaskResources,
    nodes: Iterable[Mapping[str, Any]],
    *,
    where: str,
    scaler: Autoscaler | None = None,
) -> None:
    """Fail at once when no node could ever run the task (Ray would keep it pending forever).

    :param nodes: the cluster's nodes as ``ray.nodes()`` lists them.
    :param scaler: the cluster's autoscaler (``None``: it has none): a task that no live node can
        run waits for a node it may launch, unless its node types offer nothing that fits.
    """
    from airflow_ray._remote.autoscaling import unreachable

    demand = resources.demand()
    largest = unreachable(demand, nodes, scaler)
    if largest is not None:
        raise infeasible(demand, largest, where, autoscaled=scaler is not None)


def infeasible(
    demand: Mapping[str, float], largest: Mapping[str, float], where: str, autoscaled: bool = False
) -> RayConfigurationError:
    if autoscaled:
        return RayConfigurationError(
            f"No node of the Ray cluster of {where}, and no node type its autoscaler can launch, can "
            f"run a task asking for {_fmt(demand)}; the largest offers {_fmt(largest)}. Lower the task's "
            f"request (num_cpus, num_gpus, memory, resources), or add a node type that has it (with "
            f"max_workers above 0) to the cluster's autoscaler (a worker group of the KubeRay RayCluster)."
        )
    return RayConfigurationError(
        f"No node of the Ray cluster of {where} can run a task asking for {_fmt(demand)}; the "
        f"largest node offers {_fmt(largest)}. Lower the task's request (num_cpus, num_gpus, memory, "
        f"resources) or add a node that has it."
    )


def not_started(
    name: str, demand: Mapping[str, float] | None, timeout: float, pending: str, where: str
) -> RayScheduleTimeoutError:
    """The error of a task that waited longer than ``[ray] schedule_timeout`` for a node."""
    asked = f" asking for {_fmt(demand)}" if demand else ""
    launching = (
        f" (the autoscaler was launching: {pending})"
        if pending
        else " (the autoscaler launched no node for it)"
    )
    return RayScheduleTimeoutError(
        f"Ray task {name}{asked} did not start within the {timeout:g} s of [ray] schedule_timeout on "
        f"the cluster of {where}: no node that fits came up or became free{launching}, or Ray was "
        f"still setting up its runtime_env. It was "
        f"cancelled. Raise [ray] schedule_timeout (AIRFLOW__RAY__SCHEDULE_TIMEOUT), or leave it empty "
        f"to wait without a limit; or lower the task's request."
    )


def _fmt(resources: Mapping[str, float]) -> str:
    return ", ".join(f"{name}={amount:g}" for name, amount in sorted(resources.items()))
