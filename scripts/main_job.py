"""The main job: the XGBoost HIGGS DAG end to end, its model checkpointed to a local S3 server.

``make example`` runs it (with the Makefile's ``AIRFLOW_HOME`` and XCom backend)::

    python scripts/main_job.py [--conf '{"rows": 200000, "rounds": 20}']

1. Starts ``rclone serve s3`` over ``$AIRFLOW_HOME/s3`` on 127.0.0.1 and makes it the checkpoint
   location: bucket ``airflow-ray-example`` through the AWS connection ``aws_example``.
2. ``airflow db migrate``, then ``airflow dags test xgboost_higgs`` on the embedded Ray cluster
   (started on first use; it keeps running for the next run: ``make stop-cluster``).
3. ``scripts/report_run.py``: each task's time, the accuracy, and where the model is.
4. Stops the S3 server; its files stay in ``$AIRFLOW_HOME/s3``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUCKET = "airflow-ray-example"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conf", default="{}", help="DAG params as JSON")
    args = parser.parse_args()
    home = Path(os.environ.get("AIRFLOW_HOME") or "airflow-home").resolve()
    sys.path.insert(0, str(HERE.parent))
    from scripts.local_s3 import start_rclone

    server = start_rclone(home / "s3")
    try:
        if BUCKET not in {b["Name"] for b in server.client().list_buckets()["Buckets"]}:
            server.create_bucket(BUCKET)
        env = {
            **os.environ,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW_CONN_AWS_EXAMPLE": server.connection(),
            "AIRFLOW__RAY__CHECKPOINT_CONN_ID": "aws_example",
            "AIRFLOW__RAY__CHECKPOINT_BUCKET": BUCKET,
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        print(f"Checkpoints go to the local S3 server {server.endpoint}, bucket {BUCKET!r} ({home / 's3'})")
        airflow = str(Path(sys.executable).parent / "airflow")
        subprocess.run([airflow, "db", "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
        ran = subprocess.run([airflow, "dags", "test", "xgboost_higgs", "-c", args.conf], env=env)
        report = [
            sys.executable,
            str(HERE / "report_run.py"),
            "xgboost_higgs",
            "--s3-files",
            str(home / "s3" / "data"),
        ]
        reported = subprocess.run(report, env=env)
        return ran.returncode or reported.returncode
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
