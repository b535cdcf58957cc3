"""The `explain` tool: which raw columns drive a trained model, globally and for given rows.

Everything works on raw columns through the whole pipeline (the package's `ModelInference`: column
conversion, the fitted preprocessor, the model or ensemble), never on one-hot slots:
- global: scikit-learn `permutation_importance` on rows the model did not learn from (the run's ranking metric:
  balanced accuracy or R²; mean ± std over repeats): the validation split, or the test split for an `auto` model
  (its search learned from training and validation rows) and, for a refit on all rows, that of the model it refits
  (`_importance_source`); and `PartialDependenceDisplay` for the top 3
  numeric / categorical columns (for multiclass: the probability of the most frequent class);
- local, for rows the caller passes: Shapley values per raw column with the `shap` library, exact
  (`shap.explainers.Exact`, every coalition) up to EXACT_MAX_COLUMNS columns, permutation sampling
  above (`shap.explainers.Permutation`, whose values still add up exactly to the prediction). Columns
  are masked with values of background rows of that split (interventional Shapley values); the explained
  quantity is the predicted class's probability, or the predicted value.
Results: `importance.json`, `partial_dependence.png` / `.json`, `explanations.json` (model folder and
the run folder), memory `ml-expert/explanations`, and an "Explanations" section in the model's
`evaluation_report.md`. Runs as a job.
"""

from __future__ import annotations

import json
import shutil
from typing import Annotated, Any

from pydantic import BaseModel, Field

from ml_expert.memory.errors import InvalidInputError, TrainingError
from ml_expert.tools import runs
from ml_expert.tools.artifacts import ModelJobSpec, model_dir
from ml_expert.tools.core.tasks import is_classification
from ml_expert.tools.jobs.manager import run_as_job
from ml_expert.tools.jobs.specs import JobCancelled, JobStatus, ProgressFn, Reporter, WaitSeconds
from ml_expert.tools.prediction.drift import column_findings
from ml_expert.tools.prediction.predict import ModelRef, RunRef, load_inference, resolve_model
from ml_expert.tools.prediction.shapley import LocalExplanation, shapley_rows
from ml_expert.tools.workspace import Workspace, write_json

MAX_ROWS = 20
MAX_IMPORTANCE_ROWS = 2000
MIN_IMPORTANCE_ROWS = 200
MAX_PERMUTED_ROWS = 400_000  # rows re-predicted by permutation importance, all columns × repeats together
PREDICT_CHUNK = 50_000  # rows per prediction call while permuting
PDP_GRID = 20
PDP_COLUMNS = 3
PDP_KINDS = ("numeric", "boolean", "categorical")


class ExplainSpec(ModelJobSpec):
    kind = "explain"
    rows: list[dict[str, Any]] | None = None
    top_k: int = Field(10, ge=1, le=100)
    n_repeats: int = Field(5, ge=2, le=30)
    seed: int = 0


class ColumnImportance(BaseModel):
    column: str
    importance: float = Field(description="Mean drop of the metric when the column is shuffled.")
    std: float


class PartialDependence(BaseModel):
    column: str
    grid: list[Any]
    average: list[float] = Field(description="Average prediction (probability or value) at each grid value.")
    of: str = Field("value", description="What is averaged: P(<class>) of one class, or the predicted value.")


class ExplainResult(BaseModel):
    run_id: str
    model_id: str
    metric: str
    split: str = Field(description="The split importance is measured on.")
    rows_used: int
    score: float = Field(description="The metric on those rows, nothing shuffled.")
    importance: list[ColumnImportance] = Field(description="Top columns, most important first.")
    partial_dependence: list[PartialDependence]
    local: list[LocalExplanation] | None = None
    local_method: str | None = None
    refused: dict[int, str] | None = Field(None, description="Given rows that could not be explained, and why.")
    notes: list[str] = Field(
        default_factory=list, description="Where a bound decided something (rows sampled, repeats cut), and why."
    )
    warnings: list[str] = Field(
        default_factory=list,
        description="Parts that could not be computed (a plot, the Shapley values), and why; the rest stands.",
    )
    artifacts: dict[str, str]
    resources: dict[str, str]
    next_step: str


