"""scikit-learn training inside a worker, with per-stage curves under Keras' history names."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ml_expert.tools.models import CLUSTERING_ARCHITECTURES, TrainConfig, build_sklearn
from ml_expert.tools.predict import predict_output


def _sklearn_history(model: Any, task: str, data: dict[str, Any]) -> dict[str, list[float]]:
    """Per-iteration curves for boosting, per-tree-count for forests, one point otherwise (Keras' key names)."""
    from sklearn.metrics import accuracy_score, log_loss, mean_absolute_error, mean_squared_error

    classify = task in ("binary", "multiclass")
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
        for k in np.unique(np.linspace(1, len(trees), num=min(20, len(trees))).astype(int)):
            pair = []
            for s in ("train", "val"):
                preds = [t.predict_proba(data[f"X_{s}"]) if classify else t.predict(data[f"X_{s}"]) for t in trees[:k]]
                pair.append(np.mean(preds, axis=0))
            stages.append((pair[0], pair[1]))
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
    spec: dict[str, Any], prepared: dict[str, Any], data: dict[str, Any], reporter: Any, class_weight: Any
) -> dict[str, Any]:
    import joblib  # noqa: F401 - saved by the caller

    config = TrainConfig(**spec["config"])
    task = prepared["task_type"]
    arch = spec["architecture"]
    n_classes = len(prepared["label_mapping"] or {}) or 1
    fit_task = "clustering" if arch in CLUSTERING_ARCHITECTURES else task
    model = build_sklearn(arch, fit_task, config, "balanced" if class_weight else None, n_classes)
    reporter.progress(force=True, phase="train", step=0, total=1, message=f"fitting {arch}")
    start = time.perf_counter()
    model.fit(data["X_train"], data["y_train"])
    seconds = time.perf_counter() - start
    history = {} if fit_task == "clustering" else _sklearn_history(model, task, data)
    params = sum(int(np.size(v)) for k, v in vars(model).items() if k.endswith("_") and isinstance(v, np.ndarray))
    if hasattr(model, "estimators_"):  # forests: tree nodes
        params = sum(int(t.tree_.node_count) for t in np.ravel(model.estimators_))
    elif hasattr(model, "_predictors"):  # HistGradientBoosting: tree nodes
        params = sum(len(p.nodes) for stage in model._predictors for p in stage)
    reporter.progress(force=True, phase="train", step=1, total=1, message=f"fitted {arch} in {seconds:.1f}s")
    return {
        "model": model,
        "framework": "sklearn",
        "epochs_trained": max(1, len(history.get("loss", []))),
        "best_epoch": None,
        "seconds": seconds,
        "parameters": params,
        "history": history,
        "distribution": None,
    }
