"""Writing a model in each deployment format, and what a package records about it.

Keras: `.keras`, legacy H5, SavedModel, TFLite/LiteRT, ONNX (via `model.export`); scikit-learn:
joblib and ONNX (skl2onnx). Each export returns the file name and the runtime `inference.py`
uses to load it; `tolerance` says how close each runtime must reproduce the in-process model.
"""

from __future__ import annotations

import platform
import shutil
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from ml_expert.tools.artifacts import sha256
from ml_expert.tools.core.lazy import lazy_import
from ml_expert.tools.core.model_meta import ModelMeta
from ml_expert.tools.core.tasks import is_classification

np = lazy_import("numpy")  # loads on first use, not at server start

Format = Literal["keras", "h5", "savedmodel", "tflite", "onnx", "joblib"]
KERAS_FORMATS = ("keras", "h5", "savedmodel", "tflite", "onnx")
SKLEARN_FORMATS = ("joblib", "onnx")
TREE_MODELS = ("random_forest", "gradient_boosting")
KERAS_EXPORTS = {
    "h5": ("model.h5", "h5"),
    "savedmodel": ("savedmodel", "savedmodel"),
    "tflite": ("model.tflite", "tflite"),
    "onnx": ("model.onnx", "onnx"),
}


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
    batch_rows_per_s: float | None = Field(
        None, description="Batch throughput on 10,000 raw rows (on 1,000 where those took 0.2 s or more)."
    )
    size_bytes: int | None = None
    verified_in: str | None = Field(
        None,
        description="The process that loaded the package: a new Python process, or one forked from the warm job "
        "server (which has imported third-party libraries only: fresh but for its start-up).",
    )
    error: str | None = None


def default_formats(framework: str, modality: str = "tabular", onnx: bool = True) -> list[str]:
    """The formats a package ships unless asked otherwise; onnx=False for models skl2onnx cannot convert
    (a blend of several models, a tuned threshold, a log-transformed target): joblib is then the runtime."""
    if framework != "keras":
        return ["joblib", "onnx"] if onnx else ["joblib"]
    # string inputs (TextVectorization) do not convert to ONNX/TFLite; SavedModel serves them
    return ["keras", "savedmodel"] if modality == "text" else ["keras", "onnx", "tflite"]


def file_map(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file of a package (the manifest's `files`)."""
    return {
        str(p.relative_to(folder)): sha256(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }


def export_format(
    fmt: str, model: Any, meta: ModelMeta, source: Path, folder: Path, X_sample: np.ndarray
) -> tuple[str, str | None]:
    """Write one format into folder; return (file name, runtime that loads it or None)."""
    if fmt in ("keras", "joblib"):
        shutil.copy(source, folder / source.name)
        return source.name, "keras" if fmt == "keras" else "sklearn"
    if meta.framework == "sklearn":  # onnx
        from skl2onnx import to_onnx

        options = {id(model): {"zipmap": False}} if is_classification(meta.task_type) else None
        onx = to_onnx(model, X_sample[:1].astype(np.float32), options=options, target_opset=17)
        (folder / "model.onnx").write_bytes(onx.SerializeToString())
        return "model.onnx", "onnx"
    name, runtime = KERAS_EXPORTS[fmt]
    if fmt == "h5":
        model.save(folder / name)
        return name, runtime
    import tensorflow as tf

    dtype = tf.string if X_sample.dtype.kind in "USO" else tf.float32
    model.export(
        str(folder / name),
        format={"savedmodel": "tf_saved_model", "tflite": "litert"}.get(fmt, fmt),
        verbose=False,
        input_signature=[tf.TensorSpec([None, *X_sample.shape[1:]], dtype, name="features")],
    )
    return name, runtime


def tolerance(meta: ModelMeta, runtime: str) -> tuple[float, float, str]:
    """(max |Δ|, minimum label agreement, description) for a runtime."""
    if runtime in ("keras", "sklearn", "h5", "savedmodel"):
        return 1e-5, 1.0, "identical labels, max |Δ| <= 1e-5 (same runtime family)"
    if meta.architecture in TREE_MODELS or meta.architecture == "auto":  # the search's models are trees
        return 1e-2, 0.999, "labels equal on >= 99.9% of rows, max |Δ| <= 1e-2 (tree thresholds in float32)"
    return 1e-3, 1.0, "identical labels, max |Δ| <= 1e-3 (float32 runtime)"


def environment(
    framework: str, runtimes: list[str], modality: str = "tabular", extra: list[str] | None = None
) -> dict[str, str]:
    """Versions of Python and of every package the shipped runtimes need (pinned in requirements.txt); `extra`:
    packages the model itself needs (catboost)."""
    names = ["numpy", "pandas", "scikit-learn", "joblib"] + (["pillow"] if modality == "image" else []) + (extra or [])
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