def explain(
    ws: Workspace,
    run_id: RunRef = None,
    model_id: ModelRef = None,
    rows: Annotated[
        list[dict[str, Any]] | None,
        Field(description=f"Up to {MAX_ROWS} raw rows to explain one by one (Shapley values).", max_length=MAX_ROWS),
    ] = None,
    top_k: Annotated[int, Field(description="How many columns to list.", ge=1, le=100)] = 10,
    wait_seconds: WaitSeconds = None,
    report: ProgressFn | None = None,
) -> ExplainResult | JobStatus:
    """Why the model decides as it does: permutation importance of raw columns on rows it did not learn from,
    partial dependence of the top 3, Shapley contributions per column for the rows you pass.

    A long run returns its job (follow with get_job).
    """
    run_id, meta = resolve_model(ws, run_id, model_id)
    schema = json.loads((ws.run_dir(run_id) / "schema.json").read_text())
    if schema.get("modality", "tabular") != "tabular":
        raise InvalidInputError(f"explain works on tables; this run's data are {schema['modality']}.")
    if meta.task_type == "clustering":
        raise InvalidInputError(
            f"explain scores a model against the target it learned; {meta.model_id} is a {meta.architecture} "
            "clustering, which learned no target. Explain a classifier or regressor of this run (train(run_id="
            f"'{run_id}', architecture='auto')), or read the clusters with predict."
        )
    spec = ExplainSpec(run_id=run_id, model_id=meta.model_id, rows=rows, top_k=top_k)
    namespace = runs.run_namespace(ws, run_id)
    status = run_as_job(ws, spec, namespace=namespace, wait_seconds=wait_seconds, report=report)
    if status.status == "succeeded":
        return ExplainResult.model_validate(status.result)
    if status.status in ("queued", "running"):
        return status
    raise TrainingError(f"The explain job {status.job_id} ended {status.status}: {status.error}")


def run_explain_job(ws: Workspace, spec: ExplainSpec, reporter: Reporter) -> ExplainResult:
    """Worker entry for kind 'explain'. A part that fails (a plot, the Shapley values) becomes a warning."""
    from ml_expert.tools.evaluation.report import refresh_explanations

    model = load_inference(ws, spec.run_id, spec.model_id)
    split, source, source_note = _importance_source(ws, spec)
    X, y, split, repeats, notes = _importance_rows(ws, spec, split)
    notes = [source_note, *notes] if source_note else notes
    measured = model if source == spec.model_id else load_inference(ws, spec.run_id, source)
    reporter.progress(force=True, phase="importance", message=f"permutation importance on {len(X)} {split} rows")
    metric, score, importance = permutation_ranking(measured, X, y, repeats, spec.seed, reporter)
    reporter.progress(force=True, phase="partial dependence", message="partial dependence of the top columns")
    folder = model_dir(ws, spec.run_id, spec.model_id)
    kinds = {c["name"]: c["kind"] for c in model.schema["columns"]}
    top = [c.column for c in importance if kinds[c.column] in PDP_KINDS and c.importance > 0][:PDP_COLUMNS]
    if not top:
        notes.append(
            "No partial dependence: shuffling no column lowered the model's score on these rows (every importance "
            "is zero or below), so no column's curve would show what the model relies on."
        )
    (folder / "partial_dependence.png").unlink(missing_ok=True)  # never leave an older model's picture
    pdp, warnings = partial_dependence_plot(model, X, y, top, kinds, folder / "partial_dependence.png")
    local, method, refused = None, None, None
    if spec.rows:
        profile = ws.run_dir(spec.run_id) / "profile.json"
        if profile.exists():  # as predict warns: a column the rows lack is imputed, one the model lacks ignored
            given = list(dict.fromkeys(str(key).strip() for row in spec.rows for key in row))  # names trimmed
            warnings += column_findings(json.loads(profile.read_text()), given)[2]
        reporter.progress(force=True, phase="shapley", message=f"Shapley values of {len(spec.rows)} rows")
        try:
            local, method, refused, shap_notes = shapley_rows(model, spec.rows, X, spec.top_k, spec.seed, reporter)
            notes += shap_notes
        except JobCancelled:
            raise
        except Exception as exc:  # the importance and curves stand without them
            warnings.append(f"Shapley values could not be computed: {_reason(exc)}")
    result = ExplainResult(
        run_id=spec.run_id,
        model_id=spec.model_id,
        metric=metric,
        split=split,
        rows_used=len(X),
        score=round(score, 6),
        importance=importance[: spec.top_k],
        partial_dependence=pdp,
        local=local,
        local_method=method,
        refused=refused,
        notes=notes,
        warnings=warnings,
        artifacts={},
        resources={n: f"ml-expert://runs/{spec.run_id}/{n}" for n in ("importance", "partial-dependence")},
        next_step="Read the Explanations section of the evaluation report; to act on it, prepare a new run "
        "(prepare_data(path=..., target=..., drop_columns=[...])) and train it, or predict(run_id="
        f"'{spec.run_id}', path=...).",
    )
    _save(ws, spec, result, folder)
    refresh_explanations(ws, spec.run_id, spec.model_id)
    runs.record_phase(ws, spec.run_id, "explain", {"explanations": result}, artifacts=result.artifacts)
    return result


