"""The second outside audit, each finding as a regression test: cancel honoured by every job kind, the pickle
digest race, a re-package that deleted the user's files, ids that walked out of the workspace, max_jobs per
process only. Its server and memory findings (3, 4, 8) are in test_audit_server.py."""

from __future__ import annotations

import builtins
import hashlib
import io
import json
import os
import pickle
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from conftest import prepared_run

from ml_expert.memory import JobRow
from ml_expert.memory.errors import IntegrityError, InvalidInputError
from ml_expert.tools import artifacts
from ml_expert.tools.data.analyze import analyze_data
from ml_expert.tools.data.prepare import prepare_data
from ml_expert.tools.evaluation.evaluate import evaluate, evaluate_spec
from ml_expert.tools.jobs.manager import JobManager
from ml_expert.tools.jobs.specs import JobCancelled, JobSpec
from ml_expert.tools.jobs.tools import cancel_job, get_job, resume_job
from ml_expert.tools.jobs.worker import run_job
from ml_expert.tools.packaging import build, verify
from ml_expert.tools.packaging.package import package, package_spec
from ml_expert.tools.prediction.explain import ExplainSpec, explain
from ml_expert.tools.prediction.predict import predict
from ml_expert.tools.runs import get_run
from ml_expert.tools.selection.recommend import ProbeSpec, recommend_architecture
from ml_expert.tools.training.train import train, train_spec
from ml_expert.tools.workflow import run_workflow
from ml_expert.tools.workspace import Workspace, new_id

# -- shared: one trained run, copied into each test's own workspace ------------------------------------------------


def _run_here(ws: Workspace, spec: JobSpec) -> JobRow:
    """Record a job for spec and run its handler in this process, exactly as its worker process would."""
    job_id = new_id("job")
    ws.job_store.insert(
        job_id,
        kind=spec.kind,
        run_id=spec.run_id,
        namespace="default",
        spec=spec.model_dump(mode="json"),
        owner_pid=os.getpid(),
    )
    run_job(ws, job_id)
    row = ws.job_store.get(job_id)
    assert row is not None
    return row


@pytest.fixture(scope="module")
def trained_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """A workspace with the wine data prepared and a linear model trained (closed; tests copy it)."""
    root = tmp_path_factory.mktemp("trained") / "ws"
    ws = Workspace(root)
    try:
        run = prepared_run(ws, "wine")
        row = _run_here(ws, train_spec(ws, run, "linear"))
        assert row.status == "succeeded", row.error
        return root, run, row.result["model_id"]
    finally:
        ws.close()


@pytest.fixture
def trained(tmp_path: Path, trained_template: tuple[Path, str, str]) -> Iterator[tuple[Workspace, str, str]]:
    root, run, model_id = trained_template
    shutil.copytree(root, tmp_path / "ws")  # digests are recorded by workspace-relative path: the copy verifies
    ws = Workspace(tmp_path / "ws")
    yield ws, run, model_id
    if ws.jobs is not None:
        ws.jobs.stop()
    ws.close()


