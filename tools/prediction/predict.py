"""The `predict` tool: score new rows with a trained model, from MCP, the way its deployment package would.

Rows come from a CSV / TSV / JSON-lines / Parquet / Excel (.xlsx) file in the workspace or inline (at most MAX_RECORDS).
The model and the preprocessor load from the run (pickles only after their digest check) and go into
the package's own `ModelInference` (`core/portable/inference.py`), so conversion, per-row checks,
transform and label decoding are the package's code. A value that does not fit its column refuses its
row only; a missing column is imputed. Every call also compares the rows with the training profile
(`drift`). An input file meets the limits analyze_data sets (the server's file size limit, at most
MAX_COLUMNS columns) before anything reads it. Predictions for every input row go to a new CSV in the
workspace (never over an existing file, never through a link out of it, strings a spreadsheet would run
as a formula escaped), removed again when recording the result fails; the result is bounded. Small inputs
of scikit-learn models run in the server; larger ones, and Keras models, run as a job with progress per chunk.
"""

from __future__ import annotations

import itertools
import json
import os
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, Field

from ml_expert.memory.errors import ConflictError, InvalidInputError, PathNotAllowedError, TrainingError
from ml_expert.tools import runs
from ml_expert.tools.artifacts import (
    ModelJobSpec,
    find_model_run,
    load_model,
    load_model_meta,
    load_pickle,
    model_path,
)
from ml_expert.tools.core.model_meta import ModelMeta
from ml_expert.tools.core.tasks import is_classification, schema_for_model
from ml_expert.tools.jobs.manager import run_as_job
from ml_expert.tools.jobs.specs import JobCancelled, JobStatus, ProgressFn, Reporter, WaitSeconds
from ml_expert.tools.prediction.drift import DriftReport
from ml_expert.tools.workspace import Workspace

MAX_RECORDS = 100
INLINE_MAX_BYTES = 2_000_000  # larger files are scored by a job
CHUNK_ROWS = 20_000
SHOWN_PREDICTIONS = 10
SHOWN_REFUSALS = 20
OUTPUT_DIR = "predictions"
INPUT_SUFFIXES = (".csv", ".tsv", ".txt", ".jsonl", ".ndjson", ".parquet", ".pq", ".xlsx", ".xlsm")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # a spreadsheet evaluates a cell starting so (OWASP)


RunRef = Annotated[str | None, Field(description="Run whose model to use (its latest model unless model_id).")]
ModelRef = Annotated[str | None, Field(description="Model to use (any run's); default the run's latest.")]


class PredictSpec(ModelJobSpec):
    kind = "predict"
    path: str | None = Field(None, description="Input file, checked, relative to the workspace (or absolute).")
    records: list[dict[str, Any]] | None = None
    output: str = Field(description="New CSV for the predictions, relative to the workspace.")


class Refusal(BaseModel):
    row: int = Field(description="Position of the row in the input (0 = first data row).")
    reason: str


class RowPrediction(BaseModel):
    row: int
    prediction: Any
    probabilities: dict[str, float] | None = None


class PredictResult(BaseModel):
    run_id: str
    model_id: str
    rows: int = Field(description="Rows given.")
    rows_scored: int
    rows_refused: int
    refused: list[Refusal] = Field(description=f"Refused rows with the reason (first {SHOWN_REFUSALS}).")
    label_counts: dict[str, int] | None = Field(None, description="Predicted labels (or cluster ids).")
    value_quantiles: dict[str, float] | None = Field(None, description="Predicted values: min, p5 … p95, max, mean.")
    predictions: list[RowPrediction] = Field(description=f"The first {SHOWN_PREDICTIONS} predictions.")
    output: str = Field(description="CSV with one line per input row: row, prediction, p_<class>, refused.")
    drift: DriftReport | None = Field(description="Drift against the training rows; null for a run without profile.")
    next_step: str


