"""Asset events of checkpoints and OpenLineage datasets (airflow_ray/operators/lineage.py), without a cluster."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
from airflow.sdk import DAG, Asset, AssetAlias
from airflow.sdk.execution_time.context import OutletEventAccessors

from airflow_ray import RayCheckpointOperator, RayPythonOperator
from airflow_ray.operators.lineage import announce_checkpoints, checkpoint_aliases, dataset, operator_lineage

MANIFEST = {
    "airflow_ray_checkpoint": 1,
    "format": "cloudpickle",
    "kind": "pickle",
    "object": "value.pkl",
    "size_bytes": 243119,
    "sha256": "0d3fee62e3910508" + "0" * 48,
    "producer": {"dag_id": "d", "run_id": "r", "task_id": "train", "map_index": -1, "key": "return_value"},
    "versions": {"python": "3.11.9", "ray": "2.60.0"},
    "uri": "s3://bucket/airflow-ray/d/r/train/-1/return_value/value.pkl",
}


def test_only_asset_aliases_among_the_outlets_get_checkpoint_events():
    alias = AssetAlias("model")
    assert checkpoint_aliases([Asset("s3://bucket/fixed"), alias, AssetAlias("other")]) == [
        alias,
        AssetAlias("other"),
    ]
    assert checkpoint_aliases([]) == []


def test_each_checkpoint_is_an_event_of_each_alias_with_its_manifest_as_extra():
    events = OutletEventAccessors()
    second = {**MANIFEST, "uri": MANIFEST["uri"].replace("train", "split")}
    aliases = [AssetAlias("model"), AssetAlias("all_checkpoints")]
    assert announce_checkpoints({"outlet_events": events}, aliases, [MANIFEST, second]) == 2  # type: ignore[typeddict-item]
    for alias in aliases:
        added = events[alias].asset_alias_events
        assert [event.dest_asset_key.uri for event in added] == [MANIFEST["uri"], second["uri"]]
        assert added[0].extra == MANIFEST
        assert added[0].source_alias_name == alias.name
        json.dumps(added[0].extra)  # stored as JSON


@pytest.mark.parametrize(
    ("location", "namespace", "name"),
    [
        ("s3://bucket/a/b/value.pkl", "s3://bucket", "a/b/value.pkl"),
        ("/data/HIGGS.csv.gz", "file", "/data/HIGGS.csv.gz"),
        ("file:///data/HIGGS.csv", "file", "/data/HIGGS.csv"),
        (
            "https://archive.ics.uci.edu/data/HIGGS.csv.gz",
            "https://archive.ics.uci.edu",
            "/data/HIGGS.csv.gz",
        ),
    ],
)
def test_paths_and_uris_are_named_as_openlineage_names_datasets(location, namespace, name):
    got = dataset(location)
    assert (got.namespace, got.name) == (namespace, name)


def test_operator_lineage_leaves_out_empty_and_repeated_paths():
    lineage = operator_lineage(inputs=["", "/data/h.csv", "/data/h.csv"], outputs=[MANIFEST["uri"]])
    assert [(d.namespace, d.name) for d in lineage.inputs] == [("file", "/data/h.csv")]
    assert [(d.namespace, d.name) for d in lineage.outputs] == [
        ("s3://bucket", "airflow-ray/d/r/train/-1/return_value/value.pkl")
    ]


def test_the_operators_report_what_they_read_and_wrote():
    with DAG("lineage", schedule=None):
        load = RayPythonOperator(task_id="load", python_callable=print, lineage_inputs="/data/HIGGS.csv")
        checkpoint = RayCheckpointOperator(task_id="checkpoint", outputs=[load.output])
    assert "lineage_inputs" in RayPythonOperator.template_fields
    load._run = SimpleNamespace(checkpoint_uris=[MANIFEST["uri"]])  # type: ignore[assignment]
    lineage = load.get_openlineage_facets_on_complete(None)
    assert [d.name for d in lineage.inputs] == ["/data/HIGGS.csv"]
    assert [d.namespace for d in lineage.outputs] == ["s3://bucket"]
    assert checkpoint.get_openlineage_facets_on_complete(None).outputs == []
    checkpoint._written = [MANIFEST["uri"]]
    assert [d.name for d in checkpoint.get_openlineage_facets_on_complete(None).outputs] == [
        "airflow-ray/d/r/train/-1/return_value/value.pkl"
    ]


# Without the OpenLineage provider (its code made unimportable, but for the provider info that
# Airflow's own provider discovery loads from its entry point), the operators and the asset events
# work; and with it, building them and announcing checkpoints imports nothing of OpenLineage.
AIRFLOW_DISCOVERY = ("airflow.providers.openlineage", "airflow.providers.openlineage.get_provider_info")
WITHOUT_OPENLINEAGE = (
    f"""
import sys
AIRFLOW_DISCOVERY = {AIRFLOW_DISCOVERY!r}
"""
    + """

class Absent:
    def find_spec(self, name, path=None, target=None):
        if name not in AIRFLOW_DISCOVERY and (
            name == "openlineage" or name.startswith(("openlineage.", "airflow.providers.openlineage."))
        ):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None

if sys.argv[1] == "absent":
    sys.meta_path.insert(0, Absent())

from airflow.sdk import DAG, AssetAlias
from airflow.sdk.execution_time.context import OutletEventAccessors
from airflow_ray import RayCheckpointOperator, RayPythonOperator
from airflow_ray.operators.lineage import announce_checkpoints, checkpoint_aliases

with DAG("d", schedule=None):
    load = RayPythonOperator(task_id="load", python_callable=print, lineage_inputs="/x")
    RayCheckpointOperator(task_id="c", outputs=[load.output], outlets=[AssetAlias("a")])
events = OutletEventAccessors()
announce_checkpoints({"outlet_events": events}, checkpoint_aliases([AssetAlias("a")]), [{"uri": "s3://b/k"}])
assert events[AssetAlias("a")].asset_alias_events
print(sorted(
    m for m in sys.modules
    if m.startswith(("openlineage", "airflow.providers.openlineage")) and m not in AIRFLOW_DISCOVERY
))
"""
)


@pytest.mark.parametrize("provider", ["absent", "installed"])
def test_nothing_of_openlineage_is_imported_and_none_is_needed(provider):
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_OPENLINEAGE, provider], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
