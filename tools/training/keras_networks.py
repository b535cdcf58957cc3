"""Keras networks (the seed's `create_model`): DNN for tables, CNN for images, RNN / conv1d /
Transformer for sequences and text. TensorFlow is imported inside the functions only.
"""

from __future__ import annotations

from typing import Any

from ml_expert.tools.core.lazy import lazy_import
from ml_expert.tools.core.prepared import PreparedData
from ml_expert.tools.core.tasks import is_classification
from ml_expert.tools.training.config import TrainConfig

np = lazy_import("numpy")  # loads on first use, not at server start


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

    if is_classification(task):
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
    classify = is_classification(task)
    loss = config.loss or ("sparse_categorical_crossentropy" if classify else "mse")
    metrics = config.metrics or (["accuracy"] if classify else ["mae"])
    model.compile(optimizer=_optimizer(config), loss=loss, metrics=metrics)
    return metrics


def build_cnn(input_shape: tuple[int, ...], config: TrainConfig) -> tuple[Any, Any]:
    """The seed's Conv-Pool-Conv-Pool-Flatten-Dense(128), with optional batch norm and augmentation."""
    import keras

    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    if config.augment:
        x = keras.layers.RandomFlip("horizontal", seed=config.seed)(x)
        x = keras.layers.RandomRotation(0.08, seed=config.seed)(x)
        x = keras.layers.RandomZoom(0.1, seed=config.seed)(x)
    for filters in config.filters:
        x = keras.layers.Conv2D(
            filters, 3, padding="same", activation=None if config.batch_norm else config.activation
        )(x)
        if config.batch_norm:
            x = keras.layers.BatchNormalization()(x)
            x = keras.layers.Activation(config.activation)(x)
        if x.shape[1] >= 2 and x.shape[2] >= 2:
            x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(128, activation=config.activation)(x)
    if config.dropout:
        x = keras.layers.Dropout(config.dropout, seed=config.seed)(x)
    return inputs, x


def _positions(x: Any, length: int, dim: int) -> Any:
    """Learned position embeddings added to x (batch, length, dim), built from ops so it saves safely."""
    import keras

    index = keras.ops.cumsum(keras.ops.ones_like(x[:, :, 0], dtype="int32"), axis=1) - 1
    return x + keras.layers.Embedding(length, dim, name="position_embedding")(index)


def _encoder_block(x: Any, config: TrainConfig) -> Any:
    import keras

    attention = keras.layers.MultiHeadAttention(
        config.num_heads, key_dim=max(1, config.embed_dim // config.num_heads), dropout=config.dropout, seed=config.seed
    )(x, x)
    x = keras.layers.LayerNormalization()(x + attention)
    ff = keras.layers.Dense(config.ff_dim, activation=config.activation)(x)
    ff = keras.layers.Dense(config.embed_dim)(ff)
    ff = keras.layers.Dropout(config.dropout, seed=config.seed)(ff)
    return keras.layers.LayerNormalization()(x + ff)


def text_inputs(texts: np.ndarray, config: TrainConfig) -> tuple[Any, Any, int, list[str]]:
    """String input -> token ids, with a TextVectorization fitted on the training texts only."""
    import keras

    flat = texts.reshape(-1).astype(str)
    lengths = np.array([len(t.split()) for t in flat[:20000]])
    seq_len = int(np.clip(np.percentile(lengths, 95), 8, 200))
    vectorize = keras.layers.TextVectorization(max_tokens=20000, output_sequence_length=seq_len, name="vectorize")
    vectorize.adapt(flat)
    inputs = keras.Input(shape=(1,), dtype="string", name="text")
    return inputs, vectorize(inputs), seq_len, vectorize.get_vocabulary()


def build_sequence_body(architecture: str, x: Any, length: int, config: TrainConfig) -> Any:
    """rnn / conv1d / transformer over a (batch, length, features) tensor; returns a pooled vector."""
    import keras

    if architecture == "rnn":
        cell = keras.layers.LSTM if config.rnn_cell == "lstm" else keras.layers.GRU
        layer = cell(config.rnn_units, unroll=length <= 64, seed=config.seed)  # unrolled: exports to TFLite
        x = keras.layers.Bidirectional(layer)(x) if config.bidirectional else layer(x)
    elif architecture == "conv1d":
        for filters in config.filters:
            x = keras.layers.Conv1D(filters, 3, padding="same", activation=config.activation)(x)
        x = keras.layers.GlobalMaxPooling1D()(x)
    else:  # transformer encoder
        if x.shape[-1] != config.embed_dim:
            x = keras.layers.Dense(config.embed_dim)(x)
        x = _encoder_block(_positions(x, length, config.embed_dim), config)
        x = keras.layers.GlobalAveragePooling1D()(x)
    if config.dropout:
        x = keras.layers.Dropout(config.dropout, seed=config.seed)(x)
    return keras.layers.Dense(64, activation=config.activation)(x)


def build_network(
    architecture: str, task: str, n_classes: int, config: TrainConfig, prepared: PreparedData, data: dict[str, Any]
) -> tuple[Any, dict[str, Any]]:
    """The Keras model for an architecture and the run's data; also returns facts to save (vocabulary)."""
    import keras

    X, y = data["X_train"], data["y_train"]
    y_mean, y_std = (0.0, 1.0)
    if task == "regression":
        y_mean, y_std = float(np.mean(y)), float(np.std(y) or 1.0)
    modality = prepared.modality
    extra: dict[str, Any] = {}
    if architecture == "dnn" and modality in ("tabular", "image", "sequence"):
        if modality == "tabular":
            return build_dnn(int(np.prod(X.shape[1:])), task, n_classes, config, y_mean, y_std), extra
        inputs = keras.Input(shape=X.shape[1:], name=modality)
        x = keras.layers.Flatten()(inputs)
        for units in config.hidden_units:
            x = keras.layers.Dense(units, activation=config.activation)(x)
    elif architecture == "cnn":
        inputs, x = build_cnn(X.shape[1:], config)
    elif modality == "text":
        inputs, tokens, length, vocab = text_inputs(X, config)
        extra["vocabulary"] = vocab
        x = keras.layers.Embedding(len(vocab), config.embed_dim, name="token_embedding")(tokens)
        x = build_sequence_body(architecture, x, length, config)
    elif modality == "sequence":
        inputs = keras.Input(shape=X.shape[1:], name="sequence")
        x = build_sequence_body(architecture, inputs, X.shape[1], config)
    else:
        raise ValueError(f"architecture {architecture!r} does not fit {modality} data")
    return keras.Model(inputs, output_head(x, task, n_classes, y_mean, y_std), name=architecture), extra
