"""Phase 3 — `train`: Keras networks or scikit-learn models, as background jobs.

`train_spec` checks a request and builds the `TrainSpec` (the tool, `run_workflow` and the CLI all
go through it); `train` submits it and waits up to `wait_seconds` while the worker process
(`run_train_job`, where TensorFlow is imported) fits the model with the seed's callbacks, reports
every epoch, honours cancel requests at batch boundaries, and writes `model.keras` /
`model.joblib`, `training_history.json` and `training_curves.png`. Stores `ml-expert/training`.
"""

from __future__ import annotations

import shutil
import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, ValidationError

from ml_expert.memory.errors import InvalidInputError
from ml_expert.tools import runs
from ml_expert.tools.artifacts import load_pickle, load_prepared, load_split, model_dir, predict_output, save_model
from ml_expert.tools.core.architectures import Architecture, is_clustering, is_keras
from ml_expert.tools.core.lazy import lazy_import
from ml_expert.tools.core.plots import search_curve, training_curves
from ml_expert.tools.core.prepared import PreparedData
from ml_expert.tools.core.scoring import (
    IMBALANCE_RATIO,
    baseline_scores,
    beats_baseline,
    headline,
    imbalance_ratio,
    is_imbalanced,
    scores,
)
from ml_expert.tools.core.tasks import is_classification
from ml_expert.tools.data.encoding import one_hot_groups, ordinal_columns
from ml_expert.tools.jobs.manager import run_as_job
from ml_expert.tools.jobs.specs import JobCancelled, JobStatus, ProgressFn, Reporter, WaitSeconds
from ml_expert.tools.selection.recommend import analyze_task, rank_candidates
from ml_expert.tools.training import distributed, transfer
from ml_expert.tools.training.config import Distribution, Fit, TimeBudget, TrainConfig, TrainSpec, used_config
from ml_expert.tools.training.sklearn_models import count_parameters, fit_sklearn, is_plain_estimator
from ml_expert.tools.workspace import Workspace, new_id, write_json

np = lazy_import("numpy")  # loads on first use, not at server start


class TrainResult(BaseModel):
    """A trained model; pass model_id to evaluate and package."""

    run_id: str
    model_id: str
    architecture: str
    framework: Literal["keras", "sklearn"]
    task_type: str
    epochs_trained: int = Field(
        description="Keras: epochs run; scikit-learn: points of its training curve (trees, iterations); auto: the "
        "candidates the search tried."
    )
    best_epoch: int | None
    train_seconds: float
    parameters: int
    val_metrics: dict[str, float]
    baseline_val_metrics: dict[str, float] = Field(description="Dummy baseline (majority class / mean) on validation.")
    learned: bool = Field(description="False when the validation score is not above the dummy baseline.")
    notes: list[str]
    config: dict[str, Any] = Field(description="The settings this architecture used (the others are ignored by it).")
    distribution: dict[str, Any] | None = None
    transfer: dict[str, Any] | None = Field(
        None, description="Transfer learning: base model, layers kept frozen / fine-tuned, epochs per stage."
    )
    search: dict[str, Any] | None = Field(
        None, description="architecture='auto': metric, folds, chosen model(s), CV score, leaderboard (top 30)."
    )
    resumed: bool = False
    cancelled: bool = False
    artifacts: dict[str, str]
    next_step: str


