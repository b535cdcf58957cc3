"""Task types, shared by every phase (kept free of numpy and pandas so the server starts without them)."""

from __future__ import annotations

TASK_TYPES = ("binary", "multiclass", "regression")


def is_classification(task: str) -> bool:
    return task in ("binary", "multiclass")
