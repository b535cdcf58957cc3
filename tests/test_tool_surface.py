"""The tool surface on tables as users bring them (outside audits, 2026-12-03): what predict, explain, package,
list_jobs and the workflow say about an empty file, a suspected leak, a categorical with many levels, a run that
already has models, a clustering of a labelled table, and the next phase. The `padded` fixture is in conftest.py."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from ml_expert.memory.errors import InvalidInputError
from ml_expert.tools.prediction.predict import predict
from ml_expert.tools.training.config import TrainConfig
from ml_expert.tools.training.train import train
from ml_expert.tools.workflow import package_line
from ml_expert.tools.workspace import Workspace


def test_a_package_without_a_verified_format_says_so_in_the_workflow_summary() -> None:
    deployment = {
        "folder": "runs/run_1/deployment",
        "verified": False,
        "formats": [
            {"format": "onnx", "error": "parity failed: agreement 0.989, max |Δ| 0.135"},
            {"format": "joblib", "error": None},
        ],
    }
    line = package_line(deployment)
    assert "NO format passed its check" in line and "do not deploy it" in line
    assert "onnx: parity failed: agreement 0.989" in line and "joblib: failed its check" in line
    fine = package_line({"folder": "runs/run_1/deployment", "verified": True, "formats": []})
    assert fine == " Package: runs/run_1/deployment (verified: True)." and "NO format" not in fine


def test_predict_names_an_empty_file_and_a_run_that_does_not_exist(padded: tuple[Workspace, str, pd.DataFrame]) -> None:
    """An empty file gave pandas' traceback (EmptyDataError); an unknown run was said to have no model yet; a header
    naming a column twice was read as "padded" and "padded.1" and scored without a word (training refuses it)."""
    from ml_expert.memory.errors import InvalidInputError, NotFoundError

    ws, run, _ = padded
    (ws.root / "empty.csv").write_text("")
    (ws.root / "blank.csv").write_text("\n\n")
    for name in ("empty.csv", "blank.csv"):
        with pytest.raises(InvalidInputError, match=f"{name} is empty"):
            predict(ws, run_id=run, path=name)
    with pytest.raises(NotFoundError, match="No run 'run_deadbeef' in this workspace"):
        predict(ws, run_id="run_deadbeef", path="empty.csv")
    (ws.root / "twice.csv").write_text("padded,other,padded\n0.5,0.0,0.7\n")  # pandas would read padded.1
    with pytest.raises(InvalidInputError, match=r"twice.csv has duplicate column names \['padded'\]"):
        predict(ws, run_id=run, path="twice.csv")
    (ws.root / "blanks.csv").write_text("padded,other,,\n0.5,0.0,,\n")  # a spreadsheet's empty trailing columns
    assert predict(ws, run_id=run, path="blanks.csv").rows_scored == 1
    assert predict(ws, run_id=run, records=[{"padded": 0.5, "other": 0.0}]).rows_scored == 1  # the server goes on


def test_a_suspected_leak_is_quoted_beside_the_test_score_of_the_workflow(jobs_ws: Workspace) -> None:
    """A copy of the target among the columns gave a perfect test score; the analysis flagged it (severity high)
    but neither `run` nor run_workflow's summary said so."""
    from ml_expert.tools.workflow import run_workflow

    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"a": rng.normal(size=300), "b": rng.normal(size=300)})
    frame["churned"] = np.where(frame["a"] + rng.normal(scale=1.0, size=300) > 0, "yes", "no")
    frame["churned_flag"] = (frame["churned"] == "yes").astype(int)  # the target again, under another name
    frame.to_csv(jobs_ws.root / "leaky.csv", index=False)
    status = run_workflow(jobs_ws, path="leaky.csv", target="churned", architecture="linear", wait_seconds=300)
    assert status.status == "succeeded", status.error
    result = status.result
    assert result["test_metrics"]["balanced_accuracy"] == 1.0  # the leak at work
    assert any("'churned_flag' alone predicts 'churned'" in a for a in result["data_alerts"])
    assert "Check the data first: 'churned_flag' alone predicts 'churned'" in result["summary"]


class _Progress:
    """A stand-in job reporter for calling explain's worker entry in-process."""

    def progress(self, force: bool = False, **info: object) -> None:
        pass


