"""The driver transport: this process is a Ray driver, and the owner actor runs every task.

The owner actor (:mod:`airflow_ray._remote.owner_actor`) submits each task, so that it, not this
short-lived process, owns the result; this process long-polls it for output and outcome.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import time
from collections.abc import Callable, Iterator
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_ray._remote import pins
from airflow_ray._remote.protocol import CallError, CallState, ErrorKind, PollReply, Returned
from airflow_ray.cluster.transport import (
    Call,
    Input,
    OwnedResults,
    TaskSpec,
    raise_call_error,
)
from airflow_ray.exceptions import RayConfigurationError, RayInputsMissingError, RayTaskFailedError

if TYPE_CHECKING:
    from airflow_ray._remote.autoscaling import StartCheck

log = logging.getLogger(__name__)
_POLL_INTERVAL = 0.5
EMBEDDED_GONE = (
    "The embedded Ray cluster stopped while the task ran (airflow-ray local stop, or it crashed): "
    "the next task starts it again, so a retry of this task can succeed."
)


class WaitNotice:
    """Says, every ``every`` seconds, that a submitted task has not started, and what the cluster
    has free: a task queued behind busy resources is not silent."""

    def __init__(self, name: str, every: float = 15.0) -> None:
        self.name = name
        self.every = every
        self.since = time.monotonic()
        self.next = self.since + every

    def tick(
        self, log: Any, free: Callable[[], dict[str, float]], pending: Callable[[], str] | None = None
    ) -> None:
        """Speak if ``every`` seconds passed since it last spoke.

        :param free: the cluster's free resources.
        :param pending: the node types the cluster's autoscaler is launching (empty: none).
        """
        now = time.monotonic()
        if now < self.next:
            return
        self.next = now + self.every
        try:
            available = {k: round(v, 2) for k, v in free().items() if "node:" not in k}
        except Exception:  # noqa: BLE001 - only for the message
            available = {}
        launching = pending() if pending is not None else ""
        (log or logging.getLogger(__name__)).info(
            "Ray task %s has not started after %.0f s: it waits for the resources it asked for, or "
            "for Ray to set up its runtime_env if it has one (free in the cluster now: %s)%s",
            self.name,
            now - self.since,
            available or "unknown",
            f"; the cluster's autoscaler is launching nodes of type: {launching}" if launching else "",
        )


class DriverTransport(OwnedResults):
    """Runs tasks through the owner actor of the cluster this process connects to as a driver.

    :param hook: the hook of the ``ray`` connection; nothing connects until first use.
    :param namespace: the owner actors' Ray namespace (default: the connection's).
    """

    @cached_property
    def owner(self) -> Any:
        """This code's owner actor in the cluster, created on first use."""
        from airflow_ray import config
        from airflow_ray.cluster.byvalue import register_by_value
        from airflow_ray.cluster.owner import get_owner

        self.hook.get_conn()
        register_by_value()
        return get_owner(self.namespace, config.keep_runs(), config.pin_ttl())

    @contextlib.contextmanager
    def _owner_alive(self, what: str) -> Iterator[None]:
        """Turn the owner actor's death into the library's error, naming what was being done."""
        import ray

        try:
            yield
        except ray.exceptions.RayActorError as err:
            self.__dict__.pop("owner", None)  # the next use creates a new one
            raise RayTaskFailedError(
                f"The owner actor of connection {self.conn_id!r} ({self.owner_name}, namespace "
                f"{self.namespace!r}) died while {what} ({type(err).__name__}). The results it "
                f"pinned are gone (those with a checkpoint are restored from it when read); the "
                f"next task starts a new owner, so a retry of this task can succeed."
            ) from err

    # -- running tasks ----------------------------------------------------------------------

    def submit(self, spec: TaskSpec) -> Call:
        import ray

        from airflow_ray import config
        from airflow_ray._remote import autoscaling
        from airflow_ray._remote.placement import unmet
        from airflow_ray.cluster.byvalue import register_by_value
        from airflow_ray.cluster.resources import check_feasible

        owner = self.owner
        gone = self.missing(spec.inputs) if spec.inputs else []
        if gone:
            raise RayInputsMissingError(
                f"Inputs of Ray task {spec.name} are no longer in the cluster: {[item.pin for item in gone]}",
                [item.pin for item in gone],
            )
        nodes = ray.nodes()
        demand = spec.resources.demand()
        # The autoscaler is asked only when no live node fits: the common case costs nothing more.
        scaler = autoscaling.read() if unmet(demand, nodes) is not None else None
        check_feasible(spec.resources, nodes, where=self.hook.describe(), scaler=scaler)
        if scaler is not None:
            log.info(
                "No node of %s can run Ray task %s now: it waits for the cluster's autoscaler to "
                "launch one%s",
                self.hook.describe(),
                spec.name,
                f" (launching: {scaler.describe_pending()})" if scaler.pending else "",
            )
        register_by_value()  # modules the DAG imported since the owner was found
        options = self.task_options(spec)
        try:
            with self._owner_alive(f"submitting Ray task {spec.name}"):
                inputs = [
                    pins.submit_input(i.pin, i.owner, self.owner_name, self.namespace) for i in spec.inputs
                ]
                call_id = ray.get(
                    owner.submit.remote(
                        spec.fn,
                        tuple(spec.args),
                        dict(spec.kwargs),
                        inputs,
                        options,
                        None if spec.pin is None else spec.pin.to_wire(),
                        spec.split,
                        config.orphan_timeout(),
                        spec.requires,
                        spec.environ,
                    )
                )
        except (TypeError, ValueError, pickle.PicklingError) as err:
            raise RayConfigurationError(
                f"Task {spec.name} cannot be sent to Ray: {err}. Check ray_remote_args "
                f"{spec.remote_args!r}, and pass values that pickle (no open files, locks, clients or "
                f"database sessions), or create them inside the callable."
            ) from err
        except ray.exceptions.RayTaskError as err:
            raise RayConfigurationError(
                f"Ray refused task {spec.name} with options {options!r}: {err}"
            ) from err
        self._demands[call_id] = (demand, -1 if scaler is None else scaler.current)
        return Call(spec.name, call_id)

    @cached_property
    def _demands(self) -> dict[str, tuple[dict[str, float], int]]:
        """``{call id: (what it asks for, the cluster's resource state version then)}`` of the tasks
        this transport submitted."""
        return {}

    def follow(self, call: Call, on_output: Callable[[str], None], log: Any) -> Returned:
        import ray

        from airflow_ray import config
        from airflow_ray._remote.autoscaling import StartCheck

        offset = 0
        waiting = WaitNotice(call.name)
        demand, version = self._demands.pop(call.call_id, (None, -1))
        check = StartCheck(demand, config.schedule_timeout(), version)
        while True:
            # A short long-poll returns to Python between calls, so that signal handlers
            # (Airflow's execution_timeout, SIGTERM) run while a long task is silent.
            try:
                reply = PollReply.from_wire(
                    ray.get(self.owner.poll.remote(call.call_id, offset, _POLL_INTERVAL))
                )
            except ray.exceptions.RayActorError as err:
                gone = f"\n{EMBEDDED_GONE}" if self._embedded_gone() else ""
                raise RayTaskFailedError(
                    f"The owner actor of Ray task {call.name} died while the task ran: {err}{gone}"
                ) from err
            for text in reply.output:
                on_output(text)
            offset = reply.offset
            if not reply.state.is_terminal():
                if not reply.started:
                    self._check_start(call, check)
                    waiting.tick(log, ray.available_resources, check.pending)
                continue
            if reply.state is CallState.DONE and reply.returned is not None:
                return reply.returned
            error = reply.error or CallError(ErrorKind.TASK, "the owner actor lost track of it")
            if error.kind is ErrorKind.TASK and self._embedded_gone():
                error = CallError(ErrorKind.TASK, f"{error.message}\n{EMBEDDED_GONE}")
            raise_call_error(call.name, error, log)

    def _check_start(self, call: Call, check: StartCheck) -> None:
        """Cancel and fail a task that waits for a node that will never come, or for longer than
        ``[ray] schedule_timeout``."""
        from airflow_ray.cluster.resources import infeasible, not_started

        largest = check.never()
        if largest is not None:
            self.cancel(call)
            assert check.demand is not None
            raise infeasible(check.demand, largest, self.hook.describe(), autoscaled=True)
        if check.timed_out():
            self.cancel(call)
            assert check.timeout is not None
            raise not_started(call.name, check.demand, check.timeout, check.pending(), self.hook.describe())

    def _embedded_gone(self) -> bool:
        """Whether this connection's cluster is the embedded one, and it does not run any more."""
        if not self.hook.settings.address.is_embedded:
            return False
        from airflow_ray.cluster.local import EmbeddedCluster

        return EmbeddedCluster.from_config().stopped()

    def state(self, call: Call) -> CallState:
        import ray

        # Asked for output past its end, with no wait: only the state comes back.
        with self._owner_alive(f"asking about Ray task {call.name}"):
            return PollReply.from_wire(ray.get(self.owner.poll.remote(call.call_id, 1 << 62, 0))).state

    def link(self, call: Call) -> str | None:
        # Only a dashboard the connection names: the link costs an XCom write per task, and the
        # driver transport is the one chosen for short tasks.
        return self.hook.settings.dashboard_url

    def job_id(self, call: Call) -> str | None:
        return None  # a task of the owner actor: only a Ray driver can follow it

    def answered(self, call: Call, answer: dict[str, Any], log: Any) -> Returned:
        from airflow_ray.cluster.jobs import outcome

        return outcome(answer, call.name, self.hook.describe(), log)

    def take(self, call: Call) -> Any:
        import ray

        with self._owner_alive(f"fetching the result of Ray task {call.name}"):
            result = ray.get(self.owner.take.remote(call.call_id))[0]
            if isinstance(result, dict):
                return {key: ray.get(ref) for key, ref in result.items()}
            return ray.get(result)

    def small_results(self, call: Call, pinned: dict[str, Input], max_bytes: int) -> dict[str, Any]:
        import ray

        with self._owner_alive(f"fetching the small results of Ray task {call.name}"):
            refs = {key: self._ref(item) for key, item in pinned.items()}
            return {key: ray.get(ref) for key, ref in refs.items() if ref is not None}

    def forget(self, call: Call) -> None:
        self.owner.take.remote(call.call_id)

    def cancel(self, call: Call) -> None:
        import ray

        try:
            ray.get(self.owner.cancel.remote(call.call_id), timeout=10)
        except (ray.exceptions.RayError, TimeoutError) as err:
            log.warning("Could not cancel Ray task %s: %s", call.name, err)

    # -- results kept in the cluster --------------------------------------------------------

    def _ref(self, item: Input) -> Any | None:
        self.hook.get_conn()
        with self._owner_alive(f"looking for the result pinned as {item.pin}"):
            return pins.pinned_ref(item.pin, item.owner, self.owner_name, self.namespace)

    def missing(self, inputs: list[Input]) -> list[Input]:
        return [item for item in inputs if self._ref(item) is None]

    def fetch(self, item: Input) -> Any:
        import ray

        ref = self._ref(item)
        if ref is None:
            raise LookupError(item.pin)
        return ray.get(ref)

    def release(self, inputs: list[Input]) -> int:
        self.hook.get_conn()
        with self._owner_alive("releasing pinned results"):
            return pins.release([(item.pin, item.owner) for item in inputs], self.namespace)

    def fetch_and_release(self, inputs: list[Input]) -> list[Any]:
        try:
            return [self.fetch(item) for item in inputs]
        finally:
            self.release(inputs)

    def release_copied(self, inputs: list[Input]) -> None:
        if inputs:  # a method call of the owner: cheap enough for every task
            self.release(inputs)

    def list_pins(self, dag_id: str | None = None, run_id: str | None = None) -> list[dict[str, Any]]:
        self.hook.get_conn()
        return pins.list_pins(self.namespace, self.owner_name, dag_id, run_id)

    def release_matching(self, dag_id: str | None = None, run_id: str | None = None) -> int:
        self.hook.get_conn()
        return pins.release_matching(self.namespace, self.owner_name, dag_id, run_id)
