"""Column kinds and task-type inference shared by analysis and preparation.

Kinds: numeric, categorical, boolean, datetime, text, identifier, constant, empty.
"""

from __future__ import annotations

import re
import warnings
from typing import Any, Literal

from ml_expert.memory.errors import InvalidInputError
from ml_expert.tools.core.lazy import lazy_import

np = lazy_import("numpy")  # loads with the first data tool call, not at server start
pd = lazy_import("pandas")  # loads with the first data tool call, not at server start


ID_WORDS = {"id", "ids", "uuid", "guid", "key", "index", "idx", "rownames", "rowname", "rowid"}
SHORT_IDS = {"pid", "uid", "sid", "cid", "oid", "eid", "gid", "tid"}  # person, user, session, customer, order, …
WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
BOOL_WORDS = {"true", "false", "yes", "no", "y", "n", "t", "f", "0", "1"}
MAX_CLASSES = 50
FEW_VALUES = 10  # an integer target with at most this many values is classes whatever their counts
MIN_CLASS_ROWS = 5  # above FEW_VALUES, an integer target is classes only when every value has this many rows
DROP_KINDS = ("identifier", "constant", "empty")  # column kinds that carry no signal (dropped by default)
HIGH_CARDINALITY = 30
REPEATS_ARE_DATA = 4  # each distinct feature row seen this many times on average: repeats are observations
REPLICATE_SHARE = 0.05  # ... or this share of the repeated feature rows seen with more than one target value
PASTED_SHARE = 1 / 3  # ... unless exact copies are this share of the rows or more (a table pasted over; bench: <= 16 %)
PASTED_CONFLICT = 1 / 4  # ... and fewer of its repeated feature rows than this share are seen with another target
COPY_SAMPLE = 10_000  # rows spread over the table each column's first fingerprint is taken on
TaskChoice = Literal["auto", "classification", "regression"]  # what a user may ask for; auto = guess_task


def name_says_id(name: object) -> bool:
    """An identifier's name in any case style: id, ID, PID, uid, customer_id, CustomerID, userId, row-index,
    rownames (R's row names), Unnamed: 0 (pandas' index written to CSV)."""
    text = str(name).strip()
    if text.lower() in ID_WORDS | SHORT_IDS or re.fullmatch(r"unnamed: ?0", text.lower()):
        return True
    words = [w.lower() for w in WORDS.findall(text)]
    return bool(words) and (words[-1] in ID_WORDS or words[0] in ID_WORDS - {"key"})


