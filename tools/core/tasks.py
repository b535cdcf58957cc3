"""Task types, shared by every phase (kept free of numpy and pandas so the server starts without them)."""

from __future__ import annotations

from typing import Any

TASK_TYPES = ("binary", "multiclass", "regression")


def is_classification(task: str) -> bool:
    return task in ("binary", "multiclass")


def schema_for_model(schema: dict[str, Any], task: str) -> dict[str, Any]:
    """A run's schema as one of its models reads rows with it: a clustering of a labelled table answers cluster
    ids, not the run's labels."""
    if task != "clustering":
        return schema
    return {**schema, "task_type": "clustering", "classes": None, "target_dtype": "i"}
