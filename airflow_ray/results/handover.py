"""Handing results kept in the cluster to a Ray task: as pin keys, resolved inside the cluster.

A Ray operator renders its callable's arguments with references kept as references (see
:func:`~airflow_ray.xcom.reference.ray_consumer`): as :class:`RayXComReference` objects, or as
their ``ray-xcom://`` token inside a rendered string. Each becomes a slot in the arguments and
an :class:`~airflow_ray.cluster.transport.Input` of the task.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_ray._remote.protocol import UNCHANGED, map_tree, ref_slot
from airflow_ray.results.resolve import ensure_in_cluster, input_of, materialize
from airflow_ray.xcom.reference import RayXComReference

if TYPE_CHECKING:
    from airflow_ray.cluster.transport import Call, Input, TaskSpec, Transport


def hand_over(
    args: tuple[Any, ...], kwargs: dict[str, Any], transport: Transport
) -> tuple[tuple[Any, ...], dict[str, Any], list[Input], list[RayXComReference]]:
    """``args`` and ``kwargs`` with references replaced by slots, the task's inputs, and the
    references they are (to restore one that the task's job finds gone).

    A value held by another embedded cluster is restored from its checkpoint here; one this
    cluster lost, when :func:`submit` is refused for it. A reference made through
    another connection is handed over too when this connection's cluster holds it (two
    connections to one cluster, say one by GCS address for the driver transport and one by
    dashboard for the Jobs API); only a result of another cluster is fetched.

    :raises RayObjectLostError: when an input is held elsewhere and has no checkpoint.
    """
    found: list[RayXComReference] = []
    slots: dict[str, int] = {}
    here = _held_here(_foreign(args, kwargs, transport), transport)

    def to_slot(node: Any) -> Any:
        reference = _reference(node)
        if reference is None:
            return UNCHANGED
        if reference.conn_id != transport.conn_id and reference.pin not in here:
            return materialize(reference)
        if reference.pin not in slots:
            slots[reference.pin] = len(found)
            found.append(reference)
        return ref_slot(slots[reference.pin])

    args = map_tree(tuple(args), to_slot)
    kwargs = map_tree(dict(kwargs), to_slot)
    if found:
        # Only what another embedded cluster holds (known without asking this one): the task's
        # submission checks the rest, and :func:`submit` restores what it finds lost.
        ensure_in_cluster(found, transport, gone=[])
    return args, kwargs, [input_of(reference) for reference in found], found


def _reference(node: Any) -> RayXComReference | None:
    if isinstance(node, str):
        return RayXComReference.from_token(node)
    return node if isinstance(node, RayXComReference) else None


def _foreign(args: tuple[Any, ...], kwargs: dict[str, Any], transport: Transport) -> list[RayXComReference]:
    """The references among the arguments that another connection made."""
    foreign: list[RayXComReference] = []

    def collect(node: Any) -> Any:
        reference = _reference(node)
        if reference is not None and reference.conn_id != transport.conn_id:
            foreign.append(reference)
        return UNCHANGED

    map_tree(tuple(args), collect)
    map_tree(dict(kwargs), collect)
    return foreign


def _held_here(references: list[RayXComReference], transport: Transport) -> set[str]:
    """The pin keys of ``references`` that the cluster of ``transport`` holds: its owner actors
    are looked up by name in its namespace, so only a reference of that namespace can be."""
    candidates = {r.pin: r for r in references if r.namespace == transport.namespace}
    if not candidates:
        return set()
    inputs = [input_of(reference) for reference in candidates.values()]
    gone = {item.pin for item in transport.missing(inputs)}
    return {item.pin for item in inputs} - gone


def submit(transport: Transport, spec: TaskSpec, references: list[RayXComReference]) -> Call:
    """Submit ``spec``; inputs its submission finds lost are restored from their checkpoints, and
    it is submitted once more."""
    from airflow_ray.exceptions import RayInputsMissingError

    try:
        return transport.submit(spec)
    except RayInputsMissingError as err:
        ensure_in_cluster([r for r in references if r.pin in err.pins], transport, gone=err.pins)
        if spec.submission_id:
            spec.submission_id += "-restored"
        return transport.submit(spec)
