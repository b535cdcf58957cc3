"""The probe of `recommend_architecture(probe_seconds>0)`: fit candidate architectures on the
training split within a time budget and score each on the validation split (worker side only).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from ml_expert.tools.artifacts import load_prepared, load_split, predict_output
from ml_expert.tools.evaluation.metrics import headline, scores
from ml_expert.tools.training.config import TrainConfig, is_keras
from ml_expert.tools.training.sklearn_models import build_sklearn
from ml_expert.tools.workspace import Workspace


def measure(
    ws: Workspace, run_id: str, architectures: list[str], budget: float, reporter: Any
) -> dict[str, dict[str, float]]:
    """Fit each architecture within its share of the budget; architecture -> validation metrics, score, seconds."""
    prepared = load_prepared(ws, run_id)
    task = prepared["task_type"]
    X_tr, y_tr = load_split(ws, run_id, "train")
    X_va, y_va = load_split(ws, run_id, "val")
    n_classes = len(prepared["label_mapping"] or {}) or 1
    share = budget / len(architectures)
    out: dict[str, dict[str, float]] = {}
    for i, arch in enumerate(architectures):
        reporter.progress(force=True, step=i, total=len(architectures), message=f"probing {arch}")
        start = time.perf_counter()
        if is_keras(arch):
            from ml_expert.tools.training.keras_fit import fit_keras_quick  # TensorFlow: worker only

            data = {"X_train": X_tr, "y_train": y_tr, "X_val": X_va, "y_val": y_va}
            model = fit_keras_quick(arch, data, task, n_classes, prepared, deadline=start + share)
            output = predict_output(model, "keras", task, X_va)
        else:
            config = TrainConfig(n_estimators=100, max_iter=100)
            model = build_sklearn(arch, task, config, None, n_classes)
            model.fit(X_tr, y_tr)
            output = predict_output(model, "sklearn", task, X_va)
        metrics = headline(task, scores(task, y_va, output, X_va))
        primary = next(iter(metrics.values()))
        out[arch] = {**metrics, "score": float(primary), "fit_seconds": round(time.perf_counter() - start, 3)}
        if not math.isfinite(primary):
            out[arch]["score"] = float(np.nan_to_num(primary, nan=-1.0))
    return out
