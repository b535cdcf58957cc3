"""The probe of `recommend_architecture(probe_seconds>0)`: measure candidate architectures within a time
budget, with the model search's engine on tables; the job kind 'probe' (worker side only). Ranking stays in
selection (`recommend`), which this trainer feeds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ml_expert.tools.artifacts import load_prepared, load_split, predict_output
from ml_expert.tools.core.architectures import is_keras
from ml_expert.tools.core.lazy import lazy_import
from ml_expert.tools.core.prepared import PreparedData
from ml_expert.tools.core.scoring import headline, main_key, rank_score, scores, search_metric
from ml_expert.tools.jobs.specs import Reporter
from ml_expert.tools.selection.recommend import ArchitectureRecommendation, Measure, ProbeSpec, recommend
from ml_expert.tools.training.config import TrainConfig
from ml_expert.tools.training.portfolio import config
from ml_expert.tools.training.search import cross_validate
from ml_expert.tools.training.sklearn_models import build_sklearn
from ml_expert.tools.workspace import Workspace

np = lazy_import("numpy")  # loads on first use, not at server start

FAMILIES = {"gradient_boosting": "hgb", "random_forest": "rf", "linear": "linear"}


def measure(
    ws: Workspace, run_id: str, architectures: list[str], budget: float, reporter: Reporter
) -> dict[str, dict[str, float]]:
    """Fit each architecture within its share of the budget: architecture -> metrics, score, fit seconds.

    On a table the scikit-learn families are cross-validated over train + validation by the model search's
    engine and networks are scored on validation, all with the search's metric; elsewhere (images,
    sequences, text, clustering) each candidate is fitted on train and scored on validation."""
    prepared = load_prepared(ws, run_id)
    task = prepared.task_type
    X_tr, y_tr = load_split(ws, run_id, "train")
    X_va, y_va = load_split(ws, run_id, "val")
    tabular = prepared.modality == "tabular" and task != "clustering"
    metric = search_metric(task, np.concatenate([y_tr, y_va])) if tabular else None
    share = budget / len(architectures)
    out: dict[str, dict[str, float]] = {}
    for i, arch in enumerate(architectures):
        reporter.progress(force=True, step=i, total=len(architectures), message=f"probing {arch}")
        start = time.perf_counter()
        if metric and arch in FAMILIES:
            trial = cross_validate(
                np.concatenate([X_tr, X_va]), np.concatenate([y_tr, y_va]), task, config(FAMILIES[arch]), share
            )
            value = trial.mean
        else:
            output = _fit_on_train(arch, prepared, X_tr, y_tr, X_va, y_va, start + share, reporter.cancel_requested)
            value = (
                rank_score(metric, y_va, output)
                if metric
                else next(iter(headline(task, scores(task, y_va, output, X_va)).values()))
            )
        shown = -value if metric == "rmse" else value
        out[arch] = {
            metric or main_key(task): float(shown),
            "score": float(np.nan_to_num(value, nan=-1.0)),
            "fit_seconds": round(time.perf_counter() - start, 3),
        }
    n = len(architectures)  # progress calls are cancel points: a cancelled probe ends here, before any ranking
    reporter.progress(force=True, step=n, total=n, message="ranking the measured candidates")
    return out


def _fit_on_train(
    arch: str,
    prepared: PreparedData,
    X_tr: Any,
    y_tr: Any,
    X_va: Any,
    y_va: Any,
    deadline: float,
    cancelled: Callable[[], bool],
) -> Any:
    task = prepared.task_type
    n_classes = len(prepared.label_mapping or {}) or 1
    if is_keras(arch):
        from ml_expert.tools.training.keras_fit import fit_keras_quick  # TensorFlow: worker only

        data = {"X_train": X_tr, "y_train": y_tr, "X_val": X_va, "y_val": y_va}
        model = fit_keras_quick(arch, data, task, n_classes, prepared, deadline, cancelled)  # stops on cancel
        return predict_output(model, "keras", task, X_va)
    model = build_sklearn(arch, task, TrainConfig(n_estimators=100, max_iter=100), None, n_classes)
    model.fit(X_tr, y_tr)
    return predict_output(model, "sklearn", task, X_va)


def run_probe_job(ws: Workspace, spec: ProbeSpec, reporter: Reporter) -> ArchitectureRecommendation:
    """Worker entry for kind 'probe': the recommendation with measured candidates."""
    return recommend(ws, spec.run_id, spec.max_candidates, probe_measure(ws, spec.run_id, spec.probe_seconds, reporter))


def probe_measure(ws: Workspace, run_id: str, budget: float, reporter: Reporter) -> Measure:
    """`measure` bound to a run and a budget, as `recommend` takes it."""
    return lambda architectures: measure(ws, run_id, architectures, budget, reporter)
