"""The human side of a deployment package: `requirements.txt`, `README.md` (deployment guide with
measured performance) and `model_card.md`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ml_expert.tools.core.model_meta import ModelMeta
from ml_expert.tools.core.prepared import PreparedData
from ml_expert.tools.core.tasks import is_classification


def _requirements(env: dict[str, str]) -> str:
    lines = ["# Pinned to the versions this package was built and verified with."]
    lines += [f"{name}=={version}" for name, version in env.items() if name != "python"]
    return "\n".join(lines) + "\n"


def _perf_table(reports: list[Any]) -> str:
    rows = [
        "| format | file | verified | p50 ms (1 row) | p95 ms | rows/s (10k batch) | size | parity |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        size = f"{r.size_bytes / 1e6:.2f} MB" if r.size_bytes else "-"
        parity = (
            f"labels {r.label_agreement:.2%}, max Δ {r.max_abs_diff:.2g}"
            if r.label_agreement is not None
            else f"max Δ {r.max_abs_diff:.2g}"
            if r.max_abs_diff is not None
            else r.error or "-"
        )
        rows.append(
            f"| {r.format} | {r.file or '-'} | {'yes' if r.shipped else 'NO'} | {r.p50_ms or '-'} | "
            f"{r.p95_ms or '-'} | {r.batch_rows_per_s or '-'} | {size} | {parity} |"
        )
    return "\n".join(rows)


def write_docs(
    folder: Path,
    meta: ModelMeta,
    prepared: PreparedData,
    reports: list[Any],
    test_metric: dict[str, float],
    env: dict[str, str],
) -> None:
    """requirements.txt, README.md (deployment guide) and model_card.md of a package folder."""
    metric_lines = "\n".join(f"- {k}: {v:.4f}" for k, v in test_metric.items()) or "- (run evaluate first)"
    (folder / "requirements.txt").write_text(_requirements(env))
    (folder / "README.md").write_text(_readme(meta, prepared, reports, metric_lines))
    (folder / "model_card.md").write_text(_model_card(meta, prepared, metric_lines))


def _readme(meta: ModelMeta, prepared: PreparedData, reports: list[Any], metric_lines: str) -> str:
    columns = ", ".join(f"`{c}`" for c in prepared.features_in[:40])
    more = f" (+{len(prepared.features_in) - 40} more)" if len(prepared.features_in) > 40 else ""
    shipped = [r for r in reports if r.shipped]
    classify = is_classification(meta.task_type)
    fastest = min(shipped, key=lambda r: r.p50_ms or 1e9).runtime if shipped else "none"
    return f"""# Model Deployment Guide

Model `{meta.model_id}` ({meta.architecture}, {meta.framework}) from run `{meta.run_id}`,
predicting `{prepared.target}` ({meta.task_type}). Built and verified by ml-expert.

## Files
- `inference.py` — `ModelInference(...).predict(records)`; also a CLI.
- `preprocessor.joblib` — the fitted preprocessing (imputation, encoding, scaling), fitted on training rows only.
- `ml_expert_transformers.py` — input validation and the custom transformers the preprocessor uses;
  `ml_expert_ensemble.py` — the blend of models a model search may choose; `ml_expert_fast.py` — the compiled
  preprocessing a few rows at a time use (`fast_preprocess.json`).
- `schema.json` — input columns, their kinds and known categories; label mapping.
- {", ".join(f"`{r.file}` ({r.format})" for r in shipped)} — the model.
- `manifest.json` — sha256 of every file (see Integrity below) and the build environment.
- `requirements.txt` — pinned versions; `model_card.md` — data, intended use, metrics, limits.

{_runtime_note(meta, shipped)}## Usage
{_usage(prepared, fastest, classify, columns + more)}

## Performance (measured on the build machine)
{_perf_table(reports)}

Test metrics ({_measured_on(meta)}):
{metric_lines}

Verification: each format was loaded in a fresh Python process from an empty working directory,
predicted the raw test rows, and was compared with the in-process model.

