"""``RayPythonOperator``: run a Python callable as a Ray task and return its result."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk.bases.decorator import KeywordParameters

from airflow_ray.exceptions import RayConfigurationError

if TYPE_CHECKING:
    import jinja2
    from airflow.sdk import Context

    from airflow_ray.checkpoint.formats import S3Access
    from airflow_ray.checkpoint.store import CheckpointLocation
    from airflow_ray.cluster.submit import RemoteCall

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


class RayPythonOperator(PythonOperator):
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
    )
    template_fields_renderers = {
        **PythonOperator.template_fields_renderers,
        "ray_resources": "json",
        "runtime_env": "json",
        "ray_remote_args": "py",
    }
    ui_color = "#dbe9ff"

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
        self._remote_call: RemoteCall | None = None
        self._ray_task_name = ""
        self._producer: dict[str, Any] = {}

    @property
    def is_async(self) -> bool:
        # A coroutine function runs (and is awaited) inside Ray, not in the Airflow worker.
        return False

    def execute(self, context: Context) -> Any:
        ti = context["ti"]
        map_index = getattr(ti, "map_index", -1)
        map_index = -1 if map_index is None else map_index
        suffix = f"[{map_index}]" if map_index >= 0 else ""
        self._ray_task_name = f"{ti.dag_id}.{ti.task_id}{suffix}"
        self._producer = {
            "dag_id": ti.dag_id,
            "run_id": ti.run_id,
            "task_id": ti.task_id,
            "map_index": map_index,
            "key": "return_value",
        }
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
        from airflow_ray import config
        from airflow_ray.cluster.submit import TaskResources, as_mapping
        from airflow_ray.hooks.ray import RayHook

        hook = RayHook(self.ray_conn_id)
        resources = TaskResources.from_arguments(
            num_cpus=self.num_cpus, num_gpus=self.num_gpus, memory=self.memory, resources=self.ray_resources
        )
        args, kwargs, inputs = self._hand_over_inputs()
        checkpoint = self._checkpoint_location()
        s3 = None
        if checkpoint is not None:
            from airflow_ray.checkpoint import store

            s3 = store.preflight(checkpoint)
            self.log.info(
                "The result will be checkpointed to %s", checkpoint.uri(checkpoint.key_prefix(self._producer))
            )
        # Results stay in the cluster when the Ray XCom backend will store them, unless a mapped
        # task expands over them (Airflow needs the list itself to count the expansion).
        keep = (
            config.xcom_backend_is_ray()
            and self.do_xcom_push
            and next(self.iter_mapped_dependants(), None) is None
        )
        split = bool(getattr(self, "multiple_outputs", False))
        name = self._ray_task_name or self.task_id
        self._remote_call = hook.submit(
            self.python_callable,
            args,
            kwargs,
            name=name,
            resources=resources,
            runtime_env=dict(as_mapping("runtime_env", self.runtime_env)),
            remote_args=dict(as_mapping("ray_remote_args", self.ray_remote_args)),
            inputs=inputs,
            pin=keep,
            producer=self._producer,
            split_dict=split,
        )
        self.log.info(
            "Submitted Ray task %s with %s%s",
            name,
            resources.as_options() or "Ray's default resources",
            f" and {len(inputs)} input(s) handed over inside the cluster" if inputs else "",
        )
        lines = _LineLogger(self.log)
        try:
            meta = self._remote_call.follow(lines.write, self.log)
        except BaseException:
            # Interrupted here (execution_timeout, SIGTERM) the Ray task must not run on; after
            # a remote failure it has already ended and cancelling it changes nothing.
            self._remote_call.cancel()
            raise
        finally:
            lines.close()
        returns_value = self.do_xcom_push and not keep
        if checkpoint is None and not returns_value:
            self._remote_call.forget()
            return self._references(hook, meta) if keep else None
        result = self._remote_call.take()
        checkpointed = None if checkpoint is None else self._write_checkpoint(checkpoint, s3, result, lines)
        if not returns_value:
            return self._references(hook, meta, checkpointed) if keep else None
        import ray

        if isinstance(result, dict):
            return {key: ray.get(ref) for key, ref in result.items()}
        return ray.get(result)

    def _checkpoint_location(self) -> CheckpointLocation | None:
        """Where ``checkpoint=True`` writes the result, or ``None`` without it."""
        if not _flag("checkpoint", self.checkpoint):
            return None
        from airflow_ray.checkpoint.store import CheckpointLocation

        return CheckpointLocation.resolve(
            self.checkpoint_conn_id, self.checkpoint_bucket, self.checkpoint_prefix
        )

    def _write_checkpoint(
        self, location: CheckpointLocation, s3: S3Access | None, result: Any, lines: _LineLogger
    ) -> dict[str, Any]:
        """Write the result (each key's value, for a split dict) from the cluster to S3.

        :return: ``{xcom key: checkpoint document}`` for the references.
        """
        from airflow_ray.checkpoint import store

        results = result if isinstance(result, dict) else {"return_value": result}
        items = [({**self._producer, "key": key}, ref) for key, ref in results.items()]
        manifests = store.write(location, items, ray_conn_id=self.ray_conn_id, on_output=lines.write, s3=s3)
        documents = {}
        for (producer, _), manifest in zip(items, manifests, strict=True):
            self.log.info(
                "Checkpointed XCom %r to %s (%s, %d bytes, sha256 %s)",
                producer["key"],
                manifest["uri"],
                manifest["format"],
                manifest["size_bytes"],
                manifest["sha256"],
            )
            documents[producer["key"]] = {**location.to_json(), "uri": manifest["uri"]}
        return documents

    def _references(self, hook: Any, meta: dict[str, Any], checkpointed: dict[str, Any] | None = None) -> Any:
        from airflow_ray.cluster.owner import owner_name
        from airflow_ray.xcom.reference import RayXComReference

        def reference(key: str, value_meta: dict[str, Any]) -> RayXComReference:
            producer = {**self._producer, "key": key}
            return RayXComReference(
                self.ray_conn_id,
                hook.settings.namespace,
                owner_name(),
                producer,
                value_meta,
                (checkpointed or {}).get(key),
            )

        if "split_keys" in meta:
            return {key: reference(key, meta["split_meta"][key]) for key in meta["split_keys"]}
        return reference("return_value", meta)

    def _hand_over_inputs(self) -> tuple[tuple[Any, ...], dict[str, Any], list[Any]]:
        """Replace XCom references in the arguments by slots for their ObjectRefs.

        A reference to another cluster (another connection) cannot be handed over inside this
        one: its value is fetched instead.
        """
        from airflow_ray.cluster.remote_call import ref_slot
        from airflow_ray.xcom.reference import Opaque, RayXComReference, transform, unwrap
        from airflow_ray.xcom.resolve import object_refs

        found: list[RayXComReference] = []
        slots: dict[str, int] = {}

        def to_slot(node: Any) -> Any:
            reference = node if isinstance(node, RayXComReference) else None
            if isinstance(node, str):
                reference = RayXComReference.from_token(node)
            if reference is None:
                return None
            if reference.conn_id != self.ray_conn_id:
                return Opaque(reference.materialize())
            if reference.pin not in slots:
                slots[reference.pin] = len(found)
                found.append(reference)
            return ref_slot(slots[reference.pin])

        args = transform(tuple(self.op_args), to_slot)
        kwargs = transform(dict(self.op_kwargs), to_slot)
        inputs = object_refs(found) if found else []
        return unwrap(args), unwrap(kwargs), inputs

    def on_kill(self) -> None:
        if self._remote_call is not None:
            self.log.info("Cancelling Ray task %s", self._remote_call.name)
            self._remote_call.cancel()


def _flag(name: str, value: Any) -> bool:
    """A boolean argument that may arrive templated, as text."""
    if isinstance(value, bool) or value is None:
        return bool(value)
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off", "", "none"):
        return False
    raise RayConfigurationError(f"{name}={value!r} is not a boolean; pass True or False.")


def _plain(key: str, value: Any) -> Any:
    """``params`` is a ParamsDict bound to the DAG; Ray gets its plain values."""
    if key == "params" and hasattr(value, "dump"):
        return dict(value.dump())
    return value


_ARGUMENT_FIELDS = frozenset({"op_args", "op_kwargs", "templates_dict"})


class _LineLogger:
    """Turns streamed chunks of output into one task-log record per line."""

    def __init__(self, log: Any) -> None:
        self._log = log
        self._partial = ""

    def write(self, text: str) -> None:
        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            self._log.info("%s", line.rstrip("\r"))

    def close(self) -> None:
        if self._partial:
            self._log.info("%s", self._partial)
            self._partial = ""
