"""The seam between Airflow and a Ray cluster: how a task is run there and its results reached.

The operator, the XCom backend, the results package and the CLI talk to a cluster only through
a :class:`Transport`, which :meth:`RayHook.get_transport() <airflow_ray.hooks.ray.RayHook.get_transport>`
makes from a ``ray`` connection. Values cross it as pin keys (:class:`Input`), never as Ray
ObjectRefs, so that a transport over HTTP can carry the same calls. Today's implementation is
:class:`~airflow_ray.cluster.driver.DriverTransport` (this process is a Ray driver) and
:class:`~airflow_ray.cluster.jobs.JobsTransport` (each task a Ray job, over HTTP only). Both
implement the whole protocol: callers outside ``cluster/`` never ask which one they hold.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from airflow_ray._remote.protocol import CallError, CallState, ErrorKind, Producer, Returned
from airflow_ray.cluster.resources import TaskResources
from airflow_ray.exceptions import RayTaskFailedError, RemoteCallableError

if TYPE_CHECKING:
    from airflow_ray.hooks.ray import RayHook


@dataclass(frozen=True)
class Input:
    """A result kept in the cluster: its pin key, and the owner actor that pinned it."""

    pin: str
    owner: str


@dataclass
class TaskSpec:
    """One callable to run as a Ray task.

    :param inputs: the results that ``ref_slot(i)`` markers in ``args``/``kwargs`` stand for;
        they are resolved inside the cluster.
    :param pin: keep the result pinned under this XCom (each key's value under its own key
        with ``split``); ``None``: :meth:`Transport.take` fetches it.
    """

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    name: str
    resources: TaskResources = field(default_factory=TaskResources)
    runtime_env: dict[str, Any] = field(default_factory=dict)
    remote_args: dict[str, Any] = field(default_factory=dict)
    inputs: list[Input] = field(default_factory=list)
    pin: Producer | None = None
    split: bool = False
    submission_id: str | None = None  # the same for the same task-instance try (Jobs API)
    # (package, what needs it): checked on the Ray node before the callable runs.
    requires: list[tuple[str, str]] = field(default_factory=list)
    # Pinned results up to this size may travel back with the answer (Transport.small_results).
    small_bytes: int = 0
    # Environment variables set only while the callable runs: the Airflow connections it names
    # (secrets: never logged, shown or put in a runtime_env).
    environ: dict[str, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Call:
    """A submitted task, as its transport knows it."""

    name: str
    call_id: str


class Transport(Protocol):
    """How the Airflow worker runs tasks on one cluster and reaches the results kept there."""

    conn_id: str

    @property
    def namespace(self) -> str: ...

    @property
    def owner_name(self) -> str:
        """The owner actor that pins what this transport's tasks return."""
        ...

    @property
    def holder(self) -> str | None:
        """Which embedded cluster this transport reaches (``None``: a cluster by address)."""
        ...

    def submit(self, spec: TaskSpec) -> Call:
        """Start ``spec``'s task.

        :raises RayInputsMissingError: naming the inputs the cluster no longer holds (nothing ran:
            the caller restores them from their checkpoints and submits again).
        """
        ...

    def follow(self, call: Call, on_output: Callable[[str], None], log: Any) -> Returned:
        """Pass output to ``on_output`` as it arrives; the description of the result.

        :raises: the callable's own exception (see :func:`raise_call_error`).
        """
        ...

    def state(self, call: Call) -> CallState:
        """Where a call submitted earlier (maybe by a process that died) stands, without waiting."""
        ...

    def link(self, call: Call) -> str | None:
        """Where the call can be watched in the cluster's dashboard, if it has one."""
        ...

    def job_id(self, call: Call) -> str | None:
        """The Ray job that runs ``call``, by which a process that is no Ray driver (the
        triggerer, through the Jobs API) follows or stops it; ``None`` when the call is no job of
        its own, and only a Ray driver can follow it."""
        ...

    def answered(self, call: Call, answer: dict[str, Any], log: Any) -> Returned:
        """What the answer record of ``call``, read elsewhere (by the triggerer from its job's
        log), means: the result's description (kept for :meth:`take`), or the error it raises."""
        ...

    def take(self, call: Call) -> Any:
        """The value of a finished call that was not pinned (``{key: value}`` when split)."""
        ...

    def forget(self, call: Call) -> None:
        """Let the cluster drop the call (its result stays only where it was pinned)."""
        ...

    def small_results(self, call: Call, pinned: dict[str, Input], max_bytes: int) -> dict[str, Any]:
        """The values of a finished call's pinned results (``{XCom key: pin}``) that are no larger
        than ``max_bytes``, fetched here; called before :meth:`forget`."""
        ...

    def cancel(self, call: Call) -> None:
        """Stop the task (a callable cannot be interrupted softly: its worker is killed)."""
        ...

    def missing(self, inputs: list[Input]) -> list[Input]:
        """Which of ``inputs`` the cluster no longer holds."""
        ...

    def fetch(self, item: Input) -> Any:
        """The value of a result held in the cluster, into this process."""
        ...

    def release(self, inputs: list[Input]) -> int:
        """Unpin ``inputs``; how many were pinned."""
        ...

    def fetch_and_release(self, inputs: list[Input]) -> list[Any]:
        """The values of ``inputs``, into this process, and their pins released whether or not
        they could be fetched: one step.

        :raises LookupError: naming a pin the cluster no longer holds.
        """
        ...

    def release_copied(self, inputs: list[Input]) -> None:
        """Unpin results whose values an XCom row now holds itself, where that costs little;
        the rest are left to the pins' retention (``[ray] pin_ttl``, ``keep_runs``)."""
        ...

    def list_pins(self, dag_id: str | None = None, run_id: str | None = None) -> list[dict[str, Any]]: ...

    def release_matching(self, dag_id: str | None = None, run_id: str | None = None) -> int: ...


