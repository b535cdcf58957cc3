"""A run's folder on disk, and the one place that saves, finds, loads and runs trained models.

Layout of `<workspace>/.ml-expert/runs/<run_id>/`:
- `prepared.json`, `schema.json`, `preprocessor.joblib`, `data/X_{train,val,test}.npy`, `data/y_*.npy`,
  `data/raw_test.parquet` (or `.npz`) — written by prepare_data;
- `models/<model_id>/` with `model.json` (what train returned plus its spec) and `model.keras`
  (loaded with `safe_mode=True`) or `model.joblib` (unpickled only when its sha256 matches the digest
  recorded in the database when the server wrote it; the same holds for `preprocessor.joblib`),
  `training_history.json`, `training_curves.png`, evaluation pictures and report;
- `evaluation_report.md`, `metrics.json`, `deployment/` — the latest evaluation and package.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml_expert.memory.errors import ConflictError, IntegrityError, MLExpertError, NotFoundError
from ml_expert.tools.core.model_meta import ModelMeta
from ml_expert.tools.core.prepared import PreparedData
from ml_expert.tools.core.tasks import is_classification
from ml_expert.tools.jobs.specs import RUNNING_JOB, JobSpec
from ml_expert.tools.runs import RunInfo, get_run
from ml_expert.tools.workspace import Workspace, check_id, is_id

if TYPE_CHECKING:  # numpy loads with the first data tool, not with the server
    import numpy as np

MODEL_FILES = {"keras": "model.keras", "sklearn": "model.joblib"}


def load_prepared(ws: Workspace, run_id: str) -> PreparedData:
    """The prepare_data result of a run (from its folder), or a clear error to run it first."""
    get_run(ws, run_id)
    path = ws.run_dir(run_id) / "prepared.json"
    if not path.exists():
        raise ConflictError(f"Run {run_id!r} has no prepared data yet. Call prepare_data(run_id='{run_id}') first.")
    return PreparedData.model_validate_json(path.read_text())


def load_split(ws: Workspace, run_id: str, split: str, mmap: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """X and y of one split (train, val or test) as prepare_data saved them; memory-mapped (read-only, nothing
    loaded until indexed) with mmap=True."""
    import numpy as np

    data = ws.run_dir(run_id) / "data"
    mode = "r" if mmap else None
    return np.load(data / f"X_{split}.npy", mmap_mode=mode), np.load(data / f"y_{split}.npy", mmap_mode=mode)


def model_dir(ws: Workspace, run_id: str, model_id: str) -> Path:
    """The folder of one model; both ids are checked first (InvalidInputError for anything else)."""
    return ws.run_dir(run_id) / "models" / check_id(model_id, "mdl")


def list_model_ids(ws: Workspace, run_id: str) -> list[str]:
    """Model ids of a run, oldest first."""
    root = ws.run_dir(run_id) / "models"
    metas = [p for p in root.glob("*/model.json") if is_id(p.parent.name, "mdl")] if root.exists() else []
    return [p.parent.name for p in sorted(metas, key=lambda p: p.stat().st_mtime)]


MODEL_JOBS = ("train", "probe", "workflow")  # jobs that fit models from a run's prepared data


def check_data_kept(ws: Workspace, run_id: str, tool: str) -> RunInfo:
    """ConflictError when a run's data may no longer be prepared again: its models were fitted on the prepared
    rows, schema and preprocessor, and predict, evaluate and package read those back (a new preparation silently
    changed a model's predictions, or broke it with a feature-count error). A new run takes the new preparation.
    Returns the run."""
    info = get_run(ws, run_id)  # NotFoundError for a run that does not exist
    models = list_model_ids(ws, run_id)
    own = RUNNING_JOB.get()  # a workflow's own analyze and prepare phases run inside its job
    active = ws.job_store.active()
    fitting = [j.job_id for j in active if j.run_id == run_id and j.kind in MODEL_JOBS and j.job_id != own]
    if not models and not fitting:
        return info
    why = f"has trained models {models[-5:]}" if models else f"is being trained by job(s) {fitting}"
    raise ConflictError(
        f"Run {run_id!r} {why}, fitted on its prepared data: {tool} on it again would change what they predict. "
        f"Start a new run for the new preparation: prepare_data(path={info.dataset!r}, target={info.target!r}, "
        "...your options) or analyze_data(path=...); this run's models stay usable."
    )


def find_model_run(ws: Workspace, model_id: str) -> str:
    """The run a model id belongs to (model ids are unique across runs), or a clear error."""
    check_id(model_id, "mdl")
    found = sorted((ws.home / "runs").glob(f"*/models/{model_id}/model.json"))
    if not found:
        raise NotFoundError(f"No model {model_id!r} in this workspace. list_runs shows the runs; train makes models.")
    return found[0].parents[2].name


def load_model_meta(ws: Workspace, run_id: str, model_id: str | None) -> ModelMeta:
    """model.json of a model (the latest of the run when model_id is None), or a clear error."""
    if model_id is not None:
        check_id(model_id, "mdl")
    ids = list_model_ids(ws, run_id)
    if model_id is None:
        if not ids and not ws.run_dir(run_id).is_dir():
            raise NotFoundError(f"No run {run_id!r} in this workspace. list_runs shows the runs (CLI: ml-expert runs).")
        if not ids:
            raise NotFoundError(f"Run {run_id!r} has no trained model yet. Call train(run_id='{run_id}') first.")
        model_id = ids[-1]
    if model_id not in ids:
        raise NotFoundError(f"No model {model_id!r} in run {run_id!r}. Models of this run: {ids or 'none'}.")
    return ModelMeta.model_validate_json((model_dir(ws, run_id, model_id) / "model.json").read_text())


def is_keras_model(ws: Workspace, run_id: str, model_id: str | None) -> bool:
    """Whether a model is a Keras model (False where it cannot be read: the job's own error will say why)."""
    try:
        return load_model_meta(ws, run_id, model_id).framework == "keras"
    except (MLExpertError, OSError, ValueError):
        return False


class ModelJobSpec(JobSpec):
    """The spec of a job on one model of a run (package, predict, explain): Keras when that model is."""

    model_id: str

    def runs_keras(self, ws: Workspace) -> bool:
        return is_keras_model(ws, self.run_id, self.model_id)


def model_path(ws: Workspace, run_id: str, meta: ModelMeta) -> Path:
    """The model file of a model: its folder plus the fixed file name of its framework."""
    return model_dir(ws, run_id, meta.model_id) / MODEL_FILES[meta.framework]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_pickle(ws: Workspace, obj: Any, path: Path) -> Path:
    """Pickle obj and record its sha256 in the database (the only pickles load_pickle will open). A plain pickle
    (protocol 5), which `joblib.load` reads as well: joblib's own format goes through its pure-Python pickler, and a
    model of thousands of trees (a bag of boosting fold models) took 0.46 s to dump and 0.72 s to load that way against
    0.09 s each with the C pickler."""
    import pickle

    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=5)
    ws.digests.record(ws.relative(path), sha256(path), path.stat().st_size)
    return path


def read_verified(ws: Workspace, path: Path) -> bytes:
    """The bytes of a pickle the server wrote, read once and returned only when their sha256 is the digest recorded
    when it was written. Whoever uses them (unpickles, ships) uses these very bytes, never the file again: a file
    swapped after the check cannot slip in."""
    expected = ws.digests.get(ws.relative(path))
    data = path.read_bytes() if expected is not None and path.is_file() else None
    if data is None or hashlib.sha256(data).hexdigest() != expected:
        why = "was not written by this server" if expected is None else "changed since the server wrote it"
        raise IntegrityError(
            f"Refusing to unpickle {ws.relative(path)}: it {why} (its sha256 is checked against the digest recorded "
            "in the database, because loading a pickle runs code). Re-run the step that writes it "
            "(prepare_data for preprocessor.joblib, train for model.joblib)."
        )
    return data


def unpickle(data: bytes) -> Any:
    """Unpickle bytes that read_verified returned (the package's loader does the same: `unpickle_bytes`)."""
    from ml_expert.tools.core.portable import ensemble, preprocessing  # noqa: F401 - pickled classes resolve

    return preprocessing.unpickle_bytes(data)


def load_pickle(ws: Workspace, path: Path) -> Any:
    """Unpickle a file only when its sha256 is the one recorded when the server wrote it (the bytes checked are
    the bytes loaded)."""
    return unpickle(read_verified(ws, path))


def save_model(ws: Workspace, model: Any, framework: str, folder: Path) -> Path:
    """Write a trained model under its framework's fixed file name; the one place models are saved."""
    path = folder / MODEL_FILES[framework]
    if framework == "keras":
        model.save(path)
        return path
    return save_pickle(ws, model, path)


def load_model(ws: Workspace, path: Path, framework: str) -> Any:
    """Load a saved model file: Keras with safe_mode=True, scikit-learn only after its digest check."""
    if framework == "keras":
        import keras

        return keras.saving.load_model(path, safe_mode=True, compile=False)
    return load_pickle(ws, path)


def predict_output(model: Any, framework: str, task: str, X: np.ndarray) -> np.ndarray:
    """Class probabilities (n, k) for classification, values (n,) for regression, cluster ids for clustering."""
    import numpy as np

    if framework == "keras":
        out = np.asarray(model.predict(as_model_input(X), batch_size=1024, verbose=0), dtype=np.float64)
        return out if is_classification(task) else out.reshape(len(X), -1)[:, 0]
    from ml_expert.tools.core.portable.preprocessing import threads_for

    with threads_for(len(X)):
        out = model.predict_proba(X) if is_classification(task) else model.predict(X)
    return np.asarray(out, dtype=np.float64)


def as_model_input(X: Any) -> Any:
    """Text arrays become string tensors (Keras does not take numpy unicode arrays); others pass through."""
    import numpy as np

    if isinstance(X, np.ndarray) and X.dtype.kind in "USO":
        import tensorflow as tf

        return tf.constant(X.astype(str))
    return X
