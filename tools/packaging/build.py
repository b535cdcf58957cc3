"""Building a deployment folder in a worker (`run_package_job`), proven to work before it replaces anything.

Exports the model in the requested formats, adds the fitted preprocessing, the feature schema and
label mapping, `inference.py`, pinned requirements, a deployment guide, a model card and a manifest
of sha256 digests. Then every format is verified in a fresh subprocess; a format that fails is
reported and left out. The folder is built in a new hidden folder beside the target and swapped in
whole; only an earlier package (checked by `package_spec`) is ever replaced.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ml_expert.tools import runs
from ml_expert.tools.artifacts import (
    load_model,
    load_model_meta,
    load_pickle,
    load_prepared,
    load_split,
    model_path,
    predict_output,
)
from ml_expert.tools.packaging.docs import write_docs
from ml_expert.tools.packaging.export import FormatReport, environment, export_format, file_map
from ml_expert.tools.packaging.package import PackageResult, PackageSpec, check_output_dir
from ml_expert.tools.packaging.verify import compile_fast_path, verify_reports
from ml_expert.tools.tasks import is_classification
from ml_expert.tools.workspace import Workspace, write_json

PORTABLE = Path(__file__).parent / "portable"

__all__ = ["PackageSpec", "run_package_job"]


def _stage(ws: Workspace, run_id: str, prepared: dict[str, Any], build: Path, scratch: Path) -> tuple[Path, bool]:
    """Copy preprocessing and the portable code into build; return the raw test rows file and fast-path flag."""
    run_dir = ws.run_dir(run_id)
    shutil.copy(run_dir / "schema.json", build / "schema.json")
    shutil.copy(PORTABLE / "preprocessing.py", build / "ml_expert_transformers.py")
    shutil.copy(PORTABLE / "ensemble.py", build / "ml_expert_ensemble.py")
    shutil.copy(PORTABLE / "inference.py", build / "inference.py")
    if prepared.get("modality", "tabular") == "tabular":  # other modalities have no fitted preprocessor
        pre = load_pickle(ws, run_dir / "preprocessor.joblib")  # its digest checked before it is shipped
        shutil.copy(run_dir / "preprocessor.joblib", build / "preprocessor.joblib")
        raw = scratch / "raw_test.csv"
        frame = pd.read_parquet(run_dir / "data" / "raw_test.parquet").drop(columns=[prepared["target"]])
        frame.to_csv(raw, index=False)
        return raw, compile_fast_path(build, raw, pre)
    raw = scratch / "raw_test.npz"  # raw images / windows / texts, as saved by prepare_data
    shutil.copy(run_dir / "data" / "raw_test.npz", raw)
    return raw, False


def _export_all(
    spec: PackageSpec, model: Any, meta: dict[str, Any], source: Path, build: Path, X: np.ndarray, reporter: Any
) -> tuple[list[FormatReport], list[dict[str, Any]]]:
    reports: list[FormatReport] = []
    entries: list[dict[str, Any]] = []
    for i, fmt in enumerate(spec.formats):
        reporter.progress(force=True, phase="package", step=i, total=len(spec.formats), message=f"exporting {fmt}")
        try:
            name, runtime = export_format(fmt, model, meta, source, build, X)
        except Exception as exc:  # a format that cannot be exported is reported, not shipped
            reports.append(FormatReport(format=fmt, file=None, shipped=False, error=f"export failed: {exc}"[:500]))
            continue
        entry = {"runtime": runtime, "file": name, "format": fmt}
        if runtime == "onnx" and meta["framework"] == "sklearn" and is_classification(meta["task_type"]):
            entry["output_index"] = 1
        entries.append(entry)
        reports.append(FormatReport(format=fmt, file=name, shipped=True, runtime=runtime))
    return reports, entries


def _drop_failed(build: Path, reports: list[FormatReport]) -> None:
    for rep in reports:
        if not rep.shipped and rep.file and (build / rep.file).exists():
            target = build / rep.file
            shutil.rmtree(target) if target.is_dir() else target.unlink()


def _test_metric(ws: Workspace, run_id: str, model_id: str) -> dict[str, float]:
    metrics_file = ws.run_dir(run_id) / "metrics.json"
    if not metrics_file.exists():
        return {}
    evs = json.loads(metrics_file.read_text())["evaluations"]
    ev = next((e for e in evs if e["model_id"] == model_id), None)
    return dict(list(ev["test_metrics"].items())[:4]) if ev else {}


def _swap_in(build: Path, final: Path) -> None:
    """Replace the target (absent, empty, or an earlier package) with the verified build."""
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
        final.rename(old / final.name)
        build.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        build.rename(final)


def run_package_job(ws: Workspace, spec: PackageSpec, reporter: Any) -> PackageResult:
    """Worker entry for kind 'package'."""
    run_id = spec.run_id
    meta = load_model_meta(ws, run_id, spec.model_id)
    prepared = load_prepared(ws, run_id)
    source = model_path(ws, run_id, meta)
    model = load_model(ws, source, meta["framework"])
    X_test, y_test = load_split(ws, run_id, "test")
    reference = predict_output(model, meta["framework"], meta["task_type"], X_test)
    final = check_output_dir(ws, spec.output_dir) if spec.output_dir else ws.run_dir(run_id) / "deployment"
    final.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{final.name}.building-", dir=final.parent))
    scratch = Path(tempfile.mkdtemp(prefix=f".{final.name}.raw-", dir=final.parent))
    modality = prepared.get("modality", "tabular")
    try:
        raw, fast_ok = _stage(ws, run_id, prepared, build, scratch)
        reports, entries = _export_all(spec, model, meta, source, build, X_test, reporter)
        manifest: dict[str, Any] = {
            "run_id": run_id,
            "model_id": meta["model_id"],
            "task_type": meta["task_type"],
            "preprocessor": "preprocessor.joblib" if modality == "tabular" else None,
            "modality": modality,
            "fast_preprocessor": "fast_preprocess.json" if fast_ok else None,
            "runtimes": entries,
            "files": file_map(build),
        }
        write_json(build / "manifest.json", manifest)
        reporter.progress(
            force=True,
            phase="package",
            step=len(spec.formats),
            total=len(spec.formats) + 1,
            message=f"verifying {[r.format for r in reports if r.shipped]} in a fresh process",
        )
        scale = float(max(1.0, np.std(y_test))) if meta["task_type"] == "regression" else 1.0
        verify_reports(build, reports, meta, reference, raw, scale)
        _drop_failed(build, reports)
        good = sorted((r for r in reports if r.shipped and r.runtime), key=lambda r: r.p50_ms or 1e9)
        manifest["runtimes"] = [e for r in good for e in entries if e["file"] == r.file]
        test_metric = _test_metric(ws, run_id, meta["model_id"])
        runtimes: list[str] = [r.runtime for r in good if r.runtime]
        env = environment(meta["framework"], runtimes, modality)
        write_docs(build, meta, prepared, reports, test_metric, env)
        manifest |= {
            "files": file_map(build),
            "environment": env,
            "verification": [r.model_dump() for r in reports],
            "created_at": time.time(),
        }
        write_json(build / "manifest.json", manifest)
        _swap_in(build, final)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(build, ignore_errors=True)  # gone already when swapped in
    return _record(ws, spec, meta, final, reports, test_metric, runtimes, manifest)


def _record(
    ws: Workspace,
    spec: PackageSpec,
    meta: dict[str, Any],
    final: Path,
    reports: list[FormatReport],
    test_metric: dict[str, float],
    runtimes: list[str],
    manifest: dict[str, Any],
) -> PackageResult:
    run_id = spec.run_id
    rel = ws.relative(final)
    result = PackageResult(
        run_id=run_id,
        model_id=meta["model_id"],
        folder=rel,
        formats=reports,
        default_runtime=runtimes[0] if runtimes else None,
        verified=bool(runtimes),
        test_metric=test_metric,
        files=sorted(manifest["files"])[:60],
        usage=f"cd {rel} && python inference.py rows.csv   # or: from inference import ModelInference",
        next_step="Ship the folder; ModelInference().predict(rows) takes raw rows with the original columns."
        + (
            f" From MCP: predict(run_id='{run_id}', path=<new rows>) scores them with drift warnings, "
            f"explain(run_id='{run_id}') shows the columns that matter."
            if manifest.get("modality", "tabular") == "tabular"
            else ""
        ),
    )
    runs.record_phase(ws, run_id, "package", {"deployment": result}, artifacts={"deployment": rel})
    return result
