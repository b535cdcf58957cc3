"""Images, sequences and text: loading, summaries and leakage-free preparation.

- Images: a folder with one subfolder per class, an `.npz` with `X` (N,H,W[,C]) and `y`, or a CSV
  of pixel columns plus `image_shape`. Pixels are scaled to [0, 1].
- Sequences: a CSV with a time column and value columns -> windows (`lookback` -> `horizon`),
  split in time order; or an `.npz` of (N, T, F) sequences with labels. Features are standardised
  with training-window statistics.
- Text: a text column; the vocabulary (`TextVectorization`) is fitted in the training worker on
  the training split only and saved with the model.

Used by analyze_data / prepare_data when the modality is not tabular.
"""

from __future__ import annotations

import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from ml_expert.memory.errors import InvalidInputError, NotFoundError
from ml_expert.tools.core.lazy import lazy_import
from ml_expert.tools.data.io import read_table
from ml_expert.tools.data.profiling import TaskChoice, choose_task, infer_kind
from ml_expert.tools.data.splitting import split_indices

np = lazy_import("numpy")  # loads with the first data tool call, not at server start
pd = lazy_import("pandas")  # loads with the first data tool call, not at server start

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
MAX_IMAGE_SIDE = 64


def detect_modality(path: Path, modality: str | None, options: dict[str, Any]) -> str:
    """The data's modality: the argument when given, else from the file's shape."""
    if modality:
        return modality
    if path.is_dir():
        return "image"
    if path.suffix.lower() == ".npz":
        shape = npz_shapes(path)["X"]
        # (N, H, W[, C]) images vs (N, steps, features) sequences: features are few, image sides are not
        square_ish = len(shape) == 3 and min(shape[1:]) >= 8
        return "image" if len(shape) == 4 or square_ish or options.get("image_shape") else "sequence"
    if options.get("image_shape"):
        return "image"
    if options.get("text_column"):
        return "text"
    if options.get("lookback"):
        return "sequence"
    return "tabular"


