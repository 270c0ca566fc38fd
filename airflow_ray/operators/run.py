"""One ``execute()`` of a :class:`~airflow_ray.operators.ray.RayPythonOperator`: its Ray run.

A :class:`RayRun` holds what one try knows (the task instance it produces, its call, the inputs
it handed over, the dashboard link, the checkpoints it wrote) and does that try's Ray steps through
the connection's transport: submit, follow here or defer to the triggerer, reconnect after the
worker died, and finish. What must outlive the process (a deferral, a retry) is the
:class:`~airflow_ray.triggers.events.Resume` that the operator records in the task state store
(Airflow 3.3's ``ResumableJobMixin``) and that the trigger sends back; nothing is kept on the
operator but the run itself.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_ray._remote.protocol import NO_MAP_INDEX, CallState, Producer
from airflow_ray.arguments import flag
from airflow_ray.links.ray import XCOM_KEY as LINK_XCOM_KEY
from airflow_ray.operators.lines import LineLogger
from airflow_ray.triggers.events import Resume

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_ray._remote.protocol import Returned
    from airflow_ray.checkpoint.store import CheckpointStore
    from airflow_ray.cluster.transport import Call, TaskSpec, Transport
    from airflow_ray.operators.ray import RayPythonOperator
    from airflow_ray.results.outputs import PinnedOutputs
    from airflow_ray.xcom.reference import RayXComReference

_NOT_YET: Any = object()


class RayRun:
    """The Ray run of one task instance's try, from its submission to the value it returns.

    :param operator: the operator whose (rendered) arguments the run reads; it is never changed.
    :param context: the task's context; ``ti`` names the task instance and the try.
    :param resumed: the task resumes after its deferral: the Ray task was submitted by another
        process, whose dashboard link is in the XCom it pushed.
    """

    def __init__(self, operator: RayPythonOperator, context: Context, resumed: bool = False) -> None:
        self.operator = operator
        self.context = context
        self.log = operator.log
        ti = context["ti"]
        map_index = getattr(ti, "map_index", None)
        self.producer = Producer(
            ti.dag_id,
            ti.run_id,
            ti.task_id,
            NO_MAP_INDEX if map_index is None else map_index,
            try_number=ti.try_number,
        )
        self.call: Call | None = None
        # The dashboard URL of the Ray work once submitted here ("": none yet, or none to show);
        # None after a deferral: RayJobLink then reads the XCom that the submitting process pushed.
        self.link: str | None = None if resumed else ""
        self.references_in: list[RayXComReference] = []
        self.checkpoint_uris: list[str] = []
        self._value: Any = _NOT_YET

    @cached_property
    def transport(self) -> Transport:
        return self.operator.transport

    @cached_property
    def checkpoint_store(self) -> CheckpointStore | None:
        """Where ``checkpoint=True`` writes the result, or ``None`` without it."""
        op = self.operator
        if not flag("checkpoint", op.checkpoint):
            return None
        from airflow_ray.checkpoint.store import CheckpointLocation, CheckpointStore

        return CheckpointStore(
            CheckpointLocation.resolve(op.checkpoint_conn_id, op.checkpoint_bucket, op.checkpoint_prefix)
        )

    @property
    def task_name(self) -> str:
        """The Ray task's name: ``dag.task`` (``dag.task[map index]`` for a mapped task)."""
        p = self.producer
        return f"{p.dag_id}.{p.task_id}" + (f"[{p.map_index}]" if p.map_index >= 0 else "")

    # -- submit -----------------------------------------------------------------------------

    def submit(self) -> Resume:
        """Submit the Ray task; what a retry needs to find it again (recorded before following)."""
        from airflow_ray import config
        from airflow_ray.results.handover import submit

        spec = self._task_spec()
        store = self.checkpoint_store
        if store is not None:  # checked before any work: a bad bucket or key fails the task now
            store.preflight()
            self.log.info("The result will be checkpointed to %s", store.uri_of(self.producer))
            # ... and the cluster side, before the callable runs: it writes the checkpoint.
            spec.requires.append(("botocore", "Checkpointing the result to S3 (checkpoint=True)"))
        keep = self.operator.keeps_result()
        if keep or store is not None:
            spec.pin = self.producer  # under this try's key: no other try's copy can replace it
        if keep:
            spec.small_bytes = config.inline_max_bytes()
        spec.submission_id = submission_id(self.producer)
        call = self.call = submit(self.transport, spec, self.references_in)
        self.log.info(
            "Submitted Ray task %s with %s%s",
            call.name,
            spec.resources.as_options() or "Ray's default resources",
            f" and {len(spec.inputs)} input(s) handed over inside the cluster" if spec.inputs else "",
        )
        self.link = self.transport.link(call) or ""
        if self.link:
            self.context["ti"].xcom_push(key=LINK_XCOM_KEY, value=self.link)
            self.log.info("Follow it in the Ray dashboard: %s", self.link)
        return Resume(
            call.call_id, call.name, spec.pin is not None, keep, try_number=self.producer.try_number
        )

    def _task_spec(self) -> TaskSpec:
        from airflow_ray.arguments import json_object
        from airflow_ray.cluster.resources import TaskResources
        from airflow_ray.cluster.transport import TaskSpec
        from airflow_ray.operators.connections import shipped_connections
        from airflow_ray.results.handover import hand_over

        op = self.operator
        resources = TaskResources.from_arguments(
            num_cpus=op.num_cpus, num_gpus=op.num_gpus, memory=op.memory, resources=op.ray_resources
        )
        args, kwargs, inputs, self.references_in = hand_over(
            tuple(op.op_args), dict(op.op_kwargs), self.transport
        )
        return TaskSpec(
            op.python_callable,
            args,
            kwargs,
            name=self.task_name,
            resources=resources,
            runtime_env=json_object(op.runtime_env, "runtime_env"),
            remote_args=json_object(op.ray_remote_args, "ray_remote_args"),
            inputs=inputs,
            split=bool(getattr(op, "multiple_outputs", False)),
            environ=shipped_connections(op.airflow_conn_ids, self.task_name),
        )

    # -- reconnect --------------------------------------------------------------------------

    def resume(self, resume: Resume) -> Call:
        """The call that ``resume`` records; its result is the recording try's (a retry that
        reconnects returns what the first try's call pins)."""
        self.call = resume.call
        if resume.try_number:
            self.producer = self.producer.with_try(resume.try_number)
        return self.call

    def status(self, resume: Resume) -> CallState:
        """Where the recorded call stands, for a retry to reconnect, return its result, or run again."""
        state = self.transport.state(self.resume(resume))
        if state is CallState.UNKNOWN and resume.keep and self._pinned_returned() is not None:
            return CallState.DONE  # it finished and was taken; its result is still pinned
        return state

    # -- follow or defer --------------------------------------------------------------------

    def follow(self, resume: Resume) -> Any:
        """Follow the Ray task to its end, streaming its output (or defer to the triggerer)."""
        call = self.resume(resume)
        if self.operator.deferrable:
            job_id = self.transport.job_id(call)
            if job_id is not None:
                self._defer(job_id, resume)
            self.log.warning(
                "deferrable=True needs the Jobs API (an http:// address or transport 'jobs'); "
                "connection %r is a driver connection, so the task runs in place.",
                self.operator.ray_conn_id,
            )
        try:
            with LineLogger.to(self.log) as lines:
                returned = self.transport.follow(call, lines.write, self.log)
        except BaseException:
            # Interrupted here (execution_timeout, SIGTERM) the Ray task must not run on; after
            # a remote failure it has already ended and cancelling it changes nothing.
            self.transport.cancel(call)
            raise
        return self.finish(resume, returned)

    def _defer(self, job_id: str, resume: Resume) -> None:
        from airflow_ray.triggers.ray import RayJobTrigger

        self.operator.defer(
            trigger=RayJobTrigger(
                ray_conn_id=self.operator.ray_conn_id,
                submission_id=job_id,
                task_name=resume.name,
                poll_interval=self.operator.poll_interval,
                resume=resume.to_wire(),
            ),
            method_name="execute_complete",
            timeout=self.operator.execution_timeout,
        )

    def complete(self, event: Any) -> Any:
        """Back from the triggerer: the result's reference(s), or why the job gave none.

        :raises AirflowRayError: the event is not one of :mod:`airflow_ray.triggers.events`.
        """
        from airflow_ray.cluster.jobs import ended_early
        from airflow_ray.exceptions import RayTaskFailedError
        from airflow_ray.triggers.events import FollowFailed, JobEnded, event_from_wire

        received = event_from_wire(event)
        call = self.resume(received.resume)
        if isinstance(received, FollowFailed):
            raise RayTaskFailedError(f"Following Ray task {call.name} failed: {received.message}")
        if isinstance(received, JobEnded):
            where = self.operator.hook.describe()
            raise ended_early(call, received.info, received.log_tail, received.records, where)
        return self.finish(received.resume, self.transport.answered(call, received.record, self.log))

    def result(self, resume: Resume) -> Any:
        """The value of the run: what :meth:`follow` finished with, or the result of a call that
        finished in an earlier try."""
        if self._value is not _NOT_YET:
            return self._value
        call = self.resume(resume)
        self.log.info("Ray task %s finished in an earlier try: returning its result", call.name)
        returned = self._pinned_returned() if resume.keep else None
        if returned is None:
            with LineLogger.to(self.log) as lines:
                returned = self.transport.follow(call, lines.write, self.log)
        return self.finish(resume, returned)

    def cancel(self) -> None:
        """Stop the Ray task submitted or reconnected to here (the Airflow task is killed)."""
        if self.call is not None:
            self.log.info("Cancelling Ray task %s", self.call.name)
            self.transport.cancel(self.call)

    def stop_recorded(self) -> None:
        """Stop the Ray job this task instance recorded: its deferral failed (``execution_timeout``
        ran out while the triggerer followed it, or the trigger broke)."""
        store = self.context.get("task_state_store")
        recorded = None if store is None else store.get(self.operator.external_id_key)
        if not recorded:
            return
        call = self.resume(Resume.from_wire(recorded))
        if self.transport.job_id(call) is None:  # never deferred: nothing runs on without this task
            return
        self.log.info("Stopping Ray job %s of task %s: its deferral failed", call.call_id, call.name)
        self.transport.cancel(call)

    # -- finish -----------------------------------------------------------------------------

    def finish(self, resume: Resume, returned: Returned) -> Any:
        """What the task returns to Airflow: references to the pinned result (checkpointed first
        with ``checkpoint=True``), or the value itself."""
        from airflow_ray.results.outputs import PinnedOutputs

        call = resume.call
        if not resume.pinned:
            self._value = self._taken(call)
            return self._value
        outputs = PinnedOutputs(self.transport, self.producer, returned)
        inline = self._inline(outputs, call) if resume.keep else {}
        self.transport.forget(call)
        checkpoints = self._checkpoint(outputs)
        if resume.keep:
            self._value = outputs.references(self.operator.ray_conn_id, checkpoints, inline)
            outputs.release_small(inline)
        else:  # pinned only so that the checkpoint could be written from the cluster
            self._value = outputs.fetch_and_release(fetch=self.operator.do_xcom_push)
        return self._value

    def _taken(self, call: Call) -> Any:
        """The value of a result that was not pinned, fetched only when it becomes an XCom."""
        if self.operator.do_xcom_push:
            return self.transport.take(call)
        self.transport.forget(call)
        return None

    def _inline(self, outputs: PinnedOutputs, call: Call) -> dict[str, Any]:
        """The small results, which stay in the XCom row itself, readable in the UI, as Airflow's
        own backend keeps them (fetched before the call is forgotten)."""
        from airflow_ray import config

        if not self.operator.do_xcom_push:
            return {}
        return outputs.small_values(call, config.inline_max_bytes())

    def _checkpoint(self, outputs: PinnedOutputs) -> dict[str, dict[str, Any]]:
        """With ``checkpoint=True``, write each result from the cluster to S3 and announce it;
        ``{XCom key: checkpoint document}``."""
        store = self.checkpoint_store
        if store is None:
            return {}
        with LineLogger.to(self.log) as lines:
            checkpoints = outputs.checkpoint(store, None, lines.write, self.log)
        self.checkpoint_uris = [document["uri"] for document in checkpoints.values()]
        self._announce(store, outputs)
        return checkpoints

    def _announce(self, store: CheckpointStore, outputs: PinnedOutputs) -> None:
        """Add an asset event of each checkpoint written to every ``AssetAlias`` in ``outlets``,
        its manifest the event's extra (the files are OpenLineage's outputs too)."""
        from airflow_ray.operators.lineage import announce_checkpoints, checkpoint_aliases, written_manifests

        aliases = checkpoint_aliases(self.operator.outlets)
        if aliases:
            count = announce_checkpoints(self.context, aliases, written_manifests(store, outputs.producers))
            self.log.info(
                "Announced %d checkpoint(s) as asset events of %s", count, [a.name for a in aliases]
            )

    def _pinned_returned(self) -> Returned | None:
        """The description of this task instance's result, as the owner pinned it, if it did."""
        from airflow_ray._remote.protocol import Returned

        p = self.producer
        pins = [
            pin
            for pin in self.transport.list_pins(p.dag_id, p.run_id)
            if Producer.from_wire(pin).with_key(p.key) == p
        ]
        if not pins:
            return None
        if len(pins) == 1 and pins[0]["key"] == p.key:
            return Returned(pins[0]["meta"])
        return Returned({"type": "dict"}, {pin["key"]: pin["meta"] for pin in pins})


def submission_id(producer: Producer) -> str:
    """The Ray job id of one try of one task instance: a second submission finds the first, and
    another deployment on the same cluster, whose run has the same id, never does."""
    from airflow_ray.cluster.jobs import submission_id_for
    from airflow_ray.deployment import deployment_id

    p = producer
    return submission_id_for(p.dag_id, p.task_id, p.run_id, p.map_index, p.try_number, deployment_id())