def _reason(exc: Exception) -> str:
    """An exception as one bounded line for a warning."""
    text = " ".join(str(exc).split()) or "no message"
    return f"{type(exc).__name__}: {text[:300]}{'…' if len(text) > 300 else ''}"


def importance_plan(columns: int, rows: int, repeats: int) -> tuple[int, int, str | None]:
    """Rows and repeats for permutation importance, and a note when a bound cut them. Every column × repeat
    re-predicts every row, so the cost is bounded at MAX_PERMUTED_ROWS predicted rows whatever the column count:
    rows are sampled first (down to MIN_IMPORTANCE_ROWS), then repeats cut (down to 2)."""
    use_rows = min(rows, MAX_IMPORTANCE_ROWS, max(MIN_IMPORTANCE_ROWS, MAX_PERMUTED_ROWS // max(1, columns * repeats)))
    use_repeats = min(repeats, max(2, MAX_PERMUTED_ROWS // max(1, columns * use_rows)))
    if use_rows == rows and use_repeats == repeats:
        return use_rows, use_repeats, None
    return (
        use_rows,
        use_repeats,
        f"Importance and partial dependence use a random sample of {use_rows:,} of the {rows:,} rows"
        + (f" and {use_repeats} repeats instead of {repeats}" if use_repeats < repeats else "")
        + f": {columns} columns × repeats re-predict every row, and the cost is bounded at {MAX_PERMUTED_ROWS:,} "
        "predicted rows.",
    )


def _importance_source(ws: Workspace, spec: ExplainSpec) -> tuple[str, str, str | None]:
    """The split permutation importance is measured on, the model measured there, and a note when that is not the
    validation split and the explained model: importance measured on rows a model learned from ranks the columns it
    memorised (an auto forest scored .997 on validation rows it had been fitted on, .72 out of fold)."""
    from ml_expert.tools.artifacts import load_model_meta

    meta = load_model_meta(ws, spec.run_id, spec.model_id)
    if meta.refit_of:
        note = (
            f"Importance is that of model {meta.refit_of} on the test split: this model refits it on every "
            "prepared row, so none is left that it did not learn from. The partial dependence and Shapley values "
            "are this model's own."
        )
        return "test", meta.refit_of, note
    if meta.architecture == "auto":
        note = (
            "Importance is measured on the test split: this auto model learned from the training and validation rows."
        )
        return "test", meta.model_id, note
    return "val", meta.model_id, None


def _importance_rows(ws: Workspace, spec: ExplainSpec, split: str) -> tuple[Any, Any, str, int, list[str]]:
    """Raw rows of `split` (features) and their encoded targets, sampled to the importance plan; the split's name,
    the repeats to use, and a note when the plan cut something."""
    import numpy as np
    import pandas as pd

    from ml_expert.tools.artifacts import load_prepared, load_split

    data = ws.run_dir(spec.run_id) / "data"
    if not (data / f"raw_{split}.parquet").exists():
        split = "test"  # runs prepared before raw_val existed
    prepared = load_prepared(ws, spec.run_id)
    frame = pd.read_parquet(data / f"raw_{split}.parquet").drop(columns=[prepared.target])
    _, y = load_split(ws, spec.run_id, split)
    if len(frame) < 10:
        raise InvalidInputError(f"The {split} split has {len(frame)} rows; explain needs at least 10.")
    rows, repeats, note = importance_plan(frame.shape[1], len(frame), spec.n_repeats)
    if rows < len(frame):
        keep = np.sort(np.random.default_rng(spec.seed).choice(len(frame), rows, replace=False))
        frame, y = frame.iloc[keep].reset_index(drop=True), y[keep]
    return frame, y, {"val": "validation", "test": "test"}[split], repeats, [note] if note else []


def raw_estimator(model: Any) -> Any:
    """Wrap ModelInference as a fitted scikit-learn classifier / regressor over raw DataFrames."""
    import numpy as np
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin

    classify = is_classification(model.task)
    mixin = ClassifierMixin if classify else RegressorMixin

    class RawPipeline(mixin, BaseEstimator):  # type: ignore[valid-type, misc]
        def __init__(self) -> None:
            self.classes_ = np.arange(len(model.classes)) if classify else None
            self.fitted_ = True

        def fit(self, X: Any, y: Any = None) -> Any:
            return self  # fitted already: train fitted the model, prepare_data the preprocessor

        def predict_output(self, X: Any) -> np.ndarray:
            return model.predict_output(X)

        def predict_proba(self, X: Any) -> np.ndarray:
            return self.predict_output(X)

        def predict(self, X: Any) -> np.ndarray:
            out = self.predict_output(X)
            return out.argmax(axis=1) if classify else out

    return RawPipeline()


def permutation_ranking(
    model: Any, X: Any, y: Any, n_repeats: int, seed: int, reporter: Reporter | None = None
) -> tuple[str, float, list[ColumnImportance]]:
    """Permutation importance of each raw column with the run's ranking metric, most important first.

    The same measure as scikit-learn's `permutation_importance` (shuffle one column, the drop of the score, mean ±
    std over repeats), but every permuted copy of the rows is stacked and predicted in a few large calls: the whole
    pipeline (conversion, preprocessor, every ensemble member) runs once per PREDICT_CHUNK rows, not once per
    column × repeat, which on a few hundred columns was minutes of per-call overhead.
    """
    import numpy as np
    import pandas as pd

    from ml_expert.tools.core.scoring import main_key, scores

    metric = main_key(model.task)
    n, columns = len(X), list(X.columns)
    score = scores(model.task, y, model.predict_output(X))[metric]
    rng = np.random.default_rng(seed)
    per_call = max(1, PREDICT_CHUNK // (n * n_repeats))  # columns whose permuted copies go in one call
    drops = np.zeros((len(columns), n_repeats))
    for first in range(0, len(columns), per_call):
        batch = columns[first : first + per_call]
        copies = []
        for column in batch:
            for _ in range(n_repeats):
                copy = X.copy()
                copy[column] = X[column].to_numpy()[rng.permutation(n)]
                copies.append(copy)
        out = model.predict_output(pd.concat(copies, ignore_index=True))
        for k in range(len(batch)):
            for r in range(n_repeats):
                block = out[(k * n_repeats + r) * n : (k * n_repeats + r + 1) * n]
                drops[first + k, r] = score - scores(model.task, y, block)[metric]
        if reporter is not None:
            done = min(first + per_call, len(columns))
            reporter.progress(phase="importance", message=f"permutation importance: {done}/{len(columns)} columns")
    ranked = sorted(
        (
            ColumnImportance(column=str(c), importance=round(float(d.mean()), 6), std=round(float(d.std()), 6))
            for c, d in zip(columns, drops, strict=True)
        ),
        key=lambda c: -c.importance,
    )
    return metric, float(score), ranked


def partial_dependence_plot(
    model: Any, X: Any, y: Any, columns: list[str], kinds: dict[str, str], png: Any
) -> tuple[list[PartialDependence], list[str]]:
    """PartialDependenceDisplay of each given raw column: the picture, the curves as data, and a warning for each
    column whose curve could not be computed (the others still stand)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    if not columns:
        return [], []
    estimator = raw_estimator(model)
    target = None
    if model.task == "multiclass":
        target = int(np.bincount(np.asarray(y, dtype=int)).argmax())
    fig, ax = plt.subplots(1, len(columns), figsize=(4.5 * len(columns), 3.6), squeeze=False)
    curves, warnings = [], []
    for column, axis in zip(columns, ax[0], strict=True):
        try:
            curves.append(_column_dependence(estimator, X, column, kinds[column], target, axis))
        except JobCancelled:
            raise
        except Exception as exc:  # one column's curve; the others and the rest of explain stand
            warnings.append(f"Partial dependence of {column!r} could not be computed: {_reason(exc)}")
            axis.set_visible(False)
    if curves:
        label = f"P({model.classes[-1 if target is None else target]})" if is_classification(model.task) else "value"
        curves = [curve.model_copy(update={"of": label}) for curve in curves]
        fig.suptitle(f"Partial dependence: average {label} as one column varies")
        fig.tight_layout()
        fig.savefig(png, dpi=110)
    plt.close(fig)
    return curves, warnings


def _column_dependence(estimator: Any, X: Any, column: str, kind: str, target: int | None, axis: Any) -> Any:
    """One column's partial dependence on its own axis, over the rows where that column is observed.

    Numbers go to scikit-learn as float64 (it refuses integer dtypes, which it would round on a float grid); an
    integer column gets a grid of integers (every value when few, else rounded quantiles), reported as integers; a
    categorical column with more than PDP_GRID levels, its PDP_GRID most frequent (scikit-learn refuses the rest).
    """
    import numpy as np
    import pandas as pd
    from sklearn.inspection import PartialDependenceDisplay

    data = X[X[column].notna()].reset_index(drop=True)
    categorical = kind != "numeric"
    custom, integer = None, False
    if categorical and data[column].nunique() > PDP_GRID:  # 1,200 product names: the PDP_GRID most frequent ones
        # the grid is the column's levels; every row's own value is replaced by each grid value in turn anyway, so
        # the rare levels can stand in as the most frequent one without changing any average
        frequent = data[column].value_counts().index[:PDP_GRID]
        data = data.assign(**{column: data[column].where(data[column].isin(frequent), frequent[0])})
    if not categorical:
        values = pd.to_numeric(data[column], errors="coerce")
        data = data.assign(**{column: values.astype("float64")})[values.notna().to_numpy()].reset_index(drop=True)
        observed = data[column].to_numpy()
        integer = bool(len(observed)) and bool(np.all(observed == np.round(observed)))
        if integer:
            unique = np.unique(observed)
            if len(unique) > PDP_GRID:
                unique = np.unique(np.round(np.quantile(observed, np.linspace(0.05, 0.95, PDP_GRID))))
            custom = {column: unique.astype("float64")}
    display = PartialDependenceDisplay.from_estimator(
        estimator,
        data,
        [column],
        categorical_features=[column] if categorical else None,
        target=target,
        kind="average",
        grid_resolution=PDP_GRID,
        custom_values=custom,
        ax=[axis],
    )
    result = display.pd_results[0]
    index = 0 if target is None or len(result["average"]) == 1 else target
    grid = [v.item() if hasattr(v, "item") else v for v in result["grid_values"][0]]
    return PartialDependence(
        column=column,
        grid=[int(v) for v in grid] if integer else grid,
        average=[round(float(v), 6) for v in result["average"][index]],
    )


def _save(ws: Workspace, spec: ExplainSpec, result: ExplainResult, folder: Any) -> None:
    """Write the explanation files in the model folder and copy them to the run folder (the resources)."""
    root = ws.run_dir(spec.run_id)
    importance = {"metric": result.metric, "split": result.split, "score": result.score}
    write_json(folder / "importance.json", importance | {"columns": [c.model_dump() for c in result.importance]})
    write_json(folder / "partial_dependence.json", [p.model_dump() for p in result.partial_dependence])
    names = ["importance.json", "partial_dependence.json", "partial_dependence.png", "explanations.json"]
    result.artifacts.update(
        {n.split(".")[0] + ("_plot" if n.endswith(".png") else ""): ws.relative(folder / n) for n in names}
    )
    if not (folder / "partial_dependence.png").exists():
        result.artifacts.pop("partial_dependence_plot")
    write_json(folder / "explanations.json", result.model_dump(mode="json"))
    for name in names:
        if (folder / name).exists():
            shutil.copy(folder / name, root / name)