def row_hashes(features: pd.DataFrame, target: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """One hash per row of the feature columns, and one of features and target together (hashed apart and
    combined: no copy of the table)."""
    hashes = pd.util.hash_pandas_object(features, index=False).to_numpy()
    combined = hashes * np.uint64(0x100000001B3) ^ pd.util.hash_pandas_object(target, index=False).to_numpy()
    return hashes, combined


def repeats_are_observations(feature_hashes: np.ndarray, row_hashes: np.ndarray) -> str | None:
    """Why repeated rows are how this table is, not copies, or None (given one hash per row of its feature columns,
    and of its features and target together). Either its columns take so few values that each distinct feature row
    appears at least REPEATS_ARE_DATA times on average (a survey or census table of codes) and one distinct feature
    row in ten is seen with more than one target value; or the table repeats measurements: at least REPLICATE_SHARE
    of its repeated feature rows are seen with more than one target value (a recipe tested twice, a customer profile
    that churned once and stayed once), and either exact copies are under PASTED_SHARE of the rows or at least
    PASTED_CONFLICT of those feature rows are seen with another target (few columns of few values: passengers of one
    sex, class and age, some of whom survived). In both, no single feature row holds half of the rows. A table copied
    over has no row with two targets, or a third of its rows are copies and under a quarter of its repeated feature
    rows have another target: pasting every row again makes a repeated feature row of each, with one target (the
    bench's 50 tables pasted twice or half again, where not tables of codes: at most 17 %; carData's TitanicSurvival
    as it is: 43 %, with 67 % of its rows exact repeats). Dropping observations would erase the class or target
    frequencies the model has to learn: on concrete (1,030 mixes, 25 repeated rows among replicates) a CatBoost bag
    scored 1-3 % worse RMSE on 6 of 6 split and fold seeds without them; on TitanicSurvival, 664 of 1,047 training
    rows were dropped as duplicates, which took its share of survivors from 38 % to 47 %."""
    n = len(feature_hashes)
    counts = pd.Series(feature_hashes).value_counts()
    if n < 2 or counts.iloc[0] * 2 > n:  # one feature row holds half the table (no columns left, blank rows)
        return None
    pairs = pd.Series(row_hashes).nunique()  # distinct (features, target) rows
    conflicting = pairs - len(counts)  # extra (features, target) pairs
    codes = n >= 2 * REPEATS_ARE_DATA and len(counts) * REPEATS_ARE_DATA <= n
    if codes and conflicting * 10 >= len(counts):
        return f"the columns take few values (each distinct row is seen {REPEATS_ARE_DATA}+ times on average)"
    repeated = counts[counts > 1].index
    if not len(repeated):
        return None
    outcomes = pd.Series(row_hashes).groupby(feature_hashes).nunique()[repeated]  # targets per repeated feature row
    share = float((outcomes > 1).mean())
    pasted = n - pairs >= PASTED_SHARE * n and share < PASTED_CONFLICT  # a third of the rows are copies of one target
    if share >= REPLICATE_SHARE and not pasted:
        seen = f"{share:.0%} of the {len(repeated):,} feature rows seen more than once are seen with another target"
        if n - pairs >= PASTED_SHARE * n:
            return f"{seen} value too, and {(n - pairs) / n:.0%} of the rows repeat one: few columns, few values"
        return f"{seen} value too: the table repeats measurements"
    return None


def copied_columns(df: pd.DataFrame, columns: list[str]) -> dict[str, str]:
    """Columns that repeat an earlier one of `columns` value for value (same type, missing in the same rows):
    {copy: the first column with those values}. A fingerprint of COPY_SAMPLE rows spread over the table finds the
    candidates; a fingerprint of every row separates those that only agree there (sparse columns), and only columns
    whose full fingerprints match are compared value by value."""
    import hashlib

    def fingerprint(s: pd.Series) -> tuple[str, bytes]:
        plain = isinstance(s.dtype, np.dtype) and s.dtype.kind in "biufmM"  # its bytes are its values
        data = np.ascontiguousarray(s.to_numpy()) if plain else pd.util.hash_pandas_object(s, index=False).to_numpy()
        data = data.view(np.int64) if data.dtype.kind in "mM" else data  # a buffer takes no datetime64
        return str(s.dtype), hashlib.blake2b(memoryview(data).cast("B"), digest_size=16).digest()

    step = max(1, len(df) // COPY_SAMPLE)
    full: dict[str, tuple[str, bytes]] = {}  # each column's fingerprint of every row, taken once when needed

    def whole(col: str) -> tuple[str, bytes]:
        if col not in full:
            full[col] = fingerprint(df[col])
        return full[col]

    first_with: dict[tuple[str, bytes], str] = {}  # sample fingerprint -> the first column with it
    originals: dict[tuple[str, bytes], list[str]] = {}  # full fingerprint -> the columns with it that copy none
    copies: dict[str, str] = {}
    for col in columns:
        s = df[col]
        first_seen = first_with.setdefault(fingerprint(s.iloc[::step]), col)
        if first_seen == col:  # no earlier column agrees with it on the sample
            continue
        if first_seen not in full:  # the sample's first column, now that another agrees with it there
            originals.setdefault(whole(first_seen), []).append(first_seen)
        alike = originals.setdefault(whole(col), [])
        first = next((c for c in alike if df[c].equals(s)), None)
        if first is None:
            alike.append(col)
        else:
            copies[col] = first
    return copies


def copies_shown(copies: dict[str, str], limit: int = 3) -> str:
    """The first few copies as "'b' = 'a'", and how many more, for a warning or a cleaning log."""
    shown = ", ".join(f"{c!r} = {first!r}" for c, first in list(copies.items())[:limit])
    return shown + (f" and {len(copies) - limit:,} more" if len(copies) > limit else "")


def is_string_like(s: pd.Series) -> bool:
    return pd.api.types.is_object_dtype(s.dtype) or pd.api.types.is_string_dtype(s.dtype)


def _looks_datetime(s: pd.Series) -> bool:
    sample = s.dropna().astype(str).head(200)
    separated = sample.str.contains(r"[-/:T ]|^\s*\d{1,2}\.\d{1,2}\.\d{2,4}\b")  # 01.01.2023: dates with dots too
    if sample.empty or not sample.str.contains(r"\d").all() or not separated.mean() > 0.9:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parsed = pd.to_datetime(sample, errors="coerce", format="mixed")
    return parsed.notna().mean() >= 0.9


def infer_kind(s: pd.Series, n_rows: int, nunique: int | None = None) -> str:
    """The kind of one column (see module docstring); pass nunique when it is already known."""
    non_null = s.dropna()
    if non_null.empty:
        return "empty"
    nunique = non_null.nunique() if nunique is None else nunique
    if nunique <= 1:
        return "constant"
    if pd.api.types.is_bool_dtype(s.dtype):
        return "boolean"
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        return "datetime"
    if pd.api.types.is_numeric_dtype(s.dtype):  # 0/1 included: numeric, so an unseen 2 is still a number
        if pd.api.types.is_integer_dtype(s.dtype) or (non_null == non_null.round()).all():
            unique_ratio = nunique / len(non_null)
            if len(non_null) >= 20 and (
                (name_says_id(s.name) and unique_ratio >= 0.95)
                or (unique_ratio >= 0.999 and non_null.is_monotonic_increasing)
            ):
                return "identifier"
        return "numeric"
    if is_string_like(s):
        if nunique == 2 and {str(v).lower() for v in non_null.unique()}.issubset(BOOL_WORDS):
            return "boolean"
        sample = non_null.head(1000).astype(str)  # a sample: converting a million strings costs a second
        if _looks_datetime(sample):
            return "datetime"
        avg_words = sample.str.split().str.len().mean()
        unique_ratio = nunique / len(non_null)
        if avg_words >= 4 and unique_ratio > 0.5:
            return "text"
        if len(non_null) >= 20 and (unique_ratio >= 0.95 or (name_says_id(s.name) and unique_ratio >= 0.5)):
            return "identifier"
        return "categorical"
    return "categorical"


def guess_task(y: pd.Series) -> str:
    """binary / multiclass / regression for a target column (missing values ignored)."""
    y = y.dropna()
    nunique = y.nunique()
    if nunique <= 2:
        return "binary"
    if pd.api.types.is_bool_dtype(y.dtype) or not pd.api.types.is_numeric_dtype(y.dtype):
        return "multiclass"
    integer_valued = pd.api.types.is_integer_dtype(y.dtype) or bool((y == np.round(y)).all())
    if not integer_valued or nunique > min(MAX_CLASSES, max(3, len(y) // 20)):
        return "regression"
    # more than a few integer values, some of them seen only a few times: a count or a measurement (visits 0-31,
    # a long tail of rare values), not class codes; as classes, the rarest could not even be split into folds
    if nunique > FEW_VALUES and int(y.value_counts().min()) < MIN_CLASS_ROWS:
        return "regression"
    return "multiclass"


def choose_task(y: pd.Series, requested: TaskChoice = "auto") -> str:
    """binary / multiclass / regression: guess_task's guess, or the task the user asked for when the target allows
    it (classification: binary with two labels, else multiclass)."""
    if requested == "auto":
        return guess_task(y)
    values = y.dropna()
    if requested == "regression":
        if pd.api.types.is_bool_dtype(values.dtype) or not pd.api.types.is_numeric_dtype(values.dtype):
            examples = ", ".join(repr(str(v)) for v in values.drop_duplicates().head(3))
            raise InvalidInputError(
                f"task_type='regression' needs a numeric target, and {y.name!r} holds labels ({examples}). Use "
                "task_type='classification' (or 'auto'), or choose a numeric target column."
            )
        return "regression"
    counts = values.value_counts()
    rare = int((counts < MIN_CLASS_ROWS).sum())
    numeric = pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype)
    if numeric and len(counts) > MAX_CLASSES and rare > len(counts) / 2:
        raise InvalidInputError(
            f"task_type='classification' would make {len(counts):,} classes of {y.name!r}, {rare:,} of them with "
            f"fewer than {MIN_CLASS_ROWS} rows: too few to learn each as a class. Use task_type='regression' (or "
            "'auto') to predict it as a number, or bin it into a few ranges first."
        )
    return "binary" if len(counts) <= 2 else "multiclass"


PROFILE_BINS = 10
PROFILE_CATEGORIES = 100
PROFILE_ROWS = 1_000_000  # bins and shares from at most this many training rows (a seeded sample)


def training_profile(
    X: pd.DataFrame, train: np.ndarray, schema: dict[str, Any], known_columns: list[str]
) -> dict[str, Any]:
    """What predict's drift check compares new rows with: per feature column of the training rows `train` of X
    (already converted by coerce_frame) its missing rate, and for numbers the range and decile bins with their
    shares, for categories their shares. `known_columns` are all the columns of the training file (features,
    target, dropped ones), so that passing that file back raises no 'extra column' warning.

    Above PROFILE_ROWS training rows the bins and shares come from a seeded sample of that many (`sampled_rows`);
    the range (min, max) and missing rates always from every training row, so a range warning is never a
    sampling artefact."""
    sample = None  # positions within train
    if len(train) > PROFILE_ROWS:
        sample = np.sort(np.random.default_rng(0).choice(len(train), PROFILE_ROWS, replace=False))
    columns: dict[str, Any] = {}
    for c in schema["columns"]:
        full, kind = X[c["name"]].iloc[train], c["kind"]
        s = full if sample is None else full.iloc[sample]
        entry: dict[str, Any] = {"kind": kind, "missing_rate": float(full.isna().mean())}
        values = as_numbers(s, kind)
        if values is not None and len(values):
            edges = np.unique(np.quantile(values, np.linspace(0, 1, PROFILE_BINS + 1)[1:-1]))
            every = as_numbers(full, kind) if s is not full else values
            entry |= {"min": float(every.min()), "max": float(every.max()), "edges": edges.tolist()}
            entry["shares"] = bucket_shares(s, entry).tolist()
        elif kind == "categorical":
            counts = full.value_counts(dropna=True)
            entry["categories"] = [str(v) for v in counts.index[:PROFILE_CATEGORIES]]
            entry["all_categories_kept"] = bool(len(counts) <= PROFILE_CATEGORIES)
            entry["shares"] = bucket_shares(s, entry).tolist()
        columns[c["name"]] = entry
    profile = {"rows": len(train), "columns": columns, "known_columns": [str(c) for c in known_columns]}
    return profile | ({} if sample is None else {"sampled_rows": len(sample)})


def as_numbers(s: pd.Series, kind: str) -> np.ndarray | None:
    """Non-missing values of a numeric, boolean or datetime column as floats (datetimes in seconds), else None."""
    if kind in ("numeric", "boolean"):
        return s.dropna().to_numpy(dtype=float)
    if kind == "datetime":  # seconds since 1970, whatever the resolution pandas picked
        stamps = s.dropna()
        if getattr(stamps.dt, "tz", None) is not None:
            stamps = stamps.dt.tz_convert(None)
        return (stamps - pd.Timestamp(0)).dt.total_seconds().to_numpy(dtype=float)
    return None


def bucket_shares(s: pd.Series, entry: dict[str, Any]) -> np.ndarray:
    """Shares of the rows in each bucket of a profiled column: the bins between its edges (numbers) or its known
    categories plus one for any other value (categories), and a last bucket for missing values."""
    n = max(len(s), 1)
    missing = int(s.isna().sum())
    if "edges" in entry:
        values = as_numbers(s, entry["kind"])
        counts = np.bincount(np.searchsorted(entry["edges"], values, side="right"), minlength=len(entry["edges"]) + 1)
    else:
        known = s.dropna().astype(str)
        index = {c: i for i, c in enumerate(entry["categories"])}
        codes = known.map(index).fillna(len(index)).to_numpy(dtype=int)
        counts = np.bincount(codes, minlength=len(index) + 1)
    return np.append(counts, missing) / n
