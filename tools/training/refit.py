"""Refit on all rows: once `evaluate` has measured a searched model on the test split, the same members, ensemble
weights and decision threshold are fitted again on every prepared row, train, validation and test, as the model to
deploy. A model selected on 90 % of the rows then learns from all of them, which pays on small tables; the test score
of the evaluated model stays the (slightly pessimistic) estimate of the refit one, which has no held-out rows left to
be evaluated on, and the shipped decision rule is the evaluated one.

Bagged members are bagged again over k folds of all rows (each fold model early-stops on its own hold-out); the
others are refit on all rows, boosting with its folds' iterations + 10 %, as `train` makes them. `package` runs it
(`refit_all_rows`): by default when the model is an evaluated auto regression search (see below), on k
folds (not a large table's single hold-out), whose refit is expected to cost at most REFIT_SHARE of its train
budget. The refit is a model of the run of its own (`refit_of` names the evaluated one); the evaluated one is kept.

Measured (`bench/refit_bench.py`, the same search packaged with and without the refit, 3 splits of 6 tables, then
of loans, deliveries and ames): RMSE better on concrete (+2.7, +0.5, +6.2 %), Sacramento, Wage and loans on every
split, worse on Carseats and ames on every split (ames -3.3, -0.4, -0.2 %), +0.6 % on average over the 21 regression
pairs, better on 14; classification worse: stackoverflow
on every split (-1.2, -1.7, -0.3 %), and on the accuracy bench's split (the same searches as the day before,
`accuracy_stop33.json`) attrition, mlc_churn, Default, cells and stackoverflow all lower (-0.3 to -1.2 %), CreditCard
unchanged. The refit's fold models are surer of themselves (more rows each) under the decision rule the evaluated
models' out-of-fold output set. Hence no automatic refit for classification; refit_all_rows=true still does it.
"""

from __future__ import annotations

import time
from typing import Any

from ml_expert.memory.errors import InvalidInputError
from ml_expert.tools.artifacts import load_prepared, load_split, model_dir, save_model
from ml_expert.tools.core.lazy import lazy_import
from ml_expert.tools.core.model_meta import ModelMeta
from ml_expert.tools.core.tasks import is_classification
from ml_expert.tools.jobs.specs import JobCancelled, Reporter
from ml_expert.tools.training.portfolio import bags
from ml_expert.tools.workspace import Workspace, new_id, write_json

np = lazy_import("numpy")  # loads on first use, not at server start

REFIT_SHARE = 0.5  # the automatic refit runs when its expected cost is at most this share of the train budget
SPLITS = ("train", "val", "test")
COST_MARGIN = 1.3


def refit_cost(meta: ModelMeta) -> float | None:
    """Expected seconds of a refit on all rows (its members' cross-validation fits, scaled to the added test rows),
    or None when the model cannot be refit: not an auto search, a refit already, cancelled, or trained before the
    search recorded its members' configurations."""
    search = meta.search or {}
    chosen = search.get("chosen") or []
    if meta.architecture != "auto" or meta.refit_of or search.get("cancelled") or not chosen:
        return None
    if any(member.get("config") is None for member in chosen):
        return None
    # the bagged members' cross-validation fits and the search's refit of the others again, on ~1/9 more rows (auto's
    # 80/10/10 split), and room for noise
    folds = search.get("folds") or 0
    bagged = sum(m.get("fit_seconds", 0.0) for m in chosen if bags(m["config"]["family"], folds))
    return (bagged + search.get("refit_seconds", 0.0)) * COST_MARGIN


def decide_refit(meta: ModelMeta, asked: bool | None, evaluated: bool) -> bool:
    """Whether package refits this model on all rows: `asked` when given (True refused for a model that cannot be
    refit, with the reason), else once it was evaluated (its test score is the refit's estimate), when it is a
    regression (see the module doc), its search had k folds (not a large table's single hold-out) and the refit is
    expected to cost at most REFIT_SHARE of the train budget."""
    cost = refit_cost(meta)
    if asked is False or (asked is None and (cost is None or not evaluated)):
        return False
    if cost is None:
        why = (
            f"it is already the refit of {meta.refit_of}"
            if meta.refit_of
            else f"it is a {meta.architecture!r} model, and the refit repeats an auto search's chosen members"
            if meta.architecture != "auto"
            else "its search was cancelled or predates the recorded member configurations; train it again"
        )
        raise InvalidInputError(
            f"refit_all_rows=true cannot refit model {meta.model_id}: {why}. Pass refit_all_rows=false to package "
            "it as it is."
        )
    if asked:
        return True
    search = meta.search or {}
    # classification measured worse after the refit on every table but one (see the module doc)
    # a search on a single hold-out (above 200,000 rows) is the large-table regime: 1/9 more rows adds little there,
    # and its final model was already sized by the budget
    large = (search.get("folds") or 0) < 2
    regression = not is_classification(meta.task_type)
    return regression and not large and cost <= REFIT_SHARE * (search.get("budget_seconds") or 0)


