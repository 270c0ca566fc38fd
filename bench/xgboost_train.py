"""XGBoost training: the HIGGS DAG's train task against plain ``xgboost.train``, and the DAG by task.

Usage (from the repository root, after ``make venv``)::

    .venv/bin/python bench/xgboost_train.py [--rows 1000000] [--rounds 50,200] [--configs 1x2,2x1] [--smoke]
        [--airflow-db DB] [--embedded-dir DIR]

For each number of rounds and configuration ``ACTORSxCPUS`` (xgboost_ray actors x CPUs per
actor; by default 1 actor with every CPU of the cluster, and 2 actors of 1 CPU), in one run:

- the whole ``xgboost_higgs`` DAG of dags/ runs in ``dag.test()`` on ``--rows`` generated
  HIGGS-shaped rows (70% to train on, 10% to validate each round). The train task's time is
  its task instance's wall time in the metadata DB, start to end: submitting the Ray task,
  handing it the training split inside the cluster, starting the xgboost_ray actors, loading
  their shards, training, keeping the model.
- plain ``xgboost.train`` trains in this process on the same rows (the DAG's split of the
  same generated rows), with the same parameters, rounds and per-round validation and
  ``nthread`` = actors x CPUs; building the DMatrix is included, as loading is in the DAG's.
- the DAG's training function is called from this process, a plain Ray driver, on the same
  rows: what xgboost_ray costs without Airflow and the Ray task around it ("direct").

It prints the ratio (DAG train task / plain xgboost), every task's wall time, and which
configuration trained fastest. A warm-up run of the DAG on a few rows comes first, so that starting the embedded cluster, Airflow's
in-process API and the first imports in the Ray workers stay out of the figures. The embedded
cluster (of a temporary ``AIRFLOW_HOME``) offers every CPU of the machine and is stopped at
the end.

``--smoke`` runs the smallest sizes once, without the warm-up (the test suite does, so that the
script keeps working); its figures mean nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import _common

REPO = Path(__file__).resolve().parents[1]
TASKS = ("load", "split", "train", "evaluate")


def prepare_home(args: argparse.Namespace) -> Path:
    """A private AIRFLOW_HOME with the example DAGs; set before Airflow is imported."""
    home = Path(tempfile.mkdtemp(prefix="afr-xgb-"))
    (home / "dags").mkdir()
    for path in (REPO / "dags").glob("*.py"):
        shutil.copy(path, home / "dags" / path.name)
    os.environ.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(home / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="false",
        AIRFLOW__CORE__XCOM_BACKEND="airflow_ray.xcom.backend.RayXComBackend",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
        AIRFLOW__RAY__EMBEDDED_DIR=str(home / "ray"),
        RAY_USAGE_STATS_ENABLED="0",
    )
    _common.use_cluster(args)
    _common.make_db(args, home)
    return home


def run_dag(dag: Any, conf: dict[str, Any]) -> dict[str, float]:
    """Run the DAG in ``dag.test()``; seconds per task and for the whole run, from the metadata DB."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    dag_run = dag.test(run_conf=conf)
    with create_session() as session:
        run = session.get(DagRun, dag_run.id)
        tis = run.get_task_instances(session=session)
        states = {ti.task_id: str(ti.state) for ti in tis}
        # A skipped task is no failure: checkpoint_model skips when no checkpoint bucket is set.
        failed = {task: state for task, state in states.items() if state not in ("success", "skipped")}
        if failed or any(states.get(task) != "success" for task in TASKS):
            raise SystemExit(f"The DAG run failed: {states}")
        times = {ti.task_id: (ti.end_date - ti.start_date).total_seconds() for ti in tis}
        times["whole DAG"] = (run.end_date - run.start_date).total_seconds()
    return times


def higgs_parts(rows: int) -> dict[str, Any]:
    """The DAG's split of the DAG's generated rows (same seeds)."""
    from higgs_data import generate_higgs, split_higgs

    return split_higgs(generate_higgs(rows, seed=42), test_fraction=0.2, valid_fraction=0.1, seed=42)


def plain_xgboost(parts: dict[str, Any], rounds: int, nthread: int) -> float:
    """Seconds of plain ``xgboost.train`` on the training and validation rows, DMatrix included."""
    import xgboost
    from higgs_data import FEATURES
    from higgs_model import XGBOOST_PARAMS

    started = time.monotonic()
    dtrain, dvalid = (
        xgboost.DMatrix(parts[name][FEATURES], label=parts[name]["label"], nthread=nthread)
        for name in ("train", "valid")
    )
    xgboost.train(
        {**XGBOOST_PARAMS, "nthread": nthread},
        dtrain,
        num_boost_round=rounds,
        evals=[(dvalid, "valid")],
        verbose_eval=False,
    )
    return time.monotonic() - started


