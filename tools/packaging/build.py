"""Building a deployment folder in a worker (`run_package_job`), proven to work before it replaces anything.

Exports the model in the requested formats, adds the fitted preprocessing, the feature schema and
label mapping, `inference.py`, pinned requirements, a deployment guide, a model card and a manifest
of sha256 digests. Then every format is verified in a fresh subprocess; a format that fails is
reported and left out. The folder is built in a new hidden folder beside the target and swapped in
whole; only an earlier package (checked by `package_spec`) is ever replaced, and of it only the files
its manifest lists: every other file in it (a Dockerfile, notes) is carried into the new folder, and a
listed file that was edited since stops the swap with a clear error. Every progress call is a cancel
point; the verification subprocess is stopped on cancel too.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ml_expert.memory.errors import InvalidInputError
from ml_expert.tools import runs
from ml_expert.tools.artifacts import (
    load_model,
    load_model_meta,
    load_prepared,
    load_split,
    model_path,
    predict_output,
    read_verified,
    unpickle,
)
from ml_expert.tools.core.model_meta import ModelMeta
from ml_expert.tools.core.prepared import PreparedData
from ml_expert.tools.core.tasks import is_classification, schema_for_model
from ml_expert.tools.jobs.specs import JobCancelled, Reporter
from ml_expert.tools.packaging.docs import write_docs
from ml_expert.tools.packaging.export import FormatReport, environment, export_format, file_map
from ml_expert.tools.packaging.package import (
    PackageResult,
    PackageSpec,
    check_output_dir,
    check_unchanged_package,
    package_files,
    test_metrics_of,
)
from ml_expert.tools.packaging.verify import compile_fast_path, verify_reports
from ml_expert.tools.training.refit import refit_all_rows
from ml_expert.tools.training.sklearn_models import required_packages
from ml_expert.tools.workspace import Workspace, write_json

PORTABLE = Path(__file__).parents[1] / "core" / "portable"

__all__ = ["PackageSpec", "run_package_job"]


def _stage(
    ws: Workspace, run_id: str, prepared: PreparedData, meta: ModelMeta, build: Path, scratch: Path
) -> tuple[Path, bool]:
    """Copy preprocessing and the portable code into build; return the raw test rows file and fast-path flag."""
    run_dir = ws.run_dir(run_id)
    schema = json.loads((run_dir / "schema.json").read_text())
    write_json(build / "schema.json", schema_for_model(schema, meta.task_type))  # a clustering: cluster ids
    shutil.copy(PORTABLE / "preprocessing.py", build / "ml_expert_transformers.py")
    shutil.copy(PORTABLE / "ensemble.py", build / "ml_expert_ensemble.py")
    shutil.copy(PORTABLE / "fast.py", build / "ml_expert_fast.py")
    shutil.copy(PORTABLE / "inference.py", build / "inference.py")
    if prepared.modality == "tabular":  # other modalities have no fitted preprocessor
        verified = read_verified(ws, run_dir / "preprocessor.joblib")  # shipped: the bytes whose digest was checked
        pre = unpickle(verified)
        (build / "preprocessor.joblib").write_bytes(verified)
        raw = scratch / "raw_test.csv"
        frame = pd.read_parquet(run_dir / "data" / "raw_test.parquet").drop(columns=[prepared.target])
        frame.to_csv(raw, index=False)
        return raw, compile_fast_path(build, raw, pre)
    raw = scratch / "raw_test.npz"  # raw images / windows / texts, as saved by prepare_data
    shutil.copy(run_dir / "data" / "raw_test.npz", raw)
    return raw, False


def _export_all(
    spec: PackageSpec, model: Any, meta: ModelMeta, source: Path, build: Path, X: np.ndarray, reporter: Reporter
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
        if runtime == "onnx" and meta.framework == "sklearn" and is_classification(meta.task_type):
            entry["output_index"] = 1
        entries.append(entry)
        reports.append(FormatReport(format=fmt, file=name, shipped=True, runtime=runtime))
    return reports, entries


def _drop_failed(build: Path, reports: list[FormatReport]) -> None:
    for rep in reports:
        if not rep.shipped and rep.file and (build / rep.file).exists():
            target = build / rep.file
            shutil.rmtree(target) if target.is_dir() else target.unlink()


def _carry_over(ws: Workspace, final: Path, build: Path) -> list[str]:
    """Link (or copy) into the build every file of the target folder that an earlier package did not write, after
    checking that none of the files it wrote was edited since; returns the carried paths. Nothing in the target is
    touched, so a failure here loses nothing."""
    check_unchanged_package(ws, final)
    written = {*(package_files(final) or {}), "manifest.json"}
    kept: list[str] = []
    for dirpath, dirnames, filenames in os.walk(final):  # symlinked folders are kept as links, not followed
        here = Path(dirpath)
        kept += [
            (here / name).relative_to(final).as_posix()
            for name in [*filenames, *(d for d in dirnames if (here / d).is_symlink())]
        ]
    kept = sorted(rel for rel in kept if rel not in written)
    clashes = [rel for rel in kept if _occupied(build, rel)]
    if clashes:
        raise InvalidInputError(
            f"The package folder {ws.relative(final)!r} holds files the earlier package did not write, {clashes[:20]}, "
            "where the new package writes its own. Move or rename them, or pass another output_dir; nothing was "
            "changed."
        )
    for rel in kept:
        source, target = final / rel, build / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
            continue
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)
    return kept


def _occupied(build: Path, rel: str) -> bool:
    """Whether the build has something at rel, or a file where one of rel's folders would be."""
    parents = [build.joinpath(*rel.split("/")[:i]) for i in range(1, rel.count("/") + 1)]
    return os.path.lexists(build / rel) or any(os.path.lexists(p) and not p.is_dir() for p in parents)


