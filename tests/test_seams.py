"""The seams between server, tools, jobs, workers and memory: settings that travel, queues, cancel,
resume, progress at a client, the preprocessing options, and every `next_step` followed literally."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pandas as pd
import pytest
from conftest import prepared_run, sklearn_frame, write_dataset
from mcp import Client

from ml_expert.memory.errors import InvalidInputError
from ml_expert.server.app import build_server
from ml_expert.server.cli import build_parser, main
from ml_expert.server.cli_common import settings_from
from ml_expert.tools.artifacts import load_split
from ml_expert.tools.data.analyze import analyze_data
from ml_expert.tools.data.prepare import prepare_data
from ml_expert.tools.evaluation.evaluate import evaluate
from ml_expert.tools.jobs.manager import JobManager
from ml_expert.tools.jobs.tools import cancel_job, get_job, resume_job
from ml_expert.tools.packaging.package import package
from ml_expert.tools.selection.recommend import recommend_architecture
from ml_expert.tools.settings import Settings
from ml_expert.tools.training.config import TrainConfig
from ml_expert.tools.training.train import train
from ml_expert.tools.workflow import run_workflow
from ml_expert.tools.workspace import Workspace

LONG_DNN = TrainConfig(epochs=400, early_stopping_patience=0, reduce_lr_patience=0)


def _started(settings: Settings) -> Workspace:
    ws = Workspace(settings=settings)
    ws.jobs = JobManager(ws).start()
    return ws


def _wait(ws: Workspace, job_id: str, states: tuple[str, ...], timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = get_job(ws, job_id)
        if status.status in states:
            return status
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} never reached {states}: {get_job(ws, job_id)}")


# -- settings travel ---------------------------------------------------------------------------


def test_wait_seconds_flag_and_environment_become_the_default_wait(tmp_path: Path) -> None:
    args = build_parser().parse_args(["serve", "--wait-seconds", "7", "-w", str(tmp_path)])
    assert settings_from(args).wait_seconds == 7
    assert Settings.from_env({"ML_EXPERT_WAIT_SECONDS": "3"}, workspace=tmp_path).wait_seconds == 3
    ws = _started(Settings(workspace=tmp_path / "ws", wait_seconds=0))
    try:
        run = prepared_run(ws, "wine")
        status = train(ws, run, "auto", time_budget_s=300)  # no wait_seconds: the server's 0 s
        assert status.status in ("queued", "running")  # returned at once, not after the training
        cancel_job(ws, status.job_id)
        quick = train(ws, run, "linear", wait_seconds=60)  # an explicit wait still wins
        assert quick.status == "succeeded", quick.error
    finally:
        ws.jobs.stop()
        ws.close()


def test_allowed_data_roots_reach_the_worker(tmp_path: Path) -> None:
    outside = tmp_path / "datasets"
    outside.mkdir()
    sklearn_frame("wine").to_csv(outside / "wine.csv", index=False)
    ws = _started(Settings(workspace=tmp_path / "ws", allow_paths=(outside,)))
    try:
        status = run_workflow(
            ws, path=str(outside / "wine.csv"), target="target", architecture="linear", wait_seconds=240
        )
        assert status.status == "succeeded", status.error
        assert status.result["test_metrics"]["accuracy"] >= 0.9
    finally:
        ws.jobs.stop()
        ws.close()


@pytest.mark.slow
def test_cli_run_passes_epochs_to_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ws = Workspace(tmp_path)
    path = write_dataset(ws, "breast_cancer")
    code = main(["run", path, "--target", "target", "--architecture", "dnn", "--epochs", "3", "-w", str(tmp_path)])
    assert code == 0, capsys.readouterr()
    training = ws.store.retrieve("ml-expert/training").value
    assert training["epochs_trained"] == 3 and training["config"]["epochs"] == 3
    assert training["config"]["hidden_units"] == [256, 128, 64] and "n_estimators" not in training["config"]


def test_config_typo_and_huge_layers_are_refused(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    write_dataset(ws, "wine")
    with pytest.raises(InvalidInputError, match=r"epoch.*Allowed fields: \[.*'epochs'"):
        run_workflow(ws, path="wine.csv", target="target", config={"epoch": 5})
    assert ws.runs.list(10)[1] == 0  # refused before any run was created

    async def calls() -> Any:
        async with Client(build_server(Settings.from_env(env={}, workspace=tmp_path))) as c:
            typo = await c.call_tool("train", {"run_id": "run_00000000", "config": {"epoch": 5}})
            huge = await c.call_tool("train", {"run_id": "run_00000000", "config": {"hidden_units": [10**7]}})
            return typo, huge

    typo, huge = anyio.run(calls)
    assert typo.is_error and "epoch" in typo.content[0].text
    assert huge.is_error and "hidden_units" in huge.content[0].text


# -- the queue ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_queue_at_max_jobs_cancel_while_queued_and_resume_job(jobs_ws: Workspace) -> None:
    run = prepared_run(jobs_ws, "wine")
    first = train(jobs_ws, run, "dnn", config=LONG_DNN, wait_seconds=0)
    second = train(jobs_ws, run, "linear", wait_seconds=0)
    third = train(jobs_ws, run, "dnn", config=TrainConfig(epochs=6), wait_seconds=0)
    _wait(jobs_ws, first.job_id, ("running",))
    assert get_job(jobs_ws, second.job_id).status == "queued"  # max_jobs=1: it waits for the first
    cancelled = cancel_job(jobs_ws, second.job_id)
    assert cancelled.status == "cancelled" and "before it started" in cancelled.error
    cancel_job(jobs_ws, first.job_id)
    stopped = _wait(jobs_ws, first.job_id, ("cancelled",), timeout=60)
    assert stopped.result["cancelled"] is True
    done = _wait(jobs_ws, third.job_id, ("succeeded",), timeout=120)  # the queue moved on
    assert done.result["epochs_trained"] == 6
    resumed = resume_job(jobs_ws, first.job_id, wait_seconds=0)  # the tool, not the manager
    assert resumed.status in ("queued", "running")
    cancel_job(jobs_ws, first.job_id)
    assert _wait(jobs_ws, first.job_id, ("cancelled",), timeout=60).status == "cancelled"
    assert get_job(jobs_ws, second.job_id).status == "cancelled"  # a cancelled queued job never ran


def test_progress_notifications_reach_an_mcp_client(tmp_path: Path) -> None:
    """A job's progress reaches the MCP client while the call waits (a network's "epoch 7/40 ..." messages reach the
    job's reporter in test_training; a Keras job here took 12-15 s, most of it the worker importing TensorFlow)."""
    ws = Workspace(tmp_path)
    path = write_dataset(ws, "wine")
    ws.close()
    seen: list[tuple[float, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, message))

    async def main_() -> Any:
        async with Client(build_server(Settings.from_env(env={}, workspace=tmp_path))) as c:
            analysis = await c.call_tool("analyze_data", {"path": path, "target": "target"})
            run_id = analysis.structured_content["run_id"]
            await c.call_tool("prepare_data", {"run_id": run_id})
            return await c.call_tool(
                "train",
                {"run_id": run_id, "architecture": "random_forest", "wait_seconds": 120},
                progress_callback=on_progress,
            )

    result = anyio.run(main_)
    assert not result.is_error and result.structured_content["status"] == "succeeded", result.content
    assert result.structured_content["result"]["val_metrics"]["accuracy"] > 0.85  # wine: it learned
    messages = [m for _, m in seen if m]
    fitting = messages.index("fitting random_forest")
    assert messages[0] == "queued" and messages[-1].startswith("fitted random_forest in "), seen
    assert fitting < len(messages) - 1 and seen[-1][0] == 1.0  # in order, up to the end
    steps = [p for p, _ in seen]
    assert steps == sorted(steps)  # MCP progress never goes back


