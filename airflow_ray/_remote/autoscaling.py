"""What a cluster's autoscaler can add, read from the cluster itself (its GCS): whether a task that
no live node can run will get a node, or never.

Ray keeps three things there, none of them everywhere:

- the node types and their limits (``ClusterConfig.node_group_configs``, in the GCS key
  ``__autoscaler_cluster_config``) where the platform reports them (Ray's own autoscalers do not
  in Ray 2.60);
- autoscaler v2 (KubeRay's default since Ray 2.47): its state, with the node types it is
  launching and the requests it found no node type for (``infeasible_resource_requests``);
  these include requests that wait only because a node type reached its ``max_workers``;
- autoscaler v1: its status document (``__autoscaling_status``), with the node types it is
  launching; it says nothing about requests it cannot place.

Standard library and Ray only (this module runs in the cluster too).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_ray._remote.placement import unmet

# A v1 status older than this is left by an autoscaler that stopped.
_STALE_AFTER = 300.0
_RPC_TIMEOUT = 5


@dataclass(frozen=True)
class NodeType:
    """A kind of node the autoscaler can launch; ``max_count`` -1: no limit."""

    name: str
    resources: dict[str, float]
    max_count: int

    def offers(self, demand: Mapping[str, float]) -> bool:
        return self.max_count != 0 and all(self.resources.get(k, 0.0) >= v for k, v in demand.items())


@dataclass
class Autoscaler:
    """What the cluster's autoscaler says now.

    :param version: the version of the cluster's resource state (the GCS's) that the autoscaler
        based its last round on (v2; 0 otherwise).
    :param current: the version of the cluster's resource state now: a request made now counts
        in the autoscaler's verdicts from the round that saw a later version.
    :param node_types: the node types it can launch, when the cluster publishes them.
    :param pending: ``{node type: nodes}`` it is launching now.
    :param infeasible: the requests it found no node type for in its last round (v2).
    """

    version: int = 0
    current: int = 0
    node_types: list[NodeType] | None = None
    pending: dict[str, int] = field(default_factory=dict)
    infeasible: list[dict[str, float]] = field(default_factory=list)

    def can_launch(self, demand: Mapping[str, float]) -> bool | None:
        """Whether a node type it can launch offers ``demand`` (``None``: it does not say)."""
        if self.node_types is None:
            return None
        return any(node_type.offers(demand) for node_type in self.node_types)

    def largest(self, demand: Mapping[str, float]) -> dict[str, float]:
        """What the node types it can launch offer at most, of each resource in ``demand``."""
        types = [t for t in self.node_types or [] if t.max_count != 0]
        return {k: max((t.resources.get(k, 0.0) for t in types), default=0.0) for k in demand}

    def declared_infeasible(self, demand: Mapping[str, float], since_version: int) -> bool:
        """Whether its last round, newer than ``since_version``, found no node type for ``demand``."""
        if self.version <= since_version:
            return False
        wanted = {k: float(v) for k, v in demand.items() if v}
        return any(_same(wanted, request) for request in self.infeasible)

    def describe_pending(self) -> str:
        """``gpu_group (1)``, for a message; empty when it launches nothing."""
        return ", ".join(f"{name} ({count})" for name, count in sorted(self.pending.items()))


def _same(a: Mapping[str, float], b: Mapping[str, float]) -> bool:
    keys = {k for k, v in a.items() if v} | {k for k, v in b.items() if v}
    return all(abs(a.get(k, 0.0) - b.get(k, 0.0)) <= 1e-6 * max(1.0, abs(a.get(k, 0.0))) for k in keys)


def from_cluster_config(data: bytes | None) -> list[NodeType] | None:
    """The node types of a serialized ``ClusterConfig`` (``None``: none published)."""
    if not data:
        return None
    try:
        from ray.core.generated.autoscaler_pb2 import ClusterConfig  # type: ignore[attr-defined]
    except ImportError:  # an older Ray than the one that wrote it: no published node types
        return None
    config = ClusterConfig.FromString(data)
    if not config.node_group_configs:
        return None
    return [
        NodeType(group.name, {k: float(v) for k, v in group.resources.items()}, int(group.max_count))
        for group in config.node_group_configs
    ]


def from_v2_reply(data: bytes | None) -> Autoscaler | None:
    """The autoscaler v2 state in a serialized ``GetClusterStatusReply`` (``None``: no v2 autoscaler
    has reported)."""
    if not data:
        return None
    from ray.core.generated.autoscaler_pb2 import GetClusterStatusReply  # type: ignore[attr-defined]

    reply = GetClusterStatusReply.FromString(data)
    state = reply.autoscaling_state
    if state.autoscaler_state_version <= 0:
        return None
    pending: dict[str, int] = {}
    for request in state.pending_instance_requests:
        pending[request.ray_node_type_name] = pending.get(request.ray_node_type_name, 0) + request.count
    for instance in state.pending_instances:
        pending[instance.ray_node_type_name] = pending.get(instance.ray_node_type_name, 0) + 1
    return Autoscaler(
        version=int(state.last_seen_cluster_resource_state_version),
        current=int(reply.cluster_resource_state.cluster_resource_state_version),
        pending=pending,
        infeasible=[dict(request.resources_bundle) for request in state.infeasible_resource_requests],
    )


def from_v1_status(data: bytes | None, now: float | None = None) -> Autoscaler | None:
    """The autoscaler v1 status document (``None``: no autoscaler runs; a head started without
    one still writes the document, with a read-only report or none)."""
    if not data:
        return None
    try:
        status = json.loads(data)
    except ValueError:
        return None
    report = status.get("autoscaler_report") if isinstance(status, dict) else None
    if not isinstance(report, dict):
        return None
    if (now if now is not None else time.time()) - float(status.get("time") or 0.0) > _STALE_AFTER:
        return None
    mapping = report.get("node_type_mapping") or {}
    if mapping and all(name == f"node_{node_id}" for node_id, name in mapping.items()):
        # Ray's read-only stand-in on a head started without an autoscaler: each live node is
        # its own node type ("node_<id>"), and it launches nothing.
        return None
    pending = {str(k): int(v) for k, v in (report.get("pending_launches") or {}).items()}
    for node in report.get("pending_nodes") or []:
        # [ip, node type, status]
        if isinstance(node, (list, tuple)) and len(node) >= 2:
            pending[str(node[1])] = pending.get(str(node[1]), 0) + 1
    return Autoscaler(pending=pending)


def read() -> Autoscaler | None:
    """The autoscaler of the cluster this process is connected to (``None``: it has none).

    Each read is a few small GCS calls; one that fails (an old GCS, a timeout) counts as no
    answer from that source.
    """
    import ray
    from ray._private import ray_constants

    try:
        gcs = ray._private.worker.global_worker.gcs_client  # type: ignore[attr-defined]
    except (AttributeError, AssertionError, RuntimeError):
        gcs = None
    if gcs is None:
        # Not a driver of its own (a Ray Client connection): the GCS is out of reach, and the
        # task is judged by the live nodes alone, as on a cluster without an autoscaler.
        return None

    def ask(call: Any, *args: Any, **kwargs: Any) -> bytes | None:
        try:
            answer: bytes | None = call(*args, **kwargs)
            return answer
        except (ray.exceptions.RayError, OSError, TypeError, AttributeError):
            # That source does not answer (a timeout, or an older Ray without the call): the
            # others may.
            return None

    key = getattr(ray._raylet, "GCS_AUTOSCALER_CLUSTER_CONFIG_KEY", "__autoscaler_cluster_config")
    namespace = getattr(ray._raylet, "GCS_AUTOSCALER_STATE_NAMESPACE", "__autoscaler")
    node_types = from_cluster_config(
        ask(gcs.internal_kv_get, key.encode(), namespace.encode(), timeout=_RPC_TIMEOUT)
    )
    scaler = from_v2_reply(ask(gcs.get_cluster_status, timeout_s=_RPC_TIMEOUT)) or from_v1_status(
        ask(gcs.internal_kv_get, ray_constants.DEBUG_AUTOSCALING_STATUS.encode(), None, timeout=_RPC_TIMEOUT)
    )
    if scaler is None and node_types is not None:
        scaler = Autoscaler()
    if scaler is not None:
        scaler.node_types = node_types
    return scaler


def unreachable(
    demand: Mapping[str, float],
    nodes: Iterable[Mapping[str, Any]],
    scaler: Autoscaler | None,
    since_version: int = -1,
) -> dict[str, float] | None:
    """``None`` while a task asking for ``demand`` may still get a node: a live node offers it, or
    the autoscaler may launch one that does. Else what the largest nodes (live or launchable) offer.

    Without an autoscaler, only the live nodes count (as before autoscaling). With one, the task
    is refused when the node types it publishes offer nothing that fits, or when its last round
    (newer than ``since_version``) found no node type for it; else it waits.
    """
    largest = unmet(demand, nodes)
    if largest is None or scaler is None:
        return largest
    launchable = scaler.can_launch(demand)
    if launchable is True:
        return None
    if launchable is False:
        offered = scaler.largest(demand)
        return {k: max(largest.get(k, 0.0), offered.get(k, 0.0)) for k in demand}
    return largest if scaler.declared_infeasible(demand, since_version) else None


class StartCheck:
    """Watches a submitted task that has not started: whether it never can (:meth:`never`), and
    whether it waited longer than ``timeout`` seconds (:meth:`timed_out`).

    :param demand: what the task asks for, in ``ray.nodes()`` units (``None``: not known, as when
        following a task submitted by an earlier try; then only the timeout counts).
    :param since_version: the cluster's resource state version when the task was submitted
        (:attr:`Autoscaler.current`).
    :param every: seconds between looks at the cluster (each is a few small GCS calls).
    """

    def __init__(
        self,
        demand: Mapping[str, float] | None,
        timeout: float | None,
        since_version: int = -1,
        every: float = 2.0,
    ) -> None:
        self.demand = None if demand is None else dict(demand)
        self.timeout = timeout
        self.since_version = since_version
        self.every = every
        self.since = time.monotonic()
        self.next = self.since + every
        self.scaler: Autoscaler | None = None

    def elapsed(self) -> float:
        return time.monotonic() - self.since

    def timed_out(self) -> bool:
        return self.timeout is not None and self.elapsed() >= self.timeout

    def never(self) -> dict[str, float] | None:
        """What the largest nodes offer, once the task can never start; else ``None``."""
        now = time.monotonic()
        if now < self.next:
            return None
        self.next = now + self.every
        import ray

        self.scaler = read()
        if self.demand is None or self.scaler is None:
            return None  # without an autoscaler, the nodes were checked when it was submitted
        return unreachable(self.demand, ray.nodes(), self.scaler, self.since_version)

    def pending(self) -> str:
        """The node types the autoscaler is launching, as last seen (empty: none, or no autoscaler)."""
        return "" if self.scaler is None else self.scaler.describe_pending()
