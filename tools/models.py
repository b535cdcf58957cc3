"""Model configuration (`TrainConfig`) and the scikit-learn estimators; Keras networks are in `networks`.

`TrainConfig` is the one configuration model for every architecture; its defaults are the seed's
(256-128-64 with dropout 0.3, Adam 1e-3, batch 32, 100 epochs, EarlyStopping 10, ReduceLROnPlateau
0.5/5). TensorFlow is imported inside the functions that need it, never at module import.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from ml_expert.tools.workspace import DEFAULT_SEED

KERAS_ARCHITECTURES = ("dnn", "cnn", "rnn", "conv1d", "transformer")
SKLEARN_ARCHITECTURES = ("random_forest", "gradient_boosting", "linear", "kmeans", "gaussian_mixture")
CLUSTERING_ARCHITECTURES = ("kmeans", "gaussian_mixture")
Architecture = Literal[
    "auto",
    "dnn",
    "cnn",
    "rnn",
    "conv1d",
    "transformer",
    "random_forest",
    "gradient_boosting",
    "linear",
    "kmeans",
    "gaussian_mixture",
]


class TrainConfig(BaseModel):
    """Training configuration; every field has the seed's default. Unused fields are ignored."""

    # Keras networks
    hidden_units: list[int] = Field([256, 128, 64], description="DNN layer widths.", min_length=1, max_length=8)
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
    class_weight: Literal["auto", "balanced", "none"] = Field("auto", description="auto: balanced at imbalance >= 3.")
    seed: int = Field(DEFAULT_SEED, description="Random seed.")
    # image / sequence / text networks (issue 7)
    filters: list[int] = Field([32, 64], description="Conv filters per block.", min_length=1)
    augment: bool = Field(False, description="CNN data augmentation.")
    rnn_cell: Literal["lstm", "gru"] = Field("lstm", description="RNN cell type.")
    rnn_units: int = Field(64, ge=1, description="RNN units per layer.")
    bidirectional: bool = Field(False, description="Bidirectional RNN.")
    embed_dim: int = Field(64, ge=4, description="Embedding size.")
    num_heads: int = Field(4, ge=1, description="Attention heads.")
    ff_dim: int = Field(128, ge=4, description="Feed-forward width.")
    # scikit-learn
    n_estimators: int = Field(300, ge=1, le=5000, description="Forest trees.")
    max_depth: int | None = Field(None, ge=1, description="Tree depth limit.")
    max_iter: int = Field(300, ge=1, le=10000, description="Boosting / solver iterations.")
    regularization: float = Field(1.0, gt=0, description="linear: C or alpha.")
    n_clusters: int | None = Field(None, ge=2, description="Clusters (default: classes).")


def is_keras(architecture: str) -> bool:
    return architecture in KERAS_ARCHITECTURES


def build_sklearn(architecture: str, task: str, config: TrainConfig, class_weight: str | None, n_classes: int) -> Any:
    """A scikit-learn estimator for the architecture and task."""
    from sklearn.cluster import KMeans
    from sklearn.ensemble import (
        HistGradientBoostingClassifier,
        HistGradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.mixture import GaussianMixture

    classify = task in ("binary", "multiclass")
    seed = config.seed
    if architecture == "random_forest":
        cls = RandomForestClassifier if classify else RandomForestRegressor
        kw = {"class_weight": class_weight} if classify else {}
        return cls(n_estimators=config.n_estimators, max_depth=config.max_depth, random_state=seed, n_jobs=1, **kw)
    if architecture == "gradient_boosting":
        # stop adding trees once a held-out 15 % of the training rows stops improving (as Keras' EarlyStopping)
        boosting = {
            "max_iter": config.max_iter,
            "max_depth": config.max_depth,
            "early_stopping": True,
            "validation_fraction": 0.15,
            "n_iter_no_change": 15,
            "random_state": seed,
        }
        if classify:
            return HistGradientBoostingClassifier(class_weight=class_weight, **boosting)
        return HistGradientBoostingRegressor(**boosting)
    if architecture == "linear":
        if classify:
            return LogisticRegression(
                C=config.regularization,
                max_iter=max(config.max_iter, 1000),
                class_weight=class_weight,
                random_state=seed,
            )
        return Ridge(alpha=config.regularization)
    k = config.n_clusters or max(2, n_classes)
    if architecture == "kmeans":
        return KMeans(n_clusters=k, n_init=10, random_state=seed)
    if architecture == "gaussian_mixture":
        return GaussianMixture(n_components=k, random_state=seed)
    raise ValueError(f"not a scikit-learn architecture: {architecture}")