def test_explain_draws_a_categorical_with_many_levels_over_its_most_frequent_ones(ws: Workspace) -> None:
    """A 300-level product column among the top columns ended its curve with scikit-learn's "grid_resolution ...
    greater than" error; its curve now spans its PDP_GRID most frequent levels."""
    from ml_expert.tools.artifacts import load_model_meta
    from ml_expert.tools.data.prepare import prepare_data
    from ml_expert.tools.jobs.manager import JobManager
    from ml_expert.tools.prediction.explain import PDP_GRID, ExplainSpec, run_explain_job

    rng = np.random.default_rng(8)
    levels = np.array([f"P{i:03d}" for i in range(300)])
    effect = dict(zip(levels, rng.normal(0, 5, 300), strict=True))
    frame = pd.DataFrame({"product": rng.choice(levels, 3000), "x": rng.normal(size=3000)})
    frame["sales"] = frame["product"].map(effect) + 0.1 * frame["x"] + rng.normal(0, 0.5, 3000)
    frame.to_csv(ws.root / "products.csv", index=False)
    ws.jobs = JobManager(ws).start()
    try:
        run = prepare_data(ws, path="products.csv", target="sales").run_id
        assert train(ws, run, "random_forest", TrainConfig(n_estimators=40), wait_seconds=180).status == "succeeded"
        model_id = load_model_meta(ws, run, None).model_id
        result = run_explain_job(ws, ExplainSpec(run_id=run, model_id=model_id), _Progress())
    finally:
        ws.jobs.stop()
    assert result.importance[0].column == "product" and not result.warnings
    curve = next(p for p in result.partial_dependence if p.column == "product")
    assert len(curve.grid) == PDP_GRID and set(curve.grid) <= set(levels)  # the most frequent on explain's rows
    truth = [effect[level] for level in curve.grid]
    assert np.corrcoef(truth, curve.average)[0, 1] > 0.8  # the curve shows each level's own effect


def test_explain_says_why_it_drew_no_partial_dependence(
    padded: tuple[Workspace, str, pd.DataFrame], monkeypatch: pytest.MonkeyPatch
) -> None:
    """When no column's importance was above zero, explain returned an empty partial dependence and no word why."""
    from ml_expert.tools.artifacts import load_model_meta
    from ml_expert.tools.prediction import explain as explain_module
    from ml_expert.tools.prediction.explain import ExplainSpec, run_explain_job

    ws, run, _ = padded
    measured = explain_module.permutation_ranking

    def nothing_matters(*args: object, **kwargs: object) -> tuple:
        metric, score, importance = measured(*args, **kwargs)
        return metric, score, [c.model_copy(update={"importance": 0.0}) for c in importance]

    monkeypatch.setattr(explain_module, "permutation_ranking", nothing_matters)
    model_id = load_model_meta(ws, run, None).model_id
    result = run_explain_job(ws, ExplainSpec(run_id=run, model_id=model_id), _Progress())
    assert result.partial_dependence == [] and not result.warnings
    assert any(
        n.startswith("No partial dependence: shuffling no column lowered the model's score") for n in result.notes
    )


def test_a_run_with_a_model_refuses_to_be_prepared_or_analyzed_again_and_its_model_keeps_predicting(
    padded: tuple[Workspace, str, pd.DataFrame],
) -> None:
    """prepare_data(run_id=...) after train rewrote the preprocessor that the run's model reads back: the same
    model's probabilities moved (0.082 -> 0.110 with scaling="none"), or, with a column dropped, predict, evaluate,
    package and explain failed with "X has 5 features, but ... is expecting 9"."""
    from ml_expert.memory.errors import ConflictError
    from ml_expert.tools.data.analyze import analyze_data
    from ml_expert.tools.data.prepare import prepare_data

    ws, run, rows = padded
    before = predict(ws, run_id=run, records=rows.head(5).to_dict("records"))
    preprocessor = (ws.run_dir(run) / "preprocessor.joblib").read_bytes()
    for attempt in (
        lambda: prepare_data(ws, run_id=run, scaling="none"),
        lambda: prepare_data(ws, run_id=run, drop_columns=["other"]),
        lambda: analyze_data(ws, "train.csv", target="other", run_id=run),
    ):
        with pytest.raises(
            ConflictError,
            match=rf"Run '{run}' has trained models \['mdl_.*Start a new run.*"
            r"prepare_data\(path='train.csv', target='y'",
        ):
            attempt()
    assert (ws.run_dir(run) / "preprocessor.joblib").read_bytes() == preprocessor
    after = predict(ws, run_id=run, records=rows.head(5).to_dict("records"))
    assert [p.probabilities for p in after.predictions] == [p.probabilities for p in before.predictions]
    fresh = prepare_data(ws, path="train.csv", target="y", scaling="none")  # the new preparation: a new run
    assert fresh.run_id != run and fresh.options["scaling"] == "none"


