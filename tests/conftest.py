"""Shared fixtures: a workspace in tmp_path and small real datasets written as files inside it."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from ml_expert.tools.workspace import Workspace


@pytest.fixture
def ws(tmp_path: Path) -> Iterator[Workspace]:
    workspace = Workspace(tmp_path / "ws")
    yield workspace
    if workspace.jobs is not None:
        workspace.jobs.stop()
    workspace.close()


def sklearn_frame(name: str) -> pd.DataFrame:
    from sklearn import datasets

    loader = getattr(datasets, f"load_{name}")
    bunch = loader(as_frame=True)
    df = bunch.frame.copy()
    if name in ("breast_cancer", "wine", "iris"):
        df["target"] = [str(bunch.target_names[i]) for i in bunch.target]
    return df


def write_dataset(ws: Workspace, name: str) -> str:
    """Write a bundled scikit-learn dataset as CSV in the workspace; return its relative path."""
    path = ws.root / f"{name}.csv"
    if not path.exists():
        sklearn_frame(name).to_csv(path, index=False)
    return path.name


def messy_frame(n: int = 300, seed: int = 0) -> pd.DataFrame:
    """Mixed types: an id, numbers with gaps, strings, dates, a constant, duplicates; binary target."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=n)
    x2 = rng.normal(loc=5, scale=2, size=n)
    city = rng.choice(["paris", "rome", "oslo", "lima"], size=n)
    label = np.where(x1 + (city == "oslo") * 1.5 + rng.normal(scale=0.5, size=n) > 0.5, "yes", "no")
    df = pd.DataFrame(
        {
            "customer_id": np.arange(1000, 1000 + n),
            "x1": x1,
            "x2": x2,
            "city": city,
            "signup": pd.date_range("2024-01-01", periods=n, freq="D").astype(str),
            "flag": rng.choice(["true", "false"], size=n),
            "const": 7,
            "label": label,
        }
    )
    df.loc[rng.choice(n, 20, replace=False), "x2"] = np.nan
    df.loc[rng.choice(n, 10, replace=False), "city"] = np.nan
    return pd.concat([df, df.iloc[:5]], ignore_index=True)


def churn_frame(n: int = 500, seed: int = 0) -> pd.DataFrame:
    """A churn table as users bring them: integer tenure and age, a boolean, a string plan with gaps, a number with
    gaps, a signup date; churn rises with short tenure, the 'pro' plan and seniority."""
    rng = np.random.default_rng(seed)
    tenure = rng.integers(0, 72, n)
    senior = rng.random(n) < 0.3
    plan = rng.choice(["basic", "plus", "pro"], n)
    logit = -tenure / 6 + 6.0 + (plan == "pro") * 3.0 + senior * 2.0
    frame = pd.DataFrame(
        {
            "tenure": tenure,
            "age": rng.integers(18, 90, n),
            "senior": senior,
            "plan": plan,
            "charges": rng.normal(60, 20, n).round(2),
            "joined": pd.date_range("2020-01-01", periods=n, freq="D").astype(str),
            "churn": np.where(logit + rng.logistic(size=n) > 0, "yes", "no"),
        }
    )
    frame.loc[rng.random(n) < 0.05, "charges"] = np.nan
    frame.loc[rng.random(n) < 0.03, "plan"] = None
    return frame


@pytest.fixture
def sigint_in_numpy(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Call it to make a Ctrl-C (SIGINT) land each time numpy parses a buffer format from then on (HistGradientBoosting
    parses one at every tree): numpy turns the KeyboardInterrupt into a ValueError caused by it (numpy/numpy#11119)."""
    from numpy._core import _internal

    parse = _internal._dtype_from_pep3118

    def interrupted(spec: str) -> object:
        os.kill(os.getpid(), signal.SIGINT)
        return parse(spec)

    return lambda: monkeypatch.setattr(_internal, "_dtype_from_pep3118", interrupted)


@pytest.fixture
def messy_csv(ws: Workspace) -> str:
    messy_frame().to_csv(ws.root / "messy.csv", index=False)
    return "messy.csv"


@pytest.fixture
def jobs_ws(ws: Workspace) -> Workspace:
    """A workspace with a started job manager (worker processes), stopped at teardown."""
    from ml_expert.tools.jobs.manager import JobManager

    ws.jobs = JobManager(ws).start()
    return ws


def prepared_run(ws: Workspace, name: str, **prepare: object) -> str:
    """analyze + prepare a bundled dataset; returns the run id."""
    from ml_expert.tools.data.analyze import analyze_data
    from ml_expert.tools.data.prepare import prepare_data

    run_id = analyze_data(ws, write_dataset(ws, name), target="target").run_id
    prepare_data(ws, run_id=run_id, **prepare)
    return run_id


def frame_run(ws: Workspace, frame: pd.DataFrame, target: str, name: str = "data.csv", **prepare: object) -> str:
    """Write a frame as CSV, prepare it; returns the run id."""
    from ml_expert.tools.data.prepare import prepare_data

    frame.to_csv(ws.root / name, index=False)
    return prepare_data(ws, path=name, target=target, **prepare).run_id


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30) -> None:
    """Until a server accepts connections on 127.0.0.1:port (or the timeout passes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file of the workspace outside ml-expert's own state folder."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".ml-expert" not in p.parts
    }


@pytest.fixture(scope="session")
def padded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Workspace, str, pd.DataFrame]]:
    """A random forest trained on a CSV whose header names a column " padded " (spaces around it); one per session,
    shared by the tests of tables as read and of the tool surface."""
    from ml_expert.tools.data.prepare import prepare_data
    from ml_expert.tools.jobs.manager import JobManager
    from ml_expert.tools.training.config import TrainConfig
    from ml_expert.tools.training.train import train

    ws = Workspace(tmp_path_factory.mktemp("padded") / "ws")
    ws.jobs = JobManager(ws).start()
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({" padded ": rng.normal(size=400), "other": rng.normal(size=400)})
    frame["y"] = np.where(frame[" padded "] + 0.2 * frame["other"] > 0, "up", "down")
    frame.to_csv(ws.root / "train.csv", index=False)
    try:
        run = prepare_data(ws, path="train.csv", target="y").run_id
        status = train(ws, run, "random_forest", TrainConfig(n_estimators=50), wait_seconds=180)
        assert status.status == "succeeded", status.error
        yield ws, run, frame.drop(columns="y").head(60)
    finally:
        ws.jobs.stop()
        ws.close()


def probabilities_from_package_files(folder: Path, models: object, X: np.ndarray) -> np.ndarray:
    """`predict_proba` of each pickled model on X, computed by a fresh isolated interpreter in `folder` holding only
    the joblib file and the package's `ml_expert_ensemble.py`: fails when ml_expert itself is imported there."""
    import joblib

    from ml_expert.tools.core.portable import ensemble

    joblib.dump(models, folder / "model.joblib")
    np.save(folder / "X.npy", X)
    (folder / "ml_expert_ensemble.py").write_text(Path(ensemble.__file__).read_text())
    script = (
        "import sys, joblib, numpy as np; sys.path.insert(0, '.'); X = np.load('X.npy'); "
        "np.save('p.npy', np.stack([m.predict_proba(X) for m in joblib.load('model.joblib')])); "
        "print(sorted(m for m in sys.modules if m.startswith('ml_expert')))"
    )
    done = subprocess.run([sys.executable, "-I", "-c", script], cwd=folder, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['ml_expert_ensemble']"  # ml_expert itself was never imported there
    return np.load(folder / "p.npy")
