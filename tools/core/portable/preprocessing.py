"""Self-contained preprocessing pieces that travel with a deployment package.

This module depends only on numpy, pandas and scikit-learn, so `package` copies it next to
`inference.py` as `ml_expert_transformers.py`; its classes pickle under that module name, which
therefore resolves both here and in a deployment folder without ml-expert installed.

- `coerce_frame(df, schema)`: raw rows -> the dtypes the preprocessor was fitted on, with clear
  errors for missing columns and wrong types (used at fit time and at inference time alike);
  `screen_frame` does the same row by row, refusing only the rows that cannot be converted.
  Numbers must be finite and within float32's range; every value a message echoes is cut short (`shown`).
- `FrequencyEncoder`, `DatetimeExpander`, `TextVectorizer` (free text: its length and latent TF-IDF dimensions):
  scikit-learn transformers (fit on training data only).
"""

from __future__ import annotations

import json
import sys
import warnings
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

MODULE_NAME = "ml_expert_transformers"
sys.modules.setdefault(MODULE_NAME, sys.modules[__name__])

TRUE_WORDS = {"true", "yes", "y", "t", "1", "1.0"}
FALSE_WORDS = {"false", "no", "n", "f", "0", "0.0"}
FLOAT32_MAX = float(np.finfo(np.float32).max)  # the models compute in float32: a larger number cannot reach them
SHOWN_CHARS = 80  # a value a message or a refusal reason echoes is cut to this many characters
SHOWN_REASONS = 3  # bad values named per refused row
EXPECTED = {  # what a value of each kind must be, for messages
    "numeric": f"numeric (a finite number within ±{FLOAT32_MAX:.1e})",
    "boolean": "boolean (true/false, yes/no or 1/0)",
    "datetime": "a date (such as 2024-01-31)",
}


class SchemaError(ValueError):
    """Raw input rows do not match the feature schema the model was trained on."""


SEQUENTIAL_ROWS = 1000  # up to this many rows a model predicts in this thread (a forest's thread pool costs more)


JOBLIB_ARRAYS = b"NumpyArrayWrapper"  # in a pickle joblib.dump wrote (ml-expert before 2026-12-03): arrays follow raw


def unpickle_bytes(data: bytes) -> Any:
    """Unpickle the bytes of a model or preprocessor file whose digest was checked: ml-expert writes plain pickles
    (the C unpickler; joblib's pure-Python one took 0.72 s for a bag of boosting fold models against 0.09 s), and
    files of older versions, which joblib.dump wrote, go through joblib."""
    if JOBLIB_ARRAYS in data:
        import io

        import joblib

        return joblib.load(io.BytesIO(data))
    import pickle

    return pickle.loads(data)


def threads_for(rows: int) -> AbstractContextManager[Any]:
    """Where a scikit-learn model predicts `rows` rows: in this thread for a few (a 300-tree forest scored one row
    in 77 ms through its joblib threads and 24 ms without them, on 2 cores), else with the threads it was given."""
    if rows > SEQUENTIAL_ROWS:
        return nullcontext()
    import joblib

    return joblib.parallel_config(backend="sequential")


def resize_images(X: np.ndarray, size: tuple[int, int] | list[int]) -> np.ndarray:
    """(N, H, W, C) images resized to (N, *size, C), bilinear per channel, values kept in their own range.

    Used by prepare_data and by the packaged inference, so both resize arrays the same way."""
    from PIL import Image

    height, width = int(size[0]), int(size[1])
    if X.shape[1:3] == (height, width):
        return X.astype(np.float32, copy=False)
    out = np.empty((len(X), height, width, X.shape[-1]), np.float32)
    for i, image in enumerate(X.astype(np.float32, copy=False)):
        for c in range(X.shape[-1]):
            plane = Image.fromarray(np.ascontiguousarray(image[:, :, c]), mode="F")
            out[i, :, :, c] = np.asarray(plane.resize((width, height), Image.Resampling.BILINEAR))
    return out


def _as_object(s: pd.Series) -> pd.Series:
    out = s.astype(object)
    return out.where(s.notna(), np.nan)


