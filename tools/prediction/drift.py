"""Drift warnings: how far rows sent to `predict` are from the training rows `prepare_data` profiled.

Per feature column (profile in `<run>/profile.json`, see `profiling.training_profile`):
- missing columns (imputed in every row) and extra columns (ignored; the training file's own columns,
  target and dropped ids included, are not "extra");
- the missing-value rate against training's (warns when it rises by more than MISSING_RISE, in batches
  of MIN_ROWS_FOR_RATES rows or more);
- numbers: the share of values outside the training range. A value from the training distribution falls
  outside the min-max of n training values with chance 2 / (n + 1), so the share warns only above that
  chance plus three standard errors (of the batch's sampling and of where the training extremes fell),
  and never at or below OUT_OF_RANGE_SHARE;
- categories: the share of values never seen in training (warns above UNSEEN_SHARE);
- the population stability index over the training decile bins / category shares, with the usual
  reading: below 0.1 stable, 0.1-0.25 moderate shift, 0.25 and above major shift. A small batch has a
  large PSI by chance alone (about (bins - 1) / rows), so a column is flagged only when its PSI is also
  above three times that chance level; batches under MIN_ROWS_FOR_PSI rows get no PSI.

The report stays small whatever the input: at most SHOWN_COLUMNS missing / extra column names (with the
count left out), MAX_WARNINGS warnings, and every input value or name it echoes cut to 80 characters.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from ml_expert.tools.core.lazy import lazy_import
from ml_expert.tools.data.profiling import as_numbers, bucket_shares

np = lazy_import("numpy")  # loads on first use, not at server start
pd = lazy_import("pandas")  # loads on first use, not at server start

PSI_MODERATE = 0.1
PSI_MAJOR = 0.25
MIN_ROWS_FOR_PSI = 50
MISSING_RISE = 0.1
MIN_ROWS_FOR_RATES = 20  # one missing value in five rows is not a rise in the missing rate
OUT_OF_RANGE_SHARE = 0.01
UNSEEN_SHARE = 0.01
EPS = 1e-4
SHOWN_COLUMNS = 20
SHOWN_UNSEEN = 5
MAX_WARNINGS = 30


class ColumnDrift(BaseModel):
    column: str
    kind: str
    missing_rate: float = Field(description="Share of missing values in the rows given.")
    training_missing_rate: float
    out_of_range_share: float | None = Field(None, description="Numbers outside [training min, training max].")
    unseen_share: float | None = Field(None, description="Categories never seen in training.")
    psi: float | None = Field(None, description="Population stability index against the training rows.")
    level: str = Field(description="stable, moderate or major (PSI reading), or 'missing' (column absent).")


class DriftReport(BaseModel):
    rows: int
    missing_columns: list[str] = Field(
        description=f"Feature columns absent from the input: imputed in every row (the first {SHOWN_COLUMNS})."
    )
    missing_columns_left_out: int = Field(0, description="Missing columns beyond those listed.")
    extra_columns: list[str] = Field(
        description=f"Input columns the model does not know (ignored; the first {SHOWN_COLUMNS}, names cut short)."
    )
    extra_columns_left_out: int = Field(0, description="Extra columns beyond those listed.")
    warnings: list[str] = Field(
        description=f"One line per finding (at most {MAX_WARNINGS}); empty when the input looks like training data."
    )
    columns: list[ColumnDrift] = Field(description="Per feature column, the most shifted first (at most 30).")


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index of two share vectors over the same buckets."""
    e, a = np.clip(expected, EPS, None), np.clip(actual, EPS, None)
    return float(np.sum((a - e) * np.log(a / e)))


def column_findings(profile: dict[str, Any], given: list[Any]) -> tuple[list[str], list[str], list[str]]:
    """The feature columns missing from the given ones, the given columns the model does not know (the training
    file's own columns, target and dropped ones, are known), and a warning line for each finding."""
    from ml_expert.tools.core.portable.preprocessing import shortened, shown  # sklearn: not at server start

    names = {str(c) for c in given}
    missing = [c for c in profile["columns"] if c not in names]
    known = set(profile.get("known_columns", [])) | set(profile["columns"])
    extra = [str(c) for c in given if str(c) not in known]
    warnings = [
        f"missing column {shown(c)}: imputed in every row; predictions lean on the other columns"
        for c in missing[:MAX_WARNINGS]
    ]
    if extra:
        listed = ", ".join(shortened(c, 40) for c in extra[:10])
        warnings.append(f"{len(extra)} column(s) the model does not know were ignored: [{listed}]")
    return missing, extra, warnings