def predict(
    ws: Workspace,
    run_id: RunRef = None,
    model_id: ModelRef = None,
    path: Annotated[
        str | None,
        Field(description="CSV / TSV / JSON lines / Parquet / .xlsx file of raw rows (original column names)."),
    ] = None,
    records: Annotated[
        list[dict[str, Any]] | None,
        Field(description=f"Up to {MAX_RECORDS} raw rows as objects, instead of a file.", max_length=MAX_RECORDS),
    ] = None,
    output: Annotated[
        str | None, Field(description=f"New CSV for the predictions; default {OUTPUT_DIR}/<input>-<model_id>.csv.")
    ] = None,
    wait_seconds: WaitSeconds = None,
    report: ProgressFn | None = None,
) -> PredictResult | JobStatus:
    """Score new rows: labels or values and class probabilities, per-row refusals, drift warnings against the
    training data, and a predictions CSV in the workspace. Pass run_id or model_id, and path or records.

    A large file returns its job (follow with get_job).
    """
    spec, inline = predict_spec(ws, run_id, model_id, path, records, output)
    if inline:
        return run_predict_job(ws, spec, _InlineReporter(report))
    status = run_as_job(
        ws, spec, namespace=runs.run_namespace(ws, spec.run_id), wait_seconds=wait_seconds, report=report
    )
    if status.status == "succeeded":
        return PredictResult.model_validate(status.result)
    if status.status in ("queued", "running"):
        return status
    raise TrainingError(f"The predict job {status.job_id} ended {status.status}: {status.error}")


def predict_spec(
    ws: Workspace,
    run_id: str | None,
    model_id: str | None,
    path: str | None,
    records: list[dict[str, Any]] | None,
    output: str | None,
) -> tuple[PredictSpec, bool]:
    """Check a predict call (model, input, output) and build its spec; True when it is small enough to run here."""
    if (path is None) == (records is None):
        raise InvalidInputError("Pass either path (a file of rows in the workspace) or records (a list of rows).")
    run_id, meta = resolve_model(ws, run_id, model_id)
    check_modality(ws, run_id)  # at the call, not when the job starts
    if records is not None and (not records or len(records) > MAX_RECORDS):
        raise InvalidInputError(f"records takes 1 to {MAX_RECORDS} rows; pass a larger batch as a file (path=).")
    size = 0
    if path is not None:
        file = ws.resolve_path(path, kind="path")
        if not file.is_file() or file.suffix.lower() not in INPUT_SUFFIXES:
            raise InvalidInputError(f"path {path!r} must be a file of rows: one of {', '.join(INPUT_SUFFIXES)}.")
        _check_limits(ws, file)
        size = file.stat().st_size
    else:
        _check_columns(len(set().union(*(records or []))), "records")
    stem = Path(path).stem if path else "records"
    spec = PredictSpec(
        run_id=run_id,
        model_id=meta.model_id,
        path=path,
        records=records,
        output=_output_path(ws, output, f"{stem}-{meta.model_id}"),
    )
    return spec, meta.framework == "sklearn" and size <= INLINE_MAX_BYTES


def resolve_model(ws: Workspace, run_id: str | None, model_id: str | None) -> tuple[str, ModelMeta]:
    """The run and model.json a predict / explain call names: a run (its latest model), a model, or both."""
    if run_id is None and model_id is None:
        raise InvalidInputError("Pass run_id (its latest model is used) or model_id.")
    run_id = run_id or find_model_run(ws, model_id or "")
    return run_id, load_model_meta(ws, run_id, model_id)


def _check_limits(ws: Workspace, file: Path) -> None:
    """The limits analyze_data sets on a data file, with its checks, before anything reads the file: the server's
    file size limit (ML_EXPERT_MAX_FILE_BYTES), then at most MAX_COLUMNS columns (a text file's header line, a
    Parquet file's schema)."""
    from ml_expert.tools.data import io

    io.check_size(file, ws.settings.max_file_bytes)
    suffix, gz = io._suffixes(file)
    if suffix in io.PARQUET_SUFFIXES:
        import pyarrow.parquet as pq

        try:
            columns = len(pq.read_schema(file).names)
        except Exception as exc:
            raise InvalidInputError(f"{file.name} is not a readable Parquet file ({exc}).") from exc
        _check_columns(columns, file.name)
    elif suffix in io.EXCEL_SUFFIXES:
        io.check_workbook(file)
    elif suffix in io.TEXT_SUFFIXES:
        head = io._head(file, gz)
        encoding = io.sniff_encoding(head)
        if not head.decode(encoding, errors="replace").strip():
            raise InvalidInputError(
                f"{file.name} is empty (no header row, no rows). Pass a file of rows with the training columns."
            )
        io._check_header(file, gz, encoding, io.sniff_delimiter(head.decode(encoding, errors="replace"), suffix))


def _check_columns(columns: int, what: str) -> None:
    from ml_expert.tools.data.io import MAX_COLUMNS

    if columns > MAX_COLUMNS:
        raise InvalidInputError(
            f"{what} has {columns:,} columns; at most {MAX_COLUMNS:,} are supported. Pass only the model's columns."
        )


