"""What a training job is told and what a fit gives back: `TrainConfig`, `TrainSpec`, `Fit`.

`TrainConfig` is the one configuration model for every architecture; its defaults are the seed's
(256-128-64 with dropout 0.3, Adam 1e-3, batch 32, 100 epochs, EarlyStopping 10, ReduceLROnPlateau
0.5/5). Unknown fields are refused (a typo must not silently train with a default), and layer sizes
are bounded so that one call cannot exhaust memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ml_expert.tools.core.architectures import is_keras
from ml_expert.tools.jobs.specs import JobSpec
from ml_expert.tools.workspace import DEFAULT_SEED, Workspace

TimeBudget = Annotated[
    float,
    Field(description="architecture='auto': seconds for the search, refit included (5 s to 1 day).", ge=5, le=86_400),
]  # declared once: train, TrainSpec, run_workflow and its spec all take this
Width = Annotated[int, Field(ge=1, le=4096)]
Filters = Annotated[int, Field(ge=1, le=1024)]


class TrainConfig(BaseModel):
    """Training configuration (the seed's defaults); fields a family does not use are ignored (see `used_config`)."""

    model_config = ConfigDict(extra="forbid")

    # Keras networks
    hidden_units: list[Width] = Field([256, 128, 64], description="DNN layer widths.", min_length=1, max_length=8)
    dropout: float = Field(0.3, description="Dropout rate.", ge=0, lt=1)
    batch_norm: bool = Field(False, description="Batch normalization.")
    activation: Literal["relu", "gelu", "tanh", "elu", "selu", "swish"] = Field(
        "relu", description="Hidden activation."
    )
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] = Field("adam", description="Keras optimizer.")
    learning_rate: float = Field(1e-3, gt=0, le=10, description="Initial learning rate.")
    loss: str | None = Field(None, description="Keras loss (default by task).")
    metrics: list[str] | None = Field(None, description="Keras metrics (default by task).")
    batch_size: int = Field(32, ge=1, le=65536, description="Rows per gradient step.")
    epochs: int = Field(100, ge=1, le=10000, description="Maximum epochs.")
    early_stopping_patience: int = Field(10, ge=0, description="EarlyStopping patience (0 = off).")
    reduce_lr_patience: int = Field(5, ge=0, description="ReduceLROnPlateau patience (0 = off).")
    reduce_lr_factor: float = Field(0.5, gt=0, lt=1, description="LR reduction factor.")
    class_weight: Literal["auto", "balanced", "none"] = Field(
        "auto", description="auto: balanced when classes are imbalanced (majority/minority >= 4)."
    )
    seed: int = Field(DEFAULT_SEED, description="Random seed.")
    # image / sequence / text networks
    filters: list[Filters] = Field([32, 64], description="Conv filters per block.", min_length=1, max_length=6)
    augment: bool = Field(False, description="CNN data augmentation.")
    rnn_cell: Literal["lstm", "gru"] = Field("lstm", description="RNN cell type.")
    rnn_units: int = Field(64, ge=1, le=1024, description="RNN units per layer.")
    bidirectional: bool = Field(False, description="Bidirectional RNN.")
    embed_dim: int = Field(64, ge=4, le=1024, description="Embedding size.")
    num_heads: int = Field(4, ge=1, le=32, description="Attention heads.")
    ff_dim: int = Field(128, ge=4, le=4096, description="Feed-forward width.")
    # scikit-learn
    n_estimators: int = Field(300, ge=1, le=5000, description="Forest trees.")
    max_depth: int | None = Field(None, ge=1, le=1000, description="Tree depth limit.")
    max_iter: int = Field(300, ge=1, le=10000, description="Boosting / solver iterations.")
    regularization: float = Field(1.0, gt=0, description="linear: C or alpha.")
    n_clusters: int | None = Field(None, ge=2, le=1000, description="Clusters (default: classes).")


# the settings each scikit-learn architecture reads; Keras networks read every other one (auto: the seed only, its
# search draws its own configurations)
SKLEARN_SETTINGS = {
    "auto": ("seed",),
    "random_forest": ("n_estimators", "max_depth", "class_weight", "seed"),
    "gradient_boosting": ("max_iter", "max_depth", "class_weight", "seed"),
    "linear": ("regularization", "max_iter", "class_weight", "seed"),
    "kmeans": ("n_clusters", "seed"),
    "gaussian_mixture": ("n_clusters", "seed"),
}
SKLEARN_ONLY = {"n_estimators", "max_depth", "max_iter", "regularization", "n_clusters"}


def used_config(config: TrainConfig, architecture: str, task: str) -> dict[str, Any]:
    """The settings that shaped a model of this architecture, as the train result and `ml-expert/training` show them:
    an auto search's record listed a DNN's 256-128-64 layers and dropout it never used. A scikit-learn regressor takes
    no class weights, and the linear one (ridge) only its regularization; a network shows every network setting."""
    data = config.model_dump(mode="json")
    names = SKLEARN_SETTINGS.get(architecture) or [name for name in data if name not in SKLEARN_ONLY]
    if task == "regression" and architecture in SKLEARN_SETTINGS:
        names = ("regularization",) if architecture == "linear" else [n for n in names if n != "class_weight"]
    return {name: data[name] for name in names}


Distribution = Literal["none", "mirrored", "multi_worker"]


class TrainSpec(JobSpec):
    """A checked train call: built by `train_spec` (tool, workflow and CLI alike), read by the worker."""

    kind = "train"
    model_id: str
    architecture: str
    config: TrainConfig = Field(default_factory=TrainConfig)
    distribution: Distribution = "none"
    base_model: str | None = Field(None, description="Absolute path of a checked .keras base model.")
    fine_tune_layers: int = Field(0, ge=0)
    freeze: bool = True
    time_budget_s: TimeBudget = 60.0

    def runs_keras(self, ws: Workspace) -> bool:
        return is_keras(self.architecture) or self.base_model is not None


@dataclass
class Fit:
    """What fitting a model gives back to `run_train_job` (in the worker)."""

    model: Any
    framework: Literal["keras", "sklearn"]
    epochs_trained: int
    best_epoch: int | None
    seconds: float
    parameters: int
    history: dict[str, list[float]]
    distribution: dict[str, Any] | None = None
    transfer: dict[str, Any] | None = None
    out_of_fold: tuple[Any, Any] | None = None  # (y, output) of a CV search: honest validation scores
    search: dict[str, Any] | None = None  # the auto search's summary and leaderboard
