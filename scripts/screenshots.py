"""Screenshots of what users of airflow-ray see in Airflow's UI, for the docs site.

Made from real things, started here and stopped at the end::

    python -m scripts.screenshots --out docs/_static/screenshots

1. A temporary AIRFLOW_HOME on SQLite (``airflow db migrate``, the DAGs of ``dags/``
   serialized), two ``ray`` connections stored in its metadata DB: ``ray_default`` (empty
   Address: the embedded cluster) and ``ray_jobs`` (the same cluster through its Jobs API), and
   ``rclone serve s3`` as the checkpoint location (``[ray] checkpoint_*`` through the AWS
   connection ``aws_ckpt``).
2. ``airflow dags test`` of ``example_ray_jobs`` and of ``xgboost_higgs`` (small params; its
   model checkpointed, an asset event of ``xgboost_higgs_model``), with ``RayXComBackend``, on
   the embedded Ray cluster, which the first Ray task starts.
3. ``airflow api-server`` on a free port of 127.0.0.1 (every user an admin, connection tests
   enabled), driven by Debian's Chromium through playwright, one PNG per view (1280x800).
4. Stops the API server, the embedded cluster and the S3 server, and removes the temporary home.

Needs ``playwright`` (the ``dev`` extra; its bundled browsers are not used) and a Chromium at
``/usr/bin/chromium`` (``apt-get install chromium``), or ``--chromium PATH``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripts.local_s3 import Bucket, S3Server, start_rclone
from tests.integration.airflow_processes import AirflowApiServer

REPO = Path(__file__).resolve().parent.parent
AIRFLOW = (sys.executable, "-m", "airflow")
BUCKET = "airflow-ray-checkpoints"
JOBS = "example_ray_jobs"
JOBS_CONF = {"rows": 1_000, "seconds": 2}
HIGGS = "xgboost_higgs"
# Small enough for a two-core machine: the point is the checkpoint, not the model.
HIGGS_CONF = {"rows": 5_000, "rounds": 2, "actors": 1, "cpus_per_actor": 1}
VIEWPORT = {"width": 1280, "height": 800}
MAX_BYTES = 300_000


@dataclass
class Runs:
    """What the screenshots show: the API server, and the runs whose pages they open."""

    url: str
    jobs_run: str
    higgs_run: str

    def task_page(self, dag_id: str, run_id: str, task_id: str, tab: str = "") -> str:
        return f"{self.url}/dags/{dag_id}/runs/{urllib.parse.quote(run_id, safe='')}/tasks/{task_id}/{tab}"


def airflow_env(home: Path, s3: S3Server) -> dict[str, str]:
    """The environment of every Airflow command here: the Makefile's, in a home of its own."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AIRFLOW", "RAY_", "AWS_"))  # nothing of the caller's Airflow or cloud
    }
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
            "AIRFLOW__CORE__XCOM_BACKEND": "airflow_ray.xcom.backend.RayXComBackend",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__RAY__EMBEDDED_NUM_CPUS": "4",
            "AIRFLOW__RAY__EMBEDDED_OBJECT_STORE_MEMORY": str(150 * 1024**2),
            **Bucket(s3, BUCKET).checkpoint_env(),  # through the AWS connection aws_ckpt
            "AWS_EC2_METADATA_DISABLED": "true",
            "RAY_USAGE_STATS_ENABLED": "0",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        }
    )
    return env


