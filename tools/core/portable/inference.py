#!/usr/bin/env python3
"""Inference for a model packaged by ml-expert.

    from inference import ModelInference
    model = ModelInference()                 # this folder; fastest verified runtime
    model.predict([{"age": 41, "city": "oslo"}])      # labels / values in the original space
    model.predict_proba("new_rows.csv")               # class probabilities

    python inference.py new_rows.csv [--format json|csv] [--runtime auto|onnx|tflite|keras|sklearn]

Inputs are raw rows with the original column names: a list of dicts, a dict, a pandas DataFrame,
or a CSV / JSON-lines / Parquet / Excel path. They are validated against schema.json and transformed by
the preprocessing fitted at training time. Every pickled file is checked against the sha256 in
manifest.json before it is loaded; Keras models load with safe_mode=True.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
if (HERE / "ml_expert_transformers.py").exists():  # a deployment folder (run as a script or imported as a package)
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
else:  # in ml-expert: the sibling modules register the names a deployment folder gives their files
    from . import fast, preprocessing  # noqa: F401

from ml_expert_fast import FastPreprocessor  # noqa: E402
from ml_expert_transformers import (  # noqa: E402
    EXCEL_SUFFIXES,
    FLOAT32_MAX,
    SchemaError,
    coerce_frame,
    csv_like_cells,
    read_sheet,
    resize_images,
    screen_frame,
    shown,
    threads_for,
    unpickle_bytes,
)

__all__ = ["ModelInference", "PackageIntegrityError", "SchemaError", "Scored"]

SNIFF_CHARS = 64 * 1024


class PackageIntegrityError(RuntimeError):
    """A package file does not match the sha256 recorded in manifest.json (tampered or corrupted)."""


def _delimiter(path: Path) -> str:
    """The delimiter of a CSV / TSV file, sniffed from its first lines (a comma when unclear)."""
    if path.suffix.lower() in (".tsv", ".tab"):
        return "\t"
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        lines = f.read(SNIFF_CHARS).splitlines()[:51]
    sample = "\n".join(lines[:-1] or lines)  # the last line read may be cut short
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


ROW_FILES = (".csv", ".tsv", ".tab", ".txt", ".jsonl", ".ndjson", ".json", ".parquet", ".pq", *EXCEL_SUFFIXES)


def _read_rows(records: Any) -> pd.DataFrame:
    if isinstance(records, pd.DataFrame):
        return records
    if isinstance(records, dict):
        return pd.DataFrame([records])
    if isinstance(records, (str, Path)):
        path = Path(records)
        suffix = path.suffix.lower()
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if suffix in EXCEL_SUFFIXES:  # the first sheet; needs openpyxl (not in requirements.txt: CSV needs none)
            return read_sheet(path)
        if suffix in (".jsonl", ".ndjson", ".json"):  # list or object cells as their JSON text, as training read them
            return csv_like_cells(pd.read_json(path, lines=True, dtype=False))
        return pd.read_csv(path, dtype=str, sep=_delimiter(path))
    if isinstance(records, list) and all(isinstance(r, dict) for r in records):
        return pd.DataFrame(records)
    raise TypeError("records must be a dict, a list of dicts, a pandas DataFrame, or a CSV/JSONL/Parquet/Excel path.")


def _trimmed(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with its column names as training read them: text, without surrounding spaces (a new frame whose
    columns share the data; the caller's frame is left as it is)."""
    names = [str(c).strip() for c in frame.columns]
    return frame if names == list(frame.columns) else frame.set_axis(names, axis=1)