def resolve_architecture(ws: Workspace, run_id: str, architecture: str, prepared: PreparedData) -> str:
    """`auto` stays `auto` (the model search) on tabular classification and regression; elsewhere it is the
    run's recommendation (or the rule-based top pick). Check the choice fits the task."""
    searchable = prepared.modality == "tabular" and prepared.task_type != "clustering"
    if architecture == "auto" and searchable:
        return "auto"
    if architecture == "auto":
        stored = ws.store.get_value(
            runs.memory_key(f"runs/{run_id}/architecture"), namespace=runs.run_namespace(ws, run_id)
        )
        architecture = stored["recommended"] if stored else rank_candidates(analyze_task(prepared, 0))[0].architecture
    modality = prepared.modality
    if architecture == "cnn" and modality != "image":
        raise InvalidInputError(
            f"architecture 'cnn' needs image data; run {run_id} is {modality}. "
            "Use dnn, gradient_boosting, random_forest or linear."
        )
    if architecture in ("rnn", "conv1d", "transformer") and modality not in ("sequence", "text"):
        raise InvalidInputError(
            f"architecture {architecture!r} needs sequence or text data; run {run_id} is "
            f"{modality}. Use dnn or a tree model."
        )
    if modality in ("image", "sequence", "text") and not is_keras(architecture):
        raise InvalidInputError(
            f"{modality} data needs a Keras network (cnn, rnn, conv1d, transformer, dnn); received {architecture!r}."
        )
    return architecture


def parse_config(config: TrainConfig | dict[str, Any] | None) -> TrainConfig:
    """A TrainConfig from a model, a dict of its fields, or None (the seed's defaults); unknown fields refused."""
    if isinstance(config, TrainConfig):
        return config
    try:
        return TrainConfig.model_validate(config or {})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in exc.errors())
        raise InvalidInputError(
            f"config is not a valid training configuration ({problems}). Allowed fields: "
            f"{sorted(TrainConfig.model_fields)}."
        ) from exc


def _check_transfer(ws: Workspace, prepared: PreparedData, base_model: str | None, layers: int, freeze: bool) -> str:
    """The checked base model's absolute path ('' without transfer learning)."""
    if base_model is None:
        if layers or not freeze:
            raise InvalidInputError("fine_tune_layers and freeze apply to transfer learning; pass base_model too.")
        return ""
    if layers and not freeze:
        raise InvalidInputError(
            "fine_tune_layers unfreezes layers of a frozen base; with freeze=false every layer trains already. "
            "Pass one or the other."
        )
    path = transfer.resolve_base_model(ws, base_model)
    stored = transfer.stored_input_shape(path)
    if stored is not None:  # a clear error now rather than a failed job
        transfer.check_input_shape(stored, prepared.input_shape or [prepared.features_out])
    return str(path)


def train_spec(
    ws: Workspace,
    run_id: str,
    architecture: str = "auto",
    config: TrainConfig | dict[str, Any] | None = None,
    distribution: Distribution = "none",
    base_model: str | None = None,
    fine_tune_layers: int = 0,
    freeze: bool = True,
    time_budget_s: float = 60.0,
) -> TrainSpec:
    """Check a train request against the run and build its job spec (every caller goes through here)."""
    prepared = load_prepared(ws, run_id)
    arch = resolve_architecture(ws, run_id, architecture, prepared)
    train_config = parse_config(config)
    if arch == "auto" and (base_model is not None or distribution != "none"):
        raise InvalidInputError(
            "architecture='auto' searches scikit-learn models; base_model and distribution apply to Keras networks. "
            "Pass architecture='dnn' (or cnn, rnn, …) with them."
        )
    if distribution != "none" and not is_keras(arch):
        raise InvalidInputError(
            f"distribution={distribution!r} applies to Keras models; {arch!r} is scikit-learn. Use distribution='none'."
        )
    if distribution == "multi_worker":
        distributed.cluster_spec()  # a clear error now, not in the worker, when TF_CONFIG is missing or malformed
    base = _check_transfer(ws, prepared, base_model, fine_tune_layers, freeze)
    return TrainSpec(
        run_id=run_id,
        model_id=new_id("mdl"),
        architecture=arch,
        config=train_config,
        distribution=distribution,
        base_model=base or None,
        fine_tune_layers=fine_tune_layers,
        freeze=freeze,
        time_budget_s=time_budget_s,
    )


