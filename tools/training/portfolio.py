"""The search space of `architecture="auto"`: the candidate configurations, the documented portfolio tried
first, the estimator each candidate builds, and the neighbours a local search steps to."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from ml_expert.tools.core.lazy import lazy_import
from ml_expert.tools.core.tasks import is_classification

np = lazy_import("numpy")  # loads on first use, not at server start

HGB_PORTFOLIO: list[dict[str, Any]] = [  # zero-shot presets: strong across tabular sets, cheap first
    {"learning_rate": 0.1, "max_leaf_nodes": 31, "min_samples_leaf": 20, "l2_regularization": 0.0},
    {"learning_rate": 0.05, "max_leaf_nodes": 63, "min_samples_leaf": 10, "l2_regularization": 0.1},
    {"learning_rate": 0.05, "max_leaf_nodes": 15, "min_samples_leaf": 30, "l2_regularization": 1.0},
    {"learning_rate": 0.03, "max_leaf_nodes": 31, "min_samples_leaf": 20, "l2_regularization": 0.5,
     "max_features": 0.6},
    {"learning_rate": 0.1, "max_leaf_nodes": 127, "min_samples_leaf": 5, "l2_regularization": 1.0,
     "max_features": 0.8},
    {"learning_rate": 0.05, "max_leaf_nodes": 7, "min_samples_leaf": 50, "l2_regularization": 0.0},
]  # fmt: skip
CATBOOST_PORTFOLIO: list[dict[str, Any]] = [  # CatBoost: ordered target statistics on categoricals, symmetric trees
    {"learning_rate": 0.08, "depth": 6, "max_ctr_complexity": 1},  # no column combinations: ~4x faster
    {"learning_rate": 0.08, "depth": 6, "max_ctr_complexity": 4},  # CatBoost's default combinations
]
MAX_ITER = 2000  # boosting iterations in a fold; early stopping usually ends sooner
BOOSTING = ("hgb", "catboost")  # families that early-stop on the fold's held-out rows
CODED_FAMILIES = ("hgb", "catboost", "rf", "et")  # tree families that see one-hot groups as one code column each
BAGGED_FAMILIES = BOOSTING  # families whose fold models are kept and averaged instead of a refit on all rows
ENCODED_FAMILIES = BOOSTING  # see a categorical with too many levels to split natively target-encoded (forests: codes)
PRIOR_FAMILIES = ("catboost", "rf", "et")  # for balanced accuracy: unweighted, deciding at the class priors (`Prior`)
BAG_MIN_FOLDS = 3  # fewer folds than this (one hold-out) are refit on all rows, not bagged
MAX_NATIVE_CATEGORIES = 255  # boosting's native categorical splits take codes below its bin count
FOREST_SAMPLE_ROWS = 200_000  # above this many rows each forest tree is grown on a bootstrap sample of this size
NEIGHBOURS = {
    "learning_rate": (0.5, 2.0),
    "max_leaf_nodes": (0.5, 2.0),
    "min_samples_leaf": (0.5, 2.0),
    "l2_regularization": (0.1, 10.0),
    "max_features": (0.8, 1.25),
}


@dataclass(frozen=True)
class Config:
    """One candidate: a model family and its parameters."""

    family: str  # hgb, catboost, rf, et, linear
    params: tuple[tuple[str, Any], ...] = ()
    log_target: bool = False
    one_hot: bool = False  # a tree family on the one-hot columns rather than on category codes

    @property
    def coded(self) -> bool:
        """Whether it fits on category codes (when the table has categorical groups)."""
        return self.family in CODED_FAMILIES and not self.one_hot

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.params)

    def label(self) -> str:
        shown = " ".join(f"{_short(k)}={v:g}" if isinstance(v, float) else f"{_short(k)}={v}" for k, v in self.params)
        flags = (" log-target" if self.log_target else "") + (" one-hot" if self.one_hot else "")
        return f"{self.family}{' ' + shown if shown else ''}{flags}"


SHORT_NAMES = {
    "learning_rate": "lr",
    "max_leaf_nodes": "leaves",
    "min_samples_leaf": "min_leaf",
    "l2_regularization": "l2",
    "max_ctr_complexity": "ctr",
}


def _short(name: str) -> str:
    return SHORT_NAMES.get(name, name)


def bags(family: str, folds: int) -> bool:
    """Whether a candidate of this family keeps its fold models as its final model (averaged) instead of a refit."""
    return family in BAGGED_FAMILIES and folds >= BAG_MIN_FOLDS


def config(family: str, log_target: bool = False, one_hot: bool = False, **params: Any) -> Config:
    return Config(family, tuple(sorted(params.items())), log_target, one_hot)


def portfolio(task: str, y: np.ndarray, n_rows: int, n_features: int, categorical: bool = False) -> list[Config]:
    """The candidates in the order they are tried: cheap and usually strong first. With `categorical` groups, the
    first boosting preset is also tried on the one-hot columns: native categorical splits overfit categoricals
    with many levels and few rows each, and cross-validation decides which representation the search refines.
    CatBoost comes fourth (its cheap preset), its default column combinations later, on categorical tables only."""
    hgb = [config("hgb", **p) for p in HGB_PORTFOLIO]
    if categorical:
        hgb.insert(1, config("hgb", one_hot=True, **HGB_PORTFOLIO[0]))
    others = [config("rf"), config("et"), config("linear", strength=1.0)]
    if n_features > n_rows / 5:  # wide data: regularised linear models deserve more than one try
        others += [config("linear", strength=0.1), config("linear", strength=10.0)]
    if not is_classification(task) and y.min() > 0 and _skew(y) > 1.0:
        hgb.insert(1, config("hgb", log_target=True, **HGB_PORTFOLIO[0]))
    forests = [config("rf", max_features=0.33, min_samples_leaf=2), config("et", max_features=1.0, min_samples_leaf=2)]
    catboost = [config("catboost", **p) for p in CATBOOST_PORTFOLIO[: 2 if categorical else 1]]  # ctr: categoricals
    return [hgb[0], *others[:2], catboost[0], *hgb[1:3], *others[2:], *catboost[1:], *hgb[3:], *forests]


def _skew(y: np.ndarray) -> float:
    std = float(np.std(y))
    return float(np.mean(((y - y.mean()) / std) ** 3)) if std > 0 else 0.0


def decided(model: Any, cfg: Config, metric: str, y: np.ndarray) -> Any:
    """A fitted candidate as the search scores and ships it: for balanced accuracy, CatBoost and the forests learn
    from the rows as they are and decide at the class priors of their training rows `y` (`Prior`). Against class
    weights, 5-fold bags on the bench's 4 imbalanced tables: CatBoost better out of fold on 8 of 8 splits (attrition
    .696/.713 -> .739/.751), forests on 16 of 16 each (random forest +0.125, extra-trees +0.132 balanced accuracy on
    average: weighted, their leaves of one row still vote for the majority). The linear model was better weighted
    (the prior rule won 5 of 16); HistGradientBoosting under the prior rule won 11 of 16 bags, but in the search it
    lowered the out-of-fold score on attrition and stackoverflow (.7874 -> .7825, .6719 -> .6655): both keep their
    class weights."""
    if metric != "balanced_accuracy" or cfg.family not in PRIOR_FAMILIES:
        return model
    from ml_expert.tools.core.portable.ensemble import Prior

    return Prior(model, y)


def is_catboost(model: Any) -> bool:
    """Whether a fitted or unfitted model is the search's CatBoost estimator."""
    from ml_expert.tools.core.portable.ensemble import CatBoost

    return isinstance(model, CatBoost)


