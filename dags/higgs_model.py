"""The HIGGS model: XGBoost trained on Ray with xgboost_ray, evaluated, and tuned with Ray Tune.

The steps of the XGBoost example DAGs. Each runs inside a Ray task; xgboost_ray then starts
its own training actors. xgboost, xgboost_ray and Ray are imported inside the functions, so
that parsing a DAG that imports this module imports none of them.

xgboost_ray 0.1.19 (its last release) trains only with xgboost 2.0.x and needs ``ray[train]``:
``pip install 'airflow-ray[examples]'`` installs exactly those.
"""

from __future__ import annotations

import functools
import logging
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from higgs_data import FEATURES

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import xgboost

# As in xgboost_ray's HIGGS example, plus the objective that makes predictions probabilities.
XGBOOST_PARAMS: dict[str, Any] = {
    "objective": "binary:logistic",
    "tree_method": "hist",
    "eval_metric": ["logloss", "error"],
}
EXAMPLES_EXTRA = "pip install 'airflow-ray[examples]' (xgboost==2.0.3 xgboost-ray==0.1.19 'ray[train]')"
# xgboost_ray's rabit tracker fails on xgboost 2.1 and later (TypeError from getaddrinfo).
_FIRST_BROKEN_XGBOOST = "2.1"
_MODEL_FILE = "model.ubj"

log = logging.getLogger(__name__)


class XGBoostRayUnavailableError(ImportError):
    """xgboost_ray cannot train here: a missing package or an xgboost it does not work with."""


def require_xgboost_ray() -> None:
    """Fail with what to install, before xgboost_ray fails deep inside its rabit tracker."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.version import Version

    try:
        installed = version("xgboost")
    except PackageNotFoundError as err:
        raise XGBoostRayUnavailableError(
            f"xgboost is not installed. Install it with: {EXAMPLES_EXTRA}"
        ) from err
    if Version(installed) >= Version(_FIRST_BROKEN_XGBOOST):
        raise XGBoostRayUnavailableError(
            f"xgboost {installed} is installed, but xgboost-ray 0.1.19 trains only with xgboost older "
            f"than {_FIRST_BROKEN_XGBOOST} (its rabit tracker fails with newer ones). Install the "
            f"versions it works with: {EXAMPLES_EXTRA}"
        )
    try:
        import xgboost_ray  # noqa: F401
    except ImportError as err:
        raise XGBoostRayUnavailableError(
            f"xgboost_ray cannot be imported ({err}). Install: {EXAMPLES_EXTRA}"
        ) from err


def train_model(
    train: pd.DataFrame,
    valid: pd.DataFrame,
    rounds: int = 50,
    num_actors: int = 0,
    cpus_per_actor: int = 0,
    evals_result: dict[str, Any] | None = None,
) -> xgboost.Booster:
    """Train XGBoost on Ray: ``num_actors`` xgboost_ray actors of ``cpus_per_actor`` CPUs each.

    0 for either (the default) is chosen from the cluster's CPUs when training starts
    (:func:`share_cpus`): on one machine, one actor with every CPU.

    After every round the metrics on the ``valid`` rows go to the log, while training runs.

    :param evals_result: a dict that training fills with every round's metrics, as
        ``xgboost.train`` does: ``{"valid": {"logloss": [...], "error": [...]}}`` (the notebook
        plots them).
    """
    require_xgboost_ray()
    from xgboost_ray import RayDMatrix, RayParams
    from xgboost_ray import train as train_on_ray

    rounds = int(rounds)
    num_actors, cpus_per_actor = _actors_on_this_cluster(int(num_actors), int(cpus_per_actor))
    log.info("Training with %d xgboost_ray actor(s) of %d CPU(s)", num_actors, cpus_per_actor)
    evals_result = {} if evals_result is None else evals_result
    started = time.monotonic()
    model = train_on_ray(
        XGBOOST_PARAMS,
        RayDMatrix(train, label="label"),
        num_boost_round=rounds,
        # Not the training rows: xgboost_ray would build a second matrix of them, and xgboost
        # predicts an evaluation matrix each round, where it updates the training one for free.
        evals=[(RayDMatrix(valid, label="label"), "valid")],
        evals_result=evals_result,
        ray_params=RayParams(num_actors=num_actors, cpus_per_actor=cpus_per_actor, max_actor_restarts=1),
        callbacks=[_round_logger(rounds)],
        verbose_eval=False,
    )
    log.info(
        "Trained %d rounds on %s rows in %.1f s: validation logloss %.4f, error %.4f",
        rounds,
        f"{len(train):,}",
        time.monotonic() - started,
        evals_result["valid"]["logloss"][-1],
        evals_result["valid"]["error"][-1],
    )
    return model


def _actors_on_this_cluster(num_actors: int, cpus_per_actor: int) -> tuple[int, int]:
    """``num_actors`` and ``cpus_per_actor``, a 0 for either filled in from the connected cluster's nodes."""
    if num_actors and cpus_per_actor:
        return num_actors, cpus_per_actor
    import ray

    node_cpus = [int(node["Resources"].get("CPU", 0)) for node in ray.nodes() if node["Alive"]]
    return share_cpus(node_cpus, num_actors, cpus_per_actor)


