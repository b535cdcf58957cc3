"""Shapley values per raw column for the rows `explain` is given, with the `shap` library.

Exact (`shap.explainers.Exact`, every coalition) up to EXACT_MAX_COLUMNS columns, permutation sampling above
(`shap.explainers.Permutation`, evaluations sized from the column count, values still adding up exactly to the
prediction). Columns are masked with values of background rows (those importance is measured on; interventional
Shapley values); the explained quantity is the predicted class's probability, or the predicted value. Rows go
through the package's `score` first (its refusals apply), and the cost is bounded up front (SHAPLEY_BUDGET_S).
"""

from __future__ import annotations

import contextlib
from typing import Any

from pydantic import BaseModel, Field

from ml_expert.tools.core.tasks import is_classification
from ml_expert.tools.jobs.specs import Reporter

BACKGROUND_ROWS = 50
EXACT_MAX_COLUMNS = 10
SHAP_MIN_EVALS = 500  # shap's default for the permutation explainer
SHAPLEY_BUDGET_S = 120  # seconds one explain call spends on Shapley values at most (estimated up front)


class LocalExplanation(BaseModel):
    row: int = Field(description="Position in the rows given.")
    prediction: Any
    explained: str = Field(description="What the contributions add up to, e.g. 'P(yes)' or 'value'.")
    base_value: float = Field(description="The average of the explained quantity over the background rows.")
    output: float = Field(description="The explained quantity for this row = base_value + sum(contributions).")
    contributions: dict[str, float] = Field(description="Shapley value per raw column, largest |value| first.")


def _cache_jit() -> None:
    """shap compiles its masking and exact-explainer kernels with numba on first use and does not cache them: 5-10 s
    of compiling in every fresh worker, each explain call. Numba may cache them on disk (beside shap's sources, or in
    its user-wide cache where those are read-only), so only the first explain on a machine pays that.

    The masking kernels take shap's link function (itself a numba function) as an argument, and numba keys such an
    argument by the function's instance id, a random uuid drawn in each process: a kernel cached by one process never
    matched the next one's key, so every explain compiled them again. A fixed id per link function makes it match."""
    from numba.core.caching import NullCache
    from numba.core.dispatcher import Dispatcher
    from shap import links
    from shap.explainers import _exact
    from shap.maskers import _tabular
    from shap.utils import _masked_model

    for link in (links.identity, links.logit):
        if isinstance(link, Dispatcher) and getattr(link, "_MemoMixin__uuid", "") is None:
            with contextlib.suppress(AttributeError, AssertionError):  # numba's internals moved: compiled as before
                link._set_uuid(f"ml-expert/{link.__module__}.{link.__name__}")
    for module in (_masked_model, _tabular, _exact):
        for kernel in vars(module).values():
            if isinstance(kernel, Dispatcher) and isinstance(kernel._cache, NullCache):
                try:
                    kernel.enable_caching()
                except RuntimeError:  # no writable cache location: compiled per process, as shap does
                    return