def direct_xgboost_ray(parts: dict[str, Any], rounds: int, actors: int, cpus: int) -> float:
    """Seconds of the DAG's training function called from this process (a Ray driver)."""
    from higgs_model import train_model

    started = time.monotonic()
    train_model(parts["train"], parts["valid"], rounds, num_actors=actors, cpus_per_actor=cpus)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", default="50,200", help="boosting rounds, comma-separated")
    parser.add_argument(
        "--configs",
        default=None,
        help="ACTORSxCPUS, comma-separated; default: 1 x the cluster's CPUs, and 2 x 1",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per configuration; medians are shown")
    parser.add_argument("--smoke", action="store_true", help="the smallest run: 2,000 rows, 2 rounds, once")
    _common.add_options(parser)
    args = parser.parse_args()
    if args.smoke:
        args.rows, args.rounds, args.repeat = 2_000, "2", 1
    round_counts = [int(rounds) for rounds in args.rounds.split(",")]

    home = prepare_home(args)
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import BundleDagBag, sync_bag_to_db

    from airflow_ray.cluster.local import EmbeddedCluster
    from airflow_ray.hooks.ray import RayHook

    results: list[dict[str, Any]] = []
    try:
        DagBundlesManager().sync_bundles_to_db()
        bag = BundleDagBag(
            dag_folder=str(home / "dags"), bundle_path=home / "dags", bundle_name="dags-folder"
        )
        sync_bag_to_db(bag, "dags-folder", None)
        dag = bag.get_dag("xgboost_higgs")
        if not args.smoke:  # a smoke run's figures mean nothing: no warm-up for them
            run_dag(dag, {"rows": 10_000, "rounds": 2, "actors": 1, "cpus_per_actor": 1})
        RayHook().get_conn()
        configs = parse_configs(args.configs)
        parts = higgs_parts(args.rows)
        if not args.smoke:
            direct_xgboost_ray(higgs_parts(10_000), 2, 1, 1)
        for rounds in round_counts:
            for actors, cpus in configs:
                for _ in range(args.repeat):
                    conf = {"rows": args.rows, "rounds": rounds, "actors": actors, "cpus_per_actor": cpus}
                    times = run_dag(dag, conf)
                    plain = plain_xgboost(parts, rounds, actors * cpus)
                    direct = direct_xgboost_ray(parts, rounds, actors, cpus)
                    results.append(
                        {
                            "rounds": rounds,
                            "config": (actors, cpus),
                            "plain": plain,
                            "direct": direct,
                            **times,
                        }
                    )
                    print({k: round(v, 2) if isinstance(v, float) else v for k, v in results[-1].items()})
    finally:
        if _common.owns_cluster(args):
            EmbeddedCluster(home / "ray").stop()
        shutil.rmtree(home, ignore_errors=True)

    print(
        f"\n{args.rows:,} generated HIGGS-shaped rows ({round(args.rows * 0.7):,} to train on, "
        f"{round(args.rows * 0.1):,} to validate each round), {os.cpu_count()} CPUs; "
        f"medians of {args.repeat} run(s), seconds. plain: xgboost.train with actors x CPUs "
        f"threads; direct: xgboost_ray from a driver; DAG train: the train task instance; "
        f"ratio: DAG train / plain"
    )
    print(
        f"{'rounds':>6} {'actors x CPUs':>13} {'plain':>6} {'direct':>6} {'DAG train':>9} {'ratio':>6}"
        + "".join(f" {task:>8}" for task in (*TASKS, "whole DAG"))
    )
    for rounds in round_counts:
        medians = {}
        for actors, cpus in configs:
            rows = [r for r in results if r["rounds"] == rounds and r["config"] == (actors, cpus)]
            median = {
                key: statistics.median(r[key] for r in rows)
                for key in ("plain", "direct", *TASKS, "whole DAG")
            }
            medians[(actors, cpus)] = median
            print(
                f"{rounds:>6} {actors:>9} x {cpus} {median['plain']:>6.1f} {median['direct']:>6.1f} "
                f"{median['train']:>9.1f} {median['train'] / median['plain']:>5.2f}x"
                + "".join(f" {median[task]:>8.1f}" for task in (*TASKS, "whole DAG"))
            )
        print_fastest(rounds, medians)


def parse_configs(configs: str | None) -> list[tuple[int, int]]:
    """``ACTORSxCPUS`` pairs; by default 1 actor x every CPU of the cluster, and 2 actors x 1 CPU."""
    if configs is None:
        import ray

        cpus = int(ray.cluster_resources()["CPU"])
        return list(dict.fromkeys([(1, cpus), (2, 1)]))
    pairs = []
    for config in configs.split(","):
        actors, _, cpus = config.partition("x")
        if not (actors.isdigit() and cpus.isdigit()):
            raise SystemExit(f"--configs takes ACTORSxCPUS pairs such as 1x2,2x1; got {config!r}")
        pairs.append((int(actors), int(cpus)))
    return pairs


def print_fastest(rounds: int, medians: dict[tuple[int, int], dict[str, float]]) -> None:
    """Which configuration's DAG train task is fastest at ``rounds`` rounds, and how far behind the others are."""
    ranked = sorted(medians, key=lambda config: medians[config]["train"])
    fastest = medians[ranked[0]]["train"]
    print(
        f"{rounds:>6} rounds, fastest first: "
        + "; ".join(
            f"{actors} x {cpus} {median['train']:.1f} s ({median['train'] / fastest:.2f}x the fastest, "
            f"{median['train'] / median['plain']:.2f}x plain xgboost)"
            for actors, cpus in ranked
            for median in [medians[(actors, cpus)]]
        )
    )


if __name__ == "__main__":
    main()
