"""What train recorded about one model (`model.json` in its folder), typed: evaluate, package, predict and
explain read it through `artifacts.load_model_meta`, never as a dict."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ModelMeta(BaseModel):
    """The train result of a model, with the spec it was trained from; further fields are kept as they are."""

    model_config = ConfigDict(extra="allow")

    run_id: str
    model_id: str
    architecture: str
    framework: str = Field(description="keras or sklearn.")
    task_type: str
    parameters: int = 0
    train_seconds: float = 0.0
    notes: list[str] = Field(default_factory=list)
    search: dict[str, Any] | None = Field(None, description="The auto search's summary and leaderboard.")
    refit_of: str | None = Field(
        None, description="The evaluated model this one refits on all rows (train, validation and test), if any."
    )
