"""Provider metadata read by Airflow through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any

from airflow_ray import __version__


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-ray",
        "name": "Ray",
        "description": "Run Airflow tasks on Ray clusters: `Ray <https://www.ray.io/>`__",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Ray",
                "external-doc-url": "https://docs.ray.io/",
                "tags": ["compute"],
            }
        ],
        "operators": [
            {
                "integration-name": "Ray",
                "python-modules": ["airflow_ray.operators.ray", "airflow_ray.operators.checkpoint"],
            }
        ],
        "hooks": [{"integration-name": "Ray", "python-modules": ["airflow_ray.hooks.ray"]}],
        "triggers": [{"integration-name": "Ray", "python-modules": ["airflow_ray.triggers.ray"]}],
        "extra-links": ["airflow_ray.links.ray.RayJobLink"],
        "connection-types": [
            {
                "connection-type": "ray",
                "hook-class-name": "airflow_ray.hooks.ray.RayHook",
                "hook-name": "Ray",
                "ui-field-behaviour": {
                    # The port is part of the Address (host:6379, ray://host:10001, http://host:8265).
                    "hidden-fields": ["login", "port", "extra"],
                    "relabeling": {"host": "Address", "schema": "Namespace", "password": "Ray auth token"},
                    "placeholders": {
                        # The form shows about 60 characters of it.
                        "host": "empty: embedded; http://head:8265, ray://head:10001, head:6379",
                        "schema": "airflow",
                        "password": "token of a cluster with token authentication (`ray get-auth-token`)",
                    },
                },
                "conn-fields": {
                    "runtime_env": {
                        "label": "Default runtime_env",
                        "description": "JSON Ray runtime environment applied to every task, "
                        'e.g. {"pip": ["xgboost==2.0.3"]}.',
                        "schema": {"type": ["object", "null"], "format": "json"},
                    },
                    "transport": {
                        "label": "Transport",
                        "description": "How tasks reach the cluster: 'jobs' (each task a Ray job over "
                        "HTTP: the worker needs no Ray connection and can defer), 'driver' (the worker "
                        "becomes a Ray driver), or 'auto' (jobs for an http(s):// address).",
                        # A default, not null in the enum: the form showed a selected "null" for an
                        # unset transport.
                        "schema": {
                            "type": ["string", "null"],
                            "default": "auto",
                            "enum": ["auto", "driver", "jobs"],
                        },
                    },
                    "dashboard_url": {
                        "label": "Dashboard URL",
                        "description": "The cluster's dashboard (Jobs API), when the address is not "
                        "it: e.g. http://head:8265 beside a GCS address.",
                        "schema": {"type": ["string", "null"]},
                    },
                    "python": {
                        "label": "Cluster Python (Jobs API)",
                        "description": "The interpreter that runs each Jobs API task's entrypoint in "
                        "the cluster, when the `python` on the cluster's PATH is not the one Ray runs "
                        "on: e.g. /opt/ray-env/bin/python.",
                        "schema": {"type": ["string", "null"]},
                    },
                    "verify": {
                        "label": "TLS verify (Jobs API)",
                        "description": "For an https:// dashboard: true (the system's CAs, default), "
                        "the path of the PEM bundle of a private CA, or false (no check).",
                        "schema": {"type": ["string", "boolean", "null"]},
                    },
                    "headers": {
                        "label": "HTTP headers (Jobs API)",
                        "description": "JSON object of headers sent with every Jobs API call, for an "
                        'authenticating proxy or ingress: e.g. {"X-Auth-Request-Token": "..."}.',
                        "schema": {"type": ["object", "null"], "format": "json"},
                    },
                    "init_kwargs": {
                        "label": "Extra ray.init kwargs",
                        "description": 'JSON object of more ray.init keywords, e.g. {"logging_level": "warning"}.',
                        "schema": {"type": ["object", "null"], "format": "json"},
                    },
                },
            }
        ],
        "task-decorators": [{"class-name": "airflow_ray.decorators.ray.ray_task", "name": "ray"}],
        "config": {
            "ray": {
                "description": "Settings of the Ray provider (airflow-ray).",
                "options": {
                    "embedded_dir": {
                        "description": "Directory of the embedded local Ray cluster's state: its "
                        "address, token and logs. Default: the 'ray' folder under AIRFLOW_HOME.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "/var/lib/airflow/ray",
                        "default": "",
                    },
                    "embedded_num_cpus": {
                        "description": "CPUs the embedded cluster offers. Default: all of the machine's.",
                        "version_added": "0.1.0",
                        "type": "integer",
                        "example": "4",
                        "default": "",
                    },
                    "embedded_object_store_memory": {
                        "description": "Bytes of object store of the embedded cluster. Default: Ray's "
                        "(30% of memory).",
                        "version_added": "0.1.0",
                        "type": "integer",
                        "example": "2000000000",
                        "default": "",
                    },
                    "keep_runs": {
                        "description": "With RayXComBackend: how many of the newest runs of each DAG "
                        "keep their results pinned in the Ray cluster. Older runs' results are released "
                        "when a newer run pins one.",
                        "version_added": "0.1.0",
                        "type": "integer",
                        "example": "1",
                        "default": "3",
                    },
                    "pin_ttl": {
                        "description": "With RayXComBackend: seconds after which a pinned result is "
                        "released, whatever else happens.",
                        "version_added": "0.1.0",
                        "type": "float",
                        "example": "3600",
                        "default": "86400",
                    },
                    "orphan_timeout": {
                        "description": "Seconds after which a Ray task that nobody follows any more is "
                        "stopped: its Airflow task process died and no retry reconnected to it. Longer "
                        "than the scheduler's task_instance_heartbeat_timeout plus the task's "
                        "retry_delay, so that a retry finds the task still running.",
                        "version_added": "0.1.0",
                        "type": "float",
                        "example": "1800",
                        "default": "900",
                    },
                    "inline_max_bytes": {
                        "description": "With RayXComBackend: a result of a Ray task up to this many "
                        "bytes that Airflow's own XCom serializer can store is kept in the XCom row "
                        "itself (readable in the UI) instead of the cluster. 0: always a reference.",
                        "version_added": "0.1.0",
                        "type": "integer",
                        "example": "0",
                        "default": "65536",
                    },
                    "checkpoint_conn_id": {
                        "description": "The Airflow AWS connection for checkpoints on S3 (its extra "
                        "may hold an endpoint_url for an S3-compatible server).",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "aws_checkpoints",
                        "default": "aws_default",
                    },
                    "checkpoint_bucket": {
                        "description": "The S3 bucket for checkpoints (checkpoint=True and "
                        "RayCheckpointOperator), and where a result lost by the Ray cluster is looked "
                        "for. Pickled checkpoints are loaded only from this bucket.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "my-pipelines",
                        "default": "",
                    },
                    "checkpoint_prefix": {
                        "description": "Key prefix of checkpoints in the bucket.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "airflow-ray",
                        "default": "airflow-ray",
                    },
                    "checkpoint_retention_days": {
                        "description": "How many days 'airflow-ray checkpoints prune' keeps "
                        "checkpoints. Releasing pinned results never deletes checkpoints; only that "
                        "command and 'airflow-ray checkpoints delete' do. Empty: keep them.",
                        "version_added": "0.1.0",
                        "type": "float",
                        "example": "30",
                        "default": "",
                    },
                    "jobs_inline_max_bytes": {
                        "description": "Through the Ray Jobs API: the largest result (pickled) that "
                        "travels to a task that is not a Ray task (a plain @task, a template). Larger "
                        "ones are read from their S3 checkpoint, or fail with an error that says to "
                        "consume them in a Ray task or to checkpoint them.",
                        "version_added": "0.1.0",
                        "type": "integer",
                        "example": "16777216",
                        "default": "1048576",
                    },
                    "schedule_timeout": {
                        "description": "Seconds a Ray task may wait to start: for resources to free "
                        "up, or for a node that the cluster's autoscaler launches (a worker group that "
                        "scaled to zero). Past it the task is cancelled and fails with an error naming "
                        "this setting. Empty: wait without a limit.",
                        "version_added": "0.1.0",
                        "type": "float",
                        "example": "900",
                        "default": "",
                    },
                    "connect_timeout": {
                        "description": "Seconds that connecting to a Ray cluster may take before "
                        "the task fails with an error naming the connection and address; also how "
                        "long a Jobs API call is tried again while a proxy answers 502/503/504 or "
                        "the dashboard is away.",
                        "version_added": "0.1.0",
                        "type": "float",
                        "example": "10",
                        "default": "30",
                    },
                },
            }
        },
    }