def _swap_in(ws: Workspace, build: Path, final: Path) -> list[str]:
    """Put the verified build in the target's place (absent, empty, or an earlier package), keeping the files
    the earlier package did not write; returns those."""
    if not final.exists():
        build.rename(final)
        return []
    kept = _carry_over(ws, final, build)
    old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
    final.rename(old / final.name)
    build.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return kept


def run_package_job(ws: Workspace, spec: PackageSpec, reporter: Reporter) -> PackageResult:
    """Worker entry for kind 'package'."""
    run_id = spec.run_id
    meta = load_model_meta(ws, run_id, spec.model_id)
    notes: list[str] = []
    if spec.refit:
        reporter.progress(force=True, phase="package", message="refitting the model on all rows")
        try:
            meta = refit_all_rows(ws, run_id, meta, reporter)
            notes.append(meta.notes[0])
        except JobCancelled:
            raise
        except Exception as exc:  # a library error in one fold fit: ship the evaluated model, and say why
            notes.append(f"The refit on all rows failed ({type(exc).__name__}: {str(exc)[:300]}); the evaluated "
                         f"model {meta.model_id} was packaged instead.")  # fmt: skip
    prepared = load_prepared(ws, run_id)
    source = model_path(ws, run_id, meta)
    model = load_model(ws, source, meta.framework)
    X_test, y_test = load_split(ws, run_id, "test")
    reference = predict_output(model, meta.framework, meta.task_type, X_test)
    final = check_output_dir(ws, spec.output_dir) if spec.output_dir else ws.run_dir(run_id) / "deployment"
    final.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{final.name}.building-", dir=final.parent))
    scratch = Path(tempfile.mkdtemp(prefix=f".{final.name}.raw-", dir=final.parent))
    modality = prepared.modality
    try:
        raw, fast_ok = _stage(ws, run_id, prepared, meta, build, scratch)
        reports, entries = _export_all(spec, model, meta, source, build, X_test, reporter)
        if (build / source.name).is_file() and meta.framework == "sklearn":  # shipped: digest-checked bytes only
            (build / source.name).write_bytes(read_verified(ws, source))
        manifest: dict[str, Any] = {
            "run_id": run_id,
            "model_id": meta.model_id,
            "task_type": meta.task_type,
            "preprocessor": "preprocessor.joblib" if modality == "tabular" else None,
            "modality": modality,
            "fast_preprocessor": "fast_preprocess.json" if fast_ok else None,
            "runtimes": entries,
            "files": file_map(build),
        }
        write_json(build / "manifest.json", manifest)
        steps = len(spec.formats) + 1
        reporter.progress(
            force=True,
            phase="package",
            step=len(spec.formats),
            total=steps,
            message=f"verifying {[r.format for r in reports if r.shipped]} in a fresh process",
        )
        scale = float(max(1.0, np.std(y_test))) if meta.task_type == "regression" else 1.0
        verify_reports(build, reports, meta, reference, raw, scale, reporter.checkpoint)
        reporter.progress(force=True, phase="package", step=steps, total=steps, message="writing the guide and card")
        _drop_failed(build, reports)
        good = sorted((r for r in reports if r.shipped and r.runtime), key=lambda r: r.p50_ms or 1e9)
        manifest["runtimes"] = [e for r in good for e in entries if e["file"] == r.file]
        test_metric = test_metrics_of(ws, run_id, meta.refit_of or meta.model_id)  # a refit's estimate: its source's
        runtimes: list[str] = [r.runtime for r in good if r.runtime]
        env = environment(meta.framework, runtimes, modality, required_packages(model))
        write_docs(build, meta, prepared, reports, test_metric, env)
        manifest |= {
            "files": file_map(build),
            "environment": env,
            "verification": [r.model_dump() for r in reports],
            "created_at": time.time(),
        }
        write_json(build / "manifest.json", manifest)
        reporter.progress(force=True, phase="package", step=steps, total=steps, message=f"writing {ws.relative(final)}")
        kept = _swap_in(ws, build, final)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(build, ignore_errors=True)  # gone already when swapped in
    return _record(ws, spec, meta, final, reports, test_metric, runtimes, manifest, kept, notes)


def _record(
    ws: Workspace,
    spec: PackageSpec,
    meta: ModelMeta,
    final: Path,
    reports: list[FormatReport],
    test_metric: dict[str, float],
    runtimes: list[str],
    manifest: dict[str, Any],
    kept: list[str],
    notes: list[str],
) -> PackageResult:
    run_id = spec.run_id
    rel = ws.relative(final)
    result = PackageResult(
        run_id=run_id,
        model_id=meta.model_id,
        refit_of=meta.refit_of,
        folder=rel,
        formats=reports,
        default_runtime=runtimes[0] if runtimes else None,
        verified=bool(runtimes),
        test_metric=test_metric,
        files=sorted(manifest["files"])[:60],
        kept=kept[:60],
        notes=notes,
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
