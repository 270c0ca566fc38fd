"""Checkpoints on S3, from the Airflow side: where they go, access, write, restore, list, delete.

The bytes move between the Ray cluster and S3 directly: the Airflow worker resolves the AWS
connection through the Amazon provider's ``S3Hook`` and hands the Ray task what it needs to
reach the endpoint, then waits. Writing a value kept in the cluster reads it there, zero-copy;
restoring puts it back into the cluster, owned (and pinned) by the owner actor, as if its
producer had just returned it.

One XCom of one task instance has one place, so a retry or rerun overwrites it::

    s3://<bucket>/<prefix>/<dag_id>/<run_id>/<task_id>/<map_index>/<xcom key>/value.<ext>
                                                                          .../manifest.json
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow_ray.exceptions import RayCheckpointError, RayCheckpointIntegrityError, RayConfigurationError

if TYPE_CHECKING:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from airflow_ray.checkpoint.formats import S3Access
    from airflow_ray.xcom.reference import RayXComReference

log = logging.getLogger(__name__)

DEFAULT_AWS_CONN_ID = "aws_default"
# Bounded S3 calls: a wrong endpoint or a dead server fails in seconds, not after minutes.
_CONNECT_TIMEOUT = 5
_READ_TIMEOUT = 60
_MAX_ATTEMPTS = 2


@dataclass(frozen=True)
class CheckpointLocation:
    """Where checkpoints go: an Airflow AWS connection, a bucket and a key prefix."""

    conn_id: str
    bucket: str
    prefix: str

    @classmethod
    def resolve(
        cls, conn_id: str | None = None, bucket: str | None = None, prefix: str | None = None
    ) -> CheckpointLocation:
        """The location from arguments, falling back to the ``[ray] checkpoint_*`` settings.

        :raises RayConfigurationError: when no bucket is given or configured.
        """
        from airflow_ray import config

        bucket = bucket or config.checkpoint_bucket()
        if not bucket:
            raise RayConfigurationError(
                "No S3 bucket for checkpoints: pass checkpoint_bucket= (bucket= for "
                "RayCheckpointOperator) or set [ray] checkpoint_bucket "
                "(AIRFLOW__RAY__CHECKPOINT_BUCKET)."
            )
        if bucket.startswith("s3://") or "/" in bucket:
            raise RayConfigurationError(
                f"Checkpoint bucket {bucket!r} is not a bucket name: give the bare name (such as "
                f"'my-bucket') and put any folder into the prefix."
            )
        prefix = config.checkpoint_prefix() if prefix is None else prefix
        return cls(
            conn_id=conn_id or config.checkpoint_conn_id() or DEFAULT_AWS_CONN_ID,
            bucket=bucket,
            prefix=prefix.strip("/"),
        )

    @classmethod
    def configured(cls) -> CheckpointLocation | None:
        """The location the ``[ray]`` section configures, or ``None`` without a bucket."""
        from airflow_ray import config

        return cls.resolve() if config.checkpoint_bucket() else None

    def key_prefix(self, producer: dict[str, Any]) -> str:
        """The folder (ending in ``/``) of one XCom of one task instance."""
        map_index = -1 if producer.get("map_index") is None else producer["map_index"]
        parts = [producer["dag_id"], producer["run_id"], producer["task_id"], str(map_index), producer["key"]]
        return self._under_prefix(parts)

    def run_prefix(self, dag_id: str | None = None, run_id: str | None = None) -> str:
        """The folder of a DAG's or a run's checkpoints (all of them without either)."""
        if run_id and not dag_id:
            raise RayConfigurationError(f"A run ({run_id!r}) is named without its DAG: give the DAG id too.")
        return self._under_prefix([part for part in (dag_id, run_id) if part])

    def _under_prefix(self, parts: list[str]) -> str:
        """``prefix/part/part/``, each part quoted so that a ``/`` in a run id stays in its part."""
        folder = "".join(quote(part, safe=":+=@,-_.~") + "/" for part in parts)
        return f"{self.prefix}/{folder}" if self.prefix else folder

    def uri(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{key}"

    def describe(self) -> str:
        return f"bucket {self.bucket!r} of AWS connection {self.conn_id!r}"

    def trusted(self, configured: CheckpointLocation | None) -> bool:
        """Whether pickles may be loaded from here: the configured connection's configured bucket.

        Unpickling runs code, and the place to load from comes from an XCom row; so only the
        bucket the deployment chose is trusted, whatever prefix a task gave.
        """
        return configured is not None and (self.conn_id, self.bucket) == (
            configured.conn_id,
            configured.bucket,
        )

    def to_json(self) -> dict[str, str]:
        return {"conn_id": self.conn_id, "bucket": self.bucket, "prefix": self.prefix}

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> CheckpointLocation:
        return cls(str(document["conn_id"]), str(document["bucket"]), str(document.get("prefix", "")))


# -- access --------------------------------------------------------------------------------


def s3_hook(location: CheckpointLocation) -> S3Hook:
    """An ``S3Hook`` for the location's connection with bounded timeouts.

    The connection's own botocore settings (``config_kwargs`` in its extra) win over ours.

    :raises RayConfigurationError: when the connection does not exist (``aws_default`` may be
        missing: the AWS SDK then finds credentials in the environment, as Amazon's hooks do).
    """
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException
    from botocore.config import Config

    if location.conn_id != DEFAULT_AWS_CONN_ID:
        try:
            BaseHook.get_connection(location.conn_id)
        except AirflowNotFoundException as err:
            raise RayConfigurationError(
                f"The AWS connection {location.conn_id!r} for checkpoints in bucket "
                f"{location.bucket!r} does not exist. Create it (type 'aws', with an endpoint_url "
                f"in its extra for an S3-compatible server), or set checkpoint_conn_id to one that does."
            ) from err
    bounded = Config(
        connect_timeout=_CONNECT_TIMEOUT,
        read_timeout=_READ_TIMEOUT,
        retries={"max_attempts": _MAX_ATTEMPTS, "mode": "standard"},
    )
    own = S3Hook(aws_conn_id=location.conn_id).conn_config.botocore_config
    return S3Hook(aws_conn_id=location.conn_id, config=bounded.merge(own) if own else bounded)


def access(location: CheckpointLocation, hook: S3Hook | None = None) -> S3Access:
    """What a Ray task needs to reach the location's S3 endpoint (credentials stay out of repr)."""
    from botocore.exceptions import BotoCoreError, ClientError

    from airflow_ray.checkpoint.formats import S3Access

    hook = hook or s3_hook(location)
    try:
        credentials = hook.get_credentials()
    except (BotoCoreError, ClientError) as err:
        raise s3_error(err, location, "reading the credentials of") from err
    return S3Access(
        endpoint_url=hook.conn_config.get_service_endpoint_url("s3"),
        region_name=hook.conn_region_name,
        access_key=credentials.access_key,
        secret_key=credentials.secret_key,
        session_token=credentials.token,
        verify=hook.verify,
        config=hook.config,
    )


def endpoint(location: CheckpointLocation) -> str:
    try:
        return s3_hook(location).conn_config.get_service_endpoint_url("s3") or "AWS"
    except RayConfigurationError:
        return "unknown"


def s3_error(err: BaseException, location: CheckpointLocation, action: str) -> RayCheckpointError:
    """A clear error for an S3 failure: what failed, which connection and bucket, what to do."""
    from botocore.exceptions import (
        ClientError,
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        ReadTimeoutError,
    )

    where = f"{location.describe()} (endpoint {endpoint(location)})"
    if isinstance(err, (EndpointConnectionError, ConnectTimeoutError, ConnectionClosedError)):
        return RayCheckpointError(
            f"Could not reach the S3 endpoint while {action} {where}: {err}. Check the "
            f"endpoint_url in the connection's extra and that the server is up."
        )
    if isinstance(err, ReadTimeoutError):
        return RayCheckpointError(f"The S3 endpoint stopped answering while {action} {where}: {err}.")
    if isinstance(err, NoCredentialsError):
        return RayCheckpointError(
            f"No AWS credentials found while {action} {where}: set the connection's login "
            f"(access key id) and password (secret access key)."
        )
    if isinstance(err, ClientError):
        code = str(err.response.get("Error", {}).get("Code", ""))
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("404", "NoSuchBucket") or (status == 404 and "Bucket" in err.operation_name):
            return RayCheckpointError(
                f"The S3 bucket does not exist: {where}. Create the bucket, or point "
                f"checkpoint_bucket at one that exists."
            )
        if status == 403 or code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return RayCheckpointError(
                f"S3 refused access ({code or status}) while {action} {where}: check the "
                f"connection's access key id and secret access key, and the bucket's policy."
            )
        return RayCheckpointError(f"S3 call {err.operation_name} failed while {action} {where}: {code} {err}")
    return RayCheckpointError(f"S3 failed while {action} {where}: {type(err).__name__}: {err}")


def preflight(location: CheckpointLocation) -> S3Access:
    """Check that the bucket exists and the credentials are accepted, in seconds; return access.

    Run before a task computes anything, so that a wrong bucket, key or endpoint fails it at
    once instead of after the work.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    hook = s3_hook(location)
    try:
        hook.get_conn().head_bucket(Bucket=location.bucket)
    except (BotoCoreError, ClientError) as err:
        raise s3_error(err, location, "checking") from err
    return access(location, hook)


# -- write ---------------------------------------------------------------------------------


def write(
    location: CheckpointLocation,
    items: list[tuple[dict[str, Any], Any]],
    *,
    ray_conn_id: str | None = None,
    on_output: Any = None,
    s3: S3Access | None = None,
) -> list[dict[str, Any]]:
    """Checkpoint each ``(producer, value)``; return their manifests (with ``uri``).

    With ``ray_conn_id``, each value is an ObjectRef in that cluster and a Ray task writes it
    from there (no bytes through this process); without it, values are written from here.

    :raises RayCheckpointError: naming the connection and bucket, when S3 fails.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    from airflow_ray.checkpoint.formats import write_checkpoint
    from airflow_ray.cluster.remote_call import ref_slot

    s3 = s3 or access(location)
    manifests = []
    for producer, value in items:
        prefix = location.key_prefix(producer)
        try:
            if ray_conn_id is None:
                manifest = write_checkpoint(value, s3, location.bucket, prefix, producer)
            else:
                manifest = _in_cluster(
                    ray_conn_id,
                    write_checkpoint,
                    (ref_slot(0), s3, location.bucket, prefix, producer),
                    inputs=[value],
                    name=f"checkpoint {prefix}",
                    on_output=on_output,
                )
        except (BotoCoreError, ClientError) as err:
            raise s3_error(err, location, f"writing {location.uri(prefix)} to") from err
        manifests.append({**manifest, "uri": location.uri(prefix + manifest["object"])})
    return manifests


def _in_cluster(
    ray_conn_id: str,
    fn: Any,
    args: tuple[Any, ...],
    *,
    name: str,
    inputs: list[Any] | None = None,
    producer: dict[str, Any] | None = None,
    on_output: Any = None,
) -> Any:
    """Run ``fn`` as a Ray task through the owner actor; its result (or with ``producer``, pin it)."""
    import ray

    from airflow_ray.cluster.submit import TaskResources
    from airflow_ray.hooks.ray import RayHook

    hook = RayHook(ray_conn_id)
    # Moving bytes between S3 and the object store waits on the network, not on a CPU: reserving
    # none lets it run beside the tasks that wait for it.
    call = hook.submit(
        fn,
        args,
        {},
        name=name,
        resources=TaskResources(num_cpus=0),
        inputs=inputs,
        pin=producer is not None,
        producer=producer,
    )
    try:
        call.follow(on_output or (lambda text: log.info("%s", text.rstrip())), log)
    except ValueError as err:
        if getattr(err, "airflow_ray_refused", False):
            raise RayCheckpointIntegrityError(str(err)) from err
        raise
    except BaseException:
        call.cancel()
        raise
    if producer is not None:
        call.forget()
        return None
    return ray.get(call.take())


# -- restore -------------------------------------------------------------------------------


def restore(reference: RayXComReference) -> Any | None:
    """Put the value of ``reference`` back into its cluster from a checkpoint; its ObjectRef.

    Looks where the producer checkpointed it (``checkpoint=True`` records the place in the
    reference), then at the configured ``[ray]`` location. ``None`` when there is no checkpoint.

    :raises RayCheckpointIntegrityError: when the checkpoint does not match its manifest.
    """
    configured = CheckpointLocation.configured()
    candidates = [CheckpointLocation.from_json(reference.checkpoint)] if reference.checkpoint else []
    if configured is not None and configured not in candidates:
        candidates.append(configured)
    if not candidates:
        return None
    import ray
    from botocore.exceptions import BotoCoreError, ClientError

    from airflow_ray.checkpoint.formats import MANIFEST_NAME, read_checkpoint
    from airflow_ray.hooks.ray import RayHook

    for location in candidates:
        prefix = location.key_prefix(reference.producer)
        hook = s3_hook(location)
        try:
            if not hook.check_for_key(prefix + MANIFEST_NAME, location.bucket):
                continue
        except (BotoCoreError, ClientError) as err:
            raise s3_error(
                err, location, f"looking for a checkpoint of {reference.describe_producer()} in"
            ) from err
        uri = location.uri(prefix)
        log.info("Restoring the %s from its checkpoint %s", reference.describe_producer(), uri)
        try:
            _in_cluster(
                reference.conn_id,
                read_checkpoint,
                (access(location, hook), location.bucket, prefix, location.trusted(configured)),
                name=f"restore {prefix}",
                producer=reference.producer,
            )
        except (BotoCoreError, ClientError) as err:
            raise s3_error(err, location, f"reading {uri} from") from err
        owner = RayHook(reference.conn_id).owner()
        held = ray.get(owner.get.remote(reference.pin))
        if held is not None:
            return held[0]
    return None


# -- listing, deleting, retention ----------------------------------------------------------


def list_checkpoints(
    location: CheckpointLocation, dag_id: str | None = None, run_id: str | None = None
) -> list[dict[str, Any]]:
    """The checkpoint files under the location (optionally of one DAG or run), with size and age."""
    from botocore.exceptions import BotoCoreError, ClientError

    from airflow_ray.checkpoint.formats import MANIFEST_NAME

    hook = s3_hook(location)
    prefix = location.run_prefix(dag_id, run_id)
    try:
        pages = (
            hook.get_conn().get_paginator("list_objects_v2").paginate(Bucket=location.bucket, Prefix=prefix)
        )
        objects = [item for page in pages for item in page.get("Contents", [])]
    except (BotoCoreError, ClientError) as err:
        raise s3_error(err, location, "listing checkpoints in") from err
    return [
        {"key": item["Key"], "size_bytes": int(item["Size"]), "modified": item["LastModified"]}
        for item in objects
        if not item["Key"].endswith("/" + MANIFEST_NAME)
    ]


def delete(
    location: CheckpointLocation,
    dag_id: str | None = None,
    run_id: str | None = None,
    older_than: timedelta | None = None,
) -> int:
    """Delete the checkpoints of a DAG / run (or older than ``older_than``); how many went."""
    from botocore.exceptions import BotoCoreError, ClientError

    hook = s3_hook(location)
    prefix = location.run_prefix(dag_id, run_id)
    cutoff = None if older_than is None else datetime.now(timezone.utc) - older_than
    try:
        pages = (
            hook.get_conn().get_paginator("list_objects_v2").paginate(Bucket=location.bucket, Prefix=prefix)
        )
        objects = [item for page in pages for item in page.get("Contents", [])]
        folders = {item["Key"].rpartition("/")[0] for item in objects}
        if cutoff is not None:  # a checkpoint goes whole: file and manifest together
            folders = {
                folder
                for folder in folders
                if all(
                    item["LastModified"] < cutoff for item in objects if item["Key"].startswith(folder + "/")
                )
            }
        keys = [item["Key"] for item in objects if item["Key"].rpartition("/")[0] in folders]
        if keys:
            hook.delete_objects(location.bucket, keys)
    except (BotoCoreError, ClientError) as err:
        raise s3_error(err, location, "deleting checkpoints in") from err
    return len(folders)
