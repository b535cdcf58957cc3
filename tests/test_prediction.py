"""After training: `predict` (the package's code path, per-row refusals, drift warnings, a new predictions file)
and `explain` (permutation importance on raw columns, partial dependence, Shapley contributions), and a server
that starts without numpy or pandas."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import frame_run, messy_frame

from ml_expert.memory.errors import ConflictError, InvalidInputError, NotFoundError, PathNotAllowedError
from ml_expert.tools.evaluation.evaluate import evaluate
from ml_expert.tools.packaging.package import package
from ml_expert.tools.prediction.explain import explain
from ml_expert.tools.prediction.predict import predict
from ml_expert.tools.training.train import train
from ml_expert.tools.workspace import Workspace


def _ok(status: object) -> dict:
    assert status.status == "succeeded", status.error
    return status.result


@pytest.fixture
def messy_run(jobs_ws: Workspace) -> str:
    run = frame_run(jobs_ws, messy_frame(), "label", name="messy.csv")
    _ok(train(jobs_ws, run, "gradient_boosting", wait_seconds=120))
    return run


@pytest.mark.slow
def test_predict_gives_exactly_what_the_package_gives_on_raw_rows(jobs_ws: Workspace, messy_run: str) -> None:
    raw = pd.read_parquet(jobs_ws.run_dir(messy_run) / "data" / "raw_test.parquet").drop(columns="label")
    raw.to_csv(jobs_ws.root / "new_rows.csv", index=False)
    result = predict(jobs_ws, run_id=messy_run, path="new_rows.csv")
    assert result.rows == result.rows_scored == len(raw) and result.rows_refused == 0
    written = pd.read_csv(jobs_ws.root / result.output)
    assert len(written) == len(raw) and written["refused"].isna().all()

    pkg = _ok(package(jobs_ws, messy_run, formats=["joblib"], wait_seconds=300))
    folder = jobs_ws.root / pkg["folder"]
    code = (
        f"import sys, json; sys.path.insert(0, {str(folder)!r}); from inference import ModelInference; "
        f"m = ModelInference(runtime='sklearn'); rows = {str(jobs_ws.root / 'new_rows.csv')!r}; "
        "print(json.dumps({'labels': m.predict(rows), 'p': m.predict_proba(rows).tolist()}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    package_says = json.loads(out.stdout)
    assert written["prediction"].tolist() == package_says["labels"]
    assert np.allclose(written[["p_no", "p_yes"]].to_numpy(), package_says["p"], atol=1e-6, rtol=0)
    shown = result.predictions[0]
    assert shown.prediction == package_says["labels"][0]
    assert shown.probabilities["yes"] == pytest.approx(package_says["p"][0][1], abs=1e-6)
    assert sum(result.label_counts.values()) == len(raw)
    stored = jobs_ws.store.get_value("ml-expert/predictions")
    assert stored["rows_scored"] == len(raw) and stored["output"] == result.output


def test_a_large_file_is_scored_by_a_job_with_progress(
    jobs_ws: Workspace, messy_run: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ml_expert.tools.prediction import predict as module

    inline = predict(jobs_ws, run_id=messy_run, path="messy.csv", output="inline.csv")
    monkeypatch.setattr(module, "INLINE_MAX_BYTES", 1000)  # now this 30 kB file counts as large
    events: list[dict] = []
    result = predict(jobs_ws, run_id=messy_run, path="messy.csv", output="job.csv", report=events.append)
    assert result.rows_scored == inline.rows_scored == 305
    assert any(e.get("phase") == "predict" for e in events)  # progress came from the worker
    assert jobs_ws.job_store.list(status=None, limit=1)[0][0].kind == "predict"
    assert (jobs_ws.root / "job.csv").read_text() == (jobs_ws.root / "inline.csv").read_text()


def test_one_bad_row_is_refused_and_the_rest_are_scored(jobs_ws: Workspace, messy_run: str) -> None:
    rows = messy_frame(n=80, seed=3).drop(columns=["label", "x2"]).astype(object)  # x2 missing: imputed
    rows.loc[7, "x1"] = "twelve"  # not a number: this row only is refused
    rows.loc[9, "city"] = "tokyo"  # a category never seen in training: scored, and reported as drift
    rows.to_csv(jobs_ws.root / "batch.csv", index=False)
    result = predict(jobs_ws, run_id=messy_run, path="batch.csv")
    assert result.rows == 85 and result.rows_scored == 84 and result.rows_refused == 1
    assert result.refused[0].row == 7 and "x1" in result.refused[0].reason and "twelve" in result.refused[0].reason
    assert result.drift.missing_columns == ["x2"]
    assert any("tokyo" in w for w in result.drift.warnings) and any("'x2'" in w for w in result.drift.warnings)
    written = pd.read_csv(jobs_ws.root / result.output)
    assert pd.isna(written.loc[7, "prediction"]) and "twelve" in written.loc[7, "refused"]
    assert written.drop(index=7)["prediction"].isin(["yes", "no"]).all()


def test_drift_flags_a_shifted_column_and_is_quiet_on_the_training_data(jobs_ws: Workspace, messy_run: str) -> None:
    quiet = predict(jobs_ws, run_id=messy_run, path="messy.csv")  # the training file itself (target, id and all)
    assert quiet.drift.warnings == [] and quiet.drift.extra_columns == []
    shifted = messy_frame()
    shifted["x2"] = shifted["x2"] + 8  # five training standard deviations
    shifted.to_csv(jobs_ws.root / "shifted.csv", index=False)
    drift = predict(jobs_ws, run_id=messy_run, path="shifted.csv").drift
    x2 = next(c for c in drift.columns if c.column == "x2")
    assert x2.level == "major" and x2.psi > 0.25 and x2.out_of_range_share > 0.5
    assert all("'x2'" in w for w in drift.warnings) and len(drift.warnings) == 2
    assert drift.columns[0].column == "x2"  # the most shifted column first


def test_predict_never_replaces_a_file_and_refuses_bad_calls_clearly(jobs_ws: Workspace, messy_run: str) -> None:
    (jobs_ws.root / "mine.csv").write_text("precious\n")
    record = messy_frame().head(3).drop(columns="label").to_dict("records")
    with pytest.raises(ConflictError, match="never replaces"):
        predict(jobs_ws, run_id=messy_run, records=record, output="mine.csv")
    assert (jobs_ws.root / "mine.csv").read_text() == "precious\n"
    first = predict(jobs_ws, run_id=messy_run, records=record)
    second = predict(jobs_ws, run_id=messy_run, records=record)
    assert first.output != second.output and (jobs_ws.root / first.output).exists()
    model_id = first.model_id
    assert predict(jobs_ws, model_id=model_id, records=record).rows_scored == len(record)  # the run is found
    with pytest.raises(InvalidInputError, match="run_id"):
        predict(jobs_ws, records=record)
    with pytest.raises(InvalidInputError, match="either path"):
        predict(jobs_ws, run_id=messy_run, path="messy.csv", records=record)
    with pytest.raises(InvalidInputError, match="1 to 100"):
        predict(jobs_ws, run_id=messy_run, records=record * 40)
    with pytest.raises(NotFoundError, match="No model"):
        predict(jobs_ws, model_id="mdl_00000000", records=record)
    with pytest.raises(PathNotAllowedError):
        predict(jobs_ws, run_id=messy_run, records=record, output="../outside.csv")
    with pytest.raises(PathNotAllowedError):
        predict(jobs_ws, run_id=messy_run, path="/etc/passwd")
    assert not (jobs_ws.root.parent / "outside.csv").exists()


@pytest.mark.slow
def test_explain_ranks_the_planted_column_first_and_noise_last(jobs_ws: Workspace) -> None:
    rng = np.random.default_rng(1)
    n = 600
    frame = pd.DataFrame(
        {
            "noise": rng.normal(size=n),
            "weak": rng.normal(size=n),
            "colour": rng.choice(["red", "green", "blue"], n),
            "signal": rng.normal(size=n),
        }
    )
    logit = 3 * frame["signal"] + 1.0 * frame["weak"] + (frame["colour"] == "red") * 1.0
    frame["y"] = np.where(logit + rng.normal(scale=0.3, size=n) > 0, "pos", "neg")
    run = frame_run(jobs_ws, frame, "y")
    model_id = _ok(train(jobs_ws, run, "gradient_boosting", wait_seconds=120))["model_id"]
    _ok(evaluate(jobs_ws, run, wait_seconds=120))
    rows = frame.drop(columns="y").head(3).to_dict("records")
    result = explain(jobs_ws, run_id=run, rows=rows, wait_seconds=240)
    columns = [c.column for c in result.importance]
    assert columns[0] == "signal" and columns[-1] == "noise", result.importance
    assert result.importance[0].importance > 0.2 and abs(result.importance[-1].importance) < 0.02
    assert result.split == "validation" and result.metric == "balanced_accuracy"
    assert result.partial_dependence[0].column == "signal"
    curve = result.partial_dependence[0].average
    assert curve[-1] > curve[0] + 0.5  # P(pos) rises with the signal
    for row in result.local:
        assert row.output == pytest.approx(row.base_value + sum(row.contributions.values()), abs=1e-5)
        assert next(iter(row.contributions)) == "signal"  # the largest contribution, for these rows
    assert "exact Shapley" in result.local_method
    folder = jobs_ws.run_dir(run)
    assert json.loads((folder / "importance.json").read_text())["columns"][0]["column"] == "signal"
    assert (folder / "partial_dependence.png").read_bytes()[:4] == b"\x89PNG"
    report = (folder / "evaluation_report.md").read_text()
    assert "## Explanations" in report and "| signal |" in report
    stored = jobs_ws.store.get_value("ml-expert/explanations")
    assert stored["model_id"] == model_id and stored["importance"][0]["column"] == "signal"


SERVER_IMPORTS = """
import sys, anyio, tempfile, pathlib
from mcp import Client
from ml_expert.server.app import build_server
from ml_expert.tools.settings import Settings
heavy = ("numpy", "pandas", "sklearn", "scipy", "tensorflow")
ws = pathlib.Path(tempfile.mkdtemp())
(ws / "d.csv").write_text("a,b,y\\n" + "".join(f"{i},{i % 3},{i % 2}\\n" for i in range(40)))
async def main():
    async with Client(build_server(Settings.from_env(env={}, workspace=ws))) as c:
        assert len((await c.list_tools()).tools) >= 20
        await c.call_tool("memory_store", {"key": "k", "value": 1})
        await c.call_tool("list_runs", {})
        print("before", sorted(m for m in heavy if m in sys.modules))
        result = await c.call_tool("analyze_data", {"path": "d.csv", "target": "y"})
        assert not result.is_error, result.content
        print("after", sorted(m for m in heavy if m in sys.modules))
