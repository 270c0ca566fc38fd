"""Deploy the HIGGS model: each model that ``xgboost_higgs`` checkpoints to S3 is loaded, scored on
a batch of rows and written into a local model folder with its sha256.

The DAG is scheduled on the asset alias that ``xgboost_higgs``'s ``checkpoint_model`` task adds
an asset event to for each checkpoint it writes: the asset is the checkpoint's file, the event's
extra its manifest (format, size, sha256, producer). The model is read with the Amazon
provider's ``S3Hook`` through the configured checkpoint connection (``[ray] checkpoint_conn_id``),
checked against the manifest's size and sha256, and unpickled only from the configured
checkpoint bucket (unpickling runs code).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pendulum
from airflow.sdk import AssetAlias, Param, dag, task
from higgs_data import FEATURES, generate_higgs

if TYPE_CHECKING:
    import xgboost

# The alias xgboost_higgs's checkpoint_model task announces each checkpoint of the model through.
HIGGS_MODEL = AssetAlias("xgboost_higgs_model")

log = logging.getLogger(__name__)


class CheckpointMismatchError(ValueError):
    """The checkpoint's file is not what the asset event's manifest says, or is not trusted."""


def newest_checkpoint(triggering_asset_events: Any) -> tuple[str, dict[str, Any]]:
    """The URI and manifest of the newest checkpoint among the events that triggered the run."""
    events = [event for events in (triggering_asset_events or {}).values() for event in events]
    if not events:
        raise CheckpointMismatchError(
            "No asset event triggered this run: deploy_higgs_model runs when xgboost_higgs "
            "checkpoints a model. Run xgboost_higgs with a checkpoint bucket configured "
            "([ray] checkpoint_bucket)."
        )
    newest = max(events, key=lambda event: event.timestamp)
    return str(newest.asset.uri), dict(newest.extra)


def load_checkpointed_model(uri: str, manifest: dict[str, Any]) -> xgboost.Booster:
    """The Booster checkpointed at ``uri``, read with ``S3Hook`` and verified against ``manifest``."""
    import pickle

    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from airflow_ray import CheckpointLocation

    bucket, key = S3Hook.parse_s3_url(uri)
    location = CheckpointLocation.configured()
    if location is None or location.bucket != bucket:
        raise CheckpointMismatchError(
            f"Refusing to unpickle {uri}: models load only from the configured checkpoint bucket "
            f"([ray] checkpoint_bucket is {location and location.bucket!r})."
        )
    data = S3Hook(aws_conn_id=location.conn_id).get_key(key, bucket).get()["Body"].read()
    digest = hashlib.sha256(data).hexdigest()
    if len(data) != manifest.get("size_bytes") or digest != manifest.get("sha256"):
        raise CheckpointMismatchError(
            f"{uri} holds {len(data)} bytes with sha256 {digest}, but its manifest says "
            f"{manifest.get('size_bytes')} bytes, sha256 {manifest.get('sha256')}: it changed after it "
            f"was written. Rerun xgboost_higgs to checkpoint the model again."
        )
    model = pickle.loads(data)
    log.info("Loaded %s from %s (%d bytes, sha256 verified)", type(model).__name__, uri, len(data))
    return model


def score_batch(model: xgboost.Booster, rows: int, seed: int = 7) -> dict[str, float]:
    """Scores of ``rows`` generated HIGGS rows: their mean, and the accuracy against the labels."""
    import xgboost

    batch = generate_higgs(rows, seed).to_pandas()
    scores = model.predict(xgboost.DMatrix(batch[FEATURES]))
    labels = batch["label"].to_numpy()
    return {
        "rows": rows,
        "mean_score": float(scores.mean()),
        "accuracy": float(((scores > 0.5) == (labels > 0.5)).mean()),
    }


def deploy_model(model: xgboost.Booster, folder: Path, about: dict[str, Any]) -> dict[str, Any]:
    """Write ``model.ubj`` (xgboost's own format) and ``model.json`` (its sha256 and ``about``)
    into ``folder``, each replaced at once, so a reader never sees half a model."""
    folder.mkdir(parents=True, exist_ok=True)
    raw = bytes(model.save_raw("ubj"))
    deployed = {
        **about,
        "file": "model.ubj",
        "size_bytes": len(raw),
        "sha256": hashlib.sha256(raw).hexdigest(),
    }
    for name, data in (("model.ubj", raw), ("model.json", json.dumps(deployed, indent=1).encode())):
        partial = folder / f".{name}.partial"
        partial.write_bytes(data)
        os.replace(partial, folder / name)
    log.info("Deployed the model to %s (sha256 %s)", folder / "model.ubj", deployed["sha256"])
    return deployed


@dag(
    schedule=HIGGS_MODEL,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={
        "model_dir": Param(
            "", type="string", description="the model folder; empty: $AIRFLOW_HOME/models/higgs"
        ),
        "score_rows": Param(10_000, type="integer", minimum=1, description="rows of the scored batch"),
    },
    tags=["ray", "xgboost", "example"],
)
def deploy_higgs_model() -> None:
    @task
    def deploy(triggering_asset_events: Any = None, params: Any = None) -> dict[str, Any]:
        uri, manifest = newest_checkpoint(triggering_asset_events)
        model = load_checkpointed_model(uri, manifest)
        scored = score_batch(model, int(params["score_rows"]))
        log.info(
            "Scored %d rows: mean score %.4f, accuracy %.4f",
            scored["rows"],
            scored["mean_score"],
            scored["accuracy"],
        )
        folder = Path(params["model_dir"] or Path(os.environ.get("AIRFLOW_HOME", ".")) / "models" / "higgs")
        about = {
            "checkpoint": uri,
            "checkpoint_sha256": manifest["sha256"],
            "producer": manifest.get("producer"),
            "scored": scored,
        }
        return deploy_model(model, folder, about)

    deploy()


deploy_higgs_model()
