"""Refit on all rows: package refits an evaluated auto model on train + validation + test as a model of its own
(same members, weights and threshold), ships that, shows its source's test score as the
estimate, and evaluate refuses to score it on rows it was trained on."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import frame_run, messy_frame

from ml_expert.memory.errors import InvalidInputError
from ml_expert.tools.artifacts import list_model_ids, load_model, load_model_meta, load_split, model_path
from ml_expert.tools.core.model_meta import ModelMeta
from ml_expert.tools.evaluation.evaluate import evaluate, evaluate_spec
from ml_expert.tools.packaging.package import package, package_spec
from ml_expert.tools.prediction.predict import predict
from ml_expert.tools.training.refit import REFIT_SHARE, decide_refit
from ml_expert.tools.training.train import train
from ml_expert.tools.workspace import Workspace


def _ok(status: object) -> dict:
    assert status.status == "succeeded", status.error
    return status.result


def _log_loss(y: np.ndarray, proba: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(proba[np.arange(len(y)), y.astype(int)], 1e-12, 1))))


@pytest.mark.slow  # a search, evaluate and a refit package (~10 s); the refit's rules stay fast tests below
def test_package_ships_a_refit_on_all_rows_of_an_evaluated_auto_model(jobs_ws: Workspace) -> None:
    # an id, numbers with gaps, a string categorical with missing cells, dates, a true/false column, a constant
    frame = messy_frame(n=400, seed=3)
    frame["visits"] = np.random.default_rng(3).integers(0, 9, len(frame))  # an integer column
    run = frame_run(jobs_ws, frame, "label", split=(0.8, 0.1, 0.1))
    trained = _ok(train(jobs_ws, run, "auto", time_budget_s=5, wait_seconds=120))
    source = trained["model_id"]
    evaluation = _ok(evaluate(jobs_ws, run, wait_seconds=120))["evaluations"][0]
    assert evaluation["test_metrics"]["accuracy"] > 0.75  # the evaluated model learned the rule

    assert not package_spec(jobs_ws, run).refit  # classification: no refit by default (measured worse)
    pkg = _ok(package(jobs_ws, run, refit_all_rows=True, wait_seconds=300))
    refit_id = pkg["model_id"]
    assert pkg["refit_of"] == source and refit_id != source and pkg["verified"]
    assert list_model_ids(jobs_ws, run)[-2:] == [source, refit_id]  # the evaluated model is kept
    parent, refit = load_model_meta(jobs_ws, run, source), load_model_meta(jobs_ws, run, refit_id)
    assert refit.refit_of == source
    assert refit.search["chosen"] == parent.search["chosen"]  # the same members and weights
    assert refit.search["threshold"] == parent.search["threshold"]  # the shipped decision rule is the evaluated one
    splits = [load_split(jobs_ws, run, s) for s in ("train", "val", "test")]
    assert refit.search["rows"] == sum(len(y) for _, y in splits) > parent.search["rows"]

    # it learned from the test rows too: a better fit to them than the model that never saw them
    X_te, y_te = splits[2]
    before = load_model(jobs_ws, model_path(jobs_ws, run, parent), "sklearn").predict_proba(X_te)
    model = load_model(jobs_ws, model_path(jobs_ws, run, refit), "sklearn")
    after = model.predict_proba(X_te)
    assert _log_loss(y_te, after) < _log_loss(y_te, before)

    # the package, predict and the model card are the refit; its estimate is its source's test score
    rows = frame.drop(columns="label").head(8).to_dict("records")
    via_tool = predict(jobs_ws, run_id=run, records=rows)
    assert via_tool.model_id == refit_id
    card = (jobs_ws.root / pkg["folder"] / "model_card.md").read_text()
    assert f"measured on model {source}, which this model refits on all rows" in card
    assert f"- accuracy: {evaluation['test_metrics']['accuracy']:.4f}" in card
    assert pkg["test_metric"] == dict(list(evaluation["test_metrics"].items())[:4])
    manifest = json.loads((jobs_ws.root / pkg["folder"] / "manifest.json").read_text())
    assert manifest["model_id"] == refit_id

    # a test score of the refit would flatter it: refused, naming the model to evaluate; evaluate's default skips it
    metrics_before = (jobs_ws.run_dir(run) / "metrics.json").read_bytes()
    with pytest.raises(InvalidInputError, match=f"model_id='{source}'"):
        evaluate(jobs_ws, run, model_id=refit_id)
    assert (jobs_ws.run_dir(run) / "metrics.json").read_bytes() == metrics_before
    assert evaluate_spec(jobs_ws, run).model_ids == [source]
    # the refit is packaged as it is (never refit again); the source can still be packaged without a refit
    assert not package_spec(jobs_ws, run).refit
    assert not package_spec(jobs_ws, run, source, refit_all_rows=False).refit
    with pytest.raises(InvalidInputError, match="already the refit of"):
        package_spec(jobs_ws, run, refit_id, refit_all_rows=True)

    # a refit that fails (here: every fold fit of a member) ships the evaluated model and says why; nothing left behind
    models = list_model_ids(jobs_ws, run)
    meta_file = jobs_ws.run_dir(run) / "models" / source / "model.json"
    meta = json.loads(meta_file.read_text())
    meta["search"]["chosen"][0]["config"]["params"] = {"no_such_parameter": 1}
    meta_file.write_text(json.dumps(meta))
    again = _ok(package(jobs_ws, run, source, output_dir="fallback", refit_all_rows=True, wait_seconds=300))
    assert again["model_id"] == source and again["refit_of"] is None and again["verified"]
    assert "The refit on all rows failed" in again["notes"][0] and "no_such_parameter" in again["notes"][0]
    assert sorted(list_model_ids(jobs_ws, run)) == sorted(models)


def _meta(architecture: str = "auto", fit_seconds: float = 4.0, budget: float = 60.0, **extra: object) -> ModelMeta:
    member = {"candidate": "hgb", "weight": 1.0, "final_model": "bagged 5 fold models", "fit_seconds": fit_seconds}
    member["config"] = {"family": "hgb", "params": {}, "log_target": False, "one_hot": False}
    search = {"chosen": [member], "budget_seconds": budget, "cancelled": False, "rows": 900, "folds": 5}
    fields = {"run_id": "run_00000000", "model_id": "mdl_00000000", "task_type": "regression"}
    return ModelMeta(architecture=architecture, framework="sklearn", search=search, **fields | extra)


def test_the_automatic_refit_needs_an_evaluation_a_regression_and_a_cost_within_its_budget_share() -> None:
    cheap, dear = _meta(fit_seconds=4.0), _meta(fit_seconds=REFIT_SHARE * 60.0)
    assert decide_refit(cheap, None, evaluated=True)
    assert not decide_refit(cheap, None, evaluated=False)  # no test score to stand as its estimate
    assert not decide_refit(dear, None, evaluated=True)  # expected past half of its 60 s budget (with a margin)
    assert decide_refit(dear, True, evaluated=False) and not decide_refit(cheap, False, evaluated=True)
    assert not decide_refit(_meta("random_forest"), None, evaluated=True)
    classifier = _meta(task_type="binary")  # measured worse after the refit: only when asked
    assert not decide_refit(classifier, None, evaluated=True) and decide_refit(classifier, True, evaluated=True)
    large = _meta()
    large.search["folds"] = 1  # a single hold-out: the large-table regime, where 1/9 more rows adds little
    assert not decide_refit(large, None, evaluated=True) and decide_refit(large, True, evaluated=True)
    with pytest.raises(InvalidInputError, match=r"'random_forest' model.*refit_all_rows=false"):
        decide_refit(_meta("random_forest"), True, evaluated=True)
    old = _meta()
    old.search["chosen"][0]["config"] = None  # trained before the search recorded its members' configurations
    with pytest.raises(InvalidInputError, match="train it again"):
        decide_refit(old, True, evaluated=True)


def test_a_refit_keeps_its_source_models_metric_whatever_the_ratio_of_all_rows(
    jobs_ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The refit's search derived its metric again from all rows: near an imbalance ratio of 4 the test rows could
    tip it from balanced accuracy to accuracy, and the refit's CatBoost and forests would then stop deciding at the
    class priors while keeping the threshold the evaluated model tuned on them."""
    from sklearn.datasets import make_classification

    from ml_expert.tools.training import search as search_module
    from ml_expert.tools.training.refit import refit_all_rows

    X, y = make_classification(n_samples=600, n_features=6, n_informative=4, weights=[0.85], random_state=0)
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(6)]).assign(label=np.where(y == 1, "yes", "no"))
    run = frame_run(jobs_ws, frame, "label")
    source = _ok(train(jobs_ws, run, "auto", time_budget_s=5, wait_seconds=120))["model_id"]
    _ok(evaluate(jobs_ws, run, wait_seconds=120))
    meta = load_model_meta(jobs_ws, run, source)
    assert meta.search["metric"] == "balanced_accuracy"

    seen: list[tuple[str, str]] = []
    init = search_module.Search.__init__

    def spy(self: search_module.Search, *args: object, **kwargs: object) -> None:
        init(self, *args, **kwargs)
        seen.append((self.metric, self.problem.metric))

    monkeypatch.setattr(search_module.Search, "__init__", spy)
    monkeypatch.setattr(search_module, "search_metric", lambda task, y: "accuracy")  # all rows on the other side of 4

    class Quiet:
        def progress(self, force: bool = False, **info: object) -> None:
            pass

        def cancel_requested(self) -> bool:
            return False

    refit = refit_all_rows(jobs_ws, run, meta, Quiet())  # type: ignore[arg-type]
    assert seen == [("balanced_accuracy", "balanced_accuracy")]
    assert refit.refit_of == source and refit.search["metric"] == "balanced_accuracy"
