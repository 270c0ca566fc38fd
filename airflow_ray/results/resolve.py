"""Where a reference's value is: in the cluster (restored from a checkpoint if it was lost), or
fetched into this process for a consumer that is not a Ray task."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from airflow_ray.cluster.transport import Input
from airflow_ray.exceptions import RayObjectLostError
from airflow_ray.xcom.reference import RayXComReference

if TYPE_CHECKING:
    from airflow_ray.cluster.transport import Transport


def input_of(reference: RayXComReference) -> Input:
    return Input(reference.pin, reference.owner)


def transport_of(reference: RayXComReference) -> Transport:
    from airflow_ray.hooks.ray import RayHook

    return RayHook(reference.conn_id).get_transport(reference.namespace)


def lost(reference: RayXComReference) -> RayObjectLostError:
    return RayObjectLostError(
        f"The {reference.producer.describe()} is no longer in the Ray cluster of connection "
        f"{reference.conn_id!r}, and it has no checkpoint: the cluster restarted, its owner actor "
        f"died, or the object was released (retention: [ray] keep_runs and pin_ttl). Clear that "
        f"task to compute it again, or give it checkpoint=True (with [ray] checkpoint_bucket set) "
        f"so that a rerun can restore it."
    )


def held_elsewhere(reference: RayXComReference, here: str | None) -> RayObjectLostError:
    """The error of a reference whose embedded cluster this worker does not reach."""
    host, _, rest = (reference.cluster or "?").partition(":")
    state_dir, _, started = rest.rpartition("@")
    here_host, _, here_rest = (here or "?").partition(":")
    if host == here_host and state_dir == here_rest.rpartition("@")[0]:
        where = (
            f"is held by the embedded Ray cluster that host {host} started at {_when(started)} "
            f"(state {state_dir}), which has stopped since"
        )
    else:
        where = (
            f"is held by the embedded Ray cluster of host {host} (state {state_dir}), which this "
            f"worker, on host {here_host}, does not reach: a connection without an address means "
            f"a cluster of each host's own"
        )
    return RayObjectLostError(
        f"The {reference.producer.describe()} {where}, and it has no checkpoint. Give connection "
        f"{reference.conn_id!r} the address of one Ray cluster that every worker reaches (its "
        f"dashboard http://head:8265 or host:6379), or set [ray] checkpoint_bucket so that results "
        f"are restored wherever they are consumed; then clear the producing task."
    )


def _when(started: str) -> str:
    import datetime

    try:
        return datetime.datetime.fromtimestamp(float(started), tz=datetime.UTC).isoformat(timespec="seconds")
    except ValueError:
        return started


def ensure_in_cluster(
    references: list[RayXComReference], transport: Transport, gone: list[str] | None = None
) -> None:
    """Make sure the cluster holds each reference's value: restore what it lost from S3.

    A value held by another embedded cluster than this worker's (another host's, or one that
    stopped) is known gone without asking the cluster: restored when it has a checkpoint, else
    an error that names where it is and what to configure.

    :param gone: the pin keys known to be lost; by default the transport is asked.
    :raises RayObjectLostError: when one is no longer there and has no checkpoint.
    :raises RayCheckpointIntegrityError: when its checkpoint does not match its manifest.
    """
    from airflow_ray.results.restore import restore

    here = transport.holder if any(r.cluster for r in references) else None
    elsewhere = [r for r in references if r.cluster and r.cluster != here]
    for reference in elsewhere:
        if not restore(reference, transport):
            raise held_elsewhere(reference, here)
    rest = [r for r in references if r not in elsewhere]
    if not rest:
        return
    if gone is None:
        gone = [item.pin for item in transport.missing([input_of(r) for r in rest])]
    for reference in rest:
        if reference.pin in gone and not restore(reference, transport):
            raise lost(reference)


def materialize(reference: RayXComReference) -> Any:
    """Fetch the value of ``reference`` into this process."""
    from airflow_ray.exceptions import RayResultTooLargeError
    from airflow_ray.results.restore import read_here

    transport = transport_of(reference)
    # The fetch itself says when the value is gone: no question before it (through the Jobs
    # API each is a Ray job of its own).
    ensure_in_cluster([reference], transport, gone=[])
    try:
        try:
            return transport.fetch(input_of(reference))
        except LookupError:  # lost (or released): restore it, if it can be
            ensure_in_cluster([reference], transport, gone=[reference.pin])
            return transport.fetch(input_of(reference))
    except LookupError as err:
        raise lost(reference) from err
    except RayResultTooLargeError:
        found, value = read_here(reference)  # from its checkpoint, when it has one
        if not found:
            raise
        return value


class PulledReference(RayXComReference):
    """A reference as a Ray operator's template pulls it: it renders to its token (handed over
    inside the cluster), while indexing or iterating it in the template needs the value."""

    def __getitem__(self, item: Any) -> Any:
        return materialize(self)[item]

    def __iter__(self) -> Iterator[Any]:
        return iter(materialize(self))

    def __len__(self) -> int:
        return len(materialize(self))
