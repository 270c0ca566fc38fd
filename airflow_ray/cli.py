"""``airflow-ray``: manage the embedded local Ray cluster and the results pinned in a cluster.

.. code-block:: console

    $ airflow-ray local start     # start it (or report the one running)
    $ airflow-ray local status    # exit code 0 when it runs, 3 when not
    $ airflow-ray local stop      # stop it, and only it
    $ airflow-ray pins list [--dag DAG] [--run RUN]        # results kept in the cluster, with sizes
    $ airflow-ray pins release --dag DAG [--run RUN]       # release them (or --all)
    $ airflow-ray checkpoints list [--dag DAG] [--run RUN]  # checkpoints on S3, with sizes
    $ airflow-ray checkpoints delete --dag DAG [--run RUN]  # delete them
    $ airflow-ray checkpoints prune [--older-than DAYS]     # apply [ray] checkpoint_retention_days
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from airflow_ray.exceptions import AirflowRayError


def _cluster(state_dir: str | None):  # type: ignore[no-untyped-def]
    from airflow_ray.cluster.local import EmbeddedCluster

    if state_dir:
        from airflow_ray import config

        return EmbeddedCluster(
            Path(state_dir),
            num_cpus=config.embedded_num_cpus(),
            object_store_memory=config.embedded_object_store_memory(),
        )
    return EmbeddedCluster.from_config()


def _pins(args: argparse.Namespace) -> int:
    from airflow_ray.hooks.ray import RayHook

    if args.action == "release" and not (args.dag or args.all):
        print("airflow-ray: pins release needs --dag DAG_ID [--run RUN_ID] or --all", file=sys.stderr)
        return 2
    hook = RayHook(args.conn_id)
    if hook.settings.address.is_embedded:
        # Looking at pins must not start a cluster: one that does not run holds none.
        cluster = _cluster(None)
        if cluster.status() is None:
            print(
                f"No embedded Ray cluster runs for {cluster.state_dir}, so nothing is pinned"
                + (" and nothing was released" if args.action == "release" else "")
            )
            return 0
    transport = hook.get_transport()
    if args.action == "release":
        print(f"Released {transport.release_matching(args.dag, args.run)} pinned object(s)")
        return 0
    pins = transport.list_pins(args.dag, args.run)
    total = 0
    for pin in sorted(pins, key=lambda p: p["created"]):
        size = pin["meta"].get("size_bytes") or 0
        total += size
        task = pin["task_id"] if pin["map_index"] < 0 else f"{pin['task_id']}[{pin['map_index']}]"
        kind = pin["meta"].get("type", "?")
        print(f"{pin['dag_id']}  {pin['run_id']}  {task}  {pin['key']}  {kind}  {size / 1024**2:.1f} MB")
    print(f"{len(pins)} pinned object(s), {total / 1024**2:.1f} MB")
    return 0


def _checkpoints(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from airflow_ray import config
    from airflow_ray.checkpoint.store import CheckpointLocation, CheckpointStore

    location = CheckpointLocation.resolve(args.aws_conn_id, args.bucket, args.prefix)
    store = CheckpointStore(location)
    if args.action == "list":
        found = store.list(args.dag, args.run)
        for item in sorted(found, key=lambda i: i["key"]):
            print(
                f"{location.uri(item['key'])}  {item['size_bytes'] / 1024**2:.1f} MB  {item['modified']:%Y-%m-%d %H:%M}"
            )
        total = sum(item["size_bytes"] for item in found)
        print(f"{len(found)} checkpoint(s), {total / 1024**2:.1f} MB in {location.uri(location.prefix)}")
        return 0
    if args.action == "delete":
        if not args.dag:
            print("airflow-ray: checkpoints delete needs --dag DAG_ID [--run RUN_ID]", file=sys.stderr)
            return 2
        print(f"Deleted {store.delete(args.dag, args.run)} checkpoint(s)")
        return 0
    days = args.older_than if args.older_than is not None else config.checkpoint_retention_days()
    if days is not None and not days > 0:
        print(
            f"airflow-ray: checkpoints prune --older-than {days:g} would delete every checkpoint; "
            f"give a number of days greater than 0 (use 'checkpoints delete --dag' to delete a DAG's)",
            file=sys.stderr,
        )
        return 2
    if days is None:
        print(
            "airflow-ray: checkpoints prune needs --older-than DAYS or [ray] checkpoint_retention_days",
            file=sys.stderr,
        )
        return 2
    deleted = store.delete(args.dag, args.run, older_than=timedelta(days=days))
    print(f"Deleted {deleted} checkpoint(s) older than {days:g} day(s)")
    return 0


def _local(args: argparse.Namespace) -> int:
    cluster = _cluster(args.dir)
    if args.action == "start":
        running = cluster.status()
        head = running or cluster.ensure_running()
        verb = "already running" if running else "started"
        print(f"Embedded Ray cluster {verb}: {head.gcs_address} (pid {head.pid}, state {cluster.state_dir})")
        return 0
    if args.action == "status":
        head = cluster.status()
        if head is None:
            print(f"No embedded Ray cluster runs for {cluster.state_dir}")
            return 3
        print(
            f"Embedded Ray cluster running: {head.gcs_address} (pid {head.pid}, Ray {head.ray_version}, "
            f"client {head.client_address}, state {cluster.state_dir})"
        )
        # Ray's dashboard asks for the token and says to run `ray get-auth-token`, which knows
        # nothing of this cluster: say where it is (never the token itself).
        print(f"Dashboard: {head.dashboard_url} (its token is in {cluster.token_path})")
        return 0
    stopped = cluster.stop()
    print(
        "Embedded Ray cluster stopped" if stopped else f"No embedded Ray cluster ran for {cluster.state_dir}"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``airflow-ray`` command line (the docs' CLI reference is generated from it)."""
    parser = argparse.ArgumentParser(
        prog="airflow-ray", description="Manage airflow-ray's Ray cluster and pins."
    )
    commands = parser.add_subparsers(dest="group", required=True)
    local = commands.add_parser("local", help="the embedded local Ray cluster")
    local.add_argument("action", choices=["start", "status", "stop"])
    local.add_argument("--dir", help="state directory (default: [ray] embedded_dir, or $AIRFLOW_HOME/ray)")
    pins = commands.add_parser("pins", help="results kept in the cluster for XCom (RayXComBackend)")
    pins.add_argument("action", choices=["list", "release"])
    pins.add_argument("--dag", help="only the pins of this DAG")
    pins.add_argument("--run", help="only the pins of this run (with --dag)")
    pins.add_argument(
        "--all",
        action="store_true",
        help="release every pin of this deployment in the connection's namespace",
    )
    pins.add_argument("--conn-id", default="ray_default", help="the ray connection (default ray_default)")
    checkpoints = commands.add_parser("checkpoints", help="results checkpointed to S3")
    checkpoints.add_argument("action", choices=["list", "delete", "prune"])
    checkpoints.add_argument("--dag", help="only the checkpoints of this DAG")
    checkpoints.add_argument("--run", help="only the checkpoints of this run (with --dag)")
    checkpoints.add_argument("--older-than", type=float, metavar="DAYS", help="prune: age in days")
    checkpoints.add_argument("--aws-conn-id", help="default: [ray] checkpoint_conn_id")
    checkpoints.add_argument("--bucket", help="default: [ray] checkpoint_bucket")
    checkpoints.add_argument("--prefix", help="default: [ray] checkpoint_prefix")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"pins": _pins, "local": _local, "checkpoints": _checkpoints}
    try:
        return handlers[args.group](args)
    except AirflowRayError as err:
        print(f"airflow-ray: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