def _trimmed_keys(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records whose keys lose surrounding spaces, as the training file's column names did."""
    if all(str(k).strip() == k for k in records[0]):
        return records
    return [{str(k).strip(): v for k, v in record.items()} for record in records]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class Scored:
    """What `ModelInference.score` returns: outputs of the rows that could be scored, and why the others were not."""

    def __init__(
        self,
        rows: int,
        positions: np.ndarray,
        output: np.ndarray,
        refused: dict[int, str],
        converted: pd.DataFrame | None = None,
    ) -> None:
        self.rows = rows  # rows given
        self.positions = positions  # positions (0 = first row given) of the scored rows, ascending
        self.output = output  # class probabilities (n, k) or values (n,) of the scored rows
        self.refused = refused  # {position: reason} of the rows that were not scored
        self.converted = converted  # every given row of a table, converted to the schema's types


class ModelInference:
    """Load the package once; predict raw rows many times."""

    def __init__(self, package_dir: str | Path | None = None, runtime: str = "auto") -> None:
        self.dir = Path(package_dir).resolve() if package_dir else HERE
        self.manifest = json.loads((self.dir / "manifest.json").read_text())
        self.schema = json.loads(self._verified("schema.json").read_text())
        self.task = self.schema["task_type"]
        self.classes = self.schema.get("classes")
        pre = self.manifest.get("preprocessor")
        self.preprocessor = self._load_pickle(pre) if pre else None
        fast = self.manifest.get("fast_preprocessor")
        self.fast = (
            FastPreprocessor(json.loads(self._verified(fast).read_text())["blocks"], self.schema) if fast else None
        )
        available = {r["runtime"]: r for r in self.manifest["runtimes"]}
        if runtime == "auto":
            if not available:
                raise RuntimeError("manifest.json lists no verified runtime; re-run ml-expert package.")
            runtime = self.manifest["runtimes"][0]["runtime"]
        if runtime not in available:
            raise ValueError(f"Runtime {runtime!r} is not in this package; available: {sorted(available)}.")
        self.runtime = runtime
        entry = available[runtime]
        self._run = getattr(self, f"_load_{runtime}")(self._verified(entry["file"]), entry)

    @classmethod
    def from_parts(cls, schema: dict[str, Any], preprocessor: Any, run: Any, runtime: str) -> ModelInference:
        """The same object from pieces already loaded (ml-expert's predict tool: model and preprocessor from a
        run, checked against the server's digests), so the tool and this package share every later step."""
        self = cls.__new__(cls)
        self.dir, self.manifest, self.schema = None, {}, schema
        self.task, self.classes = schema["task_type"], schema.get("classes")
        self.preprocessor, self.fast, self.runtime, self._run = preprocessor, None, runtime, run
        return self

    # -- loading --------------------------------------------------------------------------------

    def _verified(self, name: str) -> Path:
        path = self.dir / name
        if path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                self._verified(str(file.relative_to(self.dir)))
            return path
        if _sha256(path) != self._expected(name):
            raise self._tampered(name)
        return path

    def _expected(self, name: str) -> str:
        expected = self.manifest["files"].get(name)
        if expected is None:
            raise PackageIntegrityError(f"{name} is not listed in manifest.json; refusing to load it.")
        return expected

    @staticmethod
    def _tampered(name: str) -> PackageIntegrityError:
        return PackageIntegrityError(
            f"{name} does not match its sha256 in manifest.json (tampered or corrupted); refusing to load it."
        )

    def _load_pickle(self, name: str) -> Any:
        """A pickled file, read once: the bytes whose sha256 is checked are the bytes loaded."""
        data = (self.dir / name).read_bytes()
        if hashlib.sha256(data).hexdigest() != self._expected(name):
            raise self._tampered(name)
        return unpickle_bytes(data)

    def _load_onnx(self, path: Path, entry: dict[str, Any]) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        index = entry.get("output_index", 0)
        return lambda X: session.run(None, {name: X})[index]

    def _load_tflite(self, path: Path, entry: dict[str, Any]) -> Any:
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(path), num_threads=1)
        inp = interpreter.get_input_details()[0]
        out = interpreter.get_output_details()[0]
        state = {"shape": None}

        def run(X: np.ndarray) -> np.ndarray:
            if state["shape"] != X.shape:
                interpreter.resize_tensor_input(inp["index"], X.shape)
                interpreter.allocate_tensors()
                state["shape"] = X.shape
            interpreter.set_tensor(inp["index"], X)
            interpreter.invoke()
            return interpreter.get_tensor(out["index"]).copy()

        return run

    def _load_keras(self, path: Path, entry: dict[str, Any]) -> Any:
        import keras

        model = keras.saving.load_model(path, safe_mode=True, compile=False)
        if self.schema.get("modality") == "text":  # string inputs travel as a string tensor
            import tensorflow as tf

            return lambda X: np.asarray(model.predict(tf.constant(X.astype(str)), verbose=0))
        return lambda X: np.asarray(model(X, training=False) if len(X) <= 256 else model.predict(X, verbose=0))

    def _load_h5(self, path: Path, entry: dict[str, Any]) -> Any:
        import keras

        model = keras.saving.load_model(path, compile=False)  # legacy HDF5: weights and config, no code
        return lambda X: np.asarray(model(X, training=False) if len(X) <= 256 else model.predict(X, verbose=0))

    def _load_savedmodel(self, path: Path, entry: dict[str, Any]) -> Any:
        import tensorflow as tf

        loaded = tf.saved_model.load(str(path))
        return lambda X: loaded.serve(tf.constant(X)).numpy()

    def _load_sklearn(self, path: Path, entry: dict[str, Any]) -> Any:
        model = self._load_pickle(entry["file"])
        method = model.predict_proba if self.task in ("binary", "multiclass") else model.predict

        def run(X: np.ndarray) -> Any:
            with threads_for(len(X)):
                return method(X)

        return run

    # -- predicting -----------------------------------------------------------------------------

    @staticmethod
    def to_frame(records: Any) -> pd.DataFrame:
        """Raw rows as a DataFrame: from a DataFrame, a dict, a list of dicts, or a CSV/JSONL/Parquet/Excel path. Column
        names lose surrounding spaces, as the training file's did (a header " price " trained as "price")."""
        return _trimmed(_read_rows(records))

    def transform(self, records: Any) -> np.ndarray:
        """Raw rows / images / windows / texts -> the model's input (validated against schema.json)."""
        modality = self.schema.get("modality", "tabular")
        if modality != "tabular":
            return self._transform_other(records, modality)
        if self.fast is not None and (
            isinstance(records, dict)
            or (isinstance(records, list) and 0 < len(records) <= 256 and all(isinstance(r, dict) for r in records))
        ):
            X = self.fast.transform_records(_trimmed_keys([records] if isinstance(records, dict) else records))
        else:
            X = self._model_input(self.preprocessor.transform(coerce_frame(self.to_frame(records), self.schema)))
        past = np.flatnonzero(~np.isfinite(X).all(axis=1))
        if past.size:
            raise SchemaError(f"Rows {past[:10].tolist()}: {self._past_float32(X[past[0]])}")
        return X

    @staticmethod
    def _model_input(features: Any) -> np.ndarray:
        """The preprocessor's output as the model takes it (float32; a value past its range becomes inf)."""
        with np.errstate(over="ignore"):
            return np.asarray(features, dtype=np.float32)

    def _past_float32(self, row: np.ndarray) -> str:
        """Why a row whose features hold a value float32 cannot (after scaling) is not scored."""
        j = int(np.flatnonzero(~np.isfinite(row))[0])
        names = self.schema.get("feature_names") or []
        feature = shown(str(names[j])) if j < len(names) else f"number {j}"
        return (
            f"feature {feature} is past the float32 range (±{FLOAT32_MAX:.1e}) after preprocessing, which the model "
            "cannot take; pass values nearer the training range"
        )

    def _transform_other(self, records: Any, modality: str) -> np.ndarray:
        if modality == "text":
            file = isinstance(records, Path) or (isinstance(records, str) and Path(records).suffix.lower() in ROW_FILES)
            rows = isinstance(records, (pd.DataFrame, dict)) or (
                isinstance(records, list) and bool(records) and isinstance(records[0], dict)
            )
            if file or rows:  # raw rows, as the predict tool takes them: the text column of each, a missing text ""
                frame = self.to_frame(records)
                column = self.schema["text_column"]
                if column not in frame.columns:
                    raise ValueError(f"the rows have no {column!r} column, the text to classify")
                records = frame[column].fillna("").astype(str).tolist()
            texts = [records] if isinstance(records, str) else np.asarray(records, dtype=object).reshape(-1).tolist()
            return np.asarray(["" if pd.isna(t) else str(t) for t in texts], dtype=object).reshape(-1, 1)
        if isinstance(records, (str, Path)) and Path(records).suffix.lower() == ".npy":
            records = np.load(records, allow_pickle=False)  # images or windows saved as an array
        if modality == "image":
            shape = tuple(self.schema["image_shape"])
            if isinstance(records, (str, Path)) or (
                isinstance(records, list) and records and isinstance(records[0], (str, Path))
            ):
                from PIL import Image

                paths = [records] if isinstance(records, (str, Path)) else records
                mode = "L" if shape[-1] == 1 else "RGB"
                records = [np.asarray(Image.open(p).convert(mode).resize((shape[1], shape[0]))) for p in paths]
            arr = np.asarray(records, dtype=np.float32)
            if shape[-1] == 1 and arr.shape[-1] != 1:
                arr = arr[..., None]
            if arr.ndim == len(shape):
                arr = arr[None]
            if arr.ndim == 4 and arr.shape[-1] == shape[-1] and arr.shape[1:3] != shape[:2]:
                arr = resize_images(arr, shape[:2])  # arrays of another size, resized as prepare_data did
            if arr.shape[1:] != shape:
                raise SchemaError(f"Images must have shape {list(shape)} (H, W, C); received {list(arr.shape[1:])}.")
            return arr * np.float32(self.schema["pixel_scale"])
        shape = tuple(self.schema["sequence_shape"])
        if isinstance(records, (pd.DataFrame, str, Path)):  # recent rows, oldest first: their last window
            records = self._last_window(self.to_frame(records), shape)
        arr = np.asarray(records, dtype=np.float32)
        if arr.ndim == len(shape):
            arr = arr[None]
        if arr.shape[1:] != shape:
            raise SchemaError(
                f"Windows must have shape {list(shape)} (steps, features: "
                f"{self.schema.get('features')}); received {list(arr.shape[1:])}."
            )
        return ((arr - np.asarray(self.schema["mean"])) / np.asarray(self.schema["std"])).astype(np.float32)

    def _last_window(self, frame: pd.DataFrame, shape: tuple[int, ...]) -> np.ndarray:
        """The last shape[0] rows of the series' feature columns (a time column and others are left out)."""
        features = [str(f) for f in self.schema.get("features") or []]
        missing = [f for f in features if f not in frame.columns]
        if not features or missing:
            raise SchemaError(f"The rows need the series' columns {features}; missing {missing or features}.")
        if len(frame) < shape[0]:
            raise SchemaError(f"A window needs the last {shape[0]} rows (oldest first); received {len(frame)}.")
        values = frame[features].apply(pd.to_numeric, errors="coerce").interpolate(limit_direction="both")
        return values.to_numpy(np.float32)[-shape[0] :]  # gaps filled as in training

    def predict_output(self, records: Any) -> np.ndarray:
        """Raw model output: class probabilities (n, k) or values (n,)."""
        out = np.asarray(self._run(self.transform(records)), dtype=np.float64)
        return out if self.task in ("binary", "multiclass") else out.reshape(len(out), -1)[:, 0]

    def predict_proba(self, records: Any) -> np.ndarray:
        if self.task not in ("binary", "multiclass"):
            raise ValueError("predict_proba is for classification models; use predict.")
        return self.predict_output(records)

    def score(self, records: Any) -> Scored:
        """Score every row of a table (or texts) that can be scored: a value that does not fit its column refuses
        that row only, and a missing column is imputed like a missing value; one bad row never fails the batch."""
        modality = self.schema.get("modality", "tabular")
        if modality not in ("tabular", "text"):
            out = self.predict_output(records)
            return Scored(len(out), np.arange(len(out)), out, {})
        frame = self.to_frame(records)
        if modality == "text":
            column = self.schema["text_column"]
            if column not in frame.columns:
                why = f"no {column!r} column (the text to classify)"
                return Scored(len(frame), np.arange(0), self.empty_output(), dict.fromkeys(range(len(frame)), why))
            out = self.predict_output(frame[column].fillna("").astype(str).tolist())
            return Scored(len(frame), np.arange(len(frame)), out, {})
        coerced, refused = screen_frame(frame, self.schema)
        positions = np.asarray([i for i in range(len(frame)) if i not in refused], dtype=np.int64)
        no_rows = np.empty((0, 0), np.float32)
        X = self._model_input(self.preprocessor.transform(coerced.iloc[positions])) if len(positions) else no_rows
        fits = np.isfinite(X).all(axis=1)  # False where a scaler pushed a value past float32
        refused |= {int(p): self._past_float32(X[i]) for i, p in enumerate(positions) if not fits[i]}
        positions, X, out = positions[fits], X[fits], self.empty_output()
        if len(positions):
            out = np.asarray(self._run(X)).astype(np.float64)
            out = out if self._classifies else out.reshape(len(out), -1)[:, 0]
            finite = np.isfinite(out.reshape(len(out), -1)).all(axis=1)
            refused |= dict.fromkeys(map(int, positions[~finite]), "the model's output for this row is not finite")
            positions, out = positions[finite], out[finite]
        return Scored(len(frame), positions, out, dict(sorted(refused.items())), coerced)

    @property
    def _classifies(self) -> bool:
        return self.task in ("binary", "multiclass")

    def empty_output(self) -> np.ndarray:
        return np.empty((0, len(self.classes or [])) if self._classifies else (0,))

    def predict(self, records: Any) -> list[Any]:
        """Labels in the original label space (classification) or predicted values (regression)."""
        return self.labels(self.predict_output(records))

    def labels(self, out: np.ndarray) -> list[Any]:
        """Raw model output -> labels in the original label space (classification), values (regression) or
        cluster ids (clustering)."""
        if self.task == "clustering":
            return [int(v) for v in out]
        if self.task not in ("binary", "multiclass"):
            return [float(v) for v in out]
        labels = [self.classes[i] for i in out.argmax(axis=1)]
        kind = self.schema.get("target_dtype")
        if kind in ("i", "u"):
            return [int(float(v)) for v in labels]
        if kind == "f":
            return [float(v) for v in labels]
        if kind == "b":
            return [v == "True" for v in labels]
        return labels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Predict with this ml-expert package.")
    parser.add_argument(
        "input",
        help="CSV, JSON lines, Parquet or Excel file of raw rows (original column names); for an image model an image "
        "file or a .npy array of images; for a sequence model a .npy array of windows or a CSV of the recent rows.",
    )
    parser.add_argument("--format", choices=["csv", "json"], default="csv", help="Output format.")
    parser.add_argument("--runtime", default="auto", help="auto (fastest verified) or one from manifest.json.")
    args = parser.parse_args(argv)
    try:
        model = ModelInference(runtime=args.runtime)
        preds = model.predict(args.input)
        probs = model.predict_proba(args.input) if model.task in ("binary", "multiclass") else None
    except (SchemaError, PackageIntegrityError, ValueError, OSError) as exc:  # OSError: a missing or unreadable file
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = []
    for i, p in enumerate(preds):
        row: dict[str, Any] = {"prediction": p}
        if probs is not None:
            row |= {f"p_{c}": float(probs[i, j]) for j, c in enumerate(model.classes)}
        rows.append(row)
    if args.format == "json":
        print(json.dumps(rows))
    else:
        pd.DataFrame(rows).to_csv(sys.stdout, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