# -- preprocessing options -------------------------------------------------------------------------


@pytest.mark.parametrize("scaling", ["minmax", "robust"])
def test_scaling_options_fit_on_training_rows(ws: Workspace, scaling: str) -> None:
    run = prepared_run(ws, "wine", scaling=scaling, outliers="none")
    X_train, _ = load_split(ws, run, "train")
    X_test, _ = load_split(ws, run, "test")
    assert not np.allclose(X_test.mean(axis=0), X_train.mean(axis=0))  # test rows are transformed, not fitted
    if scaling == "minmax":
        assert np.allclose(X_train.min(axis=0), 0, atol=1e-6) and np.allclose(X_train.max(axis=0), 1, atol=1e-6)
    else:
        assert np.allclose(np.median(X_train, axis=0), 0, atol=1e-6)
        q1, q3 = np.percentile(X_train, [25, 75], axis=0)
        assert np.allclose(q3 - q1, 1, atol=1e-2)


@pytest.mark.parametrize("impute", ["median", "constant"])
def test_imputation_options(ws: Workspace, impute: str) -> None:
    import joblib

    rng = np.random.default_rng(0)
    skewed = rng.lognormal(0, 1, 300)  # mean ≈ 1.6, median ≈ 1: the two strategies differ
    frame = pd.DataFrame({"x": skewed, "z": rng.normal(size=300), "y": np.where(skewed > 1, "a", "b")})
    frame.loc[rng.choice(300, 40, replace=False), "x"] = np.nan
    frame.to_csv(ws.root / "gaps.csv", index=False)
    prepared = prepare_data(ws, path="gaps.csv", target="y", impute=impute, outliers="none", scaling="none")
    pre = joblib.load(ws.run_dir(prepared.run_id) / "preprocessor.joblib")
    filled = np.float32(pre.named_transformers_["numeric"][0].statistics_[0])  # the arrays are float32
    X_train, _ = load_split(ws, prepared.run_id, "train")
    column = X_train[:, prepared.feature_names.index("x")]
    assert not np.isnan(column).any() and (column == filled).sum() >= 15  # the training rows' gaps got `filled`
    present = column[column != filled]  # the training values that were there
    if impute == "median":
        assert filled == pytest.approx(np.median(present), abs=0.02)
        assert abs(filled - present.mean()) > 0.3
    else:
        assert filled == 0.0


