"""What prepare_data produced (`prepared.json` in the run folder), typed: every later phase reads it through
`artifacts.load_prepared`, never as a dict."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class CleaningStep(BaseModel):
    action: str
    rows: int = 0
    columns: list[str] = Field(default_factory=list)
    reason: str


class PreparedData(BaseModel):
    """What prepare_data produced; the arrays live in the run folder."""

    run_id: str
    modality: str = "tabular"
    input_shape: list[int] | None = Field(None, description="Shape of one model input (images, sequences).")
    task_type: Literal["binary", "multiclass", "regression", "clustering"]
    target: str | None
    splits: dict[str, int] = Field(description="Rows per split (train/val/test).")
    class_distribution: dict[str, dict[str, int]] | None = Field(None, description="Split -> class -> rows.")
    features_in: list[str] = Field(description="Raw input columns the model uses (the inference schema).")
    features_out: int = Field(description="Number of features after encoding.")
    feature_names: list[str] = Field(description="First 100 feature names after encoding.")
    label_mapping: dict[str, str] | None = Field(None, description="Encoded label -> original label.")
    dropped_columns: dict[str, str] = Field(description="Column -> why it was dropped.")
    cleaning_log: list[CleaningStep]
    options: dict[str, Any]
    warnings: list[str]
    artifacts: dict[str, str]
    next_step: str
