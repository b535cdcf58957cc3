"""Predictions over many rows in chunks, with progress (and the cancel check a progress call carries) between them:
a forest predicting millions of rows takes tens of seconds. One loop for the search's held-out rows (a fold fit, here
or on a Dask worker) and for `evaluate`'s test rows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ml_expert.tools.core.lazy import lazy_import

np = lazy_import("numpy")  # loads on first use, not at server start

PREDICT_CHUNK = 500_000  # rows predicted at a time


def predict_in_chunks(
    predict: Callable[[Any], Any],
    X: Any,
    rows: Any = None,
    tick: Callable[[str], None] | None = None,
    what: str = "rows",
) -> Any:
    """`predict` on `X[rows]` (every row of X without `rows`), PREDICT_CHUNK rows at a time, each chunk indexed on its
    own (no copy of all the rows at once), with `tick` between chunks."""
    n = len(X) if rows is None else len(rows)
    if n <= PREDICT_CHUNK:
        return predict(X if rows is None else X[rows])
    parts = []
    for start in range(0, n, PREDICT_CHUNK):
        if tick is not None:
            tick(f"{what} {start:,} of {n:,}")
        chunk = slice(start, start + PREDICT_CHUNK)
        parts.append(predict(X[chunk] if rows is None else X[rows[chunk]]))
    return np.concatenate(parts)