def _until(done: Callable[[], bool], what: str, timeout: float = 180) -> None:
    """Wait for an event another process records (the timeout only guards against a hang)."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _hidden(folder: Path) -> list[str]:
    """Hidden entries of a folder: what a package build leaves behind when it does not clean up."""
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def _cancel_after(ws: Workspace, monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[int]:
    """Make module.name ask cancel_job for every active job once it has run; returns a list of its calls."""
    original, calls = getattr(module, name), []

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        calls.append(1)
        for row in ws.job_store.active():
            ws.job_store.request_cancel(row.job_id)
        return result

    monkeypatch.setattr(module, name, wrapper)
    return calls


# -- 1. every job kind stops at its next step when cancelled -------------------------------------------------------


def test_evaluate_package_probe_and_explain_stop_at_the_next_step_when_cancelled(
    trained: tuple[Workspace, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from ml_expert.tools.evaluation import evaluate as evaluate_module
    from ml_expert.tools.prediction import explain as explain_module
    from ml_expert.tools.training import probe as probe_module

    ws, run, model_id = trained
    run_dir, model_dir = ws.run_dir(run), ws.run_dir(run) / "models" / model_id
    cases: list[tuple[str, Any, str, JobSpec, Callable[[], bool]]] = [
        (
            "evaluate",
            evaluate_module,
            "evaluate_model",
            evaluate_spec(ws, run, model_id),
            lambda: not (run_dir / "metrics.json").exists() and not (run_dir / "evaluation_report.md").exists(),
        ),
        (
            "package",
            build,
            "export_format",
            package_spec(ws, run, model_id, ["joblib", "onnx"]),
            lambda: (
                not (run_dir / "deployment").exists() and not any(p.name.startswith(".") for p in run_dir.iterdir())
            ),
        ),
        (
            "recommend",
            probe_module,
            "cross_validate",
            ProbeSpec(run_id=run, probe_seconds=4, max_candidates=2),
            lambda: True,
        ),
        (  # explain is someone else's module: its forced progress calls between steps must be enough
            "explain",
            explain_module,
            "permutation_ranking",
            ExplainSpec(run_id=run, model_id=model_id),
            lambda: not (model_dir / "importance.json").exists(),
        ),
    ]
    for phase, module, step, spec, nothing_written in cases:
        calls = _cancel_after(ws, monkeypatch, module, step)
        row = _run_here(ws, spec)
        assert (row.status, row.error) == ("cancelled", "Cancelled on request."), (phase, row.status, row.error)
        assert len(calls) == 1, phase  # the step after the cancel never ran
        assert phase not in get_run(ws, run).phases and nothing_written(), phase


def test_a_cancelled_verification_process_is_killed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "inference.py").write_text("class ModelInference:\n    pass\n")
    rows = tmp_path / "rows.csv"
    os.mkfifo(rows)  # the verifier blocks reading it: it is surely still running at the first cancel point
    started: list[subprocess.Popen[str]] = []
    popen = subprocess.Popen

    def recording(*args: Any, **kwargs: Any) -> subprocess.Popen[str]:
        started.append(popen(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(verify.subprocess, "Popen", recording)

    def cancelled() -> None:
        raise JobCancelled()

    with pytest.raises(JobCancelled):
        verify.run_in_fresh_process(package, ["sklearn"], rows, cancelled)
    assert len(started) == 1 and started[0].poll() is not None  # killed, not left running


def test_a_cancelled_job_ends_cancelled_and_a_queued_train_then_runs(trained: tuple[Workspace, str, str]) -> None:
    ws, run, _ = trained
    ws.jobs = JobManager(ws, max_jobs=1).start()
    slow = package(ws, run, formats=["joblib", "onnx"], wait_seconds=0)
    _until(lambda: get_job(ws, slow.job_id).progress.get("phase") == "package", "the package job to export")
    queued = train(ws, run, "linear", wait_seconds=0)
    assert get_job(ws, queued.job_id).status == "queued"  # the package job holds the only slot
    cancel_job(ws, slow.job_id)
    assert ws.jobs.wait(slow.job_id, 120).status == "cancelled"
    done = ws.jobs.wait(queued.job_id, 180)
    assert done.status == "succeeded", done.error
    run_dir = ws.run_dir(run)
    assert not (run_dir / "deployment").exists() and not _hidden(run_dir)


# -- 2. the bytes unpickled are the bytes whose digest was checked -------------------------------------------------


class _Planted:
    """Unpickling this writes a marker file: the proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.write_text, (self.marker, "code ran"))


class _SwapAfterHashing:
    """Stands in for hashlib in artifacts: the moment the digest is computed, the file is swapped for a planted
    pickle — the race an attacker wins when the file is read again to be loaded."""

    def __init__(self, path: Path, planted: bytes) -> None:
        self.path, self.planted = path, planted

    def sha256(self, data: bytes = b"") -> Any:
        real, outer = hashlib.sha256(data), self

        class Hasher:
            def update(self, chunk: bytes) -> None:
                real.update(chunk)

            def hexdigest(self) -> str:
                digest = real.hexdigest()
                outer.path.write_bytes(outer.planted)
                return digest

        return Hasher()


