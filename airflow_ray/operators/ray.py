"""``RayPythonOperator``: run a Python callable as a Ray task and return its result."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk.bases.decorator import KeywordParameters

from airflow_ray._remote.protocol import NO_MAP_INDEX, Producer
from airflow_ray.arguments import flag
from airflow_ray.exceptions import RayConfigurationError
from airflow_ray.links.ray import RayJobLink
from airflow_ray.operators.runner import RayTaskRunner

if TYPE_CHECKING:
    import jinja2
    from airflow.sdk import Context

    from airflow_ray.checkpoint.store import CheckpointStore
    from airflow_ray.cluster.transport import Call, TaskSpec, Transport
    from airflow_ray.hooks.ray import RayHook
    from airflow_ray.xcom.reference import RayXComReference

# Context values that can be pickled and mean the same inside a Ray worker. The others (ti,
# dag_run, task, conf, macros, ...) are live objects of the Airflow worker process.
SHIPPABLE_CONTEXT_KEYS = frozenset(
    {
        "data_interval_end",
        "data_interval_start",
        "ds",
        "ds_nodash",
        "expanded_ti_count",
        "logical_date",
        "map_index_template",
        "params",
        "prev_data_interval_end_success",
        "prev_data_interval_start_success",
        "prev_end_date_success",
        "prev_start_date_success",
        "run_id",
        "task_instance_key_str",
        "templates_dict",
        "test_mode",
        "ts",
        "ts_nodash",
        "ts_nodash_with_tz",
    }
)


class RayPythonOperator(RayTaskRunner, PythonOperator):
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
        self._checkpoint_uris: list[str] = []
        self.deferrable = _default_deferrable() if deferrable is None else deferrable
        self.poll_interval = poll_interval
        self._call: tuple[Transport, Call] | None = None
        self._producer: Producer | None = None
        self.ray_link: str | None = None  # the Ray job's dashboard URL, once submitted here
        self._context: Context | None = None
        self._result: dict[str, Any] = {}
        self._references_in: list[RayXComReference] = []

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
    def ray_task_name(self) -> str:
        """The Ray task's name: ``dag.task`` (``dag.task[map index]`` for a mapped task)."""
        p = self._producer
        if p is None:
            return self.task_id
        return f"{p.dag_id}.{p.task_id}" + (f"[{p.map_index}]" if p.map_index >= 0 else "")

    @property
    def producer(self) -> Producer:
        if self._producer is None:
            raise RuntimeError("the producer is known once execute() runs")
        return self._producer

    def _bind(self, context: Context) -> None:
        ti = context["ti"]
        map_index = getattr(ti, "map_index", None)
        self._producer = Producer(
            ti.dag_id,
            ti.run_id,
            ti.task_id,
            NO_MAP_INDEX if map_index is None else map_index,
            try_number=ti.try_number,
        )
        self._context = context

    def execute(self, context: Context) -> Any:
        self._bind(context)
        self.ray_link = ""  # none until the Ray task is submitted (see RayJobLink)
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
        every other operator) gets the value itself.
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
        user_keys = set(self.op_kwargs)
        signature = inspect.signature(self.python_callable)
        unshippable = [
            name
            for name in signature.parameters
            if name in context and name not in user_keys and name not in SHIPPABLE_CONTEXT_KEYS
        ]
        if unshippable:
            raise RayConfigurationError(
                f"The callable {self.python_callable.__name__!r} asks for the context value(s) "
                f"{', '.join(unshippable)}, which live in the Airflow worker and cannot be sent to "
                f"Ray. Template what you need into op_kwargs instead, e.g. "
                f"op_kwargs={{'value': \"{{{{ ti.xcom_pull(task_ids='...') }}}}\"}}."
            )
        shippable = {
            key: _plain(key, value)
            for key, value in context.items()
            if key in user_keys or key in SHIPPABLE_CONTEXT_KEYS
        }
        return KeywordParameters.determine(self.python_callable, self.op_args, shippable).unpacking()

    def execute_callable(self) -> Any:
        assert self._context is not None
        return self.execute_resumable(self._context)

    def _task_spec(self, transport: Transport) -> TaskSpec:
        from airflow_ray.arguments import json_object
        from airflow_ray.cluster.resources import TaskResources
        from airflow_ray.cluster.transport import TaskSpec
        from airflow_ray.operators.connections import shipped_connections
        from airflow_ray.results.handover import hand_over

        resources = TaskResources.from_arguments(
            num_cpus=self.num_cpus, num_gpus=self.num_gpus, memory=self.memory, resources=self.ray_resources
        )
        args, kwargs, inputs, self._references_in = hand_over(
            tuple(self.op_args), dict(self.op_kwargs), transport
        )
        return TaskSpec(
            self.python_callable,
            args,
            kwargs,
            name=self.ray_task_name,
            resources=resources,
            runtime_env=json_object(self.runtime_env, "runtime_env"),
            remote_args=json_object(self.ray_remote_args, "ray_remote_args"),
            inputs=inputs,
            split=bool(getattr(self, "multiple_outputs", False)),
            environ=shipped_connections(self.airflow_conn_ids, self.ray_task_name),
        )

    def _keeps_result(self) -> bool:
        """Whether the result stays in the cluster: the Ray XCom backend will store it, and no
        mapped task expands over it (Airflow needs the list itself to count the expansion)."""
        from airflow_ray.xcom.backend import RayXComBackend

        return (
            RayXComBackend.is_configured()
            and self.do_xcom_push
            and next(self.iter_mapped_dependants(), None) is None
        )

    def _checkpoint_store(self) -> CheckpointStore | None:
        """Where ``checkpoint=True`` writes the result, or ``None`` without it."""
        if not flag("checkpoint", self.checkpoint):
            return None
        from airflow_ray.checkpoint.store import CheckpointLocation, CheckpointStore

        return CheckpointStore(
            CheckpointLocation.resolve(
                self.checkpoint_conn_id, self.checkpoint_bucket, self.checkpoint_prefix
            )
        )

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage (when its provider is installed): ``lineage_inputs`` in, checkpoints out."""
        from airflow_ray.operators.lineage import operator_lineage

        inputs = self.lineage_inputs
        return operator_lineage(
            inputs=[inputs] if isinstance(inputs, str) else list(inputs or ()),
            outputs=self._checkpoint_uris,
        )

    def on_kill(self) -> None:
        if self._call is not None:
            transport, call = self._call
            self.log.info("Cancelling Ray task %s", call.name)
            transport.cancel(call)


def _default_deferrable() -> bool:
    from airflow.sdk.configuration import conf

    return conf.getboolean("operators", "default_deferrable", fallback=False)


def _plain(key: str, value: Any) -> Any:
    """``params`` is a ParamsDict bound to the DAG; Ray gets its plain values."""
    if key == "params" and hasattr(value, "dump"):
        return dict(value.dump())
    return value


_ARGUMENT_FIELDS = frozenset({"op_args", "op_kwargs", "templates_dict"})
