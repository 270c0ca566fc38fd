"""Checkpoints on S3, from the Airflow side: where they go, and S3 access through ``S3Hook``.

:class:`CheckpointLocation` says where (connection, bucket, prefix); :class:`CheckpointStore`
reaches it: the bounded ``S3Hook``, the access a Ray task needs to move the bytes itself,
clear errors, the bucket check, writes from this process, listing and deleting. Moving values
between the cluster and S3 is :mod:`airflow_ray.results`' work.

One XCom of one task instance has one place, so a retry or rerun overwrites it::

    s3://<bucket>/<prefix>/<dag_id>/<run_id>/<task_id>/<map_index>/<xcom key>/value.<ext>
                                                                          .../manifest.json
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow_ray._remote.protocol import Producer
from airflow_ray.exceptions import RayCheckpointError, RayConfigurationError

if TYPE_CHECKING:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from airflow_ray._remote.s3io import S3Access

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

    def key_prefix(self, producer: Producer | dict[str, Any]) -> str:
        """The folder (ending in ``/``) of one XCom of one task instance."""
        return self._under_prefix(Producer.from_wire(producer).folder_parts())

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


class CheckpointStore:
    """The checkpoints of one :class:`CheckpointLocation`, reached through the Amazon provider's
    ``S3Hook`` with bounded timeouts (a wrong endpoint or a dead server fails in seconds).

    The connection's own botocore settings (``config_kwargs`` in its extra) win over ours.
    Nothing is read until a method needs it.
    """

    def __init__(self, location: CheckpointLocation) -> None:
        self.location = location

    @cached_property
    def hook(self) -> S3Hook:
        """:raises RayConfigurationError: when the connection does not exist (``aws_default`` may
        be missing: the AWS SDK then finds credentials in the environment, as Amazon's hooks do)."""
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook
        from airflow.sdk import BaseHook
        from airflow.sdk.exceptions import AirflowNotFoundException
        from botocore.config import Config

        location = self.location
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

    def access(self) -> S3Access:
        """What a Ray task needs to reach the S3 endpoint (credentials stay out of repr)."""
        from botocore.exceptions import BotoCoreError, ClientError

        from airflow_ray._remote.s3io import S3Access

        try:
            credentials = self.hook.get_credentials()
        except (BotoCoreError, ClientError) as err:
            raise self.error(err, "reading the credentials of") from err
        return S3Access(
            endpoint_url=self.hook.conn_config.get_service_endpoint_url("s3"),
            region_name=self.hook.conn_region_name,
            access_key=credentials.access_key,
            secret_key=credentials.secret_key,
            session_token=credentials.token,
            verify=self.hook.verify,
            config=self.hook.config,
        )

    def endpoint(self) -> str:
        try:
            return self.hook.conn_config.get_service_endpoint_url("s3") or "AWS"
        except RayConfigurationError:
            return "unknown"

    def error(self, err: BaseException, action: str) -> RayCheckpointError:
        """A clear error for an S3 failure: what failed, which connection and bucket, what to do."""
        from botocore.exceptions import (
            ClientError,
            ConnectionClosedError,
            ConnectTimeoutError,
            EndpointConnectionError,
            NoCredentialsError,
            ReadTimeoutError,
        )

        where = f"{self.location.describe()} (endpoint {self.endpoint()})"
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
            missing = code in ("404", "NoSuchKey", "NoSuchBucket") or status == 404
            # HeadObject's 404 has no body, so its code is "404" whether the key or the bucket
            # is missing: only a bucket call or NoSuchBucket says the bucket is gone.
            if code == "NoSuchBucket" or (missing and "Bucket" in err.operation_name):
                return RayCheckpointError(
                    f"The S3 bucket does not exist: {where}. Create the bucket, or point "
                    f"checkpoint_bucket at one that exists."
                )
            if missing:
                return RayCheckpointError(
                    f"An object is missing ({err.operation_name} answered {code or status}) "
                    f"while {action} {where}: it was deleted, or expired by a lifecycle rule. "
                    f"Clear the producing task to compute and checkpoint it again."
                )
            if status == 403 or code in (
                "403",
                "AccessDenied",
                "InvalidAccessKeyId",
                "SignatureDoesNotMatch",
            ):
                return RayCheckpointError(
                    f"S3 refused access ({code or status}) while {action} {where}: check the "
                    f"connection's access key id and secret access key, and the bucket's policy."
                )
            return RayCheckpointError(
                f"S3 call {err.operation_name} failed while {action} {where}: {code} {err}"
            )
        return RayCheckpointError(f"S3 failed while {action} {where}: {type(err).__name__}: {err}")

    def preflight(self) -> S3Access:
        """Check that the bucket exists and the credentials are accepted, in seconds; return access.

        Run before a task computes anything, so that a wrong bucket, key or endpoint fails it at
        once instead of after the work.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.hook.get_conn().head_bucket(Bucket=self.location.bucket)
        except (BotoCoreError, ClientError) as err:
            raise self.error(err, "checking") from err
        return self.access()

    def write(self, items: list[tuple[Producer, Any]], s3: S3Access | None = None) -> list[dict[str, Any]]:
        """Checkpoint each ``(producer, value)`` from this process; their manifests (with ``uri``).

        :raises RayCheckpointError: naming the connection and bucket, when S3 fails.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        from airflow_ray._remote.checkpoint_io import write_checkpoint

        s3 = s3 or self.access()
        manifests = []
        for producer, value in items:
            producer = Producer.from_wire(producer)
            prefix = self.location.key_prefix(producer)
            try:
                manifest = write_checkpoint(value, s3, self.location.bucket, prefix, producer.to_wire())
            except (BotoCoreError, ClientError) as err:
                raise self.error(err, f"writing {self.location.uri(prefix)} to") from err
            manifests.append(self.described(manifest, prefix))
        return manifests

    def uri_of(self, producer: Producer) -> str:
        """Where the checkpoint of ``producer`` goes (its folder)."""
        return self.location.uri(self.location.key_prefix(producer))

    def described(self, manifest: dict[str, Any], prefix: str) -> dict[str, Any]:
        """A written checkpoint's manifest with its ``uri``."""
        return {**manifest, "uri": self.location.uri(prefix + manifest["object"])}

    def exists(self, producer: Producer) -> bool:
        """Whether a complete checkpoint of ``producer`` is here (its manifest is)."""
        from botocore.exceptions import BotoCoreError, ClientError

        from airflow_ray._remote.checkpoint_io import MANIFEST_NAME

        prefix = self.location.key_prefix(producer)
        try:
            return bool(self.hook.check_for_key(prefix + MANIFEST_NAME, self.location.bucket))
        except (BotoCoreError, ClientError) as err:
            raise self.error(err, f"looking for a checkpoint of {producer.describe()} in") from err

    def _objects(self, prefix: str, action: str) -> list[dict[str, Any]]:
        from botocore.exceptions import BotoCoreError, ClientError

        from airflow_ray._remote.s3io import list_objects

        try:
            return list(list_objects(self.hook.get_conn(), self.location.bucket, prefix))
        except (BotoCoreError, ClientError) as err:
            raise self.error(err, action) from err

    def list(self, dag_id: str | None = None, run_id: str | None = None) -> list[dict[str, Any]]:
        """The checkpoint files here (optionally of one DAG or run), with size and age."""
        from airflow_ray._remote.checkpoint_io import MANIFEST_NAME

        objects = self._objects(self.location.run_prefix(dag_id, run_id), "listing checkpoints in")
        return [
            {"key": item["Key"], "size_bytes": int(item["Size"]), "modified": item["LastModified"]}
            for item in objects
            if not item["Key"].endswith("/" + MANIFEST_NAME)
        ]

    def delete(
        self, dag_id: str | None = None, run_id: str | None = None, older_than: timedelta | None = None
    ) -> int:
        """Delete the checkpoints of a DAG / run (or older than ``older_than``); how many went."""
        from botocore.exceptions import BotoCoreError, ClientError

        objects = self._objects(self.location.run_prefix(dag_id, run_id), "deleting checkpoints in")
        cutoff = None if older_than is None else datetime.now(UTC) - older_than
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
        try:
            if keys:
                self.hook.delete_objects(self.location.bucket, keys)
        except (BotoCoreError, ClientError) as err:
            raise self.error(err, "deleting checkpoints in") from err
        return len(folders)