anyio.run(main)
"""


def test_the_server_imports_no_numpy_or_pandas_before_the_first_data_tool(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", SERVER_IMPORTS], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines())
    assert lines["before"] == "[]"  # a new workspace, migrated without sqlite-utils' pandas import
    assert "numpy" in lines["after"] and "pandas" in lines["after"]


def test_the_migration_names_the_database_checks_are_the_migrations() -> None:
    from ml_expert.memory.database import MIGRATIONS
    from ml_expert.memory.migrations import migrations

    assert list(MIGRATIONS) == [m.name for m in migrations._migrations]


def test_score_reads_texts_from_their_column_and_refuses_rows_without_one() -> None:
    from ml_expert.tools.prediction.predict import model_inference

    schema = {"modality": "text", "text_column": "review", "task_type": "binary", "classes": ["neg", "pos"]}
    seen: list[list[str]] = []

    def run(X: np.ndarray) -> np.ndarray:  # a stand-in text model: "great" means pos
        seen.append(list(X[:, 0]))
        return np.array([[0.1, 0.9] if "great" in text else [0.8, 0.2] for text in X[:, 0]])

    model = model_inference().from_parts(schema, None, run, runtime="test")
    scored = model.score([{"review": "a great film", "id": 1}, {"review": None}, {"review": "dull"}])
    assert seen[-1] == ["a great film", "", "dull"]  # a missing text is an empty one
    assert model.labels(scored.output) == ["pos", "neg", "neg"] and scored.refused == {}
    without = model.score([{"text": "great"}, {"text": "dull"}])
    assert without.positions.size == 0 and set(without.refused) == {0, 1} and "review" in without.refused[0]


def test_a_few_rows_are_scored_in_the_calling_thread_and_a_large_batch_with_the_models_threads() -> None:
    """A forest's joblib threads cost more than they save on a few rows (one row: 77 ms with them, 24 ms without,
    on 2 cores), which was most of every package's latency check; large batches keep them."""
    from joblib.parallel import get_active_backend
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import RandomForestClassifier

    from ml_expert.tools.artifacts import predict_output
    from ml_expert.tools.core.portable.preprocessing import SEQUENTIAL_ROWS

    X, y = load_breast_cancer(return_X_y=True)
    seen: list[str] = []

    class Forest(RandomForestClassifier):
        def predict_proba(self, X: np.ndarray) -> np.ndarray:
            seen.append(type(get_active_backend()[0]).__name__)
            return super().predict_proba(X)

    forest = Forest(n_estimators=30, n_jobs=2, random_state=0).fit(X, y)
    one = predict_output(forest, "sklearn", "binary", X[:1])
    batch = predict_output(forest, "sklearn", "binary", np.concatenate([X, X])[: SEQUENTIAL_ROWS + 1])
    assert seen[0] == "SequentialBackend" and seen[1] != "SequentialBackend", seen  # the batch: joblib's default
    assert np.array_equal(one, batch[:1]) and float((batch[:569].argmax(1) == y).mean()) > 0.95