def drift_report(profile: dict[str, Any], raw: pd.DataFrame, coerced: pd.DataFrame) -> DriftReport:
    """Compare input rows (raw as given, and converted by screen_frame) with the training profile."""
    from ml_expert.tools.core.portable.preprocessing import shortened  # sklearn: not at server start

    features = profile["columns"]
    missing, extra, warnings = column_findings(profile, list(raw.columns))
    train_rows = int(profile.get("rows") or 0)
    present = [name for name in features if name not in missing]
    columns = [_column(name, features[name], coerced[name], len(raw), train_rows, warnings) for name in present] + [
        ColumnDrift(
            column=c,
            kind=features[c]["kind"],
            missing_rate=1.0,
            training_missing_rate=features[c]["missing_rate"],
            level="missing",
        )
        for c in missing[:30]
    ]
    columns.sort(key=lambda c: (c.level != "missing", -(c.psi or 0)))
    total = len(warnings) + max(len(missing) - MAX_WARNINGS, 0)  # the missing columns not written out count too
    if total > MAX_WARNINGS:
        warnings = [*warnings[: MAX_WARNINGS - 1], f"{total - MAX_WARNINGS + 1} more warnings left out"]
    return DriftReport(
        rows=len(raw),
        missing_columns=missing[:SHOWN_COLUMNS],
        missing_columns_left_out=max(len(missing) - SHOWN_COLUMNS, 0),
        extra_columns=[shortened(c) for c in extra[:SHOWN_COLUMNS]],
        extra_columns_left_out=max(len(extra) - SHOWN_COLUMNS, 0),
        warnings=warnings,
        columns=columns[:30],
    )


def out_of_range_chance(train_values: int, rows: int) -> float:
    """The share of `rows` new values outside the min-max of `train_values` training values that chance alone stays
    under, when both come from one distribution (at least OUT_OF_RANGE_SHARE; the floor when training is unknown).

    A new value falls outside with chance p = 2 / (n + 1); the batch's share varies by p (1 - p) / rows around it,
    and p itself, the mass beyond where the extremes of these n values fell, is Beta(2, n - 1) distributed."""
    n = train_values
    if n < 1 or rows < 1:
        return OUT_OF_RANGE_SHARE
    p = 2 / (n + 1)
    variance = p * (1 - p) / rows + 2 * (n - 1) / ((n + 1) ** 2 * (n + 2))
    return max(OUT_OF_RANGE_SHARE, p + 3 * variance**0.5)


def _column(
    name: str, entry: dict[str, Any], s: pd.Series, rows: int, train_rows: int, warnings: list[str]
) -> ColumnDrift:
    from ml_expert.tools.core.portable.preprocessing import shown

    drift = ColumnDrift(
        column=name,
        kind=entry["kind"],
        missing_rate=round(float(s.isna().mean()) if rows else 0.0, 4),
        training_missing_rate=round(entry["missing_rate"], 4),
        level="stable",
    )
    if not rows:
        return drift
    label = shown(name)
    if rows >= MIN_ROWS_FOR_RATES and drift.missing_rate - drift.training_missing_rate > MISSING_RISE:
        warnings.append(
            f"{label}: {drift.missing_rate:.0%} missing values against {drift.training_missing_rate:.0%} in training"
        )
    values = as_numbers(s, entry["kind"])
    if "min" in entry and values is not None and len(values):
        drift.out_of_range_share = round(float(np.mean((values < entry["min"]) | (values > entry["max"]))), 4)
        chance = out_of_range_chance(round(train_rows * (1 - entry["missing_rate"])), len(values))
        if drift.out_of_range_share > chance:
            low, high = (_range_end(entry[k], entry["kind"]) for k in ("min", "max"))
            warnings.append(
                f"{label}: {drift.out_of_range_share:.1%} of values outside the training range [{low}, {high}] "
                f"(chance alone gives up to {chance:.1%} for {len(values)} values)"
            )
    if "categories" in entry and entry.get("all_categories_kept"):
        known = s.dropna().astype(str).isin(set(entry["categories"]))
        drift.unseen_share = round(float((~known).sum() / rows), 4)
        if drift.unseen_share > UNSEEN_SHARE:
            unseen = ", ".join(shown(v) for v in s.dropna().astype(str)[~known].unique()[:SHOWN_UNSEEN])
            warnings.append(f"{label}: {drift.unseen_share:.1%} of values are categories unseen in training [{unseen}]")
    if "shares" in entry and rows >= MIN_ROWS_FOR_PSI:
        expected = np.asarray(entry["shares"])
        drift.psi = round(psi(expected, bucket_shares(s, entry)), 4)
        chance = 3 * (len(expected) - 1) * (1 / rows + 1 / max(train_rows, 1))
        if drift.psi >= max(PSI_MODERATE, chance):
            drift.level = "major" if drift.psi >= max(PSI_MAJOR, chance) else "moderate"
            warnings.append(f"{label}: {drift.level} shift, PSI {drift.psi:.2f} (stable below 0.1, major from 0.25)")
    return drift


def _range_end(value: float, kind: str) -> str:
    return str(pd.Timestamp(value, unit="s")) if kind == "datetime" else f"{value:g}"