def train(
    ws: Workspace,
    run_id: runs.RunId,
    architecture: Annotated[Architecture, Field(description="Model family; 'auto' = the recommendation.")] = "auto",
    config: Annotated[TrainConfig | None, Field(description="Hyper-parameters (seed defaults when omitted).")] = None,
    distribution: Annotated[
        Distribution, Field(description="none, mirrored (all local GPUs / CPU replicas) or multi_worker (TF_CONFIG).")
    ] = "none",
    base_model: Annotated[
        str | None, Field(description="Transfer learning: a model_id of this workspace or a .keras file inside it.")
    ] = None,
    fine_tune_layers: Annotated[
        int, Field(description="With base_model: unfreeze this many top base layers for a second, low-LR stage.", ge=0)
    ] = 0,
    freeze: Annotated[
        bool, Field(description="With base_model: keep the base frozen while the new head trains (false: train all).")
    ] = True,
    time_budget_s: TimeBudget = 60,
    wait_seconds: WaitSeconds = None,
    report: ProgressFn | None = None,
) -> JobStatus:
    """Train a model on the run's prepared data as a job ('auto' on a table: a time-budgeted search, leaderboard).

    When status is 'running', follow with get_job(job_id). Then call evaluate(run_id, model_id).
    """
    spec = train_spec(
        ws, run_id, architecture, config, distribution, base_model, fine_tune_layers, freeze, time_budget_s
    )
    return run_as_job(ws, spec, namespace=runs.run_namespace(ws, run_id), wait_seconds=wait_seconds, report=report)


# -- worker side ------------------------------------------------------------------------------


def class_weights(task: str, y: np.ndarray, choice: str) -> tuple[dict[int, float] | None, str | None]:
    """Balanced class weights when asked, or automatically when the classes are imbalanced (the one rule,
    `is_imbalanced`, that also makes `auto` search for balanced accuracy); with a note saying so."""
    if not is_classification(task) or choice == "none":
        return None, None
    ratio = imbalance_ratio(y)
    if choice == "auto" and not is_imbalanced(y):
        return None, None
    from sklearn.utils.class_weight import compute_class_weight

    classes = np.unique(y)
    weights = compute_class_weight("balanced", classes=classes, y=y)
    note = f"class_weight='balanced' applied (training imbalance ratio {ratio:.1f}:1" + (
        f", >= {IMBALANCE_RATIO:g})." if choice == "auto" else ")."
    )
    return {int(c): float(w) for c, w in zip(classes, weights, strict=True)}, note


def _fit(
    ws: Workspace,
    spec: TrainSpec,
    prepared: PreparedData,
    data: dict[str, Any],
    reporter: Reporter,
    weights: Any,
    job_started: float,
) -> Fit:
    folder = model_dir(ws, spec.run_id, spec.model_id)
    if spec.architecture == "auto":
        return _fit_search(ws, spec, prepared, data, reporter, job_started)
    if is_keras(spec.architecture):
        from ml_expert.tools.training.keras_fit import fit_keras  # TensorFlow: imported in the worker only

        return fit_keras(ws, spec, prepared, data, folder, reporter, weights)
    return fit_sklearn(spec, prepared, data, reporter, weights)


def _fit_search(
    ws: Workspace, spec: TrainSpec, prepared: PreparedData, data: dict[str, Any], reporter: Reporter, job_started: float
) -> Fit:
    """architecture='auto': the model search over all training rows (train + validation), refit included."""
    from ml_expert.tools.training.auto import run_search  # the search engine: in the train job only

    X = np.concatenate([data["X_train"], data["X_val"]])
    y = np.concatenate([data["y_train"], data["y_val"]])
    started = time.perf_counter()
    # time_budget_s covers the train job: what loading took, and what saving and scoring will take after the
    # search (about a second per 2M rows), come out of the search's share
    budget = max(5.0, spec.time_budget_s - (started - job_started) - len(y) / 2e6)
    outcome = run_search(
        X,
        y,
        prepared.task_type,
        budget,
        seed=spec.config.seed,
        reporter=reporter,
        scheduler=ws.settings.dask_scheduler,
        helper=ws.settings.fit_helper,
        **search_layout(ws, spec.run_id, prepared, ("train", "val")),
    )
    summary = outcome.summary.model_dump() | {"onnx": is_plain_estimator(outcome.model)}
    return Fit(
        model=outcome.model,
        framework="sklearn",
        epochs_trained=summary["candidates"],
        best_epoch=None,
        seconds=time.perf_counter() - started,
        parameters=count_parameters(outcome.model),
        history={f"cv_{outcome.metric}": outcome.trace},
        out_of_fold=(outcome.y_seen, outcome.oof),
        search=summary | {"leaderboard": outcome.leaderboard},
    )


