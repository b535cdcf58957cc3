"""Target encoding of the categoricals with too many levels for boosting's native splits, for the boosting families.

A categorical with more levels than `MAX_NATIVE_CATEGORIES` reaches the tree families as one column of category codes
in alphabetical order, on which a boosting split groups levels by their names. Boosting (`ENCODED_FAMILIES`) instead
sees that column replaced by its target encoding, fitted on each model's own training rows only (every fold model and
every refit) with scikit-learn's `TargetEncoder`: the mean target per level, shrunk towards the overall mean by the
level's row count (empirical Bayes), one column per class beyond the first for a multiclass target, and cross fitting
inside those rows (5 folds), so that no training row's encoding saw its own target. The held-out rows, the package and
`predict` get the encoder fitted on all of the model's training rows (`TargetEncoded`). Missing and unseen levels
share code -1: they get the missing training rows' encoding, or the overall mean where no training row was missing.
Forests keep the codes: with leaves of a few rows they isolate single levels themselves. Where the search's folds
hold whole groups (`prepare_data` split by group), nothing is encoded: the encoder's own cross fitting would put a
training row's group-mates' targets in its encoding.

Measured (2026-12-04, 60 s, `bench/results/resplit_te*_*.json`; the three bench tables with such a column; test
scores on split seeds 1-4, codes -> every tree family encoded -> boosting only):
- epa2021 (788 car lines, 1,108 rows) RMSE mean 1.674 -> 1.767 -> 1.656 (3 of 4 splits better): encoded, the
  forests lost where most levels have one or two rows (offline, extra-trees alone on split 4: 1.486 -> 1.655);
- loans (4,741 job titles) 3.5506 -> 3.5497 -> 3.5497; grants_other (291 sponsors, 1,502 columns) .8967 -> .8965 ->
  .8956 (within 4 of 1,638 test rows).
On the bench's split 0: epa2021 1.342 -> 1.291, loans 3.5104 -> 3.5094, grants_other unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ml_expert.tools.core.lazy import lazy_import
from ml_expert.tools.core.portable.ensemble import TargetEncoded, target_encoded

np = lazy_import("numpy")  # loads on first use, not at server start


@dataclass(frozen=True)
class Encoding:
    """One model's target encoding: the encoder fitted on its training rows (None: nothing encoded), the columns it
    replaces, and those training rows as the model learns from them (cross-fitted encodings)."""

    encoder: Any | None
    columns: tuple[int, ...]
    rows: np.ndarray

    def seen(self, X: np.ndarray) -> np.ndarray:
        """Other rows (held-out, validation) as the fitted model sees them."""
        return X if self.encoder is None else target_encoded(X, self.encoder, self.columns)

    def wrap(self, model: Any) -> Any:
        """The fitted model as it is shipped: applied to code columns (`TargetEncoded`)."""
        return model if self.encoder is None else TargetEncoded(model, self.encoder, self.columns)


def encode_training_rows(X: np.ndarray, y: np.ndarray, columns: Sequence[int], n_classes: int, seed: int) -> Encoding:
    """The encoding of the code columns `columns` fitted on the training rows `X`; the rows untouched and no encoder
    when `columns` is empty; `n_classes` 0 for a regression."""
    if not columns:
        return Encoding(None, (), X)
    encoder, rows = fit_target_encoding(X, y, columns, n_classes, seed)
    return Encoding(encoder, tuple(columns), rows)


def fit_target_encoding(
    X: np.ndarray, y: np.ndarray, columns: Sequence[int], n_classes: int, seed: int
) -> tuple[Any, np.ndarray]:
    """An encoder of the code columns `columns` fitted on these training rows, and the rows encoded by cross fitting
    (`target_encoded`); `n_classes` 0 for a regression."""
    from sklearn.preprocessing import TargetEncoder

    kind = "continuous" if not n_classes else "binary" if len(np.unique(y)) <= 2 else "multiclass"
    encoder = TargetEncoder(target_type=kind, random_state=seed)
    encoded = encoder.fit_transform(np.asarray(X, dtype=np.float32)[:, list(columns)], y)
    return encoder, target_encoded(X, encoder, columns, encoded)
