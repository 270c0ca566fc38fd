"""EmbeddedCluster.stopped: a task that died with its cluster learns so while the stop still runs."""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time

from airflow_ray.cluster.local import EmbeddedCluster


def _running_head(cluster: EmbeddedCluster, monkeypatch) -> None:
    cluster.state_dir.mkdir(parents=True, exist_ok=True)
    (cluster.state_dir / "cluster.json").write_text(json.dumps({"pid": os.getpid()}))
    monkeypatch.setattr(
        EmbeddedCluster,
        "status",
        lambda self: "head" if (self.state_dir / "cluster.json").exists() else None,
    )


def test_a_running_head_with_no_stop_under_way_has_not_stopped_and_is_answered_at_once(tmp_path, monkeypatch):
    cluster = EmbeddedCluster(tmp_path / "embedded")
    _running_head(cluster, monkeypatch)
    (cluster.state_dir / "lock").touch()
    started = time.monotonic()
    assert cluster.stopped(settle=5) is False
    assert time.monotonic() - started < 1


def test_no_state_directory_means_stopped_and_creates_nothing(tmp_path):
    cluster = EmbeddedCluster(tmp_path / "never")
    assert cluster.stopped() is True
    assert not cluster.state_dir.exists()


def test_a_stop_under_way_is_waited_for(tmp_path, monkeypatch):
    cluster = EmbeddedCluster(tmp_path / "embedded")
    _running_head(cluster, monkeypatch)
    held = threading.Event()

    def stop() -> None:  # as EmbeddedCluster.stop: the lock is held until the head is gone
        with open(cluster.state_dir / "lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            held.set()
            time.sleep(0.5)
            (cluster.state_dir / "cluster.json").unlink()
            fcntl.flock(handle, fcntl.LOCK_UN)

    stopper = threading.Thread(target=stop)
    stopper.start()
    assert held.wait(5)
    assert cluster.status() is not None  # still there when the worker's death is reported
    assert cluster.stopped(settle=5) is True
    stopper.join(5)


def test_a_lock_held_past_the_settle_time_answers_from_what_runs_then(tmp_path, monkeypatch):
    cluster = EmbeddedCluster(tmp_path / "embedded")
    _running_head(cluster, monkeypatch)
    with open(cluster.state_dir / "lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        started = time.monotonic()
        assert cluster.stopped(settle=0.3) is False
        assert 0.3 <= time.monotonic() - started < 2