def search_layout(ws: Workspace, run_id: str, prepared: PreparedData, splits: tuple[str, ...]) -> dict[str, Any]:
    """The `Search` options the run's data layout sets for the rows of `splits`, in order: its split strategy, the
    groups of a grouped split, the prepared columns of each one-hot encoded categorical and the ordinal-encoded ones
    (what the tree families see as category codes; none without a preprocessor)."""
    strategy = (prepared.options or {}).get("split_strategy", "random")
    data_dir = ws.run_dir(run_id) / "data"
    layout: dict[str, Any] = {"split_strategy": strategy, "groups": None}
    if strategy == "group" and all((data_dir / f"groups_{s}.npy").exists() for s in splits):
        layout["groups"] = np.concatenate([np.load(data_dir / f"groups_{s}.npy") for s in splits])
    path = ws.run_dir(run_id) / "preprocessor.joblib"
    if path.exists():
        pre = load_pickle(ws, path)
        layout |= {"categorical_groups": one_hot_groups(pre), "ordinal_columns": ordinal_columns(pre)}
    return layout


def _write_curves(ws: Workspace, spec: TrainSpec, fit: Fit, folder: Any) -> dict[str, str]:
    """training_history.json and training_curves.png, in the model folder and (latest model) at the run root."""
    history_path, curves = folder / "training_history.json", folder / "training_curves.png"
    write_json(history_path, fit.history)
    title = f"{spec.architecture} — {spec.run_id}/{spec.model_id}"
    if fit.search:
        search_curve(fit.history, curves, title)
    elif fit.history:
        training_curves(fit.history, curves, title, "Epoch" if fit.framework == "keras" else "Stage")
    for f in (history_path, curves):
        if f.exists():
            shutil.copy(f, ws.run_dir(spec.run_id) / f.name)
    return {"history": ws.relative(history_path), "curves": ws.relative(curves)}


def _clean_backups(folder: Any) -> None:
    for backup in ("backup", "backup_finetune"):
        for suffix in ("", ".good", ".old", ".tmp"):
            shutil.rmtree(folder / f"{backup}{suffix}", ignore_errors=True)


class WorkerTaskResult(BaseModel):
    """What a non-chief task of a multi-worker cluster returns: the chief keeps the model."""

    run_id: str
    model_id: str
    chief: bool = False
    distribution: dict[str, Any] | None
    next_step: str = "The chief worker records the model; evaluate it there."


def _validate(
    fit: Fit, task: str, prepared: PreparedData, data: dict[str, Any], notes: list[str]
) -> tuple[dict[str, float], dict[str, float], bool]:
    """Validation metrics, the dummy baseline's, and whether the model beat it (with a note when not)."""
    n_classes = len(prepared.label_mapping or {}) or 1
    if fit.out_of_fold is not None:  # a search refit on train + validation: score its cross-validation instead
        y_seen, output = fit.out_of_fold
        metrics = headline(task, scores(task, y_seen, output))
        baseline = headline(task, baseline_scores(task, y_seen, y_seen, n_classes))
        notes.append(
            "Refit on train + validation rows: val_metrics are out-of-fold cross-validation scores; the test split "
            "is the only data the model has not seen."
        )
    else:
        output = predict_output(fit.model, fit.framework, task, data["X_val"])
        metrics = headline(task, scores(task, data["y_val"], output, data["X_val"]))
        baseline = headline(task, baseline_scores(task, data["y_train"], data["y_val"], n_classes))
    learned = beats_baseline(task, metrics, baseline)
    if not learned:
        primary = next(iter(metrics))
        notes.append(
            f"The model did not beat the dummy baseline on validation ({primary} {metrics[primary]:.4f} vs "
            f"{baseline[primary]:.4f}): it learned nothing useful. Check the target, features and scaling."
        )
    return metrics, baseline, learned


