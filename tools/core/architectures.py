"""The architectures a run can train, by family: what selection ranks and training builds."""

from __future__ import annotations

from typing import Literal

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


def is_keras(architecture: str) -> bool:
    return architecture in KERAS_ARCHITECTURES


def is_clustering(architecture: str) -> bool:
    return architecture in CLUSTERING_ARCHITECTURES