def share_cpus(node_cpus: list[int], num_actors: int, cpus_per_actor: int) -> tuple[int, int]:
    """Actors and CPUs per actor for nodes of ``node_cpus`` CPUs each; 0 means "choose".

    Both 0: one actor per node, with every CPU of the smallest node (on one machine, one actor
    with all its CPUs: ``bench/xgboost_train.py`` trained faster that way than with two actors of
    one CPU). Only ``num_actors`` 0: as many actors of ``cpus_per_actor`` as the nodes hold. Only
    ``cpus_per_actor`` 0: the smallest node's CPUs shared by the actors each node gets.
    """
    nodes = [cpus for cpus in node_cpus if cpus > 0]
    if not nodes:
        raise ValueError(
            f"No node of the Ray cluster has a CPU (CPUs per node: {node_cpus}); xgboost_ray's actors "
            f"need at least one. Start the cluster with CPUs, or pass num_actors and cpus_per_actor."
        )
    if not num_actors and not cpus_per_actor:
        return len(nodes), min(nodes)
    if not num_actors:
        return max(1, sum(cpus // cpus_per_actor for cpus in nodes)), cpus_per_actor
    actors_per_node = -(-num_actors // len(nodes))
    return num_actors, cpus_per_actor or max(1, min(nodes) // actors_per_node)


def _round_logger(rounds: int) -> xgboost.callback.TrainingCallback:
    """A callback that logs each round's metrics in the process that called xgboost_ray.train.

    The callback runs in the training actors, whose output does not reach the Airflow task
    log. Rank 0 puts a small callable on xgboost_ray's session queue instead; the driver (our
    Ray task) runs it while it waits for the actors, about once a second.
    """
    import xgboost
    from xgboost_ray.session import get_actor_rank, put_queue

    class RoundLogger(xgboost.callback.TrainingCallback):
        def after_iteration(self, model: Any, epoch: int, evals_log: dict[str, Any]) -> bool:
            if get_actor_rank() == 0:
                put_queue(functools.partial(log.info, "round %d/%d  %s", epoch + 1, rounds, _last(evals_log)))
            return False

    return RoundLogger()


def _last(evals_log: dict[str, dict[str, list[float]]]) -> str:
    """``valid-logloss 0.51234  valid-error 0.24010`` from xgboost's evaluation log."""
    return "  ".join(
        f"{data}-{metric} {values[-1]:.5f}"
        for data, metrics in evals_log.items()
        for metric, values in metrics.items()
    )


def evaluate_model(model: xgboost.Booster, test: pd.DataFrame) -> dict[str, float]:
    """Accuracy and AUC of ``model`` on the held-out ``test`` rows."""
    import xgboost

    labels = test["label"].to_numpy()
    scores = model.predict(xgboost.DMatrix(test[FEATURES]))
    metrics = {
        "accuracy": float(((scores > 0.5) == (labels > 0.5)).mean()),
        "auc": auc_score(labels, scores),
        "test_rows": len(test),
    }
    log.info(
        "Test accuracy %.4f, AUC %.4f on %s held-out rows",
        metrics["accuracy"],
        metrics["auc"],
        f"{len(test):,}",
    )
    return metrics


def checkpoint_configured() -> bool:
    """Whether the model is saved to S3 too: a checkpoint bucket is configured (read at run time)."""
    from airflow_ray import CheckpointLocation

    location = CheckpointLocation.configured()
    if location is None:
        log.info(
            "No checkpoint bucket configured: the model stays in the Ray cluster only. Set "
            "AIRFLOW__RAY__CHECKPOINT_BUCKET (and an AWS connection) to save it to S3 as well."
        )
        return False
    log.info("The model will be checkpointed to %s", location.uri(location.prefix))
    return True


def auc_score(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve: the chance that a random positive outscores a random negative.

    Ties count one half (average ranks), as trees with few rounds predict many equal scores.
    """
    from scipy.stats import rankdata

    positive = labels > 0.5
    positives = int(positive.sum())
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        raise ValueError(
            f"AUC needs both classes; the labels hold {positives} positives and {negatives} negatives."
        )
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def tune_model(
    train: pd.DataFrame,
    valid: pd.DataFrame,
    rounds: int = 20,
    samples: int = 8,
    num_actors: int = 1,
    cpus_per_actor: int = 1,
    seed: int = 42,
) -> dict[str, Any]:
    """Search max_depth, min_child_weight, subsample and eta with Ray Tune and ASHA.

    Each trial trains on ``train`` with xgboost_ray and reports its metrics on ``valid`` and
    its model to Tune after every round; ASHA stops the poor trials early. The best trial's
    model is loaded from its checkpoint.

    :return: ``{"model": Booster, "config": the best trial's parameters, "valid_error": ...}``.
    """
    require_xgboost_ray()
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import BasicVariantGenerator
    from xgboost_ray import RayParams

    rounds, samples, seed = int(rounds), int(samples), int(seed)
    ray_params = RayParams(
        num_actors=int(num_actors), cpus_per_actor=int(cpus_per_actor), max_actor_restarts=1
    )
    search_space = {
        "max_depth": tune.randint(2, 9),
        "min_child_weight": tune.choice([1, 2, 3]),
        "subsample": tune.uniform(0.5, 1.0),
        "eta": tune.loguniform(1e-2, 3e-1),
    }
    trainable = tune.with_parameters(
        _tune_trial, train=train, valid=valid, rounds=rounds, ray_params=ray_params
    )
    # The trial itself only drives its xgboost_ray actors; they hold the CPUs.
    resources = tune.PlacementGroupFactory(
        [{}] + [{"CPU": ray_params.cpus_per_actor}] * ray_params.num_actors
    )
    with tempfile.TemporaryDirectory(prefix="xgboost-tune-") as storage:
        tuner = tune.Tuner(
            tune.with_resources(trainable, resources),
            param_space=search_space,
            tune_config=tune.TuneConfig(
                metric="valid-logloss",
                mode="min",
                num_samples=samples,
                scheduler=ASHAScheduler(max_t=rounds, grace_period=max(1, rounds // 4), reduction_factor=2),
                search_alg=BasicVariantGenerator(random_state=seed),
            ),
            run_config=tune.RunConfig(
                name="xgboost_tune",
                storage_path=storage,
                verbose=1,
            ),
        )
        results = tuner.fit()
        if results.errors:
            log.warning(
                "%d of %d trials failed; the first: %s", len(results.errors), samples, results.errors[0]
            )
        best = results.get_best_result()
        if best.checkpoint is None:
            raise RuntimeError(
                f"The best trial ({best.config}) left no checkpoint; see the Tune output above."
            )
        with best.checkpoint.as_directory() as directory:
            model = _load_booster(Path(directory) / _MODEL_FILE)
    log.info(
        "Best of %d trials: %s, validation logloss %.4f, error %.4f",
        samples,
        best.config,
        best.metrics["valid-logloss"],
        best.metrics["valid-error"],
    )
    return {"model": model, "config": best.config, "valid_error": float(best.metrics["valid-error"])}


def _tune_trial(
    config: dict[str, Any], train: pd.DataFrame, valid: pd.DataFrame, rounds: int, ray_params: Any
) -> None:
    """One Tune trial: xgboost_ray training that reports to Tune after every round."""
    import xgboost
    from xgboost_ray import RayDMatrix
    from xgboost_ray import train as train_on_ray
    from xgboost_ray.session import get_actor_rank, put_queue

    class TuneReporter(xgboost.callback.TrainingCallback):
        def after_iteration(self, model: Any, epoch: int, evals_log: dict[str, Any]) -> bool:
            if get_actor_rank() == 0:
                metrics = {
                    f"{data}-{name}": values[-1]
                    for data, named in evals_log.items()
                    for name, values in named.items()
                }
                put_queue(functools.partial(_report_to_tune, metrics, bytes(model.save_raw("ubj"))))
            return False

    dvalid = RayDMatrix(valid, label="label")
    train_on_ray(
        {**XGBOOST_PARAMS, **config},
        RayDMatrix(train, label="label"),
        num_boost_round=rounds,
        evals=[(dvalid, "valid")],
        ray_params=ray_params,
        callbacks=[TuneReporter()],
        verbose_eval=False,
    )


def _report_to_tune(metrics: dict[str, float], raw_model: bytes) -> None:
    """Runs in the trial's process (xgboost_ray's driver), where Tune's session lives."""
    from ray import tune

    with tempfile.TemporaryDirectory() as directory:
        (Path(directory) / _MODEL_FILE).write_bytes(raw_model)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))


def _load_booster(path: Path) -> xgboost.Booster:
    import xgboost

    model = xgboost.Booster()
    model.load_model(bytearray(path.read_bytes()))
    return model