def shortened(text: str, limit: int = SHOWN_CHARS) -> str:
    """Text cut to `limit` characters, an ellipsis marking the cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def shown(value: Any, limit: int = SHOWN_CHARS) -> str:
    """A value as a message echoes it (its repr), at most `limit` characters: a 1 MB value stays a short one."""
    if isinstance(value, np.generic):
        value = value.item()
    try:
        text = repr(value[: limit + 1] if isinstance(value, str | bytes) else value)
    except ValueError:  # an int past Python's digit limit for str()
        text = f"<{type(value).__name__} too long to show>"
    return shortened(text, limit)


# Numbers written as text: "$47,093", "3,768", "12%", "€ 1,234.50", and with a decimal comma, "57,58" or
# "1.234,5" (most of Europe, as a spreadsheet exports them with ";" between the cells). A column whose every given
# value is such a number is numeric (`number_format`); the symbols around a number (currency, percent, spaces) and
# the thousands separators are dropped, and a percentage stays in percent (12% -> 12.0). A column read either way
# ("3,768" alone) is read as thousands, the first format. New rows are read in the column's format where a value is
# text in it; any other value as a plain number: 57.58, or the text "57.58", in a decimal-comma column is 57.58
# (only the text "1.234", three digits after one dot, is 1234 there, as in the column's own format).
NUMBER_SYMBOLS = r"[\s$€£¥₹%]*"
NUMBER_FORMATS = {  # the separators of a format, and the whole value it accepts (after the symbols)
    "1,234.5": (",", ".", r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"),
    "1.234,5": (".", ",", r"[-+]?(?:\d{1,3}(?:\.\d{3})+|\d+)(?:,\d+)?"),
}
NUMBER_SAMPLE = 1000  # values a column's format is guessed from, before every value is checked against it


def _number_text(s: pd.Series, fmt: str) -> pd.Series:
    """Text written in format `fmt` as plain number text ("$47,093" -> "47093", "57,58" -> "57.58"); other text
    without its symbols, and values that are not text, as they were (pd.to_numeric reads those as it can)."""
    thousands, decimal, pattern = NUMBER_FORMATS[fmt]
    text = s.astype(str).str.strip().str.replace(f"^{NUMBER_SYMBOLS}|{NUMBER_SYMBOLS}$", "", regex=True)
    read = text.str.replace(thousands, "", regex=False).str.replace(decimal, ".", regex=False)
    is_text = (
        pd.Series(True, index=s.index)
        if pd.api.types.infer_dtype(s, skipna=True) == "string"
        else s.map(lambda v: isinstance(v, str))
    )
    return read.where(is_text & text.str.fullmatch(pattern), text.where(is_text, s))


def number_format(s: pd.Series) -> str | None:
    """The format (a key of NUMBER_FORMATS) in which every given value of a text column is a number that pandas
    did not read as one (a separator or a symbol in it), or None: the column is not numbers written as text."""
    if pd.api.types.is_numeric_dtype(s.dtype) or pd.api.types.is_bool_dtype(s.dtype):
        return None
    head = s.iloc[: 10 * NUMBER_SAMPLE]  # a sample first: a column of 10M words is told from numbers in microseconds
    sample = head[_given(head)].iloc[:NUMBER_SAMPLE]
    if sample.empty or not all(isinstance(v, str) for v in sample):
        return None
    if pd.to_numeric(sample, errors="coerce").notna().all():  # plain digits kept as text (codes, zip codes): text
        return None
    given = None
    for fmt, (_, _, pattern) in NUMBER_FORMATS.items():
        whole = f"^{NUMBER_SYMBOLS}{pattern}{NUMBER_SYMBOLS}$"
        if sample.str.strip().str.fullmatch(whole).all():
            given = s[_given(s)] if given is None else given  # then every value, once the sample says numbers
            if given.map(lambda v: isinstance(v, str)).all() and given.str.strip().str.fullmatch(whole).all():
                return fmt  # else the next format: "1,250" in the sample, "2,5" further down is a decimal comma
    return None


DAY_FIRST = "day/month/year"  # the format of a date column written day first (15/03/2021, 01.01.2023)
DATE_PARTS = r"^\s*(\d{1,2})[/.\-](\d{1,2})[/.\-]\d{2,4}\b"


def date_format(s: pd.Series) -> str | None:
    """DAY_FIRST when a text column's dates are written day first: some first number above 12 and no second one
    above 12, or, where every date could be read either way, dots between the numbers (01.01.2023, the German
    way); else None (month first, or year first, as pandas reads them)."""
    if pd.api.types.is_datetime64_any_dtype(s.dtype) or pd.api.types.is_numeric_dtype(s.dtype):
        return None
    text = s.dropna().astype(str)
    parts = text.str.extract(DATE_PARTS).dropna().astype(int)
    if parts.empty or (parts[1] > 12).any():
        return None
    dotted = text.str.match(r"^\s*\d{1,2}\.\d{1,2}\.\d{2,4}\b").mean() > 0.5
    return DAY_FIRST if (parts[0] > 12).any() or dotted else None


def read_dates(s: pd.Series, fmt: str | None = None, mixed_rows: int | None = None) -> pd.Series:
    """A column of dates as UTC timestamps without a zone (NaT where unreadable), day first when `fmt` is DAY_FIRST:
    in the format of its first value (vectorised: fast on millions of rows), or value by value ("mixed", ~20 µs each)
    when that format leaves some unread, on columns of at most `mixed_rows` rows (None: any)."""
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        return pd.to_datetime(s, utc=True).dt.tz_convert(None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "could not infer format", parsed value by value
        dates = pd.to_datetime(s, errors="coerce", utc=True, dayfirst=fmt == DAY_FIRST)
        if dates.isna().sum() > s.isna().sum() and (mixed_rows is None or len(s) <= mixed_rows):
            dates = pd.to_datetime(s, errors="coerce", utc=True, dayfirst=fmt == DAY_FIRST, format="mixed")
    return dates.dt.tz_convert(None)


def read_numbers(s: pd.Series, fmt: str | None = None) -> pd.Series:
    """pd.to_numeric as floats; an integer past float's range (JSON allows any length) becomes ±inf. Text in a
    number format (`number_format`) is read in it: "$47,093" -> 47093.0."""
    if fmt is not None and not pd.api.types.is_numeric_dtype(s.dtype):
        s = _number_text(s, fmt).where(s.notna(), np.nan)
    if s.dtype == np.float64:
        return s.copy(deep=False)  # already floats: copy-on-write shares the column instead of copying it
    try:
        return pd.to_numeric(s, errors="coerce").astype(float)
    except OverflowError:
        as_text = s.map(lambda v: str(v) if isinstance(v, int) and not isinstance(v, bool) else v)
        return pd.to_numeric(as_text, errors="coerce").astype(float)


def _given(s: pd.Series) -> pd.Series:
    """The values given: neither missing nor empty (those are imputed, never refused)."""
    if pd.api.types.is_numeric_dtype(s.dtype) or pd.api.types.is_datetime64_any_dtype(s.dtype):
        return s.notna()  # no empty strings among numbers: skip the text conversion (most of a wide batch's cost)
    return s.notna() & (s.astype(str).str.strip() != "")


def _coerce(s: pd.Series, kind: str, fmt: str | None = None) -> tuple[pd.Series, pd.Series]:
    """One raw column converted to the type its kind needs, and the mask of given values that could not be (those
    become missing). Numbers must be finite and within float32's range: the models compute in float32; `fmt`: the
    column's format: the number format of numbers written as text, or DAY_FIRST for dates written day first."""
    if kind in ("numeric", "boolean"):
        if kind == "boolean" and not pd.api.types.is_numeric_dtype(s.dtype):
            words = s.astype(str).str.strip().str.lower()
            mapped = pd.Series(
                np.where(words.isin(TRUE_WORDS), 1.0, np.where(words.isin(FALSE_WORDS), 0.0, np.nan)), index=s.index
            )
            return mapped, _given(s) & mapped.isna()
        mapped = read_numbers(s, fmt)
        bad = _given(s) & ~(mapped.abs() <= FLOAT32_MAX)  # not a number, ±inf, or past float32
        return (mapped.where(~bad) if bad.any() else mapped), bad  # no copy of a clean column
    if kind == "datetime":
        # every date in UTC, without its time zone: a Parquet column in Europe/Berlin and its CSV export (offsets
        # +01:00 and +02:00 across a clock change) give the same hour and day (a date without a zone counts as UTC)
        # (`read_dates`: in the first value's format at once, value by value only where that leaves some unread: a
        # million month-first or day-first dates took 28 s value by value, 1.5 s at once)
        mapped = read_dates(s, fmt)
        return mapped, _given(s) & mapped.isna()
    return _as_object(s.astype(str).where(s.notna(), np.nan)), pd.Series(False, index=s.index)


