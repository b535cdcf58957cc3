"""Loading trained models and predicting with them — one place for training, evaluation and packaging.

A model lives in `<run>/models/<model_id>/` with `model.json` (what train returned plus its spec)
and either `model.keras` (loaded with `safe_mode=True`) or `model.joblib` (only ever from the
server's own run folders).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ml_expert.tools.errors import NotFoundError
from ml_expert.tools.workspace import Workspace


def model_dir(ws: Workspace, run_id: str, model_id: str) -> Path:
    return ws.run_dir(run_id) / "models" / model_id


def list_model_ids(ws: Workspace, run_id: str) -> list[str]:
    """Model ids of a run, oldest first."""
    root = ws.run_dir(run_id) / "models"
    metas = [p for p in root.glob("*/model.json")] if root.exists() else []
    return [p.parent.name for p in sorted(metas, key=lambda p: p.stat().st_mtime)]


def load_model_meta(ws: Workspace, run_id: str, model_id: str | None) -> dict[str, Any]:
    """model.json of a model (the latest of the run when model_id is None), or a clear error."""
    ids = list_model_ids(ws, run_id)
    if model_id is None:
        if not ids:
            raise NotFoundError(f"Run {run_id!r} has no trained model yet. Call train(run_id='{run_id}') first.")
        model_id = ids[-1]
    if model_id not in ids:
        raise NotFoundError(f"No model {model_id!r} in run {run_id!r}. Models of this run: {ids or 'none'}.")
    return json.loads((model_dir(ws, run_id, model_id) / "model.json").read_text())


def load_model(path: Path, framework: str) -> Any:
    """Load a saved model file: Keras with safe_mode=True, scikit-learn with joblib."""
    if framework == "keras":
        import keras

        return keras.saving.load_model(path, safe_mode=True, compile=False)
    import joblib

    from ml_expert.tools import transformers  # noqa: F401 - makes pickled transformers importable

    return joblib.load(path)


def predict_output(model: Any, framework: str, task: str, X: np.ndarray) -> np.ndarray:
    """Class probabilities (n, k) for classification, values (n,) for regression, cluster ids for clustering."""
    if framework == "keras":
        out = np.asarray(model.predict(as_model_input(X), batch_size=1024, verbose=0), dtype=np.float64)
        return out if task in ("binary", "multiclass") else out.reshape(len(X), -1)[:, 0]
    if task in ("binary", "multiclass"):
        return np.asarray(model.predict_proba(X), dtype=np.float64)
    return np.asarray(model.predict(X), dtype=np.float64)


def as_model_input(X: Any) -> Any:
    """Text arrays become string tensors (Keras does not take numpy unicode arrays); others pass through."""
    if isinstance(X, np.ndarray) and X.dtype.kind in "USO":
        import tensorflow as tf

        return tf.constant(X.astype(str))
    return X


def val_score(task: str, y_true: np.ndarray, output: np.ndarray, X: np.ndarray | None = None) -> dict[str, float]:
    """The headline validation metrics: balanced accuracy + accuracy (classification), R² + RMSE (regression)."""
    from sklearn import metrics

    if task in ("binary", "multiclass"):
        pred = output.argmax(axis=1)
        return {
            "balanced_accuracy": float(metrics.balanced_accuracy_score(y_true, pred)),
            "accuracy": float(metrics.accuracy_score(y_true, pred)),
        }
    if task == "clustering":
        score = metrics.silhouette_score(X, output) if X is not None and len(set(output)) > 1 else -1.0
        return {"silhouette": float(score), "adjusted_rand": float(metrics.adjusted_rand_score(y_true, output))}
    return {
        "r2": float(metrics.r2_score(y_true, output)),
        "rmse": float(np.sqrt(metrics.mean_squared_error(y_true, output))),
    }


def baseline_score(task: str, y_train: np.ndarray, y_true: np.ndarray) -> dict[str, float]:
    """The dummy baseline on the same split: majority class, or the training mean."""
    if task in ("binary", "multiclass"):
        k = int(max(y_train.max(), y_true.max())) + 1
        majority = np.bincount(y_train.astype(int), minlength=k).argmax()
        probs = np.zeros((len(y_true), k))
        probs[:, majority] = 1.0
        return val_score(task, y_true, probs)
    if task == "clustering":
        return {"silhouette": 0.0, "adjusted_rand": 0.0}
    return val_score(task, y_true, np.full(len(y_true), float(np.mean(y_train))))


def beats_baseline(task: str, metrics: dict[str, float], baseline: dict[str, float]) -> bool:
    """True when the main metric clears the dummy baseline by a margin that noise rarely reaches."""
    key = main_key(task)
    margin = 0.05 if key == "r2" else 0.02
    return metrics[key] > baseline[key] + margin


def main_key(task: str) -> str:
    """The metric that ranks models: balanced accuracy, R², or adjusted Rand for clustering."""
    return {"binary": "balanced_accuracy", "multiclass": "balanced_accuracy", "regression": "r2"}.get(
        task, "adjusted_rand"
    )