def refit_all_rows(ws: Workspace, run_id: str, meta: ModelMeta, reporter: Reporter) -> ModelMeta:
    """Fit the chosen members of an evaluated auto model again on all rows; save and return the new model."""
    from ml_expert.tools.training.auto import assemble  # the search engine: in the worker only
    from ml_expert.tools.training.folds import folds
    from ml_expert.tools.training.portfolio import config
    from ml_expert.tools.training.search import Search
    from ml_expert.tools.training.sklearn_models import count_parameters
    from ml_expert.tools.training.train import search_layout
    from ml_expert.tools.training.trial import Trial

    search_info = meta.search or {}
    prepared = load_prepared(ws, run_id)
    parts = [load_split(ws, run_id, split) for split in SPLITS]
    X, y = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    cost = refit_cost(meta) or 0.0
    started = time.perf_counter()
    seed = int(((meta.model_extra or {}).get("config") or {}).get("seed", 42))
    layout = search_layout(ws, run_id, prepared, SPLITS)
    # the source's metric, not one derived again from all rows: near an imbalance ratio of 4 the test rows could
    # tip it, and the refit's members would then decide (class weights, class priors) unlike the evaluated ones
    search = Search(X, y, meta.task_type, max(2 * cost, search_info.get("budget_seconds") or 60.0), seed=seed,
                    reporter=reporter, metric=search_info.get("metric"), helper=ws.settings.fit_helper,
                    **layout)  # fmt: skip
    k = int(search_info.get("folds") or len(search.folds))
    if k != len(search.folds):  # as many folds as the evaluated model's search used
        search.folds = folds(y, meta.task_type, layout["split_strategy"], seed, k=k, groups=layout["groups"])
    chosen = search_info["chosen"]
    fitted = []
    try:
        search.start_helper()  # bagged members' folds two at a time, when it pays
        for i, member in enumerate(chosen):
            cfg = member["config"]
            trial = Trial(config(cfg["family"], cfg["log_target"], cfg["one_hot"], **cfg["params"]))
            search.trials.append(trial)
            if search._bags(trial.config):  # bagged again: its k fold models over all rows, two at a time if it can
                _fit_all_folds(search, trial, member["candidate"])
            elif member.get("iterations"):  # refit on all rows with the iterations its folds kept
                trial.iterations = [member["iterations"]]
            fitted.append((search.refit(trial, share=1 / (len(chosen) - i)), member["weight"]))
            reporter.progress(force=True, phase="package", message=f"refit {member['candidate']} on {len(y):,} rows")
    finally:
        search.close()  # ends the helper process
    # the decision threshold the evaluation measured is kept: the shipped rule is the evaluated rule
    model = assemble(fitted, meta.task_type, search_info.get("threshold"), y)
    seconds = time.perf_counter() - started
    model_id = new_id("mdl")
    folder = model_dir(ws, run_id, model_id)
    folder.mkdir(parents=True, exist_ok=True)
    model_file = save_model(ws, model, "sklearn", folder)
    note = (
        f"Refit on all {len(y):,} prepared rows (train, validation and test) in {seconds:.1f} s: the members, "
        f"weights and decision threshold of model {meta.model_id}, whose evaluation on the {len(parts[2][1]):,} test "
        "rows is this model's estimate (it has no held-out rows left to evaluate on)."
    )
    fresh = meta.model_dump(mode="json") | {
        "model_id": model_id,
        "refit_of": meta.model_id,
        "train_seconds": round(seconds, 3),
        "parameters": count_parameters(model),
        "notes": [note, *search.notes, *meta.notes],
        "search": search_info
        | {"rows": len(y), "refit": {"seconds": round(seconds, 2), "folds": len(search.folds), "notes": search.notes}},
        "artifacts": {"model": ws.relative(model_file), "folder": ws.relative(folder)},
        "created_at": time.time(),
    }
    write_json(folder / "model.json", fresh)
    return ModelMeta.model_validate(fresh)


def _fit_all_folds(search: Any, trial: Any, candidate: str) -> None:
    """Every fold of a bagged member (two at a time with the search's helper process), or the reason it stopped."""
    fold = 0
    while fold < len(search.folds):
        batch = range(fold, min(fold + search._width(), len(search.folds)))
        for f, ok in zip(batch, search._fit_folds([(trial, f) for f in batch]), strict=True):
            if not ok:
                if search.cancelled:
                    raise JobCancelled()
                raise RuntimeError(
                    f"the refit of {candidate} stopped on fold {f + 1}: {'; '.join(search.notes) or trial.stopped}"
                )
        fold = batch[-1] + 1