def run_train_job(ws: Workspace, spec: TrainSpec, reporter: Reporter) -> TrainResult | WorkerTaskResult:
    """Worker entry for kind 'train': fit, score on validation against the dummy baseline, save, record."""
    run_id, model_id, arch = spec.run_id, spec.model_id, spec.architecture
    prepared = load_prepared(ws, run_id)
    job_started = time.perf_counter()
    data: dict[str, Any] = {}
    for split in ("train", "val"):
        data[f"X_{split}"], data[f"y_{split}"] = load_split(ws, run_id, split)
    folder = model_dir(ws, run_id, model_id)
    folder.mkdir(parents=True, exist_ok=True)
    weights, note = class_weights(prepared.task_type, data["y_train"], spec.config.class_weight)
    notes = [note] if note else []
    try:
        with reporter.graceful():  # a cancel stops fitting at the next batch / chunk and keeps what it has
            fit = _fit(ws, spec, prepared, data, reporter, weights, job_started)
    except JobCancelled:  # cancelled before there was anything to keep: leave no empty model folder
        shutil.rmtree(folder, ignore_errors=True)
        raise
    if fit.distribution and fit.distribution.get("chief") is False:  # only the chief keeps a model
        shutil.rmtree(folder, ignore_errors=True)
        return WorkerTaskResult(run_id=run_id, model_id=model_id, distribution=fit.distribution)
    model_file = save_model(ws, fit.model, fit.framework, folder)
    task = "clustering" if is_clustering(arch) else prepared.task_type
    metrics, baseline, learned = _validate(fit, task, prepared, data, notes)
    for family, error in ((fit.search or {}).get("failed_families") or {}).items():
        why = (
            "Its fits need more memory than a cluster worker has."
            if error.startswith("WorkerKilled")
            else "That is a defect or a column type the library cannot take: report it with this job's log."
        )
        notes.append(
            f"Warning: every {family} fit of the search failed ({error}); the model was chosen without that family. "
            + why
        )
    cancelled = reporter.cancel_requested()
    if cancelled:
        notes.append("Cancelled on request; the best weights so far were kept.")
    result = TrainResult(
        run_id=run_id,
        model_id=model_id,
        architecture=arch,
        framework=fit.framework,
        task_type=task,
        epochs_trained=fit.epochs_trained,
        best_epoch=fit.best_epoch,
        train_seconds=round(fit.seconds, 3),
        parameters=fit.parameters,
        val_metrics=metrics,
        baseline_val_metrics=baseline,
        learned=learned,
        notes=notes,
        config=used_config(spec.config, arch, task),
        distribution=fit.distribution,
        transfer=fit.transfer,
        search=fit.search,
        resumed=spec.resume,
        cancelled=cancelled,
        artifacts={
            "model": ws.relative(model_file),
            **_write_curves(ws, spec, fit, folder),
            "folder": ws.relative(folder),
        },
        next_step=f"Call evaluate(run_id='{run_id}', model_id='{model_id}') for test metrics and the report.",
    )
    meta = result.model_dump(mode="json") | {"spec": spec.model_dump(mode="json"), "created_at": time.time()}
    write_json(folder / "model.json", meta)
    memory: dict[str, Any] = {"training": result}
    if fit.search:  # the search is the architecture choice too
        memory["architecture"] = {"recommended": "auto", "model_id": model_id, **fit.search}
    runs.record_phase(ws, run_id, "train", memory, artifacts=result.artifacts)
    if cancelled:  # its backups stay: resume_job continues from the last epoch, as it does after an interruption
        raise JobCancelled(result)
    _clean_backups(folder)
    return result
