"""The tabular preprocessing that prepare_data fits on the training split: one ColumnTransformer
(imputers, per-column encoders, scalers, datetime parts, free text) and the training-only outlier rule."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ml_expert.memory.errors import InvalidInputError
from ml_expert.tools.core.lazy import lazy_import

if TYPE_CHECKING:
    from ml_expert.tools.core.portable.ensemble import OrdinalColumn

np = lazy_import("numpy")  # loads with the first data tool call, not at server start
pd = lazy_import("pandas")  # loads with the first data tool call, not at server start

MISSING_CATEGORY = "(missing)"


def encoder_pipeline(kind_cols: dict[str, list[str]], card: dict[str, int], options: dict[str, Any]) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, OrdinalEncoder, RobustScaler, StandardScaler

    from ml_expert.tools.core.portable.preprocessing import DatetimeExpander, FrequencyEncoder, TextVectorizer

    scalers = {"standard": StandardScaler, "minmax": MinMaxScaler, "robust": RobustScaler}

    def scaled(*steps: Any) -> Any:
        scale = options["scaling"]
        return make_pipeline(*steps, *([scalers[scale]()] if scale != "none" else []))

    strategy = {"mean": "mean", "median": "median", "constant": "constant", "drop": "mean"}[options["impute"]]
    # a column missing in some training rows also gets a 0/1 column saying where (`missingindicator_<name>`): the
    # imputed value alone hides that a cell was empty, which is often information (no garage, an age not recorded)
    numeric_imputer = SimpleImputer(strategy=strategy, fill_value=0.0, keep_empty_features=True, add_indicator=True)
    parts: list[tuple[str, Any, list[str]]] = []
    if kind_cols["numeric"]:
        parts.append(("numeric", scaled(numeric_imputer), kind_cols["numeric"]))
    if kind_cols["boolean"]:
        parts.append(
            ("boolean", SimpleImputer(strategy="most_frequent", keep_empty_features=True), kind_cols["boolean"])
        )
    if kind_cols["datetime"]:
        parts.append(
            (
                "datetime",
                scaled(DatetimeExpander(), SimpleImputer(strategy="median", keep_empty_features=True)),
                kind_cols["datetime"],
            )
        )
    if kind_cols.get("text"):  # free text: its length, style and latent TF-IDF dimensions (`TextVectorizer`)
        parts.append(("text", scaled(TextVectorizer(seed=options["random_state"])), kind_cols["text"]))
    # a missing category is a category of its own, not the most frequent one
    cat_imputer = SimpleImputer(strategy="constant", fill_value=MISSING_CATEGORY, missing_values=np.nan)
    limit = options["one_hot_max_categories"]
    encoding = options["categorical_encoding"]
    low = [c for c in kind_cols["categorical"] if encoding == "onehot" or (encoding == "auto" and card[c] <= limit)]
    high = [c for c in kind_cols["categorical"] if c not in low]
    if low:
        parts.append(
            ("onehot", make_pipeline(cat_imputer, OneHotEncoder(handle_unknown="ignore", sparse_output=False)), low)
        )
    if high:
        if options["high_cardinality_encoding"] == "frequency":
            parts.append(("frequency", scaled(FrequencyEncoder()), high))
        else:
            ordinal = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-1)
            parts.append(("ordinal", scaled(ordinal), high))
    if not parts:
        raise InvalidInputError(
            "No usable feature columns remain after dropping identifiers and constants. "
            "Pass keep_columns= to keep some, or check the data."
        )
    return ColumnTransformer(parts, remainder="drop", verbose_feature_names_out=False)


def one_hot_groups(pre: Any) -> list[list[int]]:
    """The output columns of each one-hot encoded input column of a fitted `encoder_pipeline`, in order."""
    if "onehot" not in getattr(pre, "named_transformers_", {}):
        return []
    start = pre.output_indices_["onehot"].start
    groups = []
    for categories in pre.named_transformers_["onehot"][-1].categories_:
        groups.append(list(range(start, start + len(categories))))
        start += len(categories)
    return groups


def ordinal_columns(pre: Any) -> list[OrdinalColumn]:
    """Each ordinal-encoded (high-cardinality) input column of a fitted `encoder_pipeline` as (output column, its
    value for code 0, its step per code, categories): the scaling after the codes is affine, so the codes come
    back as (value - zero) / step. Codes -1 (unseen, missing) come back as -1; missing is not counted a category."""
    if "ordinal" not in getattr(pre, "named_transformers_", {}):
        return []
    steps = [step for _, step in pre.named_transformers_["ordinal"].steps]
    encoder, scaling = steps[0], steps[1:]
    width = len(encoder.categories_)
    zero, one = np.zeros((1, width)), np.ones((1, width))
    for step in scaling:
        zero, one = step.transform(zero), step.transform(one)
    start = pre.output_indices_["ordinal"].start
    return [  # (a scaler leaves a constant column's scale at 1, so every step is non-zero)
        (start + i, float(zero[0, i]), float(one[0, i] - zero[0, i]), int((~pd.isna(categories)).sum()))
        for i, categories in enumerate(encoder.categories_)
    ]


def outlier_mask(train: pd.DataFrame, numeric: list[str], method: str, threshold: float, max_share: float) -> Any:
    """Training rows to keep; thresholds from training rows only; at most max_share of them removed."""
    if method == "none" or not numeric:
        return np.ones(len(train), dtype=bool), 0
    x = train[numeric].astype(float)
    if method == "zscore":
        score = ((x - x.mean()) / x.std(ddof=0).replace(0, np.nan)).abs().max(axis=1).fillna(0)
        limit = threshold
    else:  # iqr: distance beyond the quartiles, in IQRs
        q1, q3 = x.quantile(0.25), x.quantile(0.75)
        iqr = (q3 - q1).replace(0, np.nan)
        score = pd.concat([(q1 - x) / iqr, (x - q3) / iqr]).groupby(level=0).max().max(axis=1).fillna(0)
        score = score.reindex(x.index).fillna(0)
        limit = threshold
    outlier = (score > limit).to_numpy()
    cap = int(max_share * len(train))
    if outlier.sum() > cap:  # keep only the most extreme `cap` rows as outliers
        order = np.argsort(-score.to_numpy())
        outlier = np.zeros(len(train), dtype=bool)
        outlier[order[:cap]] = True
    return ~outlier, int(outlier.sum())