def npz_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Shapes of the arrays X and y in an .npz, read from the array headers only (nothing is decompressed
    beyond them); a clear error for a file that is not an .npz of numeric X and y."""
    shapes: dict[str, tuple[int, ...]] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n.removesuffix(".npy") for n in archive.namelist()]
            for name in ("X", "y"):
                if name not in names:
                    raise InvalidInputError(f"{path.name} must hold arrays 'X' and 'y'; it has {names[:20]}.")
                with archive.open(f"{name}.npy") as f:
                    version = np.lib.format.read_magic(f)
                    header = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0
                    )
                    shape, _, dtype = header(f)
                if dtype.hasobject:
                    raise InvalidInputError(
                        f"{path.name}: array {name!r} holds Python objects ({dtype}); only numeric or string arrays "
                        "are read (objects would need unpickling). Save it with a numeric or fixed-width string dtype."
                    )
                shapes[name] = tuple(shape)
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise InvalidInputError(f"{path.name} is not a readable .npz file ({exc}). Save it with numpy.savez.") from exc
    if len(shapes["X"]) < 2:
        raise InvalidInputError(
            f"{path.name}: X has shape {list(shapes['X'])}; it needs one row per example: (N, H, W[, C]) images or "
            "(N, T[, F]) sequences. A table of features belongs in a CSV or Parquet file."
        )
    if shapes["X"][0] != (shapes["y"][0] if shapes["y"] else -1):
        raise InvalidInputError(f"{path.name}: X has {shapes['X'][0]} rows but y has shape {list(shapes['y'])}.")
    return shapes


def _inside(file: Path, folder: Path) -> Path:
    """A file of an image folder, resolved; refused when it (or its class folder) links outside the folder."""
    resolved = file.resolve()
    if folder.resolve() not in resolved.parents:
        raise InvalidInputError(
            f"{file.relative_to(folder)} is a link to {resolved}, outside the image folder {folder.name}; files "
            "are read only from inside it. Copy the images in instead of linking them."
        )
    return resolved


def _open_image(file: Path, folder: Path) -> Any:
    from PIL import Image

    try:
        return Image.open(_inside(file, folder))
    except OSError as exc:
        raise InvalidInputError(f"Cannot read image {file.relative_to(folder)}: {exc}. Remove or fix it.") from exc


def _load_image_folder(path: Path, image_size: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray, dict]:
    classes = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise InvalidInputError(
            f"Image folder {path.name} needs one subfolder per class (at least 2); found "
            f"{classes}. Layout: {path.name}/<class>/<image files>."
        )
    entries = [(c, f) for c in classes for f in sorted((path / c).iterdir()) if not f.name.startswith(".")]
    files = [(c, f) for c, f in entries if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise InvalidInputError(f"No image files ({sorted(IMAGE_SUFFIXES)}) in the class folders of {path.name}.")
    modes: Counter[str] = Counter()
    shapes: Counter[tuple[int, int]] = Counter()
    for _, file in files:  # headers only (pixels load lazily): the folder's own mode and size, not its first file's
        with _open_image(file, path) as img:
            modes["L" if img.mode in ("L", "1", "I;16", "I", "F") else "RGB"] += 1
            shapes[img.size[::-1]] += 1
    mode = "RGB" if modes["RGB"] else "L"  # one colour image makes the folder colour: grey converts without loss
    size = image_size or tuple(min(s, MAX_IMAGE_SIDE) for s in shapes.most_common(1)[0][0])
    facts = {
        "color_mode": mode,
        "image_size": list(size),
        "skipped_files": [str(f.relative_to(path)) for _, f in entries if f.suffix.lower() not in IMAGE_SUFFIXES][:20],
        "empty_class_folders": [c for c in classes if not any(label == c for label, _ in files)],
    }
    sizes: Counter[str] = Counter()
    images, labels = [], []
    for label, file in files:
        with _open_image(file, path) as img:
            sizes[f"{img.size[1]}x{img.size[0]}"] += 1
            try:
                images.append(np.asarray(img.convert(mode).resize((size[1], size[0]))))
            except OSError as exc:
                raise InvalidInputError(
                    f"Cannot read image {file.relative_to(path)}: {exc}. Remove or fix it."
                ) from exc
        labels.append(label)
    X = np.stack(images)
    X = X[..., None] if X.ndim == 3 else X
    return X, np.asarray(labels), {"original_sizes": dict(sizes.most_common(10)), **facts}


def load(path: Path, modality: str, target: str | None, options: dict[str, Any]) -> dict[str, Any]:
    """Inputs X, targets y and facts about them for a non-tabular dataset."""
    loaders = {"image": _load_images, "sequence": _load_sequences, "text": _load_texts}
    if modality not in loaders:
        raise InvalidInputError(f"Unknown modality {modality!r}; use tabular, image, sequence or text.")
    return loaders[modality](path, target, options)


def _pixel_csv(path: Path, target: str | None, shape: list[int] | None) -> tuple[np.ndarray, np.ndarray]:
    if not shape or not target:
        raise InvalidInputError("A CSV of pixels needs image_shape=[H, W] or [H, W, C] and target=.")
    df = read_table(path)
    _need_column(df, target, path)
    X = df.drop(columns=[target]).to_numpy(dtype=np.float32)
    if X.shape[1] != int(np.prod(shape)):
        raise InvalidInputError(
            f"image_shape {list(shape)} needs {int(np.prod(shape))} pixel columns; {path.name} has {X.shape[1]}."
        )
    X = X.reshape(-1, *shape)
    return (X[..., None] if X.ndim == 3 else X), df[target].to_numpy()


def _load_images(path: Path, target: str | None, options: dict[str, Any]) -> dict[str, Any]:
    """A folder per class, an .npz with X and y, or a pixel CSV; resized to image_size when given."""
    size = options.get("image_size")
    if size and not 1 <= min(size) <= max(size) <= 4096:
        raise InvalidInputError(f"image_size must be [height, width] between 1 and 4096; received {list(size)}.")
    info: dict[str, Any] = {}
    if path.is_dir():
        X, y, info = _load_image_folder(path, size)
    elif path.suffix.lower() == ".npz":
        npz_shapes(path)  # clear errors for object arrays, 1-D X, missing y
        with np.load(path, allow_pickle=False) as data:
            X, y = data["X"], data["y"]
        X = X[..., None] if X.ndim == 3 else X
    else:
        X, y = _pixel_csv(path, target, options.get("image_shape"))
    if X.ndim != 4:
        raise InvalidInputError(f"Images must be (N, H, W) or (N, H, W, C); received shape {X.shape}.")
    if not path.is_dir() and size and X.shape[1:3] != tuple(size):  # folders are resized while read
        from ml_expert.tools.core.portable.preprocessing import resize_images  # sklearn: not at server start

        info["original_sizes"] = {f"{X.shape[1]}x{X.shape[2]}": len(X)}
        X = resize_images(X, size)
    return {"X": X, "y": y, "info": {**info, "image_shape": list(X.shape[1:])}}


def _load_sequences(path: Path, target: str | None, options: dict[str, Any]) -> dict[str, Any]:
    """An .npz of (N, T[, F]) labelled sequences, or forecasting windows over a time series CSV."""
    if path.suffix.lower() != ".npz":
        return _windows(path, target, options)
    npz_shapes(path)
    with np.load(path, allow_pickle=False) as data:
        X, y = data["X"].astype(np.float32), data["y"]
    if X.ndim == 2:
        X = X[..., None]
    return {"X": X, "y": y, "info": {"sequence_shape": list(X.shape[1:]), "forecast": False}}


def _load_texts(path: Path, target: str | None, options: dict[str, Any]) -> dict[str, Any]:
    """A text column (named, or the first column of kind text) and the target."""
    column = options.get("text_column")
    df = read_table(path)
    if column is None:
        column = next((c for c in df.columns if c != target and infer_kind(df[c], len(df)) == "text"), None)
    if column is None or not target:
        raise InvalidInputError("Text data needs target= and text_column= (the column of documents).")
    _need_column(df, column, path)
    _need_column(df, target, path)
    df = df[df[column].notna()]
    texts = df[column].astype(str).to_numpy()
    tokens = pd.Series(texts).str.split().str.len()
    return {
        "X": texts,
        "y": df[target].to_numpy(),
        "info": {
            "text_column": column,
            "documents": len(texts),
            "avg_tokens": round(float(tokens.mean()), 1),
            "max_tokens": int(tokens.max()),
            "distinct_words": len({w for t in texts[:5000] for w in t.lower().split()}),
        },
    }


def _need_column(df: pd.DataFrame, column: str, path: Path) -> None:
    if column not in df.columns:
        raise NotFoundError(f"Column {column!r} not in {path.name}. Columns: {list(df.columns)[:50]}.")


def _windows(path: Path, target: str | None, options: dict[str, Any]) -> dict[str, Any]:
    """Forecasting windows: `lookback` past rows of the value columns -> the target `horizon` steps ahead."""
    df = read_table(path)
    time_column, lookback, horizon = (
        options.get("time_column"),
        options.get("lookback") or 24,
        options.get("horizon") or 1,
    )
    if not target:
        raise InvalidInputError("A time series needs target= (the value column to forecast).")
    _need_column(df, target, path)
    if time_column:
        _need_column(df, time_column, path)
        order = pd.to_datetime(df[time_column], errors="coerce", format="mixed")
        df = df.assign(_order=order if order.notna().mean() > 0.9 else df[time_column]).sort_values("_order")
        df = df.drop(columns=["_order", time_column])
    values = df.select_dtypes("number")
    if target not in values.columns:
        raise InvalidInputError(f"Target {target!r} must be numeric to forecast it.")
    values = values.interpolate(limit_direction="both")
    n = len(values) - lookback - horizon + 1
    if n < 30:
        raise InvalidInputError(
            f"{len(values)} rows give only {max(n, 0)} windows of lookback {lookback} + horizon "
            f"{horizon}; use a shorter lookback or more rows (at least 30 windows)."
        )
    arr = values.to_numpy(dtype=np.float32)
    tgt = values[target].to_numpy(dtype=np.float32)
    X = np.stack([arr[i : i + lookback] for i in range(n)])
    y = tgt[lookback + horizon - 1 : lookback + horizon - 1 + n]
    return {
        "X": X,
        "y": y,
        "info": {
            "forecast": True,
            "lookback": lookback,
            "horizon": horizon,
            "features": list(values.columns),
            "series_length": len(values),
            "sequence_shape": list(X.shape[1:]),
        },
    }


def _task(loaded: dict[str, Any], requested: TaskChoice) -> str:
    """A forecast is a regression; anything else is the target's guessed or requested task."""
    if not loaded["info"].get("forecast"):
        return choose_task(pd.Series(loaded["y"], name="target"), requested)
    if requested == "classification":
        raise InvalidInputError(
            "A forecast (a series without a target column) predicts the next value, a regression: "
            "task_type='classification' does not apply. Omit task_type, or give a target column of labels."
        )
    return "regression"