def _output_path(ws: Workspace, output: str | None, default_stem: str) -> str:
    """A new file in the workspace for the predictions: never an existing file, never outside the workspace. The
    default, a new name in OUTPUT_DIR, is resolved and checked as a named output is (a link there cannot lead out)."""
    if output is None:
        for n in itertools.count(1):
            name = f"{OUTPUT_DIR}/{default_stem}{f'-{n}' if n > 1 else ''}.csv"
            try:
                candidate = _output_target(ws, name)
            except PathNotAllowedError as exc:
                raise PathNotAllowedError(
                    f"The default output folder {OUTPUT_DIR!r} resolves to {(ws.root / OUTPUT_DIR).resolve()}, where "
                    f"predict may not write: outside the workspace {ws.root}, or in its state folder (a link?). Pass "
                    f"output= with a new .csv file in the workspace, or make {OUTPUT_DIR!r} a plain folder."
                ) from exc
            if not candidate.exists():
                return ws.relative(candidate)
    target = _output_target(ws, output)
    if target.exists():
        raise ConflictError(f"output {output!r} already exists; predict never replaces a file. Pick a new name.")
    if target.suffix.lower() != ".csv":
        raise InvalidInputError(f"output {output!r} must end in .csv.")
    return ws.relative(target)


def _output_target(ws: Workspace, output: str) -> Path:
    """Where an output path leads, links followed: a file inside the workspace, not in its state folder."""
    target = ws.resolve_path(output, must_exist=False, kind="output")
    if ws.root not in target.parents or ws.home == target or ws.home in target.parents:
        raise PathNotAllowedError(f"output {output!r} must be a new file inside the workspace {ws.root}.")
    return target


class _InlineReporter:
    """The job reporter's interface for a predict that runs in the server: progress to the client, no cancel."""

    def __init__(self, report: ProgressFn | None) -> None:
        self.report = report

    def progress(self, *, force: bool = False, **info: Any) -> None:
        if self.report is not None:
            self.report(info)

    def cancel_requested(self) -> bool:
        return False


def model_inference() -> Any:
    """The deployment package's ModelInference class. Its module imports `ml_expert_transformers` and
    `ml_expert_fast`, the names a package gives to portable/preprocessing.py and fast.py, which register themselves
    under them when imported."""
    from ml_expert.tools.core.portable.inference import ModelInference  # registers its siblings' names first

    return ModelInference


def check_modality(ws: Workspace, run_id: str) -> dict[str, Any]:
    """The run's schema, when predict can score its data (tables and texts)."""
    schema = json.loads((ws.run_dir(run_id) / "schema.json").read_text())
    if schema.get("modality", "tabular") not in ("tabular", "text"):
        raise InvalidInputError(
            f"predict scores tables and texts; this run's data are {schema['modality']}. Package the model "
            f"(package(run_id='{run_id}')) and call deployment/inference.py with the arrays or image files."
        )
    return schema


def load_inference(ws: Workspace, run_id: str, model_id: str) -> Any:
    """The package's ModelInference over a run's model and preprocessor (both digest-checked when pickled)."""
    from ml_expert.tools.artifacts import predict_output  # numpy: with the first prediction, not at server start

    meta = load_model_meta(ws, run_id, model_id)
    folder = ws.run_dir(run_id)
    schema = check_modality(ws, run_id)
    schema = schema_for_model(schema, meta.task_type)
    framework, task = meta.framework, schema["task_type"]
    model = load_model(ws, model_path(ws, run_id, meta), framework)
    pre = folder / "preprocessor.joblib"
    preprocessor = load_pickle(ws, pre) if pre.exists() else None
    return model_inference().from_parts(
        schema, preprocessor, lambda X: predict_output(model, framework, task, X), runtime=framework
    )