def _bad_values_message(s: pd.Series, bad: pd.Series, kind: str, name: str) -> str:
    examples = list(dict.fromkeys(shown(v) for v in s[bad].iloc[:1000]))[:3]
    return (
        f"Column {name!r} must be {EXPECTED[kind]}; received values [{', '.join(examples)}] in {int(bad.sum())} rows."
    )


def csv_like_cells(df: pd.DataFrame) -> pd.DataFrame:
    """JSON lines' cells as the same rows in a CSV would give them: a list or an object as its JSON text (one
    value of a text column, not an unhashable cell), and a column that mixes numbers with words ("62" and "-")
    as text throughout, which the analysis then types as it types a CSV column."""
    for column in df.select_dtypes(include="object").columns:
        values = df[column]
        kinds = {type(v) for v in values if v is not None and v == v}  # NaN != NaN: missing cells left out
        if kinds & {list, dict}:
            values = values.map(lambda v: json.dumps(v) if isinstance(v, (list, dict)) else v)
            kinds = {str if k in (list, dict) else k for k in kinds}
        if len(kinds) > 1 and str in kinds:
            values = values.map(lambda v: v if v is None or v != v else str(v))
        df[column] = values
    return df


EXCEL_SUFFIXES = (".xlsx", ".xlsm")


