"""Pictures for reports (matplotlib, headless): training curves, confusion matrix, residuals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ml_expert.tools.core.lazy import lazy_import

np = lazy_import("numpy")  # loads on first use, not at server start


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def main_metric(history: dict[str, list[float]]) -> str | None:
    """The first metric in a history that has a val_ twin, other than loss."""
    return next((k for k in history if k != "loss" and not k.startswith("val_") and f"val_{k}" in history), None)


def training_curves(history: dict[str, list[float]], path: Path, title: str, x_label: str = "Epoch") -> Path:
    """Loss and the main metric, train vs validation (the seed's two-panel figure)."""
    plt = _plt()
    metric = main_metric(history)
    fig, axes = plt.subplots(1, 2 if metric else 1, figsize=(12 if metric else 6, 4), squeeze=False)
    for ax, name in zip(axes[0], ["loss", metric] if metric else ["loss"], strict=True):
        x = np.arange(1, len(history.get(name, [])) + 1)
        ax.plot(x, history.get(name, []), label=f"Train {name}")
        if f"val_{name}" in history:
            ax.plot(x[: len(history[f"val_{name}"])], history[f"val_{name}"], label=f"Val {name}")
        _finish_axes(ax, x_label, name)
    return _save(plt, fig, title, path)


def search_curve(history: dict[str, list[float]], path: Path, title: str) -> Path:
    """The model search: each candidate's cross-validation score in the order tried, and the best so far."""
    plt = _plt()
    name, values = next(iter(history.items()))
    shown = np.asarray(values) * (-1 if name.endswith("rmse") else 1)  # RMSE is ranked negated
    best = np.minimum.accumulate(shown) if name.endswith("rmse") else np.maximum.accumulate(shown)
    fig, ax = plt.subplots(figsize=(7, 4))
    x = np.arange(1, len(shown) + 1)
    ax.plot(x, shown, "o", label=f"candidate {name}")
    ax.plot(x, best, "-", label="best so far")
    _finish_axes(ax, "Candidate (in the order tried)", name)
    return _save(plt, fig, title, path)


def _finish_axes(ax: Any, x_label: str, y_label: str) -> None:
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.legend()
    ax.grid(True)


def _save(plt: Any, fig: Any, title: str, path: Path) -> Path:
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def confusion_matrix_png(matrix: list[list[int]], labels: list[str], path: Path) -> Path:
    plt = _plt()
    m = np.asarray(matrix)
    size = min(12, 3 + 0.5 * len(labels))
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("Predicted")
    ax.set_ylabel("True")
    if len(labels) <= 20:
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                ax.text(
                    j, i, int(m[i, j]), ha="center", va="center", color="white" if m[i, j] > m.max() / 2 else "black"
                )
    ax.set_title("Confusion matrix (test)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


PLOTTED_POINTS = 10_000  # test rows drawn in residuals.png: a seeded sample above it (a million points are a blot)


def residuals_png(y_true: np.ndarray, y_pred: np.ndarray, path: Path) -> Path:
    plt = _plt()
    drawn = ""
    if len(y_true) > PLOTTED_POINTS:
        rows = np.random.default_rng(0).choice(len(y_true), PLOTTED_POINTS, replace=False)
        drawn = f", {PLOTTED_POINTS:,} of {len(y_true):,} rows"
        y_true, y_pred = y_true[rows], y_pred[rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.scatter(y_true, y_pred, s=8, alpha=0.6)
    lo, hi = float(min(y_true.min(), y_pred.min())), float(max(y_true.max(), y_pred.max()))
    a.plot([lo, hi], [lo, hi], "r--", linewidth=1)
    a.set_xlabel("True")
    a.set_ylabel("Predicted")
    a.set_title(f"Predicted vs true (test{drawn})")
    b.scatter(y_pred, y_true - y_pred, s=8, alpha=0.6)
    b.axhline(0, color="r", linestyle="--", linewidth=1)
    b.set_xlabel("Predicted")
    b.set_ylabel("Residual")
    b.set_title(f"Residuals (test{drawn})")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