def run_predict_job(ws: Workspace, spec: PredictSpec, reporter: Reporter) -> PredictResult:
    """Worker entry for kind 'predict' (and the in-server path): score, check drift, write the CSV, record."""
    import numpy as np

    model = load_inference(ws, spec.run_id, spec.model_id)
    frame = model.to_frame(ws.resolve_path(spec.path, kind="path") if spec.path else spec.records)
    n, parts, converted, refused = len(frame), [], [], {}
    for start in range(0, max(n, 1), CHUNK_ROWS):
        if reporter.cancel_requested():
            raise JobCancelled()
        reporter.progress(force=True, phase="predict", step=start, total=n, message=f"scoring rows {start}-")
        scored = model.score(frame.iloc[start : start + CHUNK_ROWS])
        parts.append((scored.positions + start, scored.output))
        converted.append(scored.converted)
        refused |= {pos + start: why for pos, why in scored.refused.items()}
    positions = np.concatenate([p for p, _ in parts])
    output = np.concatenate([o for _, o in parts]) if positions.size else model.empty_output()
    labels = model.labels(output) if len(output) else []
    result = PredictResult(
        run_id=spec.run_id,
        model_id=spec.model_id,
        rows=n,
        rows_scored=len(positions),
        rows_refused=len(refused),
        refused=[Refusal(row=r, reason=why) for r, why in list(refused.items())[:SHOWN_REFUSALS]],
        predictions=[_row(model, int(p), labels[i], output[i]) for i, p in enumerate(positions[:SHOWN_PREDICTIONS])],
        output=spec.output,
        drift=_drift(ws, spec.run_id, frame, converted),
        next_step=f"Read {spec.output} for every row. Call explain(run_id='{spec.run_id}', model_id='{spec.model_id}')"
        " to see which columns drive these predictions.",
        **_summary(model.task, labels),
    )
    written = _write_csv(ws, spec.output, model, n, positions, labels, output, refused)
    try:
        runs.record_phase(ws, spec.run_id, "predict", {"predictions": result}, artifacts={"predictions": spec.output})
    except BaseException:
        written.unlink(missing_ok=True)  # no predictions file without its record
        raise
    return result


def _row(model: Any, position: int, label: Any, out: Any) -> RowPrediction:
    probabilities = None
    if is_classification(model.task):
        probabilities = {str(c): round(float(p), 6) for c, p in zip(model.classes, out, strict=True)}
    return RowPrediction(row=position, prediction=label, probabilities=probabilities)


def _summary(task: str, labels: list[Any]) -> dict[str, Any]:
    import numpy as np

    if not labels:
        return {}
    if is_classification(task) or task == "clustering":
        return {"label_counts": dict(Counter(map(str, labels)).most_common(30))}
    values = np.asarray(labels, dtype=float)
    qs = {f"p{q}": float(np.percentile(values, q)) for q in (5, 25, 50, 75, 95)}
    return {
        "value_quantiles": {"min": float(values.min()), **qs, "max": float(values.max()), "mean": float(values.mean())}
    }


def _drift(ws: Workspace, run_id: str, frame: Any, converted: list[Any]) -> DriftReport | None:
    """Drift of the given rows against the training profile, on the values scoring already converted."""
    import pandas as pd

    from ml_expert.tools.prediction.drift import drift_report  # numpy and pandas: not at server start

    profile_path = ws.run_dir(run_id) / "profile.json"
    if any(c is None for c in converted) or not profile_path.exists():  # texts, or a run prepared before profiles
        return None
    return drift_report(json.loads(profile_path.read_text()), frame, pd.concat(converted))


def _write_csv(
    ws: Workspace, output: str, model: Any, n: int, positions: Any, labels: list[Any], out: Any, refused: dict
) -> Path:
    """One line per input row, written to a temporary file and linked into place (fails rather than replace); the
    output path is checked again, as a link may have appeared since the call. Returns the file written."""
    import pandas as pd

    frame = pd.DataFrame({"row": range(n), "prediction": pd.Series([None] * n, dtype=object)})
    frame.loc[positions, "prediction"] = pd.Series(labels, index=positions, dtype=object)
    if is_classification(model.task):
        for j, c in enumerate(model.classes):
            frame[f"p_{c}"] = pd.Series(out[:, j], index=positions) if len(positions) else float("nan")
    frame["refused"] = pd.Series(refused, dtype=object).reindex(range(n)).fillna("")
    for column in frame.columns:
        if not pd.api.types.is_numeric_dtype(frame[column]):  # numbers are never escaped
            # kept as objects: map() would infer float64 for integer labels beside a refused row's empty cell (3.0)
            frame[column] = pd.Series([_inert(c) for c in frame[column]], index=frame.index, dtype=object)
    frame.columns = [_inert(c) for c in frame.columns]
    target = _output_target(ws, output)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    frame.to_csv(tmp, index=False)
    try:
        os.link(tmp, target)  # atomic, and refuses an existing file
    except FileExistsError as exc:
        raise ConflictError(f"{output} appeared while predicting; nothing was replaced. Call predict again.") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _inert(cell: Any) -> Any:
    """A string cell a spreadsheet would evaluate as a formula, behind a single quote (OWASP's CSV injection rule);
    every other cell, numbers included, as it is."""
    return f"'{cell}" if isinstance(cell, str) and cell.startswith(FORMULA_STARTS) else cell
