"""The after-training loop on a table with every real-world column type together — integers (a tenure, an age),
booleans, string categoricals, missing cells and dates: explain (partial dependence refused integer columns and took
the whole job down), predict, evaluate and package; and explain's parts degrade to warnings, its cost is bounded."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from conftest import churn_frame, frame_run

from ml_expert.tools.evaluation.evaluate import evaluate
from ml_expert.tools.jobs.manager import JobManager
from ml_expert.tools.packaging.package import package
from ml_expert.tools.prediction import explain as explain_module
from ml_expert.tools.prediction import shapley as shapley_module
from ml_expert.tools.prediction.explain import ExplainSpec, explain, importance_plan, run_explain_job
from ml_expert.tools.prediction.predict import predict
from ml_expert.tools.training.train import train
from ml_expert.tools.workspace import Workspace


class StandIn:
    """A stand-in model over a schema of numeric columns, scoring rows the way ModelInference.score does."""

    task, classes = "regression", None

    def __init__(self, columns: list[str]) -> None:
        self.schema = {"columns": [{"name": c, "kind": "numeric"} for c in columns]}

    def score(self, rows: pd.DataFrame) -> SimpleNamespace:
        from ml_expert.tools.core.portable.preprocessing import screen_frame

        converted, refused = screen_frame(rows, self.schema)
        positions = np.asarray([i for i in range(len(rows)) if i not in refused])
        output = self.predict_output(converted.iloc[positions])
        return SimpleNamespace(converted=converted, refused=refused, positions=positions, output=output)

    def labels(self, out: np.ndarray) -> list[float]:
        return out.tolist()


class Progress:
    """A stand-in job reporter for calling a worker entry in-process."""

    def __init__(self) -> None:
        self.events: list[dict] = []

    def progress(self, force: bool = False, **info: object) -> None:
        self.events.append(info)


@pytest.fixture(scope="module")
def churn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Workspace, str, str]]:
    """One trained gradient-boosting run on the churn table, shared by this module's tests."""
    ws = Workspace(tmp_path_factory.mktemp("churn") / "ws")
    ws.jobs = JobManager(ws).start()
    run = frame_run(ws, churn_frame(), "churn", name="churn.csv")
    status = train(ws, run, "gradient_boosting", wait_seconds=180)
    assert status.status == "succeeded", status.error
    yield ws, run, status.result["model_id"]
    ws.jobs.stop()
    ws.close()


def test_explain_works_on_integer_boolean_categorical_missing_and_date_columns(churn: tuple) -> None:
    ws, run, model_id = churn
    rows = churn_frame(5, seed=3).drop(columns="churn").to_dict("records")
    overflow = rows[0] | {"charges": "1e400"}  # past float: refuses this row only
    result = explain(ws, run_id=run, rows=[*rows, overflow], wait_seconds=240)
    assert result.warnings == [] and result.notes == []
    assert list(result.refused) == [5] and "charges" in result.refused[5]
    ranked = [c.column for c in result.importance]
    assert ranked[0] == "tenure" and set(ranked[:3]) >= {"tenure", "plan"}, result.importance
    curves = {p.column: p for p in result.partial_dependence}
    assert "tenure" in curves
    tenure = curves["tenure"]
    assert all(isinstance(v, int) for v in tenure.grid) and tenure.grid == sorted(tenure.grid)
    assert tenure.of == "P(yes)" and tenure.average[0] > tenure.average[-1] + 0.3  # P(yes) falls as tenure grows
    if "plan" in curves:
        assert set(curves["plan"].grid) <= {"basic", "plus", "pro"}
    assert len(result.local) == 5
    for row in result.local:
        assert row.output == pytest.approx(row.base_value + sum(row.contributions.values()), abs=1e-5)
    saved = json.loads((ws.run_dir(run) / "partial_dependence.json").read_text())
    assert saved[[p["column"] for p in saved].index("tenure")]["grid"] == tenure.grid
    assert (ws.run_dir(run) / "partial_dependence.png").read_bytes()[:4] == b"\x89PNG"
    assert ws.store.get_value("ml-expert/explanations")["model_id"] == model_id