def read_sheet(path: Any) -> pd.DataFrame:
    """An Excel workbook's first sheet, its cells as a CSV of it would give them (`csv_like_cells`); needs openpyxl."""
    return csv_like_cells(pd.read_excel(path, sheet_name=0, engine="openpyxl"))


def _coerce_text_numbers(df: pd.DataFrame, columns: list[dict[str, Any]]) -> dict[str, tuple[pd.Series, pd.Series]]:
    """`_coerce` of the numeric columns given as text (pandas' string dtype, no number format), all columns of one
    dtype at once: the same elementwise conversion over their values end to end, without its cost per column (1,462
    text columns of 10 rows: 0.75 s one by one, 0.19 s at once). Columns of numbers are fast one by one already."""
    if not df.columns.is_unique:
        return {}
    groups: dict[Any, list[str]] = {}
    for c in columns:
        name = c["name"]
        if c["kind"] == "numeric" and c.get("format") is None and name in df.columns:
            dtype = df[name].dtype
            if isinstance(dtype, pd.StringDtype):  # text only (a CSV read as text): no bool or number among them
                groups.setdefault(dtype, []).append(name)
    out: dict[str, tuple[pd.Series, pd.Series]] = {}
    rows = len(df)
    for names in (names for names in groups.values() if len(names) > 1):
        mapped, bad = _coerce(pd.concat([df[n] for n in names], ignore_index=True), "numeric")
        values, flags = mapped.to_numpy(), bad.to_numpy()
        for i, name in enumerate(names):
            part = slice(i * rows, (i + 1) * rows)
            out[name] = pd.Series(values[part], index=df.index), pd.Series(flags[part], index=df.index)
    return out


def coerce_column(s: pd.Series, kind: str, name: str, fmt: str | None = None) -> pd.Series:
    """Convert one raw column to the type its kind needs; raise SchemaError on values that cannot be.

    A date that does not parse becomes missing here: analysis calls a column datetime when 90 % of its values
    parse, so a training column may hold a few. screen_frame (new rows) refuses its row instead."""
    return _checked(s, *_coerce(s, kind, fmt), kind, name)


def _checked(s: pd.Series, mapped: pd.Series, bad: pd.Series, kind: str, name: str) -> pd.Series:
    """The converted column, or SchemaError naming the given values that could not be converted (not for dates)."""
    if bad.any() and kind != "datetime":
        raise SchemaError(
            _bad_values_message(s, bad, kind, name) + " Fix those values or leave them empty (missing values are "
            "imputed)."
        )
    return mapped


def coerce_frame(df: pd.DataFrame, schema: dict[str, Any]) -> pd.DataFrame:
    """Select and convert the schema's input columns of raw rows (extra columns are ignored)."""
    columns = schema["columns"]
    missing = [c["name"] for c in columns if c["name"] not in df.columns]
    if missing:
        raise SchemaError(
            f"Input is missing columns {missing}. Expected columns: {[c['name'] for c in columns]}. "
            "Pass every feature column with its original name (missing values may be empty)."
        )
    done = _coerce_text_numbers(df, columns)
    converted = {}
    for c in columns:
        name, kind = c["name"], c["kind"]
        pair = done.get(name) or _coerce(df[name], kind, c.get("format"))
        converted[name] = _checked(df[name], *pair, kind, name)
    return pd.DataFrame(converted, index=df.index, copy=False)
    # copy=False: a column already of the right type stays shared (copy-on-write) instead of copied


