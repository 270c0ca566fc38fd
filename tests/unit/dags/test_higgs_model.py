"""The logic of the HIGGS model steps that needs no Ray cluster: version check, AUC, evaluation."""

from __future__ import annotations

import importlib.metadata

import numpy as np
import pytest
from higgs_data import FEATURES, generate_higgs, signal_accuracy, split_higgs
from higgs_model import (
    XGBoostRayUnavailableError,
    _last,
    auc_score,
    evaluate_model,
    require_xgboost_ray,
    share_cpus,
)


@pytest.mark.parametrize("installed", ["2.1.0", "2.1.4", "3.0.5", "3.1.0rc1"])
def test_an_xgboost_newer_than_xgboost_ray_supports_is_a_readable_error(monkeypatch, installed):
    monkeypatch.setattr(importlib.metadata, "version", lambda name: installed if name == "xgboost" else "0")
    with pytest.raises(XGBoostRayUnavailableError) as raised:
        require_xgboost_ray()
    message = str(raised.value)
    assert f"xgboost {installed} is installed" in message
    assert "pip install 'airflow-ray[examples]'" in message
    assert "xgboost==2.0.3" in message


def test_a_missing_xgboost_is_a_readable_error(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    with pytest.raises(XGBoostRayUnavailableError, match="xgboost is not installed"):
        require_xgboost_ray()


def test_the_pinned_xgboost_passes():
    assert importlib.metadata.version("xgboost") == "2.0.3"
    require_xgboost_ray()


def brute_force_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    positive, negative = scores[labels == 1], scores[labels == 0]
    wins = (positive[:, None] > negative[None, :]).sum() + 0.5 * (
        positive[:, None] == negative[None, :]
    ).sum()
    return float(wins / (len(positive) * len(negative)))


def test_auc_counts_ties_as_one_half():
    rng = np.random.default_rng(0)
    labels = (rng.random(500) < 0.4).astype(np.float32)
    scores = np.round(rng.random(500) + 0.3 * labels, 1)  # few distinct values: many ties
    assert auc_score(labels, scores) == pytest.approx(brute_force_auc(labels, scores))
    assert auc_score(np.array([0.0, 1.0]), np.array([0.2, 0.9])) == 1.0
    assert auc_score(np.array([0.0, 1.0]), np.array([0.5, 0.5])) == 0.5
    with pytest.raises(ValueError, match="both classes"):
        auc_score(np.ones(3), np.array([0.1, 0.2, 0.3]))


def test_round_metrics_read_like_xgboost_s_own():
    log = {"valid": {"logloss": [0.7, 0.61234], "error": [0.3, 0.25]}}
    assert _last(log) == "valid-logloss 0.61234  valid-error 0.25000"


def test_evaluate_reports_accuracy_and_auc_near_what_the_signal_allows():
    import xgboost

    table = generate_higgs(30_000, seed=11)
    parts = split_higgs(table, test_fraction=0.2, valid_fraction=0.1, seed=11)
    train = parts["train"]
    model = xgboost.train(
        {"objective": "binary:logistic", "tree_method": "hist", "nthread": 1},
        xgboost.DMatrix(train[FEATURES], label=train["label"]),
        num_boost_round=10,
    )
    metrics = evaluate_model(model, parts["test"])
    assert metrics["test_rows"] == 6_000
    assert signal_accuracy(table) - 0.05 < metrics["accuracy"] < signal_accuracy(table) + 0.02
    assert 0.8 < metrics["auc"] < 1.0


@pytest.mark.parametrize(
    ("node_cpus", "asked", "chosen"),
    [
        # one machine: one actor with every CPU
        ([2], (0, 0), (1, 2)),
        ([16], (0, 0), (1, 16)),
        # one actor per node, each fitting the smallest node; a head without CPUs gets none
        ([0, 8, 4], (0, 0), (2, 4)),
        # CPUs per actor given: as many actors as the nodes hold
        ([2], (0, 1), (2, 1)),
        ([8, 4], (0, 3), (3, 3)),
        ([2], (0, 4), (1, 4)),
        # actors given: the smallest node's CPUs shared by the actors that each node gets
        ([2], (2, 0), (2, 1)),
        ([8, 8], (3, 0), (3, 4)),
        ([2], (4, 0), (4, 1)),
        # both given: as asked
        ([2], (2, 1), (2, 1)),
    ],
)
def test_share_cpus_fills_in_the_zeros_from_the_nodes(node_cpus, asked, chosen):
    assert share_cpus(node_cpus, *asked) == chosen


def test_share_cpus_on_a_cluster_without_cpus_is_a_readable_error():
    with pytest.raises(ValueError, match=r"No node of the Ray cluster has a CPU \(CPUs per node: \[0\]\)"):
        share_cpus([0], 0, 0)
