"""What a task's checkpoints and inputs tell the rest of Airflow: asset events and OpenLineage.

- **Asset events.** Each checkpoint a task writes becomes an event of an asset whose URI is the
  checkpoint's file (``s3://bucket/.../value.pkl``), added through every ``AssetAlias`` in the
  task's ``outlets``; the event's extra is the checkpoint's manifest (format, size, sha256,
  producer). The key carries the run, so the assets are new each run: a DAG scheduled on the
  alias runs after each one.
- **OpenLineage.** With ``apache-airflow-providers-openlineage`` installed, the operators'
  ``get_openlineage_facets_on_complete`` report the S3 objects written as output datasets and
  the paths a task says it reads as input datasets. The provider is imported only then: nothing
  here imports it (or boto3) when the module is imported.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import Context
    from openlineage.client.event_v2 import Dataset

    from airflow_ray._remote.protocol import Producer
    from airflow_ray.checkpoint.store import CheckpointStore


def checkpoint_aliases(outlets: Iterable[Any]) -> list[Any]:
    """The ``AssetAlias`` objects among a task's ``outlets``: each gets an event per checkpoint."""
    from airflow.sdk import AssetAlias

    return [outlet for outlet in outlets if isinstance(outlet, AssetAlias)]


def announce_checkpoints(
    context: Context, aliases: Sequence[Any], manifests: Iterable[dict[str, Any]]
) -> int:
    """Add an asset event per written checkpoint (a manifest with its ``uri``) to each alias.

    :return: how many checkpoints were announced.
    """
    from airflow.sdk import Asset

    count = 0
    for manifest in manifests:
        asset = Asset(uri=manifest["uri"])
        for alias in aliases:
            context["outlet_events"][alias].add(asset, extra=_json(manifest))
        count += 1
    return count


def written_manifests(store: CheckpointStore, producers: dict[str, Producer]) -> list[dict[str, Any]]:
    """The manifests (with ``uri``) of the checkpoints just written for ``producers``, read back
    from S3: one small GET each, made only when a task has an alias to announce them to."""
    from botocore.exceptions import BotoCoreError, ClientError

    from airflow_ray._remote.checkpoint_io import read_manifest

    client = store.hook.get_conn()
    manifests = []
    for producer in producers.values():
        prefix = store.location.key_prefix(producer)
        try:
            manifest = read_manifest(client, store.location.bucket, prefix)
        except (BotoCoreError, ClientError) as err:
            raise store.error(err, f"reading the manifest {store.location.uri(prefix)} from") from err
        manifests.append(store.described(manifest, prefix))
    return manifests


def _json(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest as the event's extra: JSON values only (it is stored as JSON)."""
    import json

    return dict(json.loads(json.dumps(manifest, default=str)))


# -- OpenLineage -------------------------------------------------------------------------------


def dataset(location: str) -> Dataset:
    """The OpenLineage dataset of a path or URI, named as OpenLineage's naming conventions say:
    ``s3://bucket`` + key, ``https://host`` + path, ``file`` + absolute path for a local file."""
    import os

    from openlineage.client.event_v2 import Dataset

    parsed = urlsplit(location)
    if parsed.scheme in ("", "file"):
        path = parsed.path if parsed.scheme else os.path.abspath(location)
        return Dataset(namespace=f"file://{parsed.netloc}" if parsed.netloc else "file", name=path)
    if parsed.scheme in ("s3", "s3a", "gs"):
        return Dataset(namespace=f"{parsed.scheme}://{parsed.netloc}", name=parsed.path.lstrip("/"))
    return Dataset(namespace=f"{parsed.scheme}://{parsed.netloc}", name=parsed.path or "/")


def operator_lineage(inputs: Iterable[str] = (), outputs: Iterable[str] = ()) -> OperatorLineage:
    """``OperatorLineage`` of the given input and output paths or URIs (empty ones left out)."""
    from airflow.providers.openlineage.extractors import OperatorLineage

    return OperatorLineage(
        inputs=[dataset(item) for item in _distinct(inputs)],
        outputs=[dataset(item) for item in _distinct(outputs)],
    )


def _distinct(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(str(item) for item in items if item))