def test_a_clustering_of_a_labelled_table_predicts_and_packages_cluster_ids(jobs_ws: Workspace) -> None:
    """kmeans / gaussian_mixture trained on a labelled run: predict failed (KMeans has no predict_proba) or named
    the mixture's components with the run's labels ("malignant" for component 0); explain failed with the raw
    AttributeError; package shipped nothing verified."""
    import subprocess
    import sys

    from conftest import sklearn_frame

    from ml_expert.tools.data.prepare import prepare_data
    from ml_expert.tools.packaging.package import package
    from ml_expert.tools.prediction.explain import explain

    frame = sklearn_frame("breast_cancer")
    frame.to_csv(jobs_ws.root / "bc.csv", index=False)
    run = prepare_data(jobs_ws, path="bc.csv", target="target").run_id
    assert train(jobs_ws, run, "kmeans", wait_seconds=120).status == "succeeded"
    scored = predict(jobs_ws, run_id=run, path="bc.csv")
    ids = pd.read_csv(jobs_ws.root / scored.output)["prediction"]
    assert scored.rows_scored == 569 and set(ids) == {0, 1} and scored.label_counts.keys() == {"0", "1"}
    purity = pd.crosstab(ids, frame["target"]).max(axis=1).sum() / len(frame)
    assert purity > 0.85  # two clusters of standardized breast cancer cells follow the diagnosis (0.91 here)
    with pytest.raises(InvalidInputError, match=r"kmeans clustering, which learned no target"):
        explain(jobs_ws, run_id=run)
    packaged = package(jobs_ws, run, wait_seconds=240)
    assert packaged.status == "succeeded" and packaged.result["verified"], packaged.result
    folder = jobs_ws.root / packaged.result["folder"]
    frame.drop(columns="target").head(50).to_csv(jobs_ws.root / "rows.csv", index=False)
    out = subprocess.run(
        [sys.executable, "inference.py", str(jobs_ws.root / "rows.csv")],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert pd.read_csv(io.StringIO(out.stdout))["prediction"].tolist() == ids.head(50).tolist()


def test_next_phase_follows_the_last_phase_done_not_the_first_one_skipped(
    padded: tuple[Workspace, str, pd.DataFrame],
) -> None:
    """A run prepared from a path and trained without a recommendation said next_phase 'analyze': an agent
    following it went backwards (and analyze_data on that run is refused now that it has a model)."""
    from ml_expert.tools.runs import get_run

    ws, run, _ = padded
    info = get_run(ws, run)
    assert {"prepare", "train"} <= set(info.phases) and "analyze" not in info.phases
    assert info.next_phase == "evaluate"


def test_list_jobs_leaves_out_the_results_that_get_job_has(padded: tuple[Workspace, str, pd.DataFrame]) -> None:
    """Each listed job carried its whole result (a search's leaderboard): 45 KB for the default 20 jobs."""
    from ml_expert.tools.jobs.tools import get_job, list_jobs

    ws, run, _ = padded
    listed = [j for j in list_jobs(ws).jobs if j.run_id == run and j.kind == "train"]
    assert listed and listed[0].status == "succeeded" and listed[0].result is None
    assert get_job(ws, listed[0].job_id).result["model_id"].startswith("mdl_")


def test_explain_of_given_rows_warns_of_a_missing_and_an_unknown_column_as_predict_does(
    padded: tuple[Workspace, str, pd.DataFrame],
) -> None:
    """A row without 'other' and with a column the model never saw: predict warned of both, explain of neither,
    while the imputed 'other' took part in the row's Shapley values."""
    from ml_expert.tools.artifacts import load_model_meta
    from ml_expert.tools.prediction.explain import ExplainSpec, run_explain_job

    ws, run, rows = padded
    sent = [{" padded ": float(rows.iloc[0][" padded "]), "colour": "red"}]
    warned = predict(ws, run_id=run, records=sent).drift.warnings
    model_id = load_model_meta(ws, run, None).model_id
    explained = run_explain_job(ws, ExplainSpec(run_id=run, model_id=model_id, rows=sent), _Progress())
    expected = [
        "missing column 'other': imputed in every row; predictions lean on the other columns",
        "1 column(s) the model does not know were ignored: [colour]",
    ]
    assert [w for w in warned if w in expected] == expected
    assert [w for w in explained.warnings if w in expected] == expected, explained.warnings
    assert explained.local is not None and len(explained.local) == 1  # the row is still explained