def hgb_cost(cfg: Config) -> float:
    """The relative cost of one boosting iteration of a configuration (31 leaves, all features: 1)."""
    p = cfg.kwargs
    return math.sqrt(p.get("max_leaf_nodes", 31) / 31) * p.get("max_features", 1.0)


def build(
    cfg: Config,
    task: str,
    metric: str,
    seed: int,
    max_iter: int | None = None,
    iter_cap: int | None = None,
    rows: int = 0,
    categorical: tuple[int, ...] = (),
    threads: int = -1,
) -> Any:
    """The scikit-learn estimator for a candidate: boosting early-stops inside folds (after at most iter_cap
    iterations, when the budget sets one) unless max_iter fixes the number of iterations; on more than
    FOREST_SAMPLE_ROWS `rows`, forest trees grow on bootstrap samples of that size; boosting splits the columns
    `categorical` (category codes) as native categoricals; `threads`: CatBoost's threads and the forests' jobs
    (-1: every core)."""
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.ensemble import (
        ExtraTreesClassifier,
        ExtraTreesRegressor,
        HistGradientBoostingClassifier,
        HistGradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.linear_model import LogisticRegression, Ridge

    classify = is_classification(task)
    balanced = classify and metric == "balanced_accuracy" and cfg.family not in PRIOR_FAMILIES
    weight = {"class_weight": "balanced"} if balanced else {}
    p = cfg.kwargs
    if cfg.family == "hgb":
        stopping = (
            {"max_iter": max_iter, "early_stopping": False}
            if max_iter
            else {
                "max_iter": min(MAX_ITER, iter_cap or MAX_ITER),
                "early_stopping": True,
                "validation_fraction": 0.1,
                "n_iter_no_change": 20,
            }
        )
        cls = HistGradientBoostingClassifier if classify else HistGradientBoostingRegressor
        native = {"categorical_features": list(categorical)} if categorical else {}
        model: Any = cls(random_state=seed, **p, **stopping, **weight, **native)
    elif cfg.family == "catboost":
        from ml_expert.tools.core.portable.ensemble import CatBoost

        iterations = max_iter or min(MAX_ITER, iter_cap or MAX_ITER)
        model = CatBoost(
            classify, tuple(categorical), iterations, random_seed=seed, thread_count=threads,
            eval_fraction=0.0 if max_iter else 0.1, **p,
        )  # fmt: skip
    elif cfg.family in ("rf", "et"):
        forest = {
            ("rf", True): RandomForestClassifier,
            ("rf", False): RandomForestRegressor,
            ("et", True): ExtraTreesClassifier,
            ("et", False): ExtraTreesRegressor,
        }[(cfg.family, classify)]
        settings = ({} if classify else {"max_features": 0.6}) | {"min_samples_leaf": 1} | p
        if rows > FOREST_SAMPLE_ROWS:  # trees on samples: the cost of a tree stops growing with the rows
            settings |= {"bootstrap": True, "max_samples": FOREST_SAMPLE_ROWS / rows}
        model = forest(n_estimators=300, n_jobs=threads, random_state=seed, **settings, **weight)
    else:
        strength = p.get("strength", 1.0)
        model = (
            LogisticRegression(C=1 / strength, max_iter=2000, random_state=seed, **weight)
            if classify
            else Ridge(alpha=strength)
        )
    if cfg.log_target:
        model = TransformedTargetRegressor(regressor=model, func=np.log1p, inverse_func=np.expm1)
    return model


def neighbours_of(cfg: Config, seed: int) -> list[Config]:
    """Boosting configurations one step from cfg: each parameter scaled down or up."""
    rng = np.random.default_rng(seed)
    params = cfg.kwargs
    out = []
    for name, factors in NEIGHBOURS.items():
        for factor in factors:
            value = params.get(name, 1.0 if name == "max_features" else (0.0 if name == "l2_regularization" else None))
            if value is None:
                continue
            new = _step(name, value, factor)
            if new is not None and new != value:
                out.append(replace(cfg, params=tuple(sorted((params | {name: new}).items()))))
    rng.shuffle(out)  # type: ignore[arg-type]
    return out


def _step(name: str, value: Any, factor: float) -> Any:
    if name == "max_leaf_nodes":
        return int(min(255, max(4, round(value * factor))))
    if name == "min_samples_leaf":
        return int(min(200, max(2, round(value * factor))))
    if name == "max_features":
        return round(min(1.0, max(0.3, value * factor)), 2)
    if name == "l2_regularization":
        return 0.1 if value == 0 else round(min(100.0, value * factor), 4)
    return round(min(0.3, max(0.01, value * factor)), 4)
