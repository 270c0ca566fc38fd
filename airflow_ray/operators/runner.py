"""How a Ray operator runs its task through a transport: submit, record, follow or defer, and
finish; a retry after the worker died reconnects (Airflow 3.3's ``ResumableJobMixin``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_ray._remote.protocol import CallState
from airflow_ray.links.ray import XCOM_KEY as LINK_XCOM_KEY
from airflow_ray.operators.lines import LineLogger
from airflow_ray.version_compat import ResumableJobMixin

if TYPE_CHECKING:
    from datetime import timedelta

    from airflow.sdk import Context

    from airflow_ray._remote.protocol import Producer, Returned
    from airflow_ray.checkpoint.store import CheckpointStore
    from airflow_ray.cluster.transport import Call, TaskSpec, Transport
    from airflow_ray.hooks.ray import RayHook
    from airflow_ray.results.outputs import PinnedOutputs
    from airflow_ray.xcom.reference import RayXComReference


class RayTaskRunner(ResumableJobMixin):
    """The steps of :class:`~airflow_ray.operators.ray.RayPythonOperator` that run its Ray task.

    ``execute_resumable`` calls :meth:`submit_job` (whose id is stored in the task state store
    before following), then :meth:`poll_until_complete` and :meth:`get_job_result`; a retry with
    a stored id asks :meth:`get_job_status` and reconnects, or returns the result.
    """

    # Where the Ray task of the current try is recorded (task state store), for a retry.
    external_id_key = "airflow_ray_call"

    if TYPE_CHECKING:
        # Provided by the operator.
        ray_conn_id: str
        deferrable: bool
        poll_interval: float
        do_xcom_push: bool
        execution_timeout: timedelta | None
        _call: tuple[Transport, Call] | None
        _producer: Producer | None
        ray_link: str | None
        _result: dict[str, Any]
        _references_in: list[RayXComReference]
        _context: Context | None
        _checkpoint_uris: list[str]
        outlets: list[Any]

        @property
        def hook(self) -> RayHook: ...
        @property
        def transport(self) -> Transport: ...
        @property
        def producer(self) -> Producer: ...
        def _bind(self, context: Context) -> None: ...
        def _task_spec(self, transport: Transport) -> TaskSpec: ...
        def _keeps_result(self) -> bool: ...
        def _checkpoint_store(self) -> CheckpointStore | None: ...

    def submit_job(self, context: Context) -> dict[str, Any]:
        """Submit the Ray task; what a retry needs to find it again (stored before following)."""
        from airflow_ray import config
        from airflow_ray.results.handover import submit

        transport = self.transport
        spec = self._task_spec(transport)
        store = self._checkpoint_store()
        if store is not None:  # checked before any work: a bad bucket or key fails the task now
            store.preflight()
            self.log.info("The result will be checkpointed to %s", store.uri_of(self.producer))
            # ... and the cluster side, before the callable runs: it writes the checkpoint.
            spec.requires.append(("botocore", "Checkpointing the result to S3 (checkpoint=True)"))
        keep = self._keeps_result()
        if keep or store is not None:
            spec.pin = self.producer  # under this try's key: no other try's copy can replace it
        if keep:
            spec.small_bytes = config.inline_max_bytes()
        p = self.producer
        spec.submission_id = _submission_id(p, p.try_number)
        call = submit(transport, spec, self._references_in)
        self._call = (transport, call)
        self.log.info(
            "Submitted Ray task %s with %s%s",
            call.name,
            spec.resources.as_options() or "Ray's default resources",
            f" and {len(spec.inputs)} input(s) handed over inside the cluster" if spec.inputs else "",
        )
        link = transport.link(call)
        self.ray_link = link or ""
        if link:
            context["ti"].xcom_push(key=LINK_XCOM_KEY, value=link)
            self.log.info("Follow it in the Ray dashboard: %s", link)
        return {
            "call_id": call.call_id,
            "name": call.name,
            "pinned": spec.pin is not None,
            "keep": keep,
            "try": p.try_number,
        }

    def _resume(self, external_id: Any) -> Call:
        """The call recorded by ``submit_job``; its result is that try's (a retry that reconnects
        returns what the first try's call pins)."""
        from airflow_ray.cluster.transport import Call

        call = Call(str(external_id["name"]), str(external_id["call_id"]))
        self._call = (self.transport, call)
        if external_id.get("try"):
            self._producer = self.producer.with_try(int(external_id["try"]))
        return call

    def get_job_status(self, external_id: Any, context: Context) -> str:
        state = self.transport.state(self._resume(external_id))
        if state is CallState.UNKNOWN and external_id.get("keep") and self._pinned_returned():
            return CallState.DONE.value  # it finished and was taken; its result is still pinned
        return state.value

    def is_job_active(self, status: str) -> bool:
        return status == CallState.RUNNING.value

    def is_job_succeeded(self, status: str) -> bool:
        return status == CallState.DONE.value

    def poll_until_complete(self, external_id: Any, context: Context) -> Any:
        """Follow the Ray task to its end, streaming its output (or defer to the triggerer)."""
        transport, call = self.transport, self._resume(external_id)
        if self.deferrable:
            job_id = transport.job_id(call)
            if job_id is not None:
                self._defer(job_id, call, external_id)
            self.log.warning(
                "deferrable=True needs the Jobs API (an http:// address or transport 'jobs'); "
                "connection %r is a driver connection, so the task runs in place.",
                self.ray_conn_id,
            )
        try:
            with LineLogger.to(self.log) as lines:
                returned = transport.follow(call, lines.write, self.log)
        except BaseException:
            # Interrupted here (execution_timeout, SIGTERM) the Ray task must not run on; after
            # a remote failure it has already ended and cancelling it changes nothing.
            transport.cancel(call)
            raise
        return self._finish(call, external_id, returned)

    def get_job_result(self, external_id: Any, context: Context) -> Any:
        if "value" in self._result:
            return self._result["value"]
        call = self._resume(external_id)
        self.log.info("Ray task %s finished in an earlier try: returning its result", call.name)
        returned = self._pinned_returned() if external_id.get("keep") else None
        if returned is None:
            with LineLogger.to(self.log) as lines:
                returned = self.transport.follow(call, lines.write, self.log)
        return self._finish(call, external_id, returned)

    def _defer(self, job_id: str, call: Call, external_id: Any) -> None:
        from airflow_ray.triggers.ray import RayJobTrigger

        operator: Any = self  # a BaseOperator: the runner is mixed into RayPythonOperator
        operator.defer(
            trigger=RayJobTrigger(
                ray_conn_id=self.ray_conn_id,
                submission_id=job_id,
                task_name=call.name,
                poll_interval=self.poll_interval,
                resume=external_id,
            ),
            method_name="execute_complete",
            timeout=self.execution_timeout,
        )

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """Back from deferral. A deferral that failed (``execution_timeout`` ran out while the
        triggerer followed the job, or the trigger broke) stops the Ray job before failing."""
        if next_method == "__fail__":
            self._stop_recorded_job(context)
        # The operator's MRO continues to BaseOperator.resume_execution, which the mixin's type lacks.
        return super().resume_execution(next_method, next_kwargs, context)  # type: ignore[misc]

    def _stop_recorded_job(self, context: Context) -> None:
        store = context.get("task_state_store")
        external_id = None if store is None else store.get(self.external_id_key)
        if not external_id:
            return
        self._bind(context)
        call = self._resume(external_id)
        if self.transport.job_id(call) is None:  # never deferred: nothing runs on without this task
            return
        self.log.info("Stopping Ray job %s of task %s: its deferral failed", call.call_id, call.name)
        self.transport.cancel(call)

    def execute_complete(self, context: Context, event: Any) -> Any:
        """Back from the triggerer: the result's reference(s), or why the job gave none.

        :raises AirflowRayError: the event is not one of :mod:`airflow_ray.triggers.events`.
        """
        from airflow_ray.cluster.jobs import ended_early
        from airflow_ray.exceptions import RayTaskFailedError
        from airflow_ray.triggers.events import FollowFailed, JobEnded, event_from_wire

        received = event_from_wire(event)
        self._bind(context)
        resume = received.resume.to_wire()
        call = self._resume(resume)
        if isinstance(received, FollowFailed):
            raise RayTaskFailedError(f"Following Ray task {call.name} failed: {received.message}")
        if isinstance(received, JobEnded):
            where = self.hook.describe()
            raise ended_early(call, received.info, received.log_tail, received.records, where)
        return self._finish(call, resume, self.transport.answered(call, received.record, self.log))

    # -- the result -------------------------------------------------------------------------

    def _pinned_returned(self) -> Returned | None:
        """The description of this task instance's result, as the owner pinned it, if it did."""
        from airflow_ray._remote.protocol import Producer, Returned

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

    def _finish(self, call: Call, external_id: Any, returned: Returned) -> Any:
        """What the task returns to Airflow: references to the pinned result (checkpointed first
        with ``checkpoint=True``), or the value itself."""
        from airflow_ray import config
        from airflow_ray.results.outputs import PinnedOutputs

        transport = self.transport
        if not external_id.get("pinned"):
            value = None
            if self.do_xcom_push:
                value = transport.take(call)
            else:
                transport.forget(call)
            self._result["value"] = value
            return value
        outputs = PinnedOutputs(transport, self.producer, returned)
        small = {}
        if external_id.get("keep") and self.do_xcom_push:
            # Small results stay in the XCom row, readable in the UI, as Airflow's own backend keeps them.
            small = outputs.small_values(call, config.inline_max_bytes())
        transport.forget(call)
        checkpoints = {}
        store = self._checkpoint_store()
        if store is not None:
            with LineLogger.to(self.log) as lines:
                checkpoints = outputs.checkpoint(store, None, lines.write, self.log)
            self._announce(store, outputs, checkpoints)
        if external_id.get("keep"):
            value = outputs.references(self.ray_conn_id, checkpoints, small)
            outputs.release_small(small)
        else:  # pinned only so that the checkpoint could be written from the cluster
            value = outputs.fetch_and_release(fetch=self.do_xcom_push)
        self._result["value"] = value
        return value

    def _announce(
        self, store: CheckpointStore, outputs: PinnedOutputs, checkpoints: dict[str, dict[str, Any]]
    ) -> None:
        """Note the files written (OpenLineage's outputs) and add an asset event of each to every
        ``AssetAlias`` in ``outlets``, its manifest the event's extra."""
        from airflow_ray.operators.lineage import announce_checkpoints, checkpoint_aliases, written_manifests

        self._checkpoint_uris = [document["uri"] for document in checkpoints.values()]
        aliases = checkpoint_aliases(self.outlets)
        if aliases and self._context is not None:
            count = announce_checkpoints(self._context, aliases, written_manifests(store, outputs.producers))
            self.log.info(
                "Announced %d checkpoint(s) as asset events of %s", count, [a.name for a in aliases]
            )


def _submission_id(producer: Producer, try_number: int) -> str:
    """The Ray job id of one try of one task instance: a second submission finds the first, and
    another deployment on the same cluster, whose run has the same id, never does."""
    from airflow_ray.cluster.jobs import submission_id_for
    from airflow_ray.deployment import deployment_id

    p = producer
    return submission_id_for(p.dag_id, p.task_id, p.run_id, p.map_index, try_number, deployment_id())
