"""``airflow-ray``'s argument handling: what it refuses before it touches a cluster or S3."""

from __future__ import annotations

from datetime import timedelta

import pytest

from airflow_ray import cli
from airflow_ray.checkpoint.store import CheckpointStore
from airflow_ray.cluster.address import ClusterAddress
from airflow_ray.cluster.local import EmbeddedCluster
from airflow_ray.hooks.ray import RayConnectionSettings, RayHook


@pytest.fixture(autouse=True)
def no_checkpoint_settings(monkeypatch):
    for option in ("CONN_ID", "BUCKET", "PREFIX", "RETENTION_DAYS"):
        monkeypatch.delenv(f"AIRFLOW__RAY__CHECKPOINT_{option}", raising=False)


@pytest.fixture
def no_connection(monkeypatch):
    """Connecting to a cluster, or reading a connection, fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("the CLI reached for a Ray connection")

    monkeypatch.setattr(RayHook, "get_conn", refuse)
    monkeypatch.setattr(RayHook, "get_connection", refuse)


@pytest.fixture
def transport(monkeypatch, no_connection):
    """What the pins commands talk to instead of a cluster."""

    class FakeTransport:
        def __init__(self) -> None:
            self.released: list[tuple[str | None, str | None]] = []
            self.pins: list[dict] = []

        def release_matching(self, dag_id, run_id):
            self.released.append((dag_id, run_id))
            return 5

        def list_pins(self, dag_id, run_id):
            return self.pins

    fake = FakeTransport()
    monkeypatch.setattr(RayHook, "get_transport", lambda hook, namespace=None: fake)
    # A connection to a remote cluster (an embedded one is first looked at: see below).
    remote = RayConnectionSettings(address=ClusterAddress.parse("head:6379"))
    monkeypatch.setattr(RayHook, "settings", property(lambda hook: remote))
    return fake


@pytest.fixture
def no_embedded_cluster(monkeypatch, tmp_path):
    """A state directory where no embedded cluster runs; starting one, or connecting, fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("a read-only command started the embedded cluster or connected")

    monkeypatch.setenv("AIRFLOW__RAY__EMBEDDED_DIR", str(tmp_path / "ray"))
    monkeypatch.setattr(EmbeddedCluster, "ensure_running", refuse)
    monkeypatch.setattr(RayHook, "get_conn", refuse)
    monkeypatch.setattr(RayHook, "get_transport", refuse)
    return tmp_path / "ray"


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["pins", "list"], "so nothing is pinned"),
        (["pins", "list", "--dag", "higgs"], "so nothing is pinned"),
        (["pins", "release", "--all"], "so nothing is pinned and nothing was released"),
    ],
)
def test_pins_of_an_embedded_cluster_that_does_not_run_start_none(capsys, no_embedded_cluster, argv, said):
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert out == f"No embedded Ray cluster runs for {no_embedded_cluster}, {said}\n"
    assert not (no_embedded_cluster / "cluster.json").exists()


@pytest.fixture
def deleted(monkeypatch):
    """What the checkpoints commands delete (nothing reaches S3)."""
    calls = []

    def delete(store, dag_id, run_id, older_than=None):
        calls.append((store.location.bucket, dag_id, run_id, older_than))
        return 4

    monkeypatch.setattr(CheckpointStore, "delete", delete)
    return calls


@pytest.mark.parametrize("argv", [["pins", "release"], ["pins", "release", "--run", "r1"]])
def test_pins_release_needs_a_dag_or_all_and_connects_to_nothing(capsys, no_connection, argv):
    # The real transport: it connects on first use, which would fail the test.
    assert cli.main(argv) == 2
    assert "pins release needs --dag DAG_ID [--run RUN_ID] or --all" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "released"),
    [
        (["pins", "release", "--dag", "higgs"], ("higgs", None)),
        (["pins", "release", "--dag", "higgs", "--run", "r1"], ("higgs", "r1")),
        (["pins", "release", "--all"], (None, None)),
    ],
)
def test_pins_release(capsys, transport, argv, released):
    assert cli.main(argv) == 0
    assert transport.released == [released]
    assert capsys.readouterr().out == "Released 5 pinned object(s)\n"


def test_pins_list_shows_each_pin_and_the_total(capsys, transport):
    def listed(task_id, map_index, created, size):
        return {
            "dag_id": "higgs",
            "run_id": "r1",
            "task_id": task_id,
            "map_index": map_index,
            "key": "return_value",
            "created": created,
            "meta": {"type": "ndarray", "size_bytes": size},
        }

    transport.pins = [listed("train", 2, 20.0, 3 * 1024**2), listed("load", -1, 10.0, 1024**2)]
    assert cli.main(["pins", "list", "--dag", "higgs"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "higgs  r1  load  return_value  ndarray  1.0 MB",
        "higgs  r1  train[2]  return_value  ndarray  3.0 MB",
        "2 pinned object(s), 4.0 MB",
    ]


def test_checkpoints_delete_needs_a_dag(capsys, deleted):
    assert cli.main(["checkpoints", "delete", "--bucket", "results"]) == 2
    assert "checkpoints delete needs --dag DAG_ID" in capsys.readouterr().err
    assert deleted == []
    assert cli.main(["checkpoints", "delete", "--bucket", "results", "--dag", "higgs", "--run", "r1"]) == 0
    assert deleted == [("results", "higgs", "r1", None)]
    assert capsys.readouterr().out == "Deleted 4 checkpoint(s)\n"


def test_checkpoints_prune_needs_an_age(capsys, deleted):
    assert cli.main(["checkpoints", "prune", "--bucket", "results"]) == 2
    assert "checkpoints prune needs --older-than DAYS or [ray] checkpoint_retention_days" in (
        capsys.readouterr().err
    )
    assert deleted == []


@pytest.mark.parametrize("days", ["0", "-1"])
def test_checkpoints_prune_refuses_an_age_that_would_delete_everything(capsys, deleted, days):
    assert cli.main(["checkpoints", "prune", "--bucket", "results", "--older-than", days]) == 2
    assert "would delete every checkpoint" in capsys.readouterr().err
    assert deleted == []


def test_checkpoints_prune_takes_the_age_from_the_argument_or_the_setting(capsys, monkeypatch, deleted):
    assert cli.main(["checkpoints", "prune", "--bucket", "results", "--older-than", "2"]) == 0
    monkeypatch.setenv("AIRFLOW__RAY__CHECKPOINT_RETENTION_DAYS", "7")
    assert cli.main(["checkpoints", "prune", "--bucket", "results", "--dag", "higgs"]) == 0
    assert deleted == [
        ("results", None, None, timedelta(days=2)),
        ("results", "higgs", None, timedelta(days=7)),
    ]
    assert capsys.readouterr().out.splitlines() == [
        "Deleted 4 checkpoint(s) older than 2 day(s)",
        "Deleted 4 checkpoint(s) older than 7 day(s)",
    ]


@pytest.mark.parametrize(
    "argv", [[], ["pins"], ["pins", "forget"], ["checkpoints", "purge"], ["local", "restart"]]
)
def test_an_unknown_command_is_argparses_usage_error(capsys, argv):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    assert "usage: airflow-ray" in capsys.readouterr().err


def test_an_airflow_ray_error_is_printed_and_exits_1(capsys):
    assert cli.main(["checkpoints", "list"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("airflow-ray: No S3 bucket for checkpoints")
    assert "AIRFLOW__RAY__CHECKPOINT_BUCKET" in err