## Integrity, not authenticity
`manifest.json` lists the sha256 of every file, and `inference.py` refuses to unpickle a file whose digest does
not match. That catches corruption (a truncated copy, a bad disk), not tampering: whoever can change a file can
change the manifest too. Unpickling runs code, so load a package only from a source you trust.
"""


def _usage(prepared: PreparedData, fastest: str, classify: bool, columns: str) -> str:
    """How to call the package, for the kind of input its model takes."""
    head = (
        "```python\nfrom inference import ModelInference\n\n"
        f"model = ModelInference()          # fastest verified runtime: {fastest}\n"
    )
    proba = "model.predict_proba" if classify else "model.predict"
    shell = "```bash\npip install -r requirements.txt\npython inference.py {} --format json\n```\n"
    if prepared.modality == "image":
        shape = prepared.input_shape
        return (
            f"{head}model.predict(['photo1.png', 'photo2.jpg'])   # image files, any size: resized to {shape[:2]}\n"
            f"{proba}(images)                  # or an array (n, height, width, channels) of pixels\n```\n"
            f"{shell.format('photo.png')}An image file, or a `.npy` array of images.\n"
        )
    if prepared.modality == "sequence":
        return (
            f"{head}model.predict(recent_rows)   # a DataFrame or CSV of the latest rows, oldest first\n"
            f"model.predict(windows)       # or an array (n, steps, features) shaped {prepared.input_shape}\n```\n"
            f"{shell.format('recent.csv')}The series' columns ({columns}) are read; other columns (a time column) are "
            "left out, and gaps are filled as in training.\n"
        )
    if prepared.modality == "text":
        return (
            f"{head}model.predict(['a text to classify', 'another one'])\n"
            f"{proba}('rows.csv')   # rows with the text column {columns}; a missing text counts as empty\n```\n"
            f"{shell.format('rows.csv')}"
        )
    return (
        f"{head}model.predict([{{...one raw row with columns {columns}...}}])\n"
        f"{proba}('rows.csv')   # {'class probabilities' if classify else 'predicted values'}\n```\n"
        f"{shell.format('rows.csv')}Rows may also come as JSON lines, Parquet or an Excel workbook's first sheet "
        "(`.xlsx`: `pip install openpyxl` first). Missing values are imputed; unseen categories are ignored by one-hot "
        "encoding; a missing column or a non-numeric value in a numeric column raises `SchemaError` naming the "
        "column.\n"
    )


def _runtime_note(meta: ModelMeta, shipped: list[Any]) -> str:
    """Why a scikit-learn package has no ONNX file, when it has none."""
    search = meta.search or {}
    if meta.framework != "sklearn" or any(r.format == "onnx" for r in shipped) or search.get("onnx", True):
        return ""
    from ml_expert.tools.training.portfolio import PRIOR_FAMILIES

    members = search.get("chosen", [])
    chosen = ", ".join(c["candidate"] for c in members)
    prior = search.get("metric") == "balanced_accuracy" and any(
        (c.get("config") or {}).get("family") in PRIOR_FAMILIES for c in members
    )
    return (
        f"ONNX is not shipped: the model search chose {chosen}"
        + (f" with a decision threshold of {search['threshold']}" if search.get("threshold") is not None else "")
        + (" (tree members decide at the training rows' class shares)" if prior else "")
        + ", which skl2onnx cannot convert; joblib (scikit-learn) is the default runtime.\n\n"
    )


def _measured_on(meta: ModelMeta) -> str:
    if meta.refit_of:
        return f"held-out test split, measured on model {meta.refit_of}, which this model refits on all rows"
    return "held-out test split"


def _refit_line(meta: ModelMeta, prepared: PreparedData) -> str:
    if not meta.refit_of:
        return ""
    return (
        f"\n- The model itself was refit on all {sum(prepared.splits.values())} rows (train, validation and test) with "
        f"the configuration chosen for model {meta.refit_of}; that model's test score is its estimate."
    )


def _model_card(meta: ModelMeta, prepared: PreparedData, metric_lines: str) -> str:
    params = f"{meta.parameters:,} parameters, trained in {meta.train_seconds:.1f} s"
    notes = "\n".join(f"- {n}" for n in meta.notes) or "- none"
    dropped = ", ".join(f"`{c}` ({why})" for c, why in prepared.dropped_columns.items()) or "none"
    return f"""# Model Card — {meta.model_id}

## Model
{meta.architecture} ({meta.framework}), {params}.

## Data
- Source: `{prepared.target}` target; {sum(prepared.splits.values())} rows after cleaning
  (train {prepared.splits["train"]}, validation {prepared.splits["val"]}, test {prepared.splits["test"]}).
- Inputs: {len(prepared.features_in)} columns; dropped: {dropped}.
- Preprocessing fitted on the training split only.{_refit_line(meta, prepared)}

## Intended use
Predict `{prepared.target}` for rows drawn from the same population as the training data.

## Metrics ({_measured_on(meta)})
{metric_lines}

## Limits
- Rows unlike the training data (new categories, values outside the training range) get less reliable predictions.
- Test metrics come from {prepared.splits["test"]} rows; small test sets give wide uncertainty.
{notes}
"""
