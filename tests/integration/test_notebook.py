"""The HIGGS notebook, run top to bottom in a kernel of this environment, on few rows.

The kernel is this interpreter (the repository's ``.venv`` under ``make test``), started from a
kernel spec in a private folder, with this process's environment: the test session's
``AIRFLOW_HOME`` and embedded cluster, never another one. The notebook's parameters are
overridden by a cell inserted after its ``parameters`` cell, as papermill does.
"""

from __future__ import annotations

import ast
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "notebooks" / "higgs_xgboost_ray.ipynb"
SMALL = {"ROWS": 20_000, "ROUNDS": 5, "ACTORS": 2, "CPUS_PER_ACTOR": 1}
# A cell that takes longer is stuck (training 5 rounds on 14k rows takes seconds).
CELL_TIMEOUT_S = 180
KERNEL = "airflow-ray-test"
# Appended by the test, not part of the notebook: which cluster the kernel is connected to.
WHERE = "print(ray.get_runtime_context().gcs_address)"


def _kernel_manager(kernels: Path) -> Any:
    """A manager of a kernel of this interpreter, whose spec lives in ``kernels`` only."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    spec = kernels / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "airflow-ray (test)", "language": "python"})
    )
    return KernelManager(
        kernel_name=KERNEL, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels)])
    )


@pytest.fixture(scope="module")
def executed(ray_cluster, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The notebook executed on ``SMALL``: its cells with their outputs, and how long it took."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    [parameters] = [
        index for index, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", [])
    ]
    overrides = "\n".join(f"{name} = {value!r}" for name, value in SMALL.items())
    notebook.cells.insert(parameters + 1, nbformat.v4.new_code_cell(overrides))
    notebook.cells.append(nbformat.v4.new_code_cell(WHERE))
    kernel = _kernel_manager(tmp_path_factory.mktemp("kernels"))
    client = NotebookClient(
        notebook,
        km=kernel,
        timeout=CELL_TIMEOUT_S,
        startup_timeout=120,
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    started = time.monotonic()
    try:
        # The kernel gets this process's environment: the session's AIRFLOW_HOME and cluster.
        client.execute(env=os.environ.copy(), cleanup_kc=True)
    finally:
        if kernel.has_kernel:
            kernel.shutdown_kernel(now=True)
        # For a look at what it showed: the executed notebook, kept with pytest's temp files.
        nbformat.write(notebook, tmp_path_factory.mktemp("executed") / NOTEBOOK.name)
    return {"cells": notebook.cells, "seconds": time.monotonic() - started}


def _cell(executed: dict[str, Any], starts_with: str) -> Any:
    [cell] = [cell for cell in executed["cells"] if cell.source.startswith(starts_with)]
    return cell


def _text(cell: Any) -> str:
    """What a cell printed and logged, and the text of its result."""
    parts = []
    for output in cell.outputs:
        if output.output_type == "stream":
            parts.append(output.text)
        elif output.output_type in ("execute_result", "display_data"):
            parts.append(output.data.get("text/plain", ""))
    return "".join(parts)


def test_the_notebook_runs_on_the_test_sessions_embedded_cluster(executed, ray_cluster):
    # The session's embedded cluster (this process may be connected to another one by now: a
    # test before this one may have used a cluster of its own).
    head = ray_cluster.status()
    assert head is not None
    assert _text(executed["cells"][-1]).strip().rpartition(":")[2] == str(head.gcs_port)
    print(f"notebook: {executed['seconds']:.1f} s on {SMALL}")


def test_the_notebook_loads_and_splits_with_the_dags_functions(executed):
    split = _text(_cell(executed, "parts = split_higgs("))
    assert "Split 20,000 rows: 14,000 to train on, 2,000 to validate each round, 4,000 to test" in split
    assert ast.literal_eval(split.strip().splitlines()[-1]) == {
        "train": 14_000,
        "valid": 2_000,
        "test": 4_000,
    }
    load = _text(_cell(executed, "table = load_higgs("))
    assert "generating 20,000 HIGGS-shaped rows (seed 42)" in load


def test_each_rounds_validation_metrics_are_shown_as_training_runs_and_plotted(executed):
    train = _text(_cell(executed, "history: dict = {}"))
    rounds = re.findall(r"round (\d+)/5  valid-logloss \d\.\d+  valid-error \d\.\d+", train)
    assert rounds == ["1", "2", "3", "4", "5"]
    assert "Trained 5 rounds on 14,000 rows" in train
    plot = _cell(executed, "import matplotlib.pyplot as plt")
    assert [output for output in plot.outputs if "image/png" in output.get("data", {})]
    table = _text(plot)
    assert re.search(r"logloss\s+error\s+round\s+1\s", table), table
    assert re.search(r"\n5\s+0\.\d+\s+0\.\d+", table), table


def test_the_model_is_evaluated_on_the_test_rows(executed):
    load = _text(_cell(executed, "table = load_higgs("))
    signal = float(re.search(r"allows an accuracy of about (0\.\d+)", load).group(1))
    metrics = ast.literal_eval(_text(_cell(executed, "evaluate_model(")).strip().splitlines()[-1])
    assert metrics["test_rows"] == 4_000
    # Five rounds on 14k rows come within a few points of the signal's Bayes rate.
    assert signal - 0.06 <= metrics["accuracy"] <= signal + 0.03, (metrics, signal)
    assert metrics["auc"] > 0.8
