"""Whether any node of a cluster could ever run a task: Ray keeps an infeasible task pending
forever with only a warning, so we check first (in the Airflow worker in driver mode, in the
job in Jobs API mode)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def unmet(demand: Mapping[str, float], nodes: Iterable[Mapping[str, Any]]) -> dict[str, float] | None:
    """``None`` when a live node offers all of ``demand``; else what the largest nodes offer.

    :param demand: ``{"CPU": 2, "GPU": 1, "memory": ..., custom: ...}``, in ``ray.nodes()`` units.
    :param nodes: the cluster's nodes as ``ray.nodes()`` lists them.
    """
    alive = [node for node in nodes if node.get("Alive")]
    if any(all(node["Resources"].get(k, 0.0) >= v for k, v in demand.items()) for node in alive):
        return None
    return {k: max((node["Resources"].get(k, 0.0) for node in alive), default=0.0) for k in demand}