def shapley_rows(
    model: Any, rows: list[dict[str, Any]], background: Any, top_k: int, seed: int, reporter: Reporter | None = None
) -> tuple[list[LocalExplanation], str, dict[int, str] | None, list[str]]:
    """Shapley values per raw column for each given row (see the module docstring for the method).

    The cost is bounded up front: one row costs (evaluations × background rows) predictions, timed on the
    background; rows past SHAPLEY_BUDGET_S are refused with the reason (pass them in another call), and a note says so.
    """
    import time

    import numpy as np
    import pandas as pd
    import shap

    from ml_expert.tools.core.portable.preprocessing import screen_frame

    _cache_jit()

    given = pd.DataFrame(rows)
    scored = model.score(given)  # the package's refusals: bad values, overflow past float32, non-finite output
    coerced, refused = scored.converted, dict(scored.refused)
    keep = [int(i) for i in scored.positions]
    columns = [c["name"] for c in model.schema["columns"]]
    base = screen_frame(background, model.schema)[0].sample(min(BACKGROUND_ROWS, len(background)), random_state=seed)
    exact = len(columns) <= EXACT_MAX_COLUMNS
    # The permutation explainer needs 2 × columns + 1 evaluations per permutation; take at least two permutations.
    evals = 2 ** len(columns) if exact else max(SHAP_MIN_EVALS, 2 * (2 * len(columns) + 1))
    timing = pd.concat([base] * max(1, 2000 // len(base)), ignore_index=True)
    started = time.perf_counter()
    model.predict_output(timing)
    per_row = (time.perf_counter() - started) / len(timing) * evals * len(base)  # seconds to explain one row
    fits = max(1, int(SHAPLEY_BUDGET_S // per_row))
    notes = []
    if len(keep) > fits:
        for position in keep[fits:]:
            refused[position] = (
                f"not explained: Shapley values of {len(columns)} columns cost about {per_row:.1f} s a row here, and "
                f"one explain call spends at most {SHAPLEY_BUDGET_S} s on them; pass this row in another call."
            )
        notes.append(f"Shapley values for the first {fits} of {len(keep)} rows (about {per_row:.1f} s a row).")
        keep = keep[:fits]
    codec = _Codec(pd.concat([base, coerced.iloc[keep]]), columns)
    out = scored.output[: len(keep)] if keep else np.empty(0)
    classify = is_classification(model.task)
    picked = out.argmax(axis=1) if classify and keep else None

    def f(arr: np.ndarray) -> np.ndarray:
        if reporter is not None:
            reporter.progress(phase="shapley", message=f"Shapley values of {len(keep)} rows, {len(columns)} columns")
        return model.predict_output(codec.decode(arr))

    masker = shap.maskers.Independent(codec.encode(base), max_samples=BACKGROUND_ROWS)
    explainer = shap.explainers.Exact(f, masker) if exact else shap.explainers.Permutation(f, masker, seed=seed)
    found = (
        explainer(codec.encode(coerced.iloc[keep]), silent=True, **({} if exact else {"max_evals": evals}))
        if keep
        else None
    )
    labels = model.labels(out) if keep else []
    local = []
    for j, position in enumerate(keep):
        values = found.values[j][:, picked[j]] if classify else found.values[j]
        base_value = found.base_values[j][picked[j]] if classify else found.base_values[j]
        ranked = sorted(zip(columns, values, strict=True), key=lambda cv: -abs(cv[1]))[:top_k]
        local.append(
            LocalExplanation(
                row=position,
                prediction=labels[j],
                explained=f"P({model.classes[picked[j]]})" if classify else "value",
                base_value=round(float(base_value), 6),
                output=round(float(out[j][picked[j]] if classify else out[j]), 6),
                contributions={c: round(float(v), 6) for c, v in ranked},
            )
        )
    method = (
        f"exact Shapley values (shap Exact, all {2 ** len(columns)} coalitions)"
        if exact
        else f"Shapley values by permutation sampling (shap Permutation; {len(columns)} columns > {EXACT_MAX_COLUMNS})"
    ) + f" over raw columns, masked with {len(base)} background rows"
    return local, method, dict(sorted(refused.items())) or None, notes


class _Codec:
    """Raw columns <-> float matrix for shap: numbers stay numbers, other values become codes of a vocabulary."""

    def __init__(self, frame: Any, columns: list[str]) -> None:
        self.columns = columns
        self.vocab = {
            c: list(dict.fromkeys(frame[c].dropna().tolist())) for c in columns if not _is_number_dtype(frame[c])
        }
        self.dtypes = frame.dtypes

    def encode(self, frame: Any) -> Any:
        import numpy as np

        out = frame[self.columns].copy()
        for c, values in self.vocab.items():
            codes = {v: i for i, v in enumerate(values)}
            out[c] = frame[c].map(codes).astype(float)
        return out.astype(float).to_numpy(dtype=np.float64)

    def decode(self, arr: Any) -> Any:
        import numpy as np
        import pandas as pd

        frame = pd.DataFrame(arr, columns=self.columns)
        for c, values in self.vocab.items():
            lookup = np.asarray([*values, np.nan], dtype=object)
            codes = frame[c].to_numpy()
            idx = np.where(np.isnan(codes), len(values), np.nan_to_num(codes)).astype(int)
            frame[c] = pd.Series(lookup[idx], dtype=object).where(~np.isnan(codes), np.nan)
        return frame.astype({c: self.dtypes[c] for c in self.columns if c not in self.vocab})


def _is_number_dtype(s: Any) -> bool:
    import pandas as pd

    return pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype)