def test_a_pickle_swapped_after_its_digest_check_is_never_loaded(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = ws.root / "pwned.txt"
    path = artifacts.save_pickle(ws, {"weights": [1, 2, 3]}, ws.root / "model.joblib")
    written = path.read_bytes()
    buffer = io.BytesIO()
    joblib.dump(_Planted(marker), buffer)
    monkeypatch.setattr(artifacts, "hashlib", _SwapAfterHashing(path, buffer.getvalue()))
    seen: list[Any] = []
    load = pickle.loads
    monkeypatch.setattr(pickle, "loads", lambda data, *a, **kw: seen.append(data) or load(data, *a, **kw))
    assert artifacts.load_pickle(ws, path) == {"weights": [1, 2, 3]}
    assert not marker.exists()
    assert len(seen) == 1 and seen[0] == written
    monkeypatch.undo()
    with pytest.raises(IntegrityError, match="changed since the server wrote it"):  # the swapped file, next time
        artifacts.load_pickle(ws, path)
    joblib.dump(_Planted(marker), ws.root / "planted.joblib")
    with pytest.raises(IntegrityError, match="was not written by this server"):
        artifacts.load_pickle(ws, ws.root / "planted.joblib")
    assert not marker.exists()


def test_models_are_plain_pickles_that_joblib_reads_and_joblib_files_of_older_runs_still_load(ws: Workspace) -> None:
    """Models are written with the C pickler (joblib's pure-Python one took 0.46 s to dump and 0.72 s to load a bag
    of boosting fold models, against 0.09 s each): `joblib.load`, which a package's users call, reads them; a file
    that joblib.dump wrote (a run of an older version) still loads, and predicts the same."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import HistGradientBoostingClassifier

    from ml_expert.tools.core.portable import preprocessing

    X, y = load_breast_cancer(return_X_y=True)
    model = HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(X, y)
    expected = model.predict_proba(X)
    path = artifacts.save_pickle(ws, model, ws.root / "model.joblib")
    assert preprocessing.JOBLIB_ARRAYS not in path.read_bytes()
    assert np.array_equal(artifacts.load_pickle(ws, path).predict_proba(X), expected)
    assert np.array_equal(joblib.load(path).predict_proba(X), expected)
    older = ws.root / "older.joblib"
    joblib.dump(model, older)
    ws.digests.record(ws.relative(older), artifacts.sha256(older), older.stat().st_size)
    assert preprocessing.JOBLIB_ARRAYS in older.read_bytes()
    assert np.array_equal(artifacts.load_pickle(ws, older).predict_proba(X), expected)


# -- 5. re-packaging keeps the user's files, and refuses to overwrite their edits ----------------------------------


def test_repackaging_keeps_added_files_and_refuses_to_lose_edits(trained: tuple[Workspace, str, str]) -> None:
    ws, run, model_id = trained
    folder = ws.root / "deploy" / "v1"
    first = _run_here(ws, package_spec(ws, run, model_id, ["joblib"], "deploy/v1"))
    assert first.status == "succeeded", first.error
    (folder / "Dockerfile").write_text("FROM python:3.11\n")
    (folder / "notes").mkdir()
    (folder / "notes" / "todo.md").write_text("ship it\n")
    again = _run_here(ws, package_spec(ws, run, model_id, ["joblib"], "deploy/v1"))
    assert again.status == "succeeded", again.error
    assert (folder / "Dockerfile").read_text() == "FROM python:3.11\n"
    assert (folder / "notes" / "todo.md").read_text() == "ship it\n"
    assert again.result["kept"] == ["Dockerfile", "notes/todo.md"]
    listed = json.loads((folder / "manifest.json").read_text())["files"]
    assert "Dockerfile" not in listed and "inference.py" in listed and "model.joblib" in listed

    late = package_spec(ws, run, model_id, ["joblib"], "deploy/v1")  # checked before the edit below
    edited = (folder / "inference.py").read_text() + "\n# my change\n"
    (folder / "inference.py").write_text(edited)
    with pytest.raises(InvalidInputError, match=r"\['inference.py'\] were changed.*another output_dir"):
        package(ws, run, output_dir="deploy/v1", formats=["joblib"])
    refused = _run_here(ws, late)  # the worker checks again: the edit came after the submit
    assert refused.status == "failed" and "['inference.py'] were changed" in refused.error
    assert (folder / "inference.py").read_text() == edited and (folder / "Dockerfile").exists()
    assert sorted(p.name for p in folder.parent.iterdir()) == ["v1"]  # no build leftovers

    default = ws.run_dir(run) / "deployment"  # the run's own package folder follows the same rule
    assert _run_here(ws, package_spec(ws, run, model_id, ["joblib"])).status == "succeeded"
    (default / "README.md").write_text("mine now\n")
    with pytest.raises(InvalidInputError, match=r"\['README.md'\] were changed"):
        package(ws, run, formats=["joblib"])


def _earlier_package(folder: Path, files: dict[str, str]) -> None:
    """An earlier package in folder that wrote these files (relative path -> text)."""
    for rel, text in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    listed = {rel: artifacts.sha256(folder / rel) for rel in files}
    manifest = {"run_id": "run_00000000", "model_id": "mdl_00000000", "runtimes": [], "files": listed}
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_the_swap_keeps_user_files_even_inside_package_folders_and_refuses_clashes(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    final, fresh = ws.root / "deploy", ws.root / ".deploy.building-1"
    _earlier_package(final, {"old.txt": "old\n", "savedmodel/saved_model.pb": "old graph\n"})
    (final / "savedmodel" / "mine.txt").write_text("mine\n")  # the user's, inside a folder the package wrote
    (final / "Dockerfile").write_text("FROM python:3.11\n")
    _earlier_package(fresh, {"savedmodel/saved_model.pb": "new graph\n"})
    assert build._swap_in(ws, fresh, final) == ["Dockerfile", "savedmodel/mine.txt"]
    assert (final / "savedmodel" / "saved_model.pb").read_text() == "new graph\n" and not (final / "old.txt").exists()
    assert (final / "savedmodel" / "mine.txt").read_text() == "mine\n" and (final / "Dockerfile").exists()

    clash = ws.root / ".deploy.building-2"
    (final / "model.onnx").write_text("my own export\n")  # not written by the earlier package
    _earlier_package(clash, {"model.onnx": "the new package's\n"})
    with pytest.raises(InvalidInputError, match=r"did not write, \['model.onnx'\].*another output_dir"):
        build._swap_in(ws, clash, final)
    assert (final / "model.onnx").read_text() == "my own export\n" and (final / "Dockerfile").exists()
    ws.close()


# -- 6. ids are checked before they name a file --------------------------------------------------------------------


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder beside the workspace that looks like a run with a model, holding a secret."""
    folder = tmp_path / "outside_run"
    (folder / "models" / "mdl_00000000").mkdir(parents=True)
    secret = {"modality": "SECRET-outside", "model_id": "mdl_00000000", "framework": "sklearn"}
    for name in ("schema.json", "prepared.json", "models/mdl_00000000/model.json", "model.json"):
        (folder / name).write_text(json.dumps(secret))
    return folder


@pytest.fixture
def reads_under(monkeypatch: pytest.MonkeyPatch) -> Callable[[Path], list[str]]:
    """Every file opened and folder listed from now on; call it with a folder to get those under it."""
    seen: list[str] = []
    for module, name in ((io, "open"), (builtins, "open"), (os, "scandir"), (os, "listdir")):
        original = getattr(module, name)

        def recording(path: Any = ".", *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            if isinstance(path, str | os.PathLike):
                seen.append(os.path.abspath(os.fspath(path)))
            return _original(path, *args, **kwargs)

        monkeypatch.setattr(module, name, recording)
    return lambda folder: [p for p in seen if p.startswith(str(folder.resolve()))]


def test_every_tool_refuses_an_id_that_leaves_the_workspace(
    trained: tuple[Workspace, str, str], outside: Path, reads_under: Callable[[Path], list[str]]
) -> None:
    ws, run, _ = trained
    ws.jobs = JobManager(ws)  # not started: nothing may get as far as a job
    bad_run = os.path.relpath(outside, ws.home / "runs")  # ../../../outside_run
    bad_model = os.path.relpath(outside, ws.run_dir(run) / "models")
    bad_job = "../../" + outside.name
    record = [{"alcohol": 13.0}]
    calls: dict[str, tuple[str, Callable[[], Any]]] = {
        "get_run": ("run_id", lambda: get_run(ws, bad_run)),
        "analyze_data": ("run_id", lambda: analyze_data(ws, "wine.csv", target="target", run_id=bad_run)),
        "prepare_data": ("run_id", lambda: prepare_data(ws, run_id=bad_run)),
        "recommend_architecture": ("run_id", lambda: recommend_architecture(ws, bad_run)),
        "recommend_architecture probe": ("run_id", lambda: recommend_architecture(ws, bad_run, probe_seconds=5)),
        "train": ("run_id", lambda: train(ws, bad_run, "linear")),
        "evaluate": ("run_id", lambda: evaluate(ws, bad_run)),
        "package": ("run_id", lambda: package(ws, bad_run)),
        "predict": ("run_id", lambda: predict(ws, run_id=bad_run, records=record)),
        "explain": ("run_id", lambda: explain(ws, run_id=bad_run)),
        "run_workflow": ("run_id", lambda: run_workflow(ws, resume=bad_run)),
        "evaluate model": ("model_id", lambda: evaluate(ws, run, model_id=bad_model)),
        "evaluate models": ("model_id", lambda: evaluate(ws, run, model_ids=[bad_model])),
        "package model": ("model_id", lambda: package(ws, run, model_id=bad_model)),
        "predict model": ("model_id", lambda: predict(ws, model_id=bad_model, records=record)),
        "explain model": ("model_id", lambda: explain(ws, model_id=bad_model)),
        "explain run and model": ("model_id", lambda: explain(ws, run_id=run, model_id=bad_model)),
        "get_job": ("job_id", lambda: get_job(ws, bad_job)),
        "cancel_job": ("job_id", lambda: cancel_job(ws, bad_job)),
        "resume_job": ("job_id", lambda: resume_job(ws, bad_job)),
    }
    jobs_before = ws.job_store.list(status=None, limit=10)[1]
    for name, (field, call) in calls.items():
        with pytest.raises(InvalidInputError, match=rf"{field} must be an id like") as refused:
            call()
        assert "outside_run" in str(refused.value) and "SECRET" not in str(refused.value), name
    assert reads_under(outside) == []
    assert ws.job_store.list(status=None, limit=10)[1] == jobs_before


# -- 7. max_jobs holds across server processes ---------------------------------------------------------------------


def test_two_servers_on_one_workspace_run_at_most_max_jobs_between_them(trained: tuple[Workspace, str, str]) -> None:
    first_ws, run, model_id = trained
    second_ws = Workspace(first_ws.root)  # a second server on the same folder, with its own job manager
    first_ws.jobs = JobManager(first_ws, max_jobs=1).start()
    second_ws.jobs = JobManager(second_ws, max_jobs=1).start()
    try:
        first = evaluate(first_ws, run, model_id=model_id, wait_seconds=0)
        _until(lambda: get_job(first_ws, first.job_id).status == "running", "the first job to start")
        second = evaluate(second_ws, run, model_id=model_id, wait_seconds=0)
        assert get_job(second_ws, second.job_id).status == "queued"
        done_first = first_ws.jobs.wait(first.job_id, 180)
        done_second = second_ws.jobs.wait(second.job_id, 180)  # started when the other server's slot freed
        assert (done_first.status, done_second.status) == ("succeeded", "succeeded"), done_second.error
        assert done_second.started_at >= done_first.finished_at  # never both at once
    finally:
        second_ws.jobs.stop()
        second_ws.close()
