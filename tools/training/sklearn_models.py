"""scikit-learn models: the estimator for each architecture, and its fit inside a worker with
per-stage curves under Keras' history names."""

from __future__ import annotations

import time
from typing import Any

from ml_expert.tools.artifacts import predict_output
from ml_expert.tools.core.architectures import is_clustering
from ml_expert.tools.core.lazy import lazy_import
from ml_expert.tools.core.prepared import PreparedData
from ml_expert.tools.core.tasks import is_classification
from ml_expert.tools.jobs.specs import Reporter
from ml_expert.tools.training.config import Fit, TrainConfig, TrainSpec
from ml_expert.tools.training.portfolio import is_catboost

np = lazy_import("numpy")  # loads on first use, not at server start


def build_sklearn(architecture: str, task: str, config: TrainConfig, class_weight: str | None, n_classes: int) -> Any:
    """A scikit-learn estimator for the architecture and task."""
    from sklearn.cluster import KMeans
    from sklearn.ensemble import (
        HistGradientBoostingClassifier,
        HistGradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.mixture import GaussianMixture

    classify = is_classification(task)
    seed = config.seed
    if architecture == "random_forest":
        cls = RandomForestClassifier if classify else RandomForestRegressor
        kw = {"class_weight": class_weight} if classify else {}
        return cls(n_estimators=config.n_estimators, max_depth=config.max_depth, random_state=seed, n_jobs=1, **kw)
    if architecture == "gradient_boosting":
        # stop adding trees once a held-out 15 % of the training rows stops improving (as Keras' EarlyStopping)
        boosting = {
            "max_iter": config.max_iter,
            "max_depth": config.max_depth,
            "early_stopping": True,
            "validation_fraction": 0.15,
            "n_iter_no_change": 15,
            "random_state": seed,
        }
        if classify:
            return HistGradientBoostingClassifier(class_weight=class_weight, **boosting)
        return HistGradientBoostingRegressor(**boosting)
    if architecture == "linear":
        if classify:
            return LogisticRegression(
                C=config.regularization,
                max_iter=max(config.max_iter, 1000),
                class_weight=class_weight,
                random_state=seed,
            )
        return Ridge(alpha=config.regularization)
    k = config.n_clusters or max(2, n_classes)
    if architecture == "kmeans":
        return KMeans(n_clusters=k, n_init=10, random_state=seed)
    if architecture == "gaussian_mixture":
        return GaussianMixture(n_components=k, random_state=seed)
    raise ValueError(f"not a scikit-learn architecture: {architecture}")


def _sklearn_history(model: Any, task: str, data: dict[str, Any]) -> dict[str, list[float]]:
    """Per-iteration curves for boosting, per-tree-count for forests, one point otherwise (Keras' key names)."""
    from sklearn.metrics import accuracy_score, log_loss, mean_absolute_error, mean_squared_error

    classify = is_classification(task)
    metric = "accuracy" if classify else "mae"

    def point(split: str, out: np.ndarray) -> tuple[float, float]:
        y = data[f"y_{split}"]
        if classify:
            return log_loss(y, out, labels=range(out.shape[1])), accuracy_score(y, out.argmax(1))
        return mean_squared_error(y, out), mean_absolute_error(y, out)

    stages: list[tuple[np.ndarray, np.ndarray]] = []
    if hasattr(model, "staged_predict_proba" if classify else "staged_predict"):
        staged = {
            s: list((model.staged_predict_proba if classify else model.staged_predict)(data[f"X_{s}"]))
            for s in ("train", "val")
        }
        step = max(1, len(staged["train"]) // 50)
        stages = list(zip(staged["train"][::step], staged["val"][::step], strict=True))
    elif hasattr(model, "estimators_") and not hasattr(model, "staged_predict"):
        trees = model.estimators_
        marks = set(np.unique(np.linspace(1, len(trees), num=min(20, len(trees))).astype(int)).tolist())
        sums: dict[str, Any] = {"train": 0.0, "val": 0.0}
        for k, tree in enumerate(trees, start=1):  # each tree predicts once; the forest of k is the running mean
            for s in sums:
                sums[s] = sums[s] + (tree.predict_proba if classify else tree.predict)(data[f"X_{s}"])
            if k in marks:
                stages.append((sums["train"] / k, sums["val"] / k))
    else:
        stages = [
            (
                predict_output(model, "sklearn", task, data["X_train"]),
                predict_output(model, "sklearn", task, data["X_val"]),
            )
        ]
    hist: dict[str, list[float]] = {"loss": [], metric: [], "val_loss": [], f"val_{metric}": []}
    for tr, va in stages:
        for prefix, split, out in (("", "train", tr), ("val_", "val", va)):
            loss, m = point(split, out)
            hist[f"{prefix}loss"].append(float(loss))
            hist[f"{prefix}{metric}"].append(float(m))
    return hist


def fit_sklearn(
    spec: TrainSpec, prepared: PreparedData, data: dict[str, Any], reporter: Reporter, class_weight: Any
) -> Fit:
    """Fit the spec's estimator on the training split, with curves (and progress) for the run."""
    task = prepared.task_type
    arch = spec.architecture
    n_classes = len(prepared.label_mapping or {}) or 1
    fit_task = "clustering" if is_clustering(arch) else task
    model = build_sklearn(arch, fit_task, spec.config, "balanced" if class_weight else None, n_classes)
    reporter.progress(force=True, phase="train", step=0, total=1, message=f"fitting {arch}")
    start = time.perf_counter()
    model.fit(data["X_train"], data["y_train"])
    seconds = time.perf_counter() - start
    history = {} if fit_task == "clustering" else _sklearn_history(model, task, data)
    reporter.progress(force=True, phase="train", step=1, total=1, message=f"fitted {arch} in {seconds:.1f}s")
    return Fit(
        model=model,
        framework="sklearn",
        epochs_trained=max(1, len(history.get("loss", []))),
        best_epoch=None,
        seconds=seconds,
        parameters=count_parameters(model),
        history=history,
    )


def is_plain_estimator(model: Any) -> bool:
    """A single scikit-learn estimator (skl2onnx converts those), not a blend or a target transform."""
    return type(model).__module__.startswith("sklearn.") and not hasattr(model, "regressor_")


def _parts(model: Any) -> list[Any]:
    """The fitted models a combiner holds (a Blend's members; a Coded, Prior, TargetEncoded or target-transformed
    model's one), else []."""
    if hasattr(model, "members"):  # a Blend
        return list(model.members)
    if hasattr(model, "groups") or hasattr(model, "priors") or hasattr(model, "encoder"):  # Coded, Prior, TargetEncoded
        return [model.model]
    if hasattr(model, "regressor_"):  # a TransformedTargetRegressor
        return [model.regressor_]
    return []


def required_packages(model: Any) -> list[str]:
    """Packages beyond scikit-learn the model needs to load and predict (CatBoost members need `catboost`)."""
    parts = _parts(model)
    if parts:
        return sorted({name for part in parts for name in required_packages(part)})
    return ["catboost"] if is_catboost(model) else []


def count_parameters(model: Any) -> int:
    """Fitted numbers of a scikit-learn model: tree nodes for forests and boosting, else coefficient entries."""
    parts = _parts(model)
    if parts:
        return sum(count_parameters(m) for m in parts)
    if is_catboost(model):  # symmetric trees: 2**depth leaves each
        return int(model.n_iter_) * 2 ** int(model.depth)
    if hasattr(model, "estimators_"):
        return sum(int(t.tree_.node_count) for t in np.ravel(model.estimators_))
    if hasattr(model, "_predictors"):  # HistGradientBoosting
        return sum(len(p.nodes) for stage in model._predictors for p in stage)
    return sum(int(np.size(v)) for k, v in vars(model).items() if k.endswith("_") and isinstance(v, np.ndarray))