def airflow(env: Mapping[str, str], *args: str, timeout: float = 900) -> str:
    """Run ``airflow <args>``; its output, or an error with the end of it."""
    print("$ airflow", " ".join(args), flush=True)
    done = subprocess.run(
        [*AIRFLOW, *args], env=dict(env), capture_output=True, text=True, timeout=timeout, cwd=REPO
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"airflow {' '.join(args)} exited {done.returncode}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )
    return done.stdout


def api_get(url: str, path: str) -> Any:
    with urllib.request.urlopen(f"{url}{path}", timeout=60) as answer:
        return json.load(answer)


def last_run(url: str, dag_id: str) -> str:
    runs = api_get(url, f"/api/v2/dags/{dag_id}/dagRuns?order_by=-start_date&limit=1")["dag_runs"]
    if not runs or runs[0]["state"] != "success":
        raise RuntimeError(f"the run of {dag_id} did not succeed: {runs}")
    return str(runs[0]["dag_run_id"])


def checkpoint_asset(url: str, run_id: str) -> None:
    """Check that the xgboost_higgs run checkpointed its model as an asset event.

    Inactive assets too: an asset that only an alias's event names is activated by the scheduler,
    which does not run here.
    """
    assets = api_get(url, "/api/v2/assets?only_active=false")["assets"]
    checkpoints = [asset for asset in assets if asset["uri"].startswith(f"s3://{BUCKET}/")]
    if not checkpoints:
        tasks = api_get(
            url, f"/api/v2/dags/{HIGGS}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances"
        )
        states = {ti["task_id"]: ti["state"] for ti in tasks["task_instances"]}
        raise RuntimeError(
            f"no checkpoint asset: {HIGGS} emitted no asset event (tasks {states}, assets {assets})"
        )


@contextmanager
def running_stack(home: Path) -> Iterator[Runs]:
    """Everything the screenshots need, running; stopped again when the block ends."""
    with ExitStack() as stack:
        s3 = start_rclone(home / "s3")
        stack.callback(s3.stop)
        s3.create_bucket(BUCKET)
        env = airflow_env(home, s3)
        # Registered before the first Ray task starts it; stops only this home's cluster.
        stack.callback(stop_embedded_cluster, env)
        airflow(env, "db", "migrate")
        airflow(env, "dags", "reserialize")
        airflow(
            env,
            "connections",
            "add",
            "ray_default",
            "--conn-type",
            "ray",
            "--conn-description",
            "The embedded Ray cluster of this machine (empty Address)",
        )
        # example_ray_jobs's connection: the embedded cluster through its Jobs API, whose jobs the
        # "Ray job" link opens (a driver connection records no link).
        airflow(
            env,
            "connections",
            "add",
            "ray_jobs",
            "--conn-type",
            "ray",
            "--conn-extra",
            json.dumps({"transport": "jobs"}),
            "--conn-description",
            "The embedded Ray cluster through its Jobs API",
        )
        airflow(env, "dags", "test", JOBS, "-c", json.dumps(JOBS_CONF))
        airflow(env, "dags", "test", HIGGS, "-c", json.dumps(HIGGS_CONF))
        server = AirflowApiServer.start_on(env, home / "api-server.log", cwd=REPO)
        stack.callback(server.stop)
        higgs_run = last_run(server.url, HIGGS)
        checkpoint_asset(server.url, higgs_run)
        yield Runs(server.url, last_run(server.url, JOBS), higgs_run)


def stop_embedded_cluster(env: Mapping[str, str]) -> None:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "airflow-ray"), "local", "stop"],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    print(done.stdout.strip() or done.stderr.strip()[-1000:], flush=True)


def take_screenshots(runs: Runs, out: Path, chromium: str) -> list[Path]:
    """Open each view in headless Chromium and save it as a PNG under ``out``."""
    sync_playwright = _sync_playwright()
    out.mkdir(parents=True, exist_ok=True)
    saved = []
    with sync_playwright() as play:
        browser = play.chromium.launch(executable_path=chromium)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            for name, show in SHOTS.items():
                print(f"screenshot {name}", flush=True)
                show(page, runs)
                page.wait_for_timeout(800)  # animations (dialogs, toasts) settle
                path = out / name
                page.screenshot(path=str(path))
                size = path.stat().st_size
                if size > MAX_BYTES:
                    print(f"warning: {path} is {size} bytes, over {MAX_BYTES}", flush=True)
                saved.append(path)
        finally:
            browser.close()
    return saved