# -- every next_step, followed literally --------------------------------------------------------------

TOOLS = {
    "prepare_data": prepare_data,
    "recommend_architecture": recommend_architecture,
    "train": train,
    "evaluate": evaluate,
    "package": package,
    "get_job": get_job,
}
CALL = re.compile(r"Call (\w+\((?:[^()]|\([^()]*\))*\))")


def _parse(next_step: str) -> tuple[str, dict[str, Any]] | None:
    match = CALL.search(next_step or "")
    if not match:
        return None
    node = ast.parse(match.group(1), mode="eval").body
    assert isinstance(node, ast.Call) and not node.args, next_step
    return node.func.id, {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords}


def _follow(ws: Workspace, first: Any) -> list[str]:
    """Make every call that a result's next_step names, exactly as written, until none is named."""
    called, result = [], first
    for _ in range(200):
        parsed = _parse(result.next_step)
        if parsed is None:
            return called
        name, kwargs = parsed
        if name == "get_job":
            time.sleep(0.5)
        result = TOOLS[name](ws, **kwargs)
        assert getattr(result, "status", "succeeded") in ("succeeded", "queued", "running"), result.error
        called.append(name)
    raise AssertionError(f"next_step never ended: {called}")


def _phases(called: list[str]) -> list[str]:
    return [c for c in called if c != "get_job"]


def test_next_steps_of_a_tabular_run(jobs_ws: Workspace) -> None:
    first = analyze_data(jobs_ws, write_dataset(jobs_ws, "breast_cancer"), target="target")
    called = _follow(jobs_ws, first)
    assert _phases(called) == ["prepare_data", "recommend_architecture", "train", "evaluate", "package"]
    assert jobs_ws.store.retrieve("ml-expert/deployment").value["verified"] is True


def _image_folder(root: Path) -> str:
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, level in (("dark", 40), ("light", 210)):
        (root / "photos" / label).mkdir(parents=True)
        for i in range(40):
            pixels = np.clip(rng.normal(level, 25, (10, 10)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / "photos" / label / f"{i}.png")
    return "photos"


def _sequence_npz(root: Path) -> str:
    rng = np.random.default_rng(0)
    t = np.linspace(0, 2 * np.pi, 20)
    fast = rng.random(240) < 0.5
    wave = np.sin(np.where(fast[:, None], 3.0, 1.0) * t + rng.uniform(0, 2 * np.pi, (240, 1)))
    X = (wave + rng.normal(0, 0.2, (240, 20)))[..., None].astype(np.float32)
    np.savez(root / "waves.npz", X=X, y=np.where(fast, "fast", "slow"))
    return "waves.npz"


def _text_csv(root: Path) -> str:
    rng = np.random.default_rng(1)
    pos, neg = ["great", "love", "best", "amazing"], ["awful", "hate", "worst", "boring"]
    filler = ["the", "movie", "was", "a", "and", "story", "plot", "film"]
    rows = []
    for _ in range(300):
        label = int(rng.integers(0, 2))
        words = [*rng.choice(filler, 5), *rng.choice(pos if label else neg, 2)]
        rng.shuffle(words)
        rows.append({"review": " ".join(words), "sentiment": "pos" if label else "neg"})
    pd.DataFrame(rows).to_csv(root / "reviews.csv", index=False)
    return "reviews.csv"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("make", "target", "modality", "raw", "expected"),
    [
        (_image_folder, None, "image", None, None),  # images from a .npz: test_modalities' fine-tuning test
        (_sequence_npz, None, "sequence", None, None),
        (_text_csv, "sentiment", "text", '["great love best film", "awful boring worst plot"]', ["pos", "neg"]),
    ],
    ids=["image-folder", "sequence-npz", "text"],
)
def test_next_steps_of_non_tabular_runs(
    jobs_ws: Workspace, make: Any, target: str | None, modality: str, raw: str | None, expected: list[str] | None
) -> None:
    """Every next_step followed as written, and the model learned (test accuracy >= 0.9, beats the baseline)."""
    path = make(jobs_ws.root)
    options = {"text_column": "review"} if modality == "text" else None
    first = analyze_data(jobs_ws, path, target=target, data_options=options)
    assert first.modality == modality
    called = _follow(jobs_ws, first)
    assert _phases(called) == ["prepare_data", "recommend_architecture", "train", "evaluate", "package"]
    deployment = jobs_ws.store.retrieve("ml-expert/deployment").value
    assert deployment["verified"] is True, deployment["formats"]
    evaluation = jobs_ws.store.retrieve("ml-expert/metrics").value["evaluations"][0]
    assert evaluation["beats_baseline"] and evaluation["test_metrics"]["accuracy"] >= 0.9, evaluation["test_metrics"]
    if raw is not None:  # raw inputs through the package, as a user would call it
        code = (
            f"import sys, json; sys.path.insert(0, {str(jobs_ws.root / deployment['folder'])!r}); "
            f"from inference import ModelInference; print(json.dumps(ModelInference().predict({raw})))"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0 and json.loads(out.stdout) == expected, out.stderr[-2000:]
