"""`task_type`: a user overrules the guess of classification against regression (analyze_data, prepare_data,
run_workflow and `ml-expert run --task`), and a task the target cannot have is refused with what to do instead."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ml_expert.memory.errors import InvalidInputError
from ml_expert.server.cli import main
from ml_expert.tools.data.analyze import analyze_data
from ml_expert.tools.data.prepare import prepare_data
from ml_expert.tools.prediction.predict import predict
from ml_expert.tools.training.config import TrainConfig
from ml_expert.tools.training.train import train
from ml_expert.tools.workspace import Workspace


def _grades(n: int = 600, seed: int = 0) -> pd.DataFrame:
    """A grade 1-5 driven by two numbers: five integer values, so the guess is classes."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"effort": rng.normal(size=n), "talent": rng.normal(size=n)})
    frame["grade"] = np.clip(np.round(3 + 1.2 * frame["effort"] + 0.6 * frame["talent"]), 1, 5).astype(int)
    return frame


def _visits(n: int = 800, seed: int = 1) -> pd.DataFrame:
    """Visits 0-22 driven by age and a plan, a long tail of rare counts: the guess is a regression."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"age": rng.integers(18, 90, n), "plan": rng.choice(["basic", "gold"], n)})
    frame["visits"] = rng.poisson(0.5 + (frame["age"] - 18) / 8 + np.where(frame["plan"] == "gold", 3.0, 0.0))
    return frame


def test_analyze_passes_the_requested_task_to_prepare_and_prepare_can_overrule_it(ws: Workspace) -> None:
    _grades().to_csv(ws.root / "grades.csv", index=False)
    guessed = analyze_data(ws, "grades.csv", target="grade")
    assert guessed.task_type == "multiclass" and guessed.task_requested == "auto"

    asked = analyze_data(ws, "grades.csv", target="grade", task_type="regression")
    assert asked.task_type == "regression" and asked.target.distribution["max"] == 5.0
    stored = ws.store.retrieve("ml-expert/data-analysis").value
    assert stored["run_id"] == asked.run_id and stored["task_requested"] == "regression"
    prepared = prepare_data(ws, run_id=asked.run_id)  # no task_type: the one analyze_data was told
    assert prepared.task_type == "regression" and prepared.label_mapping is None
    assert prepared.options["task_type"] == "regression"
    assert ws.store.retrieve("ml-expert/prepared-data").value["task_type"] == "regression"

    again = prepare_data(ws, run_id=asked.run_id, task_type="auto")  # an explicit auto guesses again
    assert again.task_type == "multiclass" and again.label_mapping == {str(i): str(i + 1) for i in range(5)}


def test_a_count_taken_as_classes_predicts_its_integer_labels(jobs_ws: Workspace) -> None:
    frame = _visits()
    frame.to_csv(jobs_ws.root / "visits.csv", index=False)
    assert prepare_data(jobs_ws, path="visits.csv", target="visits").task_type == "regression"  # the guess
    prepared = prepare_data(jobs_ws, path="visits.csv", target="visits", task_type="classification")
    assert prepared.task_type == "multiclass"
    labels = sorted(int(v) for v in prepared.label_mapping.values())
    assert labels == sorted(frame["visits"].unique().tolist())
    status = train(jobs_ws, prepared.run_id, "random_forest", TrainConfig(n_estimators=100), wait_seconds=180)
    assert status.status == "succeeded", status.error
    rows = _visits(n=300, seed=7)
    rows.drop(columns="visits").to_csv(jobs_ws.root / "new.csv", index=False)
    result = predict(jobs_ws, run_id=prepared.run_id, path="new.csv")
    scored = pd.read_csv(jobs_ws.root / result.output)
    assert scored["prediction"].dtype.kind == "i" and set(scored["prediction"]) <= set(labels)
    assert {c for c in scored.columns if c.startswith("p_")} == {f"p_{v}" for v in labels}
    # the count follows age and plan: the predicted classes track it (Poisson noise caps the correlation of even the
    # true rate with the count near 0.76; a constant prediction has none)
    assert np.corrcoef(scored["prediction"], rows["visits"])[0, 1] > 0.5


def test_a_task_the_target_cannot_have_is_refused_with_what_to_do(ws: Workspace) -> None:
    frame = _grades()
    frame["letter"] = frame["grade"].map(dict(zip(range(1, 6), "EDCBA", strict=True)))
    frame["score"] = frame["effort"] * 100 + 0.5  # every value distinct
    frame.to_csv(ws.root / "grades.csv", index=False)

    with pytest.raises(InvalidInputError, match=r"regression' needs a numeric target.*'letter'.*classification"):
        analyze_data(ws, "grades.csv", target="letter", task_type="regression")
    assert ws.runs.list(10)[1] == 0  # refused before a run was started
    with pytest.raises(InvalidInputError, match=r"regression' needs a numeric target.*'letter'"):
        prepare_data(ws, path="grades.csv", target="letter", task_type="regression")
    with pytest.raises(InvalidInputError, match=r"600 classes of 'score', 600 of them with fewer than 5.*'regression'"):
        prepare_data(ws, path="grades.csv", target="score", task_type="classification")
    frame.assign(score=(frame["effort"] * 30).round()).to_csv(ws.root / "rounded.csv", index=False)
    with pytest.raises(InvalidInputError, match=r"task_type='classification' would make \d+ classes of 'score'"):
        analyze_data(ws, "rounded.csv", target="score", task_type="classification")  # repeats, but mostly rare
    with pytest.raises(InvalidInputError, match=r"needs the column to predict: pass target="):
        analyze_data(ws, "grades.csv", task_type="classification")
    assert ws.runs.list(10)[1] == 0 and ws.store.get_value("ml-expert/prepared-data") is None


def test_cli_run_with_task_regression_trains_and_packages_a_regression(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = Workspace(tmp_path)
    frame = _grades()
    frame.to_csv(tmp_path / "grades.csv", index=False)
    try:
        code = main(["run", "grades.csv", "-t", "grade", "--task", "regression", "-a", "linear", "-w", str(tmp_path)])
        assert code == 0, capsys.readouterr()
        assert ws.store.get_value("ml-expert/training")["task_type"] == "regression"
        evaluated = ws.store.retrieve("ml-expert/metrics").value["evaluations"][0]
        assert evaluated["task_type"] == "regression" and evaluated["test_metrics"]["r2"] > 0.8  # 0.92 on this data
        run_id = ws.store.get_value("ml-expert/metrics")["run_id"]
        rows = _grades(n=50, seed=3)
        records = rows.drop(columns="grade").to_dict(orient="records")
        result = predict(ws, run_id=run_id, records=records)
        assert all(isinstance(p.prediction, float) for p in result.predictions)  # numbers, not class labels
        values = pd.read_csv(ws.root / result.output)["prediction"]
        assert len(values) == 50 and (values != values.round()).any() and result.label_counts is None
        assert np.corrcoef(values, rows["grade"])[0, 1] > 0.9
    finally:
        ws.close()


def test_a_workflow_that_failed_for_want_of_a_target_resumes_with_one(jobs_ws: Workspace) -> None:
    """`ml-expert run data.csv` without --target failed at prepare, and `--resume RUN --target grade` failed again
    with the same error: the resumed workflow did not pass the new target on."""
    from ml_expert.tools.runs import get_run
    from ml_expert.tools.workflow import run_workflow

    _grades().to_csv(jobs_ws.root / "grades.csv", index=False)
    failed = run_workflow(jobs_ws, path="grades.csv", architecture="linear", wait_seconds=120)
    assert failed.status == "failed" and "needs target=" in failed.error, failed.error
    resumed = run_workflow(jobs_ws, resume=failed.run_id, target="grade", architecture="linear", wait_seconds=120)
    assert resumed.status == "succeeded", resumed.error
    assert resumed.result["phases_run"] == ["prepare", "recommend", "train", "evaluate", "package"]
    assert get_run(jobs_ws, failed.run_id).target == "grade" and resumed.result["task_type"] == "multiclass"
    assert resumed.result["test_metrics"]["accuracy"] > 0.8  # grades from two numbers, by a logistic regression


def test_the_task_asked_of_analyze_data_applies_to_its_target_only(ws: Workspace) -> None:
    """analyze_data(target='grade', task_type='regression') then prepare_data(run_id, target='letter') failed with
    "task_type='regression' needs a numeric target": the request was for another column."""
    frame = _grades()
    frame["letter"] = frame["grade"].map(dict(zip(range(1, 6), "EDCBA", strict=True)))
    frame.to_csv(ws.root / "grades.csv", index=False)
    asked = analyze_data(ws, "grades.csv", target="grade", task_type="regression")
    prepared = prepare_data(ws, run_id=asked.run_id, target="letter")
    assert prepared.task_type == "multiclass" and prepared.options["task_type"] == "auto"


def test_a_run_that_a_queued_or_running_workflow_will_train_refuses_a_new_preparation(ws: Workspace) -> None:
    """Only train and probe jobs counted: a workflow between its prepare and its first model let another agent
    rewrite the data it was training on. Its own phases, run inside its job, still prepare it."""
    import os

    from ml_expert.memory.errors import ConflictError
    from ml_expert.tools.jobs.specs import RUNNING_JOB

    _grades().to_csv(ws.root / "grades.csv", index=False)
    run = prepare_data(ws, path="grades.csv", target="grade").run_id
    ws.job_store.insert(
        "job_0000beef", kind="workflow", run_id=run, namespace="default", spec={}, owner_pid=os.getpid()
    )
    with pytest.raises(ConflictError, match=r"is being trained by job\(s\) \['job_0000beef'\]"):
        prepare_data(ws, run_id=run, scaling="none")
    token = RUNNING_JOB.set("job_0000beef")  # the workflow's own prepare phase
    try:
        assert prepare_data(ws, run_id=run, scaling="none").options["scaling"] == "none"
    finally:
        RUNNING_JOB.reset(token)


def test_resuming_a_run_packaged_without_an_evaluation_says_it_has_no_test_score(jobs_ws: Workspace) -> None:
    """prepare → train → package, then run_workflow(resume=): no phase is left to run after package, and the
    summary quoted no score without saying why."""
    from ml_expert.tools.packaging.package import package
    from ml_expert.tools.workflow import run_workflow

    _grades().to_csv(jobs_ws.root / "grades.csv", index=False)
    run = prepare_data(jobs_ws, path="grades.csv", target="grade").run_id
    assert train(jobs_ws, run, "linear", wait_seconds=120).status == "succeeded"
    assert package(jobs_ws, run, wait_seconds=240).status == "succeeded"
    resumed = run_workflow(jobs_ws, resume=run, wait_seconds=120)
    assert resumed.status == "succeeded" and resumed.result["phases_run"] == []
    assert resumed.result["test_metrics"] == {} and "not evaluated: no test score" in resumed.result["summary"]