class OwnedResults:
    """What both transports share: a connection, and the owner actors of its Ray namespace.

    :param hook: the hook of the ``ray`` connection; nothing is read until first use.
    :param namespace: the owner actors' Ray namespace (default: the connection's).
    """

    def __init__(self, hook: RayHook, namespace: str | None = None) -> None:
        self.hook = hook
        self.conn_id = hook.ray_conn_id
        self._namespace = namespace

    @property
    def namespace(self) -> str:
        return self._namespace or self.hook.settings.namespace

    @property
    def owner_name(self) -> str:
        from airflow_ray.cluster.owner import owner_name

        return owner_name()

    @property
    def holder(self) -> str | None:
        """Which embedded cluster this transport reaches, as ``host:state_dir@started`` (``@none``
        when none runs); ``None`` for a cluster given by address, which every host reaches."""
        if not self.hook.settings.address.is_embedded:
            return None
        import socket

        from airflow_ray.cluster.local import EmbeddedCluster

        cluster = EmbeddedCluster.from_config()
        head = cluster.status()
        return f"{socket.gethostname()}:{cluster.state_dir}@{head.started_at if head else 'none'}"

    def task_options(self, spec: TaskSpec) -> dict[str, Any]:
        """The Ray ``.options()`` of ``spec``'s task: its resources, ``ray_remote_args``, name,
        and its runtime_env merged over the connection's."""
        options = {**spec.resources.as_options(), **spec.remote_args, "name": spec.name}
        runtime_env = merged_runtime_env(self.hook.settings.runtime_env, spec.runtime_env, spec.name)
        if runtime_env:
            options["runtime_env"] = runtime_env
        return options


def merged_runtime_env(connection: dict[str, Any], task: dict[str, Any], name: str) -> dict[str, Any]:
    """The runtime_env of a task: its own merged over its connection's, as Ray merges a job's
    runtime_env with a task's (``ray.runtime_env.runtime_env._merge_runtime_env`` with override).

    Field by field (``pip``, ``py_modules``, ``working_dir`` ...), and ``env_vars`` variable by
    variable. Where both set the same field or variable, the task's value wins; that is logged,
    since it drops the connection's.
    """
    merged = {key: value for key, value in connection.items() if key != "env_vars"}
    replaced = sorted(key for key in task if key != "env_vars" and key in merged)
    merged.update({key: value for key, value in task.items() if key != "env_vars"})
    env_vars = dict(connection.get("env_vars") or {})
    task_vars = dict(task.get("env_vars") or {})
    replaced += sorted(
        f"env_vars.{var}" for var in task_vars if var in env_vars and env_vars[var] != task_vars[var]
    )
    env_vars.update(task_vars)
    if env_vars:
        merged["env_vars"] = env_vars
    replaced = [key for key in replaced if key.startswith("env_vars.") or connection[key] != task[key]]
    if replaced:
        logging.getLogger(__name__).info(
            "The runtime_env of Ray task %s replaces the connection's %s with its own",
            name,
            ", ".join(replaced),
        )
    return merged


def raise_call_error(name: str, error: CallError, log: Any) -> NoReturn:
    """Raise what a failed call means here.

    :raises: the callable's own exception, rebuilt here (so Airflow's skip and fail exceptions
        keep their meaning) from a :class:`RemoteCallableError` holding the remote traceback;
        that error itself when the exception cannot be rebuilt here; :class:`RayTaskFailedError`
        when the task failed outside the callable.
    """
    if error.kind is ErrorKind.TASK:
        raise RayTaskFailedError(f"The Ray task {name} failed outside the callable: {error.message}")
    import pickle

    (log or logging.getLogger(__name__)).error("The callable failed in Ray task %s:\n%s", name, error.message)
    rebuilt: Any = None
    why = "it could not be pickled in the cluster"
    if error.pickled is not None:
        try:
            rebuilt = pickle.loads(error.pickled)
        except Exception as err:  # noqa: BLE001 - an exception class that is not importable here
            why = f"its class cannot be loaded here ({type(err).__name__}: {err})"
    if isinstance(rebuilt, Exception):
        raise rebuilt from RemoteCallableError(f"Remote traceback of Ray task {name}:\n{error.message}")
    if isinstance(rebuilt, BaseException):
        # SystemExit or KeyboardInterrupt raised here would end this Airflow task's process, which
        # then fails without saying why.
        why = "it would end this Airflow task's process instead of failing the task"
    raised = f" with {error.type_name}" if error.type_name else ""
    raise RemoteCallableError(
        f"The callable failed in Ray task {name}{raised}, which is not raised here as itself because "
        f"{why}:\n{error.message}"
    )


def run_in_cluster(
    transport: Transport, spec: TaskSpec, on_output: Callable[[str], None] | None = None, log: Any = None
) -> Any:
    """Run ``spec`` to its end: its value, or ``None`` when ``spec.pin`` keeps it in the cluster.

    Interrupted here (a timeout, SIGTERM), the task is cancelled: it must not run on.
    """
    log = log or logging.getLogger(__name__)
    call = transport.submit(spec)
    try:
        transport.follow(call, on_output or (lambda text: log.info("%s", text.rstrip())), log)
    except BaseException:
        transport.cancel(call)
        raise
    if spec.pin is not None:
        transport.forget(call)
        return None
    return transport.take(call)