def screen_frame(df: pd.DataFrame, schema: dict[str, Any]) -> tuple[pd.DataFrame, dict[int, str]]:
    """coerce_frame that never fails the batch: a missing column counts as empty in every row (imputed like any
    missing value), and a value that cannot be converted (a date that does not parse included) refuses its own
    row only; the reason names at most SHOWN_REASONS values, each cut to SHOWN_CHARS characters.

    Returns the converted frame of every row (refused values missing) and {row position: reason} for the
    refused rows."""
    out: dict[str, pd.Series] = {}
    reasons: dict[int, list[str]] = {}
    more: dict[int, int] = {}
    done = _coerce_text_numbers(df, schema["columns"])
    for c in schema["columns"]:
        name, kind = c["name"], c["kind"]
        raw = df[name] if name in df.columns else pd.Series(np.nan, index=df.index, dtype=object)
        out[name], bad = done.get(name) or _coerce(raw, kind, c.get("format"))
        for pos in map(int, np.flatnonzero(bad.to_numpy())):
            why = reasons.setdefault(pos, [])
            if len(why) < SHOWN_REASONS:
                why.append(f"{shortened(str(name))}={shown(raw.iloc[pos])} is not {EXPECTED[kind]}")
            else:
                more[pos] = more.get(pos, 0) + 1
    refused = {
        pos: "; ".join(why) + (f"; and {more[pos]} more bad values" if pos in more else "")
        for pos, why in sorted(reasons.items())
    }
    return pd.DataFrame(out, index=df.index), refused


class FrequencyEncoder(TransformerMixin, BaseEstimator):
    """Replace each category by its share of the training rows (unseen categories -> 0)."""

    def fit(self, X: Any, y: Any = None) -> FrequencyEncoder:
        frame = pd.DataFrame(X)
        self.feature_names_in_ = np.asarray([str(c) for c in frame.columns], dtype=object)
        self.maps_ = [frame[c].value_counts(normalize=True, dropna=True).to_dict() for c in frame.columns]
        return self

    def transform(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "maps_")
        frame = pd.DataFrame(X)
        cols = [frame.iloc[:, i].map(m).astype(float).fillna(0.0).to_numpy() for i, m in enumerate(self.maps_)]
        return np.column_stack(cols) if cols else np.empty((len(frame), 0))

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        names = self.feature_names_in_ if input_features is None else input_features
        return np.asarray([f"{n}_freq" for n in names], dtype=object)


class DatetimeExpander(TransformerMixin, BaseEstimator):
    """Expand datetime columns into numeric parts that vary in training: the days since 1970 (time itself, so that
    one split or one coefficient can separate before and after a date, or follow a trend), the year, month, day,
    weekday and hour (the calendar's cycles)."""

    PARTS = ("days", "year", "month", "day", "dayofweek", "hour")

    @staticmethod
    def _part(d: pd.Series, part: str) -> pd.Series:
        if part == "days":
            naive = d.dt.tz_convert(None) if d.dt.tz is not None else d  # an instant, in UTC
            return (naive - pd.Timestamp("1970-01-01")) / pd.Timedelta(days=1)
        return getattr(d.dt, part)

    def fit(self, X: Any, y: Any = None) -> DatetimeExpander:
        frame = pd.DataFrame(X)
        self.feature_names_in_ = np.asarray([str(c) for c in frame.columns], dtype=object)
        self.parts_ = []
        for c in frame.columns:
            d = pd.to_datetime(frame[c], errors="coerce", format="mixed")
            self.parts_.append([p for p in self.PARTS if self._part(d, p).nunique(dropna=True) > 1])
        return self

    def transform(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "parts_")
        frame = pd.DataFrame(X)
        cols = []
        for i, parts in enumerate(self.parts_):
            d = pd.to_datetime(frame.iloc[:, i], errors="coerce", format="mixed")
            cols += [self._part(d, p).astype(float).to_numpy() for p in parts]
        return np.column_stack(cols) if cols else np.empty((len(frame), 0))

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        names = self.feature_names_in_ if input_features is None else input_features
        return np.asarray(
            [f"{n}_{p}" for n, parts in zip(names, self.parts_, strict=True) for p in parts], dtype=object
        )


