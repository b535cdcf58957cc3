"""Keras networks (the seed's `create_model`): DNN for tables, CNN for images, RNN / conv1d /
Transformer for sequences and text. TensorFlow is imported inside the functions only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ml_expert.tools.models import TrainConfig


def _optimizer(config: TrainConfig) -> Any:
    import keras

    return {
        "adam": keras.optimizers.Adam,
        "adamw": keras.optimizers.AdamW,
        "sgd": keras.optimizers.SGD,
        "rmsprop": keras.optimizers.RMSprop,
    }[config.optimizer](learning_rate=config.learning_rate)


def output_head(x: Any, task: str, n_classes: int, y_mean: float = 0.0, y_std: float = 1.0) -> Any:
    """Softmax over classes, or one linear unit rescaled to the target's units (regression)."""
    import keras

    if task in ("binary", "multiclass"):
        return keras.layers.Dense(n_classes, activation="softmax", name="output")(x)
    x = keras.layers.Dense(1, name="output_scaled")(x)
    return keras.layers.Rescaling(scale=y_std, offset=y_mean, name="output")(x)


def build_dnn(input_dim: int, task: str, n_classes: int, config: TrainConfig, y_mean: float, y_std: float) -> Any:
    """The seed's DNN: Dense(256)-Dropout-Dense(128)-Dropout-Dense(64)-output, configurable."""
    import keras

    inputs = keras.Input(shape=(input_dim,), name="features")
    x = inputs
    last = len(config.hidden_units) - 1
    for i, units in enumerate(config.hidden_units):
        x = keras.layers.Dense(units, activation=None if config.batch_norm else config.activation)(x)
        if config.batch_norm:
            x = keras.layers.BatchNormalization()(x)
            x = keras.layers.Activation(config.activation)(x)
        if config.dropout and i < last:
            x = keras.layers.Dropout(config.dropout, seed=config.seed + i)(x)
    return keras.Model(inputs, output_head(x, task, n_classes, y_mean, y_std), name="dnn")


def compile_model(model: Any, task: str, config: TrainConfig) -> list[str]:
    """Compile with the task's loss and metrics (overridable); returns the metric names."""
    classify = task in ("binary", "multiclass")
    loss = config.loss or ("sparse_categorical_crossentropy" if classify else "mse")
    metrics = config.metrics or (["accuracy"] if classify else ["mae"])
    model.compile(optimizer=_optimizer(config), loss=loss, metrics=metrics)
    return metrics


def build_network(
    architecture: str,
    input_shape: tuple[int, ...],
    task: str,
    n_classes: int,
    config: TrainConfig,
    prepared: dict[str, Any],
    y_train: np.ndarray,
) -> Any:
    """The Keras model for an architecture and the run's data."""
    y_mean, y_std = (0.0, 1.0)
    if task == "regression":
        y_mean, y_std = float(np.mean(y_train)), float(np.std(y_train) or 1.0)
    if architecture == "dnn":
        return build_dnn(int(np.prod(input_shape)), task, n_classes, config, y_mean, y_std)
    raise ValueError(f"unknown Keras architecture {architecture!r}")
