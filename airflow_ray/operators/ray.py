"""``RayPythonOperator``: run a Python callable as a Ray task and return its result."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk.bases.decorator import KeywordParameters

from airflow_ray._remote.protocol import CallState
from airflow_ray.exceptions import RayConfigurationError
from airflow_ray.links.ray import RayJobLink
from airflow_ray.triggers.events import Resume
from airflow_ray.version_compat import ResumableJobMixin

if TYPE_CHECKING:
    import jinja2
    from airflow.sdk import Context

    from airflow_ray.cluster.transport import Transport
    from airflow_ray.hooks.ray import RayHook
    from airflow_ray.operators.run import RayRun


class RayPythonOperator(ResumableJobMixin, PythonOperator):
    """Run ``python_callable(*op_args, **op_kwargs)`` as a task on a Ray cluster.

    The callable may be a function of the DAG file, a closure or a lambda: it is shipped by value.
    It runs with the resources it asks for; what it prints or logs is streamed into the Airflow
    task log while it runs; an exception fails the Airflow task with the remote traceback (and
    Airflow's retries rerun it); its return value becomes the task's XCom.

    .. code-block:: python

        train = RayPythonOperator(
            task_id="train",
            python_callable=train_model,
            op_kwargs={"rows": "{{ params.rows }}"},
            num_cpus=2,
        )

    Context values that mean something inside Ray (``ds``, ``params``, ``run_id``,
    ``logical_date`` ...) are passed to a callable that names them or takes ``**kwargs``;
    live objects (``ti``, ``dag_run``) are not: template what you need into ``op_kwargs``.

    :param python_callable: the function to run on Ray.
    :param op_args: positional arguments of the callable (templated).
    :param op_kwargs: keyword arguments of the callable (templated).
    :param num_cpus: CPUs the Ray task reserves (templated; Ray's default is 1).
    :param num_gpus: GPUs the Ray task reserves (templated).
    :param memory: bytes of memory the Ray task reserves (templated).
    :param resources: custom Ray resources, ``{"name": amount}`` (templated, stored as
        ``ray_resources`` since ``resources`` is an Airflow operator field).
    :param runtime_env: Ray runtime environment, merged over the connection's (templated).
    :param ray_remote_args: any other keyword of Ray's ``.options()``, such as
        ``scheduling_strategy`` or ``max_retries`` (templated).
    :param ray_conn_id: the ``ray`` connection (default ``ray_default``: the embedded cluster
        when it does not exist).
    :param checkpoint: also write the result to S3 when the task succeeds, so that a rerun
        after the cluster lost it restores it from there (templated). The bucket is checked
        before the callable runs: a wrong bucket, key or endpoint fails the task at once.
    :param checkpoint_conn_id: the AWS connection of the checkpoint (templated; default
        ``[ray] checkpoint_conn_id``, else ``aws_default``). ``checkpoint_source``, the
        original Ray provider's name for it, is accepted too.
    :param checkpoint_bucket: its S3 bucket (templated; default ``[ray] checkpoint_bucket``).
    :param checkpoint_prefix: its key prefix (templated; default ``[ray] checkpoint_prefix``).
        Each checkpoint written is an asset event of every ``AssetAlias`` in ``outlets``, with
        its manifest as the event's extra.
    :param airflow_conn_ids: Airflow connections the callable's hooks use (templated; a list,
        or ids separated by commas; empty ones are left out). They are read here, through
        Airflow's secrets backends, environment and metadata DB, travel with the task's request
        and are visible to the Ray task only while its callable runs (as ``AIRFLOW_CONN_<ID>``).
        Connections a task does not name are not visible in the cluster.
    :param lineage_inputs: paths or URIs the callable reads (templated; empty ones are left
        out), reported as its input datasets when the OpenLineage provider is installed, beside
        the checkpoint files it writes as outputs.
    :param deferrable: through the Jobs API, free the worker slot while the Ray task runs: the
        triggerer follows the job (default ``[operators] default_deferrable``). A driver
        connection cannot defer; the task then runs in place, with a warning.
    :param poll_interval: seconds between two looks at a deferred job (default 1).

    Every try stores its Ray task's id (the task state store) before following it, so that a
    retry after this worker died reconnects to it, or returns its result, instead of running
    it again.
    """

    template_fields: Sequence[str] = (
        "templates_dict",
        "op_args",
        "op_kwargs",
        "num_cpus",
        "num_gpus",
        "memory",
        "ray_resources",
        "runtime_env",
        "ray_remote_args",
        "checkpoint",
        "checkpoint_conn_id",
        "checkpoint_bucket",
        "checkpoint_prefix",
        "lineage_inputs",
        "airflow_conn_ids",
    )
    template_fields_renderers = {
        **PythonOperator.template_fields_renderers,
        "ray_resources": "json",
        "runtime_env": "json",
        "ray_remote_args": "py",
    }
    ui_color = "#dbe9ff"
    operator_extra_links = (RayJobLink(),)
    # Where the Ray task of the current try is recorded (task state store), for a retry.
    external_id_key = "airflow_ray_call"

    def __init__(
        self,
        *,
        python_callable: Callable[..., Any],
        op_args: Collection[Any] | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        num_cpus: float | str | None = None,
        num_gpus: float | str | None = None,
        memory: int | str | None = None,
        resources: dict[str, float] | str | None = None,
        runtime_env: dict[str, Any] | str | None = None,
        ray_remote_args: dict[str, Any] | str | None = None,
        ray_conn_id: str = "ray_default",
        checkpoint: bool | str = False,
        checkpoint_conn_id: str | None = None,
        checkpoint_bucket: str | None = None,
        checkpoint_prefix: str | None = None,
        checkpoint_source: str | None = None,
        lineage_inputs: str | Sequence[str] | None = None,
        airflow_conn_ids: str | Sequence[str] | None = None,
        deferrable: bool | None = None,
        poll_interval: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(python_callable=python_callable, op_args=op_args, op_kwargs=op_kwargs, **kwargs)
        if checkpoint_source and checkpoint_conn_id and checkpoint_source != checkpoint_conn_id:
            raise RayConfigurationError(
                f"checkpoint_source={checkpoint_source!r} and checkpoint_conn_id={checkpoint_conn_id!r} "
                f"name two connections; checkpoint_source is the old name of checkpoint_conn_id: "
                f"pass one of them."
            )
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus
        self.memory = memory
        # BaseOperator.resources is Airflow's own (executor) field and cannot be templated.
        self.ray_resources = resources
        self.runtime_env = runtime_env
        self.ray_remote_args = ray_remote_args
        self.ray_conn_id = ray_conn_id
        self.checkpoint = checkpoint
        self.checkpoint_conn_id = checkpoint_conn_id or checkpoint_source
        self.checkpoint_bucket = checkpoint_bucket
        self.checkpoint_prefix = checkpoint_prefix
        self.lineage_inputs = lineage_inputs
        self.airflow_conn_ids = airflow_conn_ids
        self.deferrable = _default_deferrable() if deferrable is None else deferrable
        self.poll_interval = poll_interval
        self._run: RayRun | None = None  # the Ray run of the execute() under way in this process

    @property
    def is_async(self) -> bool:
        # A coroutine function runs (and is awaited) inside Ray, not in the Airflow worker.
        return False

    @cached_property
    def hook(self) -> RayHook:
        from airflow_ray.hooks.ray import RayHook

        return RayHook(self.ray_conn_id)

    @cached_property
    def transport(self) -> Transport:
        return self.hook.get_transport()

    @property
    def ray_link(self) -> str | None:
        """The dashboard URL of this process's Ray work, once submitted (see :class:`RayJobLink`)."""
        return None if self._run is None else self._run.link

    def _run_of(self, context: Context, resumed: bool = False) -> RayRun:
        """The Ray run of this ``execute()``, or a new one for the task ``resumed`` in another
        process (after its deferral), which has not submitted anything itself."""
        from airflow_ray.operators.run import RayRun

        if resumed or self._run is None or self._run.context is not context:
            self._run = RayRun(self, context, resumed=resumed)
        return self._run

    def execute(self, context: Context) -> Any:
        self._run_of(context)
        return super().execute(context)

    def _do_render_template_fields(
        self,
        parent: Any,
        template_fields: Iterable[str],
        context: Context,
        jinja_env: jinja2.Environment,
        seen_oids: set[int],
    ) -> None:
        """Render the callable's arguments so that XComs kept in Ray stay references.

        The object is then handed to the Ray task inside the cluster; every other field (and
        every other operator) gets the value itself. Airflow's ``MappedOperator`` renders an
        unmapped task through this method, not the public ``render_template_fields``; and
        ``xcom_pull`` cannot tell the backend who reads, hence :func:`ray_consumer`.
        """
        if parent is not self:
            return super()._do_render_template_fields(parent, template_fields, context, jinja_env, seen_oids)
        from airflow_ray.xcom.reference import ray_consumer

        fields = list(template_fields)
        arguments = [name for name in fields if name in _ARGUMENT_FIELDS]
        with ray_consumer():
            super()._do_render_template_fields(parent, arguments, context, jinja_env, seen_oids)
        rest = [name for name in fields if name not in _ARGUMENT_FIELDS]
        super()._do_render_template_fields(parent, rest, context, jinja_env, seen_oids)

    def determine_kwargs(self, context: Mapping[str, Any]) -> Mapping[str, Any]:
        from airflow_ray.operators.context import shippable_context

        shippable = shippable_context(self.python_callable, self.op_kwargs, context)
        return KeywordParameters.determine(self.python_callable, self.op_args, shippable).unpacking()

    def execute_callable(self) -> Any:
        assert self._run is not None  # started by execute()
        return self.execute_resumable(self._run.context)

    # -- ResumableJobMixin: a retry after the worker died reconnects to the recorded Ray task --

    def submit_job(self, context: Context) -> dict[str, Any]:
        return self._run_of(context).submit().to_wire()

    def get_job_status(self, external_id: Any, context: Context) -> str:
        return self._run_of(context).status(Resume.from_wire(external_id)).value

    def is_job_active(self, status: str) -> bool:
        return status == CallState.RUNNING.value

    def is_job_succeeded(self, status: str) -> bool:
        return status == CallState.DONE.value

    def poll_until_complete(self, external_id: Any, context: Context) -> Any:
        return self._run_of(context).follow(Resume.from_wire(external_id))

    def get_job_result(self, external_id: Any, context: Context) -> Any:
        return self._run_of(context).result(Resume.from_wire(external_id))

    def execute_complete(self, context: Context, event: Any) -> Any:
        """Back from the triggerer: the result's reference(s), or why the job gave none."""
        return self._run_of(context, resumed=True).complete(event)

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """A deferral that failed (``execution_timeout`` ran out while the triggerer followed the
        job, or the trigger broke) stops the Ray job before failing."""
        if next_method == "__fail__":
            self._run_of(context, resumed=True).stop_recorded()
        return super().resume_execution(next_method, next_kwargs, context)

    def keeps_result(self) -> bool:
        """Whether the result stays in the cluster: the Ray XCom backend will store it, and no
        mapped task expands over it (Airflow needs the list itself to count the expansion)."""
        from airflow_ray.xcom.backend import RayXComBackend

        return (
            RayXComBackend.is_configured()
            and self.do_xcom_push
            and next(self.iter_mapped_dependants(), None) is None
        )

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage (when its provider is installed): ``lineage_inputs`` in, checkpoints out."""
        from airflow_ray.operators.lineage import operator_lineage

        inputs = self.lineage_inputs
        return operator_lineage(
            inputs=[inputs] if isinstance(inputs, str) else list(inputs or ()),
            outputs=[] if self._run is None else self._run.checkpoint_uris,
        )

    def on_kill(self) -> None:
        if self._run is not None:
            self._run.cancel()


def _default_deferrable() -> bool:
    from airflow.sdk.configuration import conf

    return conf.getboolean("operators", "default_deferrable", fallback=False)


_ARGUMENT_FIELDS = frozenset({"op_args", "op_kwargs", "templates_dict"})
