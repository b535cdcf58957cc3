"""Phase 5 — `package`: a deployment folder that is proven to work.

Exports the model in the requested formats (Keras, legacy H5, SavedModel, TFLite/LiteRT, ONNX;
scikit-learn via joblib and skl2onnx), adds the fitted preprocessing, the feature schema and label
mapping, `inference.py`, pinned requirements, a deployment guide, a model card and a manifest of
sha256 digests. Then it verifies every format in a fresh subprocess from an empty working
directory: raw test rows in, predictions compared with the in-process model. A format that fails
verification is reported and left out. The folder is built aside and swapped in whole.
Stores `ml-expert/deployment`.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from ml_expert.tools import runs
from ml_expert.tools.errors import InvalidInputError
from ml_expert.tools.jobs import JobStatus, ProgressFn, WaitSeconds, run_as_job
from ml_expert.tools.package_docs import write_docs
from ml_expert.tools.predict import load_model, load_model_meta, predict_output
from ml_expert.tools.preparation import load_prepared, load_split
from ml_expert.tools.workspace import Workspace, write_json

Format = Literal["keras", "h5", "savedmodel", "tflite", "onnx", "joblib"]
KERAS_FORMATS = ("keras", "h5", "savedmodel", "tflite", "onnx")
SKLEARN_FORMATS = ("joblib", "onnx")
TEMPLATES = Path(__file__).parent / "templates"
TREE_MODELS = ("random_forest", "gradient_boosting")
VERIFY_TIMEOUT = 600

VERIFY_SCRIPT = """
import json, sys, time, traceback
import numpy as np, pandas as pd
pkg, raw, runtimes = sys.argv[1], sys.argv[2], sys.argv[3:]
sys.path.insert(0, pkg)
from inference import ModelInference
if raw.endswith(".npz"):
    raw = np.load(raw, allow_pickle=False)["X"]
    records = [raw[i : i + 1] for i in range(len(raw))]
    big = np.concatenate([raw] * (2000 // len(raw) + 1))[:2000]
else:
    records = pd.read_csv(raw, dtype=str).to_dict("records")
    big = pd.read_csv(raw, dtype=str)
    big = pd.concat([big] * (10000 // len(big) + 1), ignore_index=True).head(10000)
results = {}
for runtime in runtimes:
    try:
        t0 = time.perf_counter()
        model = ModelInference(pkg, runtime=runtime)
        load_s = time.perf_counter() - t0
        out = model.predict_output(raw)
        labels = model.predict(raw)
        for _ in range(20):
            model.predict(records[0])
        times = []
        for i in range(200):
            t = time.perf_counter(); model.predict(records[i % len(records)]); times.append(time.perf_counter() - t)
        t = time.perf_counter(); model.predict(big); batch_s = time.perf_counter() - t
        results[runtime] = {"output": np.asarray(out).tolist(), "labels": [str(v) for v in labels],
                            "load_seconds": load_s, "p50_ms": float(np.percentile(times, 50) * 1000),
                            "p95_ms": float(np.percentile(times, 95) * 1000), "batch_rows_per_s": len(big) / batch_s}
    except Exception as exc:
        results[runtime] = {"error": f"{type(exc).__name__}: {exc}"}
print(json.dumps(results))
"""


class FormatReport(BaseModel):
    format: str
    file: str | None
    shipped: bool = Field(description="False when export or verification failed (the file is left out).")
    runtime: str | None = Field(None, description="Runtime inference.py uses for this file, if any.")
    label_agreement: float | None = None
    max_abs_diff: float | None = Field(None, description="Max |Δprobability| (or |Δvalue|) vs the in-process model.")
    tolerance: str | None = None
    p50_ms: float | None = Field(None, description="Single-row latency through ModelInference.predict.")
    p95_ms: float | None = None
    batch_rows_per_s: float | None = Field(None, description="10,000-row batch throughput.")
    size_bytes: int | None = None
    error: str | None = None


class PackageResult(BaseModel):
    run_id: str
    model_id: str
    folder: str
    formats: list[FormatReport]
    default_runtime: str | None = Field(description="Fastest verified runtime; inference.py uses it by default.")
    verified: bool = Field(description="True when at least one format passed verification.")
    test_metric: dict[str, float]
    files: list[str]
    usage: str
    next_step: str


def default_formats(framework: str, modality: str = "tabular") -> list[str]:
    if framework != "keras":
        return ["joblib", "onnx"]
    # string inputs (TextVectorization) do not convert to ONNX/TFLite; SavedModel serves them
    return ["keras", "savedmodel"] if modality == "text" else ["keras", "onnx", "tflite"]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _export(fmt: str, model: Any, meta: dict[str, Any], folder: Path, X_sample: np.ndarray) -> tuple[str, str | None]:
    """Write one format; return (file name, runtime that loads it or None)."""
    src = Path(meta["_model_path"])
    if fmt in ("keras", "joblib"):
        shutil.copy(src, folder / src.name)
        return src.name, "keras" if fmt == "keras" else "sklearn"
    if meta["framework"] == "sklearn":  # onnx
        from skl2onnx import to_onnx

        options = {id(model): {"zipmap": False}} if meta["task_type"] in ("binary", "multiclass") else None
        onx = to_onnx(model, X_sample[:1].astype(np.float32), options=options, target_opset=17)
        (folder / "model.onnx").write_bytes(onx.SerializeToString())
        return "model.onnx", "onnx"
    names = {
        "h5": ("model.h5", "h5"),
        "savedmodel": ("savedmodel", "savedmodel"),
        "tflite": ("model.tflite", "tflite"),
        "onnx": ("model.onnx", "onnx"),
    }
    name, runtime = names[fmt]
    if fmt == "h5":
        model.save(folder / name)
    else:
        import tensorflow as tf

        dtype = tf.string if X_sample.dtype.kind in "USO" else tf.float32
        spec = [tf.TensorSpec([None, *X_sample.shape[1:]], dtype, name="features")]
        model.export(
            str(folder / name),
            format={"savedmodel": "tf_saved_model", "tflite": "litert"}.get(fmt, fmt),
            verbose=False,
            input_signature=spec,
        )
    return name, runtime


def _tolerance(meta: dict[str, Any], runtime: str) -> tuple[float, float, str]:
    """(max |Δ|, minimum label agreement, description) for a runtime."""
    native = runtime in ("keras", "sklearn", "h5", "savedmodel")
    if native:
        return 1e-5, 1.0, "identical labels, max |Δ| <= 1e-5 (same runtime family)"
    if meta["architecture"] in TREE_MODELS:
        return 1e-2, 0.999, "labels equal on >= 99.9% of rows, max |Δ| <= 1e-2 (tree thresholds in float32)"
    return 1e-3, 1.0, "identical labels, max |Δ| <= 1e-3 (float32 runtime)"


def _file_map(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): _sha256(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }


def _environment(framework: str, runtimes: list[str], modality: str = "tabular") -> dict[str, str]:
    names = ["numpy", "pandas", "scikit-learn", "joblib"] + (["pillow"] if modality == "image" else [])
    if framework == "keras" or {"keras", "h5", "savedmodel"} & set(runtimes):
        names += ["tensorflow", "keras"]
    if "onnx" in runtimes:
        names += ["onnxruntime"]
    if "tflite" in runtimes:
        names += ["ai-edge-litert"]
    env = {"python": platform.python_version()}
    for n in names:
        try:
            env[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            continue
    return env


def _verify(folder: Path, runtimes: list[str], raw_csv: Path) -> dict[str, Any]:
    """Load the package in one fresh Python process, from an empty working directory, once per runtime."""
    with tempfile.TemporaryDirectory(prefix="ml-expert-verify-") as empty:
        proc = subprocess.run(
            [sys.executable, "-c", VERIFY_SCRIPT, str(folder), str(raw_csv), *runtimes],
            cwd=empty,
            capture_output=True,
            text=True,
            timeout=VERIFY_TIMEOUT,
            env={
                "PYTHONNOUSERSITE": "1",
                "PYTHONDONTWRITEBYTECODE": "1",
                "TF_CPP_MIN_LOG_LEVEL": "3",
                "PATH": "/usr/bin:/bin",
                "OMP_NUM_THREADS": "1",
                "PYTHONWARNINGS": "ignore",
            },
        )
    if proc.returncode != 0:
        reason = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit code {proc.returncode}"
        return {r: {"error": f"the verifier process failed: {reason}"} for r in runtimes}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _compare(task: str, reference: np.ndarray, got: np.ndarray, scale: float) -> tuple[float | None, float]:
    if task in ("binary", "multiclass"):
        return float(np.mean(reference.argmax(1) == got.argmax(1))), float(np.max(np.abs(reference - got)))
    return None, float(np.max(np.abs(reference - got)) / scale)


def _compile_fast_path(build: Path, raw_csv: Path) -> bool:
    """Write fast_preprocess.json when the compiled preprocessing reproduces the fitted one on the test rows."""
    import joblib

    from ml_expert.tools.transformers import FastPreprocessor, coerce_frame

    schema = json.loads((build / "schema.json").read_text())
    pre = joblib.load(build / "preprocessor.joblib")
    spec = FastPreprocessor.compile(pre, schema)
    if spec is None:
        return False
    raw = pd.read_csv(raw_csv, dtype=str)
    records = [{k: (None if pd.isna(v) else v) for k, v in r.items()} for r in raw.to_dict("records")]
    fast = FastPreprocessor(json.loads(json.dumps(spec))["blocks"], schema).transform_records(records)
    slow = np.asarray(pre.transform(coerce_frame(raw, schema)), dtype=np.float32)
    if fast.shape != slow.shape or not np.allclose(fast, slow, rtol=1e-5, atol=1e-5, equal_nan=True):
        return False
    (build / "fast_preprocess.json").write_text(json.dumps(spec))
    return True


def run_package_job(ws: Workspace, spec: dict[str, Any], reporter: Any) -> dict[str, Any]:
    """Worker entry for kind 'package'."""
    run_id = spec["run_id"]
    meta = load_model_meta(ws, run_id, spec.get("model_id"))
    meta["_model_path"] = str(ws.resolve_path(meta["artifacts"]["model"]))
    prepared = load_prepared(ws, run_id)
    task = meta["task_type"]
    model = load_model(Path(meta["_model_path"]), meta["framework"])
    X_test, y_test = load_split(ws, run_id, "test")
    reference = predict_output(model, meta["framework"], task, X_test)
    run_dir = ws.run_dir(run_id)
    final = ws.resolve_path(spec["output_dir"], must_exist=False) if spec.get("output_dir") else run_dir / "deployment"
    build = final.parent / f".{final.name}.building-{meta['model_id']}"
    shutil.rmtree(build, ignore_errors=True)
    build.mkdir(parents=True)
    modality = prepared.get("modality", "tabular")
    for name in ("preprocessor.joblib", "schema.json"):
        if (run_dir / name).exists():  # images, sequences and text have no fitted preprocessor: schema.json says all
            shutil.copy(run_dir / name, build / name)
    shutil.copy(Path(__file__).parent / "transformers.py", build / "ml_expert_transformers.py")
    shutil.copy(TEMPLATES / "inference.py", build / "inference.py")
    if modality == "tabular":
        raw_csv = final.parent / f".{final.name}.raw_test.csv"
        raw_test = pd.read_parquet(run_dir / "data" / "raw_test.parquet").drop(columns=[prepared["target"]])
        raw_test.to_csv(raw_csv, index=False)
        fast_ok = _compile_fast_path(build, raw_csv)
    else:  # raw images / windows / texts, as saved by prepare_data
        raw_csv = final.parent / f".{final.name}.raw_test.npz"
        shutil.copy(run_dir / "data" / "raw_test.npz", raw_csv)
        fast_ok = False

    reports: list[FormatReport] = []
    entries: list[dict[str, Any]] = []
    formats = spec.get("formats") or default_formats(meta["framework"], modality)
    for i, fmt in enumerate(formats):
        reporter.progress(force=True, phase="package", step=i, total=len(formats), message=f"exporting {fmt}")
        try:
            name, runtime = _export(fmt, model, meta, build, X_test)
        except Exception as exc:  # a format that cannot be exported is reported, not shipped
            reports.append(FormatReport(format=fmt, file=None, shipped=False, error=f"export failed: {exc}"[:500]))
            continue
        entry = {"runtime": runtime, "file": name, "format": fmt}
        if runtime == "onnx" and meta["framework"] == "sklearn" and task in ("binary", "multiclass"):
            entry["output_index"] = 1
        entries.append(entry)
        reports.append(FormatReport(format=fmt, file=name, shipped=True, runtime=runtime))
    manifest = {
        "run_id": run_id,
        "model_id": meta["model_id"],
        "task_type": task,
        "preprocessor": "preprocessor.joblib" if modality == "tabular" else None,
        "modality": modality,
        "fast_preprocessor": "fast_preprocess.json" if fast_ok else None,
        "runtimes": entries,
        "files": _file_map(build),
    }
    write_json(build / "manifest.json", manifest)

    scale = float(max(1.0, np.std(y_test))) if task == "regression" else 1.0
    to_verify = [r for r in reports if r.shipped]
    reporter.progress(
        force=True,
        phase="package",
        step=len(formats),
        total=len(formats) + 1,
        message=f"verifying {[r.format for r in to_verify]} in a fresh process",
    )
    verified = _verify(build, [r.runtime or "" for r in to_verify], raw_csv) if to_verify else {}
    for rep in to_verify:
        tol, agreement, text = _tolerance(meta, rep.runtime or "")
        rep.tolerance = text
        target = build / (rep.file or "")
        rep.size_bytes = sum(p.stat().st_size for p in target.rglob("*")) if target.is_dir() else target.stat().st_size
        got = verified.get(rep.runtime or "", {"error": "not verified"})
        if "error" in got:
            rep.shipped, rep.error = False, f"verification failed: {got['error']}"[:500]
            continue
        rep.label_agreement, rep.max_abs_diff = _compare(task, reference, np.asarray(got["output"]), scale)
        rep.p50_ms, rep.p95_ms = round(got["p50_ms"], 4), round(got["p95_ms"], 4)
        rep.batch_rows_per_s = round(got["batch_rows_per_s"], 1)
        if rep.max_abs_diff > tol or (rep.label_agreement is not None and rep.label_agreement < agreement):
            rep.shipped = False
            rep.error = f"parity failed: agreement {rep.label_agreement}, max |Δ| {rep.max_abs_diff:.3g} ({text})"

    for rep in reports:  # leave failed formats out of the package
        if not rep.shipped and rep.file and (build / rep.file).exists():
            target = build / rep.file
            shutil.rmtree(target) if target.is_dir() else target.unlink()
    good = sorted((r for r in reports if r.shipped and r.runtime), key=lambda r: r.p50_ms or 1e9)
    manifest["runtimes"] = [e for r in good for e in entries if e["file"] == r.file]
    metrics_file = run_dir / "metrics.json"
    test_metric = {}
    if metrics_file.exists():
        evs = json.loads(metrics_file.read_text())["evaluations"]
        ev = next((e for e in evs if e["model_id"] == meta["model_id"]), None)
        test_metric = dict(list(ev["test_metrics"].items())[:4]) if ev else {}
    runtimes = [r.runtime for r in good if r.runtime]
    env = _environment(meta["framework"], runtimes, prepared.get("modality", "tabular"))
    write_docs(build, meta, prepared, reports, test_metric, env)
    manifest |= {
        "files": _file_map(build),
        "environment": env,
        "verification": [r.model_dump() for r in reports],
        "created_at": time.time(),
    }
    write_json(build / "manifest.json", manifest)
    raw_csv.unlink(missing_ok=True)
    old = final.parent / f".{final.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    build.rename(final)
    shutil.rmtree(old, ignore_errors=True)

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
        next_step="Ship the folder; ModelInference().predict(rows) takes raw rows with the original columns.",
    )
    runs.record_phase(ws, run_id, "package", {"deployment": result}, artifacts={"deployment": rel})
    return result.model_dump(mode="json")


def package(
    ws: Workspace,
    run_id: runs.RunId,
    model_id: Annotated[str | None, Field(description="Model to package; default the run's latest.")] = None,
    formats: Annotated[
        list[Format] | None,
        Field(description="Formats to export. Default: keras, onnx, tflite (Keras) or joblib, onnx (scikit-learn)."),
    ] = None,
    output_dir: Annotated[
        str | None, Field(description="Folder inside the workspace; default <run folder>/deployment.")
    ] = None,
    wait_seconds: WaitSeconds = 45,
    report: ProgressFn | None = None,
) -> JobStatus:
    """Build deployment/ (model formats, preprocessing, inference.py, docs, manifest) and verify it.

    Every format is loaded in a fresh process and must reproduce the model's test predictions.
    """
    load_prepared(ws, run_id)
    meta = load_model_meta(ws, run_id, model_id)
    allowed = KERAS_FORMATS if meta["framework"] == "keras" else SKLEARN_FORMATS
    modality = load_prepared(ws, run_id).get("modality", "tabular")
    chosen = list(dict.fromkeys(formats or default_formats(meta["framework"], modality)))
    bad = [f for f in chosen if f not in allowed]
    if bad:
        raise InvalidInputError(
            f"Formats {bad} do not apply to a {meta['framework']} model. Choose from {list(allowed)}."
        )
    if output_dir:
        ws.resolve_path(output_dir, must_exist=False, kind="output_dir")
    spec = {"run_id": run_id, "model_id": meta["model_id"], "formats": chosen, "output_dir": output_dir}
    namespace = runs.run_namespace(ws, run_id)
    return run_as_job(ws, "package", spec, run_id=run_id, namespace=namespace, wait_seconds=wait_seconds, report=report)