def _sync_playwright() -> Any:
    """playwright's sync API, or an exit that says what to install."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise SystemExit(
            "playwright is not installed: pip install playwright==1.65.3 (it is in the dev extra: "
            "pip install -c requirements/lock.txt -e '.[dev]'). Its own browsers are not used (no "
            "`playwright install`): Debian's Chromium is, apt-get install chromium"
        ) from None
    return sync_playwright


def _open(page: Any, url: str, text: str) -> None:
    page.goto(url)
    page.get_by_text(text, exact=False).first.wait_for(timeout=60_000)
    page.wait_for_load_state("networkidle")


def connection_form(page: Any, runs: Runs) -> None:
    _open(page, f"{runs.url}/connections", "ray_default")
    page.get_by_role("button", name="Add Connection").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_role("textbox", name="Connection ID").fill("ray_cluster")
    dialog.get_by_role("combobox").first.fill("ray")
    page.keyboard.press("Enter")
    dialog.get_by_text("Address").first.wait_for()


def connection_extra_fields(page: Any, runs: Runs) -> None:
    """The form's Extra Fields of a ``ray`` connection: transport, dashboard URL, runtime_env."""
    connection_form(page, runs)
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Extra Fields", exact=True).click()
    transport = dialog.get_by_text("Transport").first
    transport.wait_for()
    transport.scroll_into_view_if_needed()


def connection_test(page: Any, runs: Runs) -> None:
    _open(page, f"{runs.url}/connections", "ray_default")
    row = page.get_by_role("row").filter(has_text="ray_default")
    row.get_by_role("button", name="Test Connection").click()
    page.get_by_text("Connection 'ray_default'").first.wait_for(timeout=120_000)
    page.mouse.move(640, 500)  # the button's tooltip would hide the next row's buttons


def task_ray_job_link(page: Any, runs: Runs) -> None:
    # The Details tab: `airflow dags test` writes no task log files, so the Logs tab is empty.
    _open(page, runs.task_page(JOBS, runs.jobs_run, "generate", "details"), "Ray job")


def xcom_reference(page: Any, runs: Runs) -> None:
    # The trained model: too big to stay inline in the XCom row, so a reference to it is stored.
    _open(page, runs.task_page(HIGGS, runs.higgs_run, "train", "xcom"), "return_value")
    page.get_by_role("button", name="Expand all extra JSON").click()
    page.get_by_text("ray-object").first.wait_for()


def asset_event(page: Any, runs: Runs) -> None:
    _open(page, runs.task_page(HIGGS, runs.higgs_run, "checkpoint_model", "asset_events"), "value.pkl")
    page.locator(".codicon-folding-collapsed").first.click()  # the event's extra: the manifest
    page.get_by_text("sha256").first.wait_for()


SHOTS = {
    "connection-form.png": connection_form,
    "connection-extra-fields.png": connection_extra_fields,
    "connection-test.png": connection_test,
    "task-ray-job-link.png": task_ray_job_link,
    "xcom-reference.png": xcom_reference,
    "asset-event.png": asset_event,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "_static" / "screenshots")
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="the Chromium to drive")
    args = parser.parse_args()
    _sync_playwright()  # before minutes of setup, not after
    if not Path(args.chromium).exists():
        raise SystemExit(f"no Chromium at {args.chromium}: apt-get install chromium, or pass --chromium PATH")
    # A SIGTERM (a CI job's timeout) stops what was started too, as Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    started = time.monotonic()
    # Short: Ray's unix socket paths live under the embedded cluster's directory in this home.
    home = Path(tempfile.mkdtemp(prefix="afshots-"))
    try:
        with running_stack(home) as runs:
            saved = take_screenshots(runs, args.out.resolve(), args.chromium)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    for path in saved:
        print(f"{path} ({path.stat().st_size} bytes)")
    print(f"took {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
