"""What the bench scripts set up alike: their Airflow metadata DB and the embedded Ray cluster they use.

By default a script migrates a fresh SQLite DB and starts an embedded cluster of its own, which
it stops at the end. ``--airflow-db`` and ``--embedded-dir`` let a caller that runs several
scripts (the smoke test of bench/) migrate one DB and start one cluster for all of them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path


def add_options(parser: argparse.ArgumentParser, *, db: bool = True, cluster: bool = True) -> None:
    """Add ``--airflow-db`` (with ``db``) and ``--embedded-dir`` (with ``cluster``) to ``parser``."""
    if db:
        parser.add_argument(
            "--airflow-db",
            type=Path,
            help="a migrated Airflow SQLite DB to copy into the run's AIRFLOW_HOME, instead of running "
            "`airflow db migrate` there",
        )
    if cluster:
        parser.add_argument(
            "--embedded-dir",
            type=Path,
            help="state directory of an embedded Ray cluster to use and leave running at the end "
            "(default: a fresh one in the run's AIRFLOW_HOME, stopped at the end)",
        )


def use_cluster(args: argparse.Namespace, environ: dict[str, str] | os._Environ[str] = os.environ) -> None:
    """Point ``[ray] embedded_dir`` at ``--embedded-dir``, when given; call before Airflow is imported."""
    if getattr(args, "embedded_dir", None):
        environ["AIRFLOW__RAY__EMBEDDED_DIR"] = str(args.embedded_dir.absolute())


def owns_cluster(args: argparse.Namespace) -> bool:
    """Whether the run started its embedded cluster and so stops it at the end."""
    return not getattr(args, "embedded_dir", None)


def make_db(args: argparse.Namespace, home: Path, env: dict[str, str] | None = None) -> None:
    """The metadata DB of ``home`` (Airflow's default, ``home/airflow.db``): a copy of
    ``--airflow-db``, or migrated here."""
    if getattr(args, "airflow_db", None):
        shutil.copyfile(args.airflow_db, home / "airflow.db")
        return
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True, capture_output=True
    )