def summary(loaded: dict[str, Any], modality: str, requested: TaskChoice = "auto") -> dict[str, Any]:
    """What analyze_data reports for a non-tabular dataset."""
    X, y = loaded["X"], loaded["y"]
    out = {"modality": modality, "samples": len(X), **loaded["info"]}
    if modality == "image":
        out |= {"channels": int(X.shape[-1]), "pixel_range": [float(X.min()), float(X.max())]}
    task = _task(loaded, requested)
    out["task_type"] = task
    if task != "regression":
        counts = pd.Series(y).astype(str).value_counts()
        out["class_counts"] = {str(k): int(v) for k, v in counts.head(30).items()}
        out["imbalance_ratio"] = round(float(counts.iloc[0] / counts.iloc[-1]), 2)
    return out


def prepare(
    loaded: dict[str, Any],
    modality: str,
    shares: tuple[float, float, float],
    seed: int,
    requested: TaskChoice = "auto",
) -> dict[str, Any]:
    """Split (time order for forecasts, stratified otherwise) and scale with training statistics only."""
    X, y_raw = loaded["X"], loaded["y"]
    info = loaded["info"]
    task = _task(loaded, requested)
    classes = None
    if task == "regression":
        y = np.asarray(y_raw, dtype=np.float64)
    else:
        y_str = pd.Series(y_raw).astype(str)
        numeric = pd.api.types.is_numeric_dtype(pd.Series(y_raw).dtype)
        classes = sorted(y_str.unique(), key=lambda v: (float(v), v) if numeric else (0, v))
        y = y_str.map({c: i for i, c in enumerate(classes)}).to_numpy(dtype=np.int64)
    strategy = "time" if info.get("forecast") else "random"
    parts, warnings = split_indices(
        len(X),
        shares,
        strategy=strategy,
        y=y if classes else None,
        order=pd.Series(np.arange(len(X))),
        seed=seed,
        labels=classes,
    )
    schema: dict[str, Any] = {
        "modality": modality,
        "task_type": task,
        "classes": classes,
        "target_dtype": pd.Series(y_raw).dtype.kind,
        "columns": [],
    }
    if modality == "image":
        peak = float(X[parts["train"]].max())  # the training split's pixel range (255 for 8-bit, 16 for digits)
        scale = 1.0 / peak if peak > 1.0 else 1.0
        schema |= {"image_shape": list(X.shape[1:]), "pixel_scale": scale}
        arrays = {k: (X[v].astype(np.float32) * scale) for k, v in parts.items()}
    elif modality == "sequence":
        train = X[parts["train"]].astype(np.float64)
        mean, std = train.mean(axis=(0, 1)), train.std(axis=(0, 1))
        std[std == 0] = 1.0
        schema |= {
            "sequence_shape": list(X.shape[1:]),
            "mean": mean.tolist(),
            "std": std.tolist(),
            "lookback": info.get("lookback"),
            "horizon": info.get("horizon"),
            "features": info.get("features"),
        }
        arrays = {k: ((X[v] - mean) / std).astype(np.float32) for k, v in parts.items()}
    else:
        schema |= {"text_column": info.get("text_column")}
        arrays = {k: X[v].astype(str).reshape(-1, 1) for k, v in parts.items()}
    return {
        "arrays": arrays,
        "y": y,
        "parts": parts,
        "schema": schema,
        "task": task,
        "classes": classes,
        "warnings": warnings,
        "raw_test": X[parts["test"]],
    }


class DataOptions(BaseModel):
    """How to read non-tabular data (images, sequences, text). All optional."""

    image_shape: list[int] | None = Field(
        None, description="Pixel CSV: [H, W] or [H, W, C].", min_length=2, max_length=3
    )
    image_size: tuple[int, int] | None = Field(
        None, description="Images: resize to [H, W] (folders default to at most 64 per side)."
    )
    text_column: str | None = Field(None, description="Text: the column of documents.")
    time_column: str | None = Field(None, description="Time series: the column that orders rows.")
    lookback: int | None = Field(None, description="Time series: past steps per window (default 24).", ge=1, le=10000)
    horizon: int | None = Field(None, description="Time series: steps ahead to forecast (default 1).", ge=1, le=10000)