def test_predict_evaluate_and_package_on_the_same_table(churn: tuple) -> None:
    ws, run, _ = churn
    raw = pd.read_parquet(ws.run_dir(run) / "data" / "raw_test.parquet")
    raw.drop(columns="churn").to_csv(ws.root / "new_customers.csv", index=False)
    scored = predict(ws, run_id=run, path="new_customers.csv")
    assert scored.rows_scored == len(raw) and scored.rows_refused == 0
    written = pd.read_csv(ws.root / scored.output)
    accuracy = float((written["prediction"] == raw["churn"].to_numpy()).mean())
    assert accuracy > 0.8  # the planted rule is learnable from these columns
    assert not [w for w in scored.drift.warnings if "range" in w.lower()]  # rows from the training distribution

    metrics = evaluate(ws, run, wait_seconds=180)
    assert metrics.status == "succeeded", metrics.error
    assert metrics.result["evaluations"][0]["test_metrics"]["accuracy"] > 0.8

    pkg = package(ws, run, formats=["joblib"], wait_seconds=300)
    assert pkg.status == "succeeded", pkg.error
    folder = ws.root / pkg.result["folder"]
    code = (
        f"import sys, json; sys.path.insert(0, {str(folder)!r}); from inference import ModelInference; "
        f"print(json.dumps(ModelInference(runtime='sklearn').predict({str(ws.root / 'new_customers.csv')!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout) == written["prediction"].tolist()


def test_a_failing_part_of_explain_becomes_a_warning(churn: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    ws, run, model_id = churn

    def broken_curve(estimator: object, X: pd.DataFrame, column: str, *args: object) -> None:
        raise ValueError(f"cannot draw {column}")

    def broken_shapley(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the explainer gave up")

    monkeypatch.setattr(explain_module, "_column_dependence", broken_curve)
    monkeypatch.setattr(explain_module, "shapley_rows", broken_shapley)
    rows = churn_frame(2, seed=4).drop(columns="churn").to_dict("records")
    result = run_explain_job(ws, ExplainSpec(run_id=run, model_id=model_id, rows=rows), Progress())
    assert result.importance[0].column == "tenure"  # the importance stands
    assert result.partial_dependence == [] and result.local is None
    assert any("Partial dependence of 'tenure'" in w and "cannot draw tenure" in w for w in result.warnings)
    assert any("Shapley values could not be computed: RuntimeError" in w for w in result.warnings)
    assert "partial_dependence_plot" not in result.artifacts  # no stale picture is offered


def test_importance_cost_is_bounded_whatever_the_column_count() -> None:
    assert importance_plan(columns=8, rows=900, repeats=5) == (900, 5, None)
    rows, repeats, note = importance_plan(columns=260, rows=2000, repeats=5)
    assert rows * repeats * 260 <= explain_module.MAX_PERMUTED_ROWS and rows >= explain_module.MIN_IMPORTANCE_ROWS
    assert note and "260 columns" in note
    rows, repeats, note = importance_plan(columns=5000, rows=2000, repeats=5)
    assert (rows, repeats) == (explain_module.MIN_IMPORTANCE_ROWS, 2) and "2 repeats instead of 5" in note


@pytest.mark.slow  # the permutation explainer's kernels: ~10 s of numba compiling where they are not cached yet
def test_shapley_values_on_more_columns_than_the_permutation_default_allows(tmp_path: Path) -> None:
    """Above 249 columns shap's default max_evals=500 is too low; explain sizes it from the column count."""
    from ml_expert.tools.prediction.shapley import shapley_rows

    rng = np.random.default_rng(0)
    columns = [f"c{i}" for i in range(260)]
    background = pd.DataFrame(rng.normal(size=(60, 260)), columns=columns)

    class Linear(StandIn):  # the prediction is 2 × c0 − c1
        def predict_output(self, frame: pd.DataFrame) -> np.ndarray:
            return 2 * frame["c0"].to_numpy(dtype=float) - frame["c1"].to_numpy(dtype=float)

    row = {c: 0.0 for c in columns} | {"c0": 3.0, "c1": -1.0}
    local, method, refused, notes = shapley_rows(Linear(columns), [row], background, top_k=3, seed=0)
    assert refused is None and notes == [] and "permutation sampling" in method
    contributions = local[0].contributions
    assert list(contributions)[:2] == ["c0", "c1"]
    assert local[0].output == pytest.approx(7.0) and local[0].output == pytest.approx(
        local[0].base_value + sum(contributions.values()), abs=1e-6
    )
    from shap.maskers import _tabular

    # shap's masking kernels are cached on disk by numba: a fresh worker loads them instead of compiling (~5 s)
    assert type(_tabular._delta_masking._cache).__name__ == "FunctionCache"
    assert _tabular._delta_masking._cache.cache_path


@pytest.mark.slow  # in a fresh environment it compiles shap's kernels in the test process: 13 s in clean CI
def test_shapley_rows_past_the_time_bound_are_refused_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    from ml_expert.tools.prediction.shapley import shapley_rows

    rng = np.random.default_rng(1)
    background = pd.DataFrame({"a": rng.normal(size=60), "b": rng.integers(0, 9, 60)})

    class Sum(StandIn):
        def predict_output(self, frame: pd.DataFrame) -> np.ndarray:
            return frame["a"].to_numpy(dtype=float) + frame["b"].to_numpy(dtype=float)

    monkeypatch.setattr(shapley_module, "SHAPLEY_BUDGET_S", 0)  # every row costs more than the bound: one is done
    rows = background.head(3).to_dict("records")
    local, _, refused, notes = shapley_rows(Sum(["a", "b"]), rows, background, top_k=2, seed=0)
    assert [r.row for r in local] == [0] and set(refused) == {1, 2}
    assert "pass this row in another call" in refused[1] and "first 1 of 3 rows" in notes[0]


JIT_PROBE = """
import json
import numpy as np
import shap
from shap.utils import _masked_model
from ml_expert.tools.prediction.shapley import _cache_jit

_cache_jit()
rng = np.random.default_rng(0)
weights, background, rows = np.array([1.0, -2.0, 0.5, 0.0]), rng.normal(size=(20, 4)), rng.normal(size=(2, 4))
found = shap.explainers.Exact(lambda x: x @ weights, shap.maskers.Independent(background))(rows, silent=True)
stats = _masked_model._build_fixed_single_output.stats
expected = rows @ weights - background.mean(0) @ weights
print(json.dumps({"hits": sum(stats.cache_hits.values()), "misses": sum(stats.cache_misses.values()),
                  "sums": found.values.sum(1).tolist(), "expected": expected.tolist()}))
"""


@pytest.mark.slow
def test_a_fresh_worker_loads_the_compiled_shapley_kernels_instead_of_compiling_them() -> None:
    # shap's masking kernel takes its link function as an argument, which numba keyed by a per-process random id:
    # the kernel cached on disk never matched, and each explain compiled it again (5-10 s). The first process
    # compiles (or finds the kernel), the next one must load it.
    runs = []
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", JIT_PROBE], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    assert runs[1]["hits"] >= 1 and runs[1]["misses"] == 0, runs
    for run in runs:  # the values are still Shapley values: they add up to f(row) - E[f(background)]
        assert run["sums"] == pytest.approx(run["expected"], abs=1e-9)


@pytest.mark.slow  # a whole workflow and a refit (~12 s); the explain of each column type stays a fast test above
def test_an_auto_model_and_its_refit_are_explained_on_rows_they_did_not_learn_from(tmp_path: Path) -> None:
    """explain ranked columns on the validation split, which an auto search learns from (train + validation) and a
    refit on all rows learns from too: an auto forest scored .997 there against .72 out of fold, and the importance
    ranked what it had memorised. Now: the test split, measured on the refit's source model for a refit."""
    ws = Workspace(tmp_path / "ws")
    ws.jobs = JobManager(ws).start()
    try:
        run = frame_run(ws, churn_frame(), "churn", name="churn.csv")
        trained = train(ws, run, "auto", time_budget_s=5, wait_seconds=180)
        assert trained.status == "succeeded", trained.error
        model_id = trained.result["model_id"]
        evaluated = evaluate(ws, run, wait_seconds=180)
        assert evaluated.status == "succeeded", evaluated.error
        test_score = evaluated.result["evaluations"][0]["test_metrics"]["balanced_accuracy"]

        result = explain(ws, run_id=run, wait_seconds=240)
        assert result.model_id == model_id and result.split == "test" and result.metric == "balanced_accuracy"
        assert result.score == pytest.approx(test_score, abs=1e-4)  # the rows evaluate scored, none it learned from
        assert result.notes[0].startswith("Importance is measured on the test split: this auto model learned")
        assert result.importance[0].column == "tenure"

        pkg = package(ws, run, formats=["joblib"], refit_all_rows=True, wait_seconds=300)
        assert pkg.status == "succeeded", pkg.error
        refit = pkg.result["model_id"]
        assert refit != model_id and pkg.result["refit_of"] == model_id
        again = explain(ws, run_id=run, model_id=refit, wait_seconds=240)
        assert again.model_id == refit and again.split == "test"
        assert again.score == pytest.approx(test_score, abs=1e-4)  # measured on the model it refits
        assert again.notes[0].startswith(f"Importance is that of model {model_id} on the test split")
        assert [c.column for c in again.importance] == [c.column for c in result.importance]
    finally:
        ws.jobs.stop()
        ws.close()