class TextVectorizer(TransformerMixin, BaseEstimator):
    """Free-text columns as numbers, fitted on the training rows only: per column, its length in words (log1p) and
    the first `components` latent dimensions of the TF-IDF of its words and word pairs (sublinear term counts, terms
    of at least two training rows, the `vocabulary` most frequent; truncated SVD: latent semantic analysis, as
    scikit-learn's text examples do), and its style: its length in characters (log1p), the shares of its letters
    written in capitals, of digits and of other symbols among its characters, and its count of ! and ? (log1p), as
    AutoGluon's text features count them. Missing text is empty text; a column without terms gives its length and
    style only. The terms and dimensions are learned from a seeded sample of at most `fit_rows` texts: word pairs of
    millions of rows would hold millions of distinct terms in memory, while the 20,000 most frequent ones are stable
    long before."""

    def __init__(self, components: int = 32, vocabulary: int = 20_000, seed: int = 0, fit_rows: int = 100_000) -> None:
        self.components, self.vocabulary, self.seed, self.fit_rows = components, vocabulary, seed, fit_rows

    @staticmethod
    def _documents(s: pd.Series) -> list[str]:
        return [str(v) if not pd.isna(v) else "" for v in s.to_numpy(dtype=object)]

    def fit(self, X: Any, y: Any = None) -> TextVectorizer:
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer

        frame = pd.DataFrame(X)
        self.feature_names_in_ = np.asarray([str(c) for c in frame.columns], dtype=object)
        if len(frame) > self.fit_rows:
            frame = frame.sample(self.fit_rows, random_state=self.seed)
        self.steps_: list[tuple[Any, Any]] = []
        self.style_ = True  # fitted before 2026-12-05 (pickled in a workspace): no style columns
        for i in range(frame.shape[1]):
            docs = self._documents(frame.iloc[:, i])
            tfidf = TfidfVectorizer(
                sublinear_tf=True, ngram_range=(1, 2), min_df=2 if len(docs) >= 20 else 1,
                max_features=self.vocabulary, dtype=np.float32,
            )  # fmt: skip
            try:
                terms = tfidf.fit_transform(docs)
            except ValueError:  # no term at all (empty or one-character texts): the length alone
                self.steps_.append((None, None))
                continue
            k = min(self.components, terms.shape[1] - 1, len(docs) - 1)
            svd = TruncatedSVD(n_components=k, random_state=self.seed).fit(terms) if k >= 1 else None
            self.steps_.append((tfidf, svd))
        return self

    def transform(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "steps_")
        frame = pd.DataFrame(X)
        cols = []
        for i, (tfidf, svd) in enumerate(self.steps_):
            docs = self._documents(frame.iloc[:, i])
            cols.append(np.log1p([len(d.split()) for d in docs]).reshape(-1, 1))
            if getattr(self, "style_", False):
                cols.append(self._style(docs))
            if svd is not None:
                cols.append(svd.transform(tfidf.transform(docs)))
        return np.hstack(cols).astype(np.float64) if cols else np.empty((len(frame), 0))

    STYLE = ("chars", "capitals", "digits", "symbols", "marks")

    @staticmethod
    def _style(docs: list[str]) -> np.ndarray:
        text = pd.Series(docs, dtype=object)
        chars = text.str.len().to_numpy(dtype=np.float64)
        letters = text.str.count(r"[^\W\d_]").to_numpy(dtype=np.float64)
        capitals = np.fromiter((sum(map(str.isupper, d)) for d in docs), dtype=np.float64, count=len(docs))
        digits = text.str.count(r"\d").to_numpy(dtype=np.float64)
        symbols = text.str.count(r"[^\w\s]").to_numpy(dtype=np.float64)
        marks = text.str.count(r"[!?]").to_numpy(dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            shares = [np.nan_to_num(a / b) for a, b in ((capitals, letters), (digits, chars), (symbols, chars))]
        return np.column_stack([np.log1p(chars), *shares, np.log1p(marks)])

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        names = self.feature_names_in_ if input_features is None else input_features
        style = list(self.STYLE) if getattr(self, "style_", False) else []
        out = []
        for n, (_, svd) in zip(names, self.steps_, strict=True):
            out += [f"{n}_words"] + [f"{n}_{p}" for p in style]
            out += [f"{n}_topic{j}" for j in range(svd.n_components)] if svd is not None else []
        return np.asarray(out, dtype=object)


for _cls in (FrequencyEncoder, DatetimeExpander, TextVectorizer, SchemaError):
    _cls.__module__ = MODULE_NAME
